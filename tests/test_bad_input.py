"""Bad input everywhere a caller can reach, one test per row of the table
in docs/bad-input.md (API.md §5: "Bad arguments raise the standard
ValueError / TypeError with a message that says what was expected and
what was given"; DESIGN.md: "Bad input gets a clear Python exception before
any C code runs").

The table is the single source: this module reads the page, runs its
setup block, evaluates the call of each row and checks

* the exception type, exactly (for the command line: the exit status and
  a one-line ``cbp: error: …`` on stderr);
* that the message contains every quoted fragment of the row — those left
  of → name what was expected, those right of → what was given;
* that no computation reached C: the compiled network's entry points and
  every kernel behind cbp.ops are replaced by guards for the call.

So a row added to the page is a test, and the page cannot drift from the
tests.
"""
from __future__ import annotations

import builtins
import contextlib
import io
import re
import types
import warnings
from pathlib import Path

import pytest

import cbp
import cbp.network
import cbp.ops

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*)\|\s*$")
AFTER_EPOCH = "after the first epoch"
SKLEARN_NAMES = ("MLPClassifier", "MLPRegressor", "clf")


# --------------------------------------------------------------------------
# Reading the page
# --------------------------------------------------------------------------

def _read_doc():
    text = DOC.read_text(encoding="utf-8")
    setup = re.search(r"^## Setup\n.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert setup, f"{DOC}: no ```python block under '## Setup'"
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        match = ROW.match(line)
        if not match:
            continue
        number = int(match.group(1))
        cells = [c.strip() for c in match.group(2).split("|")]
        assert len(cells) == 3, f"{DOC}:{line_no}: expected 4 columns, got {len(cells) + 1}"
        call, gets, says = cells
        code = re.fullmatch(r"`([^`]+)`", call)
        assert code, f"{DOC}:{line_no}: 'you pass' must be one code span, got {call!r}"
        expected_part, arrow, given_part = says.partition("→")
        assert arrow, f"{DOC}:{line_no}: the message column needs 'expected → given'"
        rows.append(dict(
            number=number, line=line_no, call=code.group(1), gets=gets,
            expected=re.findall(r"`([^`]+)`", expected_part),
            given=re.findall(r"`([^`]+)`", given_part)))
    return setup.group(1), rows


SETUP, ROWS = _read_doc()


def _outcome(gets: str):
    """('exception', cls) or ('exit', code), and whether C may run first."""
    after_epoch = AFTER_EPOCH in gets
    exit_code = re.fullmatch(r"exit (\d+)", gets)
    if exit_code:
        return ("exit", int(exit_code.group(1))), after_epoch
    name = re.match(r"`(\w+)`", gets)
    assert name, f"'you get' must name an exception in backticks or 'exit N', got {gets!r}"
    cls = getattr(builtins, name.group(1), None) or getattr(cbp, name.group(1), None)
    assert isinstance(cls, type) and issubclass(cls, BaseException), name.group(1)
    return ("exception", cls), after_epoch


def test_the_table_is_well_formed():
    numbers = [r["number"] for r in ROWS]
    assert numbers == list(range(1, len(ROWS) + 1)), "rows must be numbered 1, 2, 3, …"
    assert len(ROWS) >= 100
    calls = [r["call"] for r in ROWS]
    assert len(set(calls)) == len(calls), "a call appears twice"
    for r in ROWS:
        assert r["expected"] and r["given"], f"row {r['number']}: name expected and given"
        _outcome(r["gets"])


# --------------------------------------------------------------------------
# Guards: no computation may reach C while a row runs
# --------------------------------------------------------------------------

class ReachedC(BaseException):
    """A BaseException, so that no `except Exception` on the way hides it."""


ENGINE_ENTRY_POINTS = {"forward", "loss", "train_step", "train_batches", "blas_floor"}


class GuardedEngine:
    """Wraps a compiled Engine; its computing methods fail the test."""

    def __init__(self, real):
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name):
        if name in ENGINE_ENTRY_POINTS:
            raise ReachedC(f"Engine.{name} was called: the input reached C")
        return getattr(object.__getattribute__(self, "_real"), name)

    def __setattr__(self, name, value):
        setattr(object.__getattribute__(self, "_real"), name, value)


def _guarded_engine_module():
    real = cbp.network._engine
    module = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real)
                                      if not k.startswith("__")})
    module.Engine = lambda *args, **kwargs: GuardedEngine(real.Engine(*args, **kwargs))
    return module


