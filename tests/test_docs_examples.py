"""Every ```python block of README.md and docs/*.md runs, so no example can
rot.  Blocks of one file run in order in one namespace, in a temporary
directory (examples may write files).

A block whose first line is ``# requires: name[, name…]`` runs only when
those optional modules (scikit-learn, PyTorch, …) are importable; the
comment also tells the reader what the block needs."""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
REQUIRES = re.compile(r"\A# requires: *([\w., ]+)\n")


def _missing_modules(block):
    m = REQUIRES.match(block)
    if m is None:
        return []
    names = [n for n in re.split(r"[,\s]+", m.group(1)) if n]
    return [n for n in names if importlib.util.find_spec(n) is None]


@pytest.mark.parametrize("path", [p for p in FILES if BLOCK.search(p.read_text())],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(BLOCK.findall(path.read_text())):
        if _missing_modules(block):
            continue
        code = compile(block, f"{path.name}[block {i}]", "exec")
        exec(code, namespace)
