"""docs/api.md is generated from the docstrings (tools/gen_api_docs.py):
it must be up to date, every public name must be documented in numpydoc
form, and every docstring example must run."""
import doctest
import importlib
import importlib.util
import inspect
import pathlib
import re
import warnings

import pytest

import cbp
from cbp import ops

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_api_docs",
                                                  ROOT / "tools" / "gen_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_md_is_up_to_date():
    expected = _generator().render()
    assert API_MD.read_text(encoding="utf-8") == expected, (
        "docs/api.md is stale: run `python tools/gen_api_docs.py`")


def test_every_rendered_name_has_a_docstring():
    assert _generator().missing_docstrings() == []


def _public_objects():
    for name in cbp.__all__:
        if name != "__version__":
            yield f"cbp.{name}", getattr(cbp, name)
    for name in ops.__all__:
        yield f"cbp.ops.{name}", getattr(ops, name)


def _takes_arguments(obj) -> bool:
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return False  # exceptions take a message
        obj = obj.__init__
        if obj is object.__init__:
            return False
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in params)


_SECTION = re.compile(r"^\s*(Parameters|Returns)\n\s*-{3,}$", re.M)


def _numpydoc_problems(qualname, obj):
    doc = inspect.getdoc(obj)
    if not doc:
        return [f"{qualname}: no docstring"]
    if _takes_arguments(obj) and not _SECTION.search(doc):
        return [f"{qualname}: takes arguments but has no Parameters or Returns section"]
    return []


def _members(cls):
    """Public methods and properties defined on `cls` or a cbp base class."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("cbp"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name != "__call__":
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                yield name, value


def test_public_names_have_numpydoc_docstrings():
    problems = []
    for qualname, obj in _public_objects():
        if inspect.ismodule(obj):
            if not inspect.getdoc(obj):
                problems.append(f"{qualname}: no module docstring")
            continue
        if not (inspect.isclass(obj) or callable(obj)):
            continue  # constants (ops.ACTIVATIONS) are checked by presence below
        problems += _numpydoc_problems(qualname, obj)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for name, member in _members(obj):
                if isinstance(member, property):
                    if not inspect.getdoc(member):
                        problems.append(f"{qualname}.{name}: no docstring")
                else:
                    problems += _numpydoc_problems(f"{qualname}.{name}", member)
    assert problems == []


def test_every_public_name_is_in_api_md():
    text = API_MD.read_text(encoding="utf-8")
    missing = [q for q, obj in _public_objects()
               if not inspect.ismodule(obj) and f"### `{q}`" not in text]
    assert missing == []
    assert "### `cbp.datasets.load_digits`" in text
    for name in ("MLPClassifier", "MLPRegressor"):
        assert f"### `cbp.sklearn.{name}`" in text


DOCTEST_MODULES = ["cbp", "cbp.network", "cbp.layers", "cbp.optim", "cbp.callbacks",
                   "cbp.gradcheck", "cbp.io", "cbp.ops", "cbp.errors", "cbp.datasets",
                   "cbp.sklearn", "cbp.cli"]


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name):
    if module_name == "cbp.sklearn":
        pytest.importorskip("sklearn")
    module = importlib.import_module(module_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. ConvergenceWarning of a short sklearn fit
        result = doctest.testmod(module, verbose=False,
                                 optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