def _guarded_ops_module():
    real = cbp.ops._ops
    module = types.SimpleNamespace()
    for name in dir(real):
        if not name.startswith("_") and callable(getattr(real, name)):
            def kernel(*args, _name=name, **kwargs):
                raise ReachedC(f"cbp._ops.{_name} was called: the input reached C")
            setattr(module, name, kernel)
    return module


@pytest.fixture
def guards(monkeypatch):
    """install(ns): guard the networks of the namespace `ns`, every network
    made from now on, and the kernels of cbp.ops."""
    def install(ns):
        monkeypatch.setattr(cbp.network, "_engine", _guarded_engine_module())
        monkeypatch.setattr(cbp.ops, "_ops", _guarded_ops_module())
        for value in list(ns.values()):
            net = value if isinstance(value, cbp.Network) else getattr(value, "_net", None)
            if isinstance(net, cbp.Network):
                monkeypatch.setattr(net, "_engine", GuardedEngine(net._engine))
    return install


def test_the_guards_catch_a_valid_call(tmp_path, monkeypatch, guards):
    """The guards would catch input that slipped through to C."""
    ns = _namespace(tmp_path, monkeypatch)
    guards(ns)
    with pytest.raises(ReachedC):
        eval("net.fit(X, y, epochs=1, progress=False)", ns)
    with pytest.raises(ReachedC):
        eval("net.predict(X)", ns)
    with pytest.raises(ReachedC):
        eval("ops.linear_forward(x, W, b)", ns)
    with pytest.raises(ReachedC):
        eval("cbp.Network.mlp([4, 2]).evaluate(X, y)", ns)
    if "clf" in ns:
        with pytest.raises(ReachedC):
            eval("clf.predict(X)", ns)


# --------------------------------------------------------------------------
# The rows
# --------------------------------------------------------------------------

class CommandExit(Exception):
    def __init__(self, code, stderr):
        super().__init__(stderr)
        self.code, self.stderr = code, stderr


def cli(*argv):
    """Run `cbp *argv`; always raises CommandExit with the status and stderr."""
    from cbp.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    raise CommandExit(code, err.getvalue())


def _namespace(tmp_path, monkeypatch):
    """The page's setup block, run in the fresh directory tmp_path."""
    monkeypatch.chdir(tmp_path)
    ns = {"cli": cli}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning
        exec(compile(SETUP, str(DOC), "exec"), ns)
    return ns


def _message_contains(message: str, fragments) -> list:
    low = message.lower()
    return [f for f in fragments if f.lower() not in low]


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn's clipping warnings
@pytest.mark.parametrize("row", ROWS, ids=[f"row{r['number']}" for r in ROWS])
def test_row(row, tmp_path, monkeypatch, guards):
    ns = _namespace(tmp_path, monkeypatch)
    if any(re.search(rf"\b{name}\b", row["call"]) for name in SKLEARN_NAMES) \
            and "MLPClassifier" not in ns:
        pytest.skip("scikit-learn is not installed")
    (kind, expected), after_epoch = _outcome(row["gets"])
    if not after_epoch:
        guards(ns)
    where = f"{DOC.name}:{row['line']} (row {row['number']}): {row['call']}"
    try:
        result = eval(row["call"], ns)
    except ReachedC as exc:
        pytest.fail(f"{where}: {exc}")
    except CommandExit as exc:
        assert kind == "exit", f"{where}: exited {exc.code}, expected {expected}"
        assert exc.code == expected, f"{where}: exit status {exc.code}, expected {expected}"
        lines = exc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("cbp: error: "), \
            f"{where}: stderr is not one 'cbp: error:' line: {exc.stderr!r}"
        message = exc.stderr
    except BaseException as exc:
        assert kind == "exception", f"{where}: raised {type(exc).__name__}: {exc}"
        assert type(exc) is expected, \
            f"{where}: raised {type(exc).__name__}: {exc}; expected {expected.__name__}"
        message = str(exc)
    else:
        pytest.fail(f"{where}: no error, returned {result!r}")
    for side in ("expected", "given"):
        missing = _message_contains(message, row[side])
        assert not missing, (f"{where}: the message does not name the {side} "
                             f"{missing}: {message!r}")
