"""The built extensions: they import, and they link no BLAS of their own
(the BLAS comes from scipy.linalg.cython_blas at import time; DESIGN.md)."""
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BLAS_NAMES = re.compile(r"blas|lapack|openblas|mkl", re.IGNORECASE)


def extension_files():
    origin = importlib.util.find_spec("cbp._ops").origin
    assert origin is not None
    folder = Path(origin).parent
    return sorted([*folder.glob("_*.so"), *folder.glob("_*.pyd")])


def test_extensions_import():
    ops = importlib.import_module("cbp._ops")
    assert Path(ops.__file__).suffix in (".so", ".pyd")
    engine = importlib.import_module("cbp._engine")
    assert engine.__file__
    import cbp.ops  # the Python API over them
    assert callable(cbp.ops.linear_forward)


def test_extension_files_found():
    files = extension_files()
    names = {f.name.split(".")[0] for f in files}
    assert "_ops" in names, files


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ldd is Linux-only")
@pytest.mark.skipif(shutil.which("ldd") is None, reason="ldd not installed")
def test_extensions_link_no_blas():
    files = extension_files()
    assert files
    for so in files:
        result = subprocess.run(["ldd", str(so)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"ldd {so.name} failed: {result.stderr}"
        offending = [line.strip() for line in result.stdout.splitlines()
                     if BLAS_NAMES.search(line)]
        assert not offending, f"{so.name} links a BLAS/LAPACK: {offending}"
