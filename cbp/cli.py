"""The ``cbp`` command line: train, predict, info, gradcheck, bench.

``main(argv)`` returns the exit code: 0 on success, 1 for a bad data or
model file (or a check that failed), 2 for a usage error, 130 when
interrupted.  Every error is one line ``cbp: error: …`` on stderr, never
a traceback.

Data files (``--data``) are ``.npz`` archives with arrays ``X`` and ``y``
or numeric ``.csv`` files with an optional header row (a first row with
no numeric field) and the target in the last column.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import zipfile

import numpy as np

__all__ = ["main"]

PROG = "cbp"
OPTIMIZERS = ("sgd", "adam", "adamw")
TASKS = {"classification": "softmax_cross_entropy", "regression": "mse"}
# Number of classes = max label + 1; more than this is almost surely a
# regression target given to a classifier (and would allocate a huge layer).
MAX_CLASSES = 10_000


class UsageError(Exception):
    """A bad command line: exit code 2."""


class DataError(ValueError):
    """A data file that cannot be used: exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors raised (one line, handled by `main`) instead
    of printed with the usage and exited."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------- option types
def _int_option(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _fraction(text):
    value = _positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text!r}")
    return value


def _hidden_sizes(text):
    """``"64,32"`` → ``[64, 32]``; ``""`` or ``"none"`` → ``[]`` (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return []
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated layer sizes such as 64,32, got {text!r}") from None
        if size < 1:
            raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {size}")
        sizes.append(size)
    return sizes


# ---------------------------------------------------------------- data files
def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _csv_fields(line: str) -> list:
    return next(csv.reader([line]))


def _read_csv(path) -> np.ndarray:
    """A numeric CSV as a float64 (rows, columns) array.  The first row is
    a header (and skipped) when none of its fields is a number; a first row
    mixing numbers and other fields is data with a fault, reported as on
    any other line (so a headerless file never loses its first row)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file (not UTF-8)") from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = not any(_is_number(field) for field in _csv_fields(rows[0][1]))
    if header:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: no data rows, only a header")
    try:
        return np.loadtxt([line for _, line in rows], delimiter=",", quotechar='"',
                          dtype=np.float64, ndmin=2)
    except ValueError as exc:
        _diagnose_csv(path, rows, header)
        raise DataError(f"{path}: {exc}") from None


def _diagnose_csv(path, rows, header_skipped) -> None:
    """Raise a DataError naming the file's line and column at fault."""
    n_columns = None
    for number, line in rows:
        fields = _csv_fields(line)
        if n_columns is None:
            n_columns, first = len(fields), number
        elif len(fields) != n_columns:
            raise DataError(f"{path}, line {number}: {len(fields)} columns, expected "
                            f"{n_columns} (as on line {first})")
        for column, field in enumerate(fields, start=1):
            if not _is_number(field):
                what = "an empty field" if not field.strip() else f"{field!r}"
                hint = (" (a header row must have no numeric field)"
                        if not header_skipped and number == rows[0][0] else "")
                raise DataError(f"{path}, line {number}, column {column}: {what} is not "
                                f"a number{hint}")


def _read_npz(path, need_y: bool):
    """Arrays ``X`` and ``y`` (``y`` None when absent and not needed)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive with arrays "
                        "'X' and 'y'")
    with archive:
        names = list(archive.files)
        wanted = ("X", "y") if need_y else ("X",)
        missing = [name for name in wanted if name not in names]
        if missing:
            raise DataError(f"{path} must hold arrays {' and '.join(map(repr, wanted))}; "
                            f"it has no {' or '.join(map(repr, missing))} (it holds "
                            f"{', '.join(map(repr, names)) or 'nothing'})")
        try:
            X = archive["X"]
            y = archive["y"] if "y" in names else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{path}: cannot read its arrays ({exc})") from None
    for name, a in (("X", X), ("y", y)):
        if a is not None and a.dtype.kind not in "biuf":
            raise DataError(f"{path}: array {name!r} must hold numbers, got dtype {a.dtype}")
    if X.ndim != 2:
        raise DataError(f"{path}: X must be 2-D (samples, features), got shape {X.shape}")
    if y is not None and y.shape[:1] != X.shape[:1]:
        raise DataError(f"{path}: X has {X.shape[0]} rows but y has shape {y.shape}")
    return X, y


def _data_kind(path) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in (".npz", ".csv"):
        raise DataError(f"{path}: unknown data format {ext or '(no extension)'!r}; "
                        "use a .npz file (arrays X and y) or a .csv file (target last)")
    return ext[1:]


def load_training_data(path):
    """``(X, y, description)``: the bundled digits when `path` is None."""
    if path is None:
        from .datasets import load_digits

        X, y = load_digits()
        return X, y, "the bundled digits"
    if _data_kind(path) == "npz":
        X, y = _read_npz(path, need_y=True)
    else:
        table = _read_csv(path)
        if table.shape[1] < 2:
            raise DataError(f"{path}: needs at least two columns (features, then the target), "
                            f"got {table.shape[1]}")
        X, y = table[:, :-1], table[:, -1]
    if X.shape[0] < 2:
        raise DataError(f"{path}: needs at least 2 rows to split into train and test, "
                        f"got {X.shape[0]}")
    if X.shape[1] < 1:
        raise DataError(f"{path}: X has no columns")
    return X, y, path


def load_inputs(path, n_in: int) -> np.ndarray:
    """The inputs of a data file for a model with `n_in` inputs: a last
    column too many (the target) is dropped."""
    if _data_kind(path) == "npz":
        X, _ = _read_npz(path, need_y=False)
    else:
        X = _read_csv(path)
    if X.shape[1] == n_in + 1:
        X = X[:, :-1]
    elif X.shape[1] != n_in:
        raise DataError(f"{path}: {X.shape[1]} columns, but the model takes {n_in} inputs "
                        f"({n_in} columns, or {n_in + 1} with a target column last)")
    if X.shape[0] == 0:
        raise DataError(f"{path}: no rows")
    return X


def _class_labels(y, path) -> tuple:
    """``(labels as int64, number of classes)``; labels must be
    non-negative integers."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: classification needs one label per row, y has shape "
                        f"{y.shape} (use --task regression for several targets)")
    yf = y.astype(np.float64)
    bad = ~np.isfinite(yf) | (yf < 0) | (yf != np.round(yf))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: class labels must be non-negative integers; row {row} "
                        f"holds {yf[row]:g} (use --task regression for a numeric target)")
    n_classes = int(yf.max()) + 1
    if n_classes < 2:
        raise DataError(f"{path}: classification needs at least 2 classes; every label is 0")
    if n_classes > MAX_CLASSES:
        raise DataError(f"{path}: the largest label is {int(yf.max())}, so there would be "
                        f"{n_classes} classes (at most {MAX_CLASSES}); use --task regression "
                        "for a numeric target")
    return yf.astype(np.int64), n_classes


def _regression_targets(y, path) -> tuple:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        return y, 1
    if y.ndim == 2:
        return y, y.shape[1]
    raise DataError(f"{path}: regression targets must be 1-D or 2-D, y has shape {y.shape}")


def _split(n: int, test_size: float, seed: int):
    """Shuffled indices ``(train, test)``, test the given fraction (at
    least one row each)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(n * test_size))))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


# ---------------------------------------------------------------- commands
def _check_out_path(path) -> None:
    """Fail before training, not after, when the model cannot be saved there."""
    if os.path.isdir(path):
        raise DataError(f"--out {path}: is a directory, expected a file name")
    if os.path.exists(path) and not os.path.isfile(path):   # as save refuses it
        raise DataError(f"--out {path}: is not a regular file (a device, a FIFO or a "
                        "socket), expected a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DataError(f"--out {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError(f"--out {path}: the directory {directory} is not writable")


def cmd_train(args, out) -> int:
    import cbp
    from cbp._data import check_inputs

    if args.out is not None:
        _check_out_path(args.out)
    X, y, source = load_training_data(args.data)
    loss = TASKS[args.task]
    if loss == "softmax_cross_entropy":
        y, n_out = _class_labels(y, source)
        target = f"{n_out} classes"
    else:
        y, n_out = _regression_targets(y, source)
        target = f"{n_out} target{'s' if n_out > 1 else ''}"
    # Checked here, not by fit on the training split, so that a bad row is
    # named by its row in the file.
    X = check_inputs(X, X.shape[1], np.dtype(args.dtype), "X")
    train, test = _split(X.shape[0], args.test_size, args.seed)

    sizes = [X.shape[1], *args.hidden, n_out]
    net = cbp.Network.mlp(sizes, activation=args.activation, loss=loss, dtype=args.dtype,
                          seed=args.seed)
    optimizer_class = {"sgd": cbp.SGD, "adam": cbp.Adam, "adamw": cbp.AdamW}[args.optimizer]
    optimizer = optimizer_class() if args.lr is None else optimizer_class(lr=args.lr)

    out(f"data: {source}, {X.shape[0]} samples x {X.shape[1]} features, {target}; "
        f"train {train.size}, test {test.size} (seed {args.seed})")
    out(f"network: {'-'.join(map(str, sizes))}, {args.activation}, loss {loss}, "
        f"{net.dtype.name}, {net.num_parameters:,} parameters")
    out(f"optimizer: {optimizer!r}, {args.epochs} epochs, batch size {args.batch_size}")

    t0 = time.perf_counter()
    history = net.fit(X[train], y[train], epochs=args.epochs, batch_size=args.batch_size,
                      optimizer=optimizer, progress=args.progress)
    seconds = time.perf_counter() - t0
    out(f"trained in {seconds:.2f} s, final training loss {history.history['loss'][-1]:.4g}")
    if args.out is not None:
        net.save(args.out)
        out(f"saved the model to {args.out}")
    result = net.evaluate(X[test], y[test])
    if loss == "softmax_cross_entropy":
        out(f"test accuracy: {result['accuracy']:.4f}")
    else:
        out(f"test mse: {result['loss']:.6g}")
    return 0


def _prediction_lines(pred: np.ndarray, chunk_rows: int = 10_000):
    """The text of the predictions, one row a line (values comma-separated),
    in chunks: integers for labels, floats to round-trip precision."""
    if pred.dtype.kind in "iub":
        fmt = "%d"
    else:
        fmt = "%.9g" if pred.dtype == np.float32 else "%.17g"
    pred = pred.reshape(pred.shape[0], -1)
    for start in range(0, pred.shape[0], chunk_rows):
        rows = pred[start:start + chunk_rows].tolist()
        yield "".join(",".join(fmt % v for v in row) + "\n" for row in rows)


def cmd_predict(args, out) -> int:
    import cbp

    net = cbp.load(args.model)
    X = load_inputs(args.data, net.in_features)
    pred = net.predict(X)
    if args.output is None:
        sys.stdout.writelines(_prediction_lines(pred))
        sys.stdout.flush()
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.writelines(_prediction_lines(pred))
    return 0


def cmd_info(args, out) -> int:
    import cbp
    from . import io

    net = cbp.load(args.model)
    out(net.summary())
    out(f"loss: {net.loss}")
    out(f"dtype: {net.dtype.name}")
    out(f"parameters: {net.num_parameters}")
    out(f"format: {io.FORMAT} version {io.VERSION}")  # load accepts only this version
    return 0


def cmd_gradcheck(args, out) -> int:
    import cbp

    sizes, rows, tol = [8, 6, 4], 5, 1e-6
    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((rows, sizes[0]))
    targets = {
        "softmax_cross_entropy": rng.integers(0, sizes[-1], rows),
        "binary_cross_entropy": rng.integers(0, 2, (rows, sizes[-1])).astype(np.float64),
        "mse": rng.standard_normal((rows, sizes[-1])),
    }
    out(f"gradcheck: mlp {'-'.join(map(str, sizes))} {args.activation}, float64, "
        f"{rows} random rows, seed {args.seed}; pass when max_rel_error < {tol:g}")
    failed = []
    for loss, y in targets.items():
        net = cbp.Network.mlp(sizes, activation=args.activation, loss=loss, dtype="float64",
                              seed=args.seed)
        # Non-zero biases, so that the check does not start at a special point.
        for layer in net.layers:
            layer.b = rng.normal(scale=0.1, size=layer.b.shape)
        error = cbp.gradcheck(net, X, y).max_rel_error
        ok = error < tol
        if not ok:
            failed.append(loss)
        out(f"{loss:<22}  max_rel_error {error:.3e}  {'ok' if ok else 'FAILED'}")
    out("all gradients agree" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


def cmd_bench(args, out) -> int:
    extra = list(args.suite_args)
    if args.full:
        return _run_full_benchmarks(extra[1:] if extra[:1] == ["--"] else extra)
    if extra and extra != ["--"]:
        raise UsageError(f"bench: unrecognized arguments: {' '.join(extra)} (arguments for "
                         "the full suite go after 'bench --full --')")
    from . import _bench

    return _bench.run(args.seconds, out)


def _run_full_benchmarks(extra) -> int:
    """Run benchmarks/run.py of the source tree (it is not installed with
    the wheel): found next to the package (a source checkout or editable
    install) or in the current directory."""
    import pathlib
    import subprocess

    here = pathlib.Path(__file__).resolve().parent.parent
    for root in (here, pathlib.Path.cwd()):
        script = root / "benchmarks" / "run.py"
        if script.is_file():
            return subprocess.call([sys.executable, str(script), *extra])
    raise FileNotFoundError("the full benchmark suite is benchmarks/run.py of cbp's source "
                            "tree; run 'cbp bench --full' from a checkout")


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    from .ops import ACTIVATIONS

    parser = _Parser(prog=PROG, description="Backpropagation for fully connected networks, "
                     "from the command line.")
    parser.add_argument("--version", action="version", version=f"cbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train an MLP and report its test score",
                       description="Train a multilayer perceptron on a shuffled 80% of the data "
                       "(see --test-size) and report its accuracy, or its mean squared error, "
                       "on the rest.")
    p.add_argument("--data", metavar="PATH",
                   help="a .npz file with arrays X and y, or a numeric .csv file (optional "
                   "header row, target in the last column); default: the bundled digits")
    p.add_argument("--task", choices=tuple(TASKS), default="classification",
                   help="classification (labels 0..C-1, softmax cross-entropy) or regression "
                   "(mean squared error); default: %(default)s")
    p.add_argument("--hidden", type=_hidden_sizes, default=[64], metavar="SIZES",
                   help="hidden layer sizes, comma-separated, e.g. 64,32 ('none' for none); "
                   "default: 64")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu", metavar="NAME",
                   help=f"hidden activation: {', '.join(ACTIVATIONS)}; default: %(default)s")
    p.add_argument("--epochs", type=_int_option(1), default=20, help="default: %(default)s")
    p.add_argument("--batch-size", type=_int_option(1), default=32,
                   help="default: %(default)s")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="default: %(default)s")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate; default: the optimizer's (sgd 0.01, adam/adamw 0.001)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="default: %(default)s")
    p.add_argument("--seed", type=_int_option(0), default=0,
                   help="seeds the split, the initialisation and the shuffling; "
                   "default: %(default)s")
    p.add_argument("--test-size", type=_fraction, default=0.2, metavar="FRACTION",
                   help="fraction of the rows held out for testing; default: %(default)s")
    p.add_argument("--out", metavar="MODEL.npz", help="save the trained model here")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("predict", help="predict with a saved model, one line per row",
                       description="Write one prediction per line: a class label for "
                       "classification models, comma-separated values for several outputs.")
    p.add_argument("--model", required=True, metavar="MODEL", help="a model saved by cbp")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="a .npz file with array X, or a numeric .csv file (optional header); "
                   "one column more than the model's inputs (a target) is ignored")
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("info", help="describe a saved model",
                       description="Print a saved model's layers, loss, dtype, parameter "
                       "count and file format version.")
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("gradcheck", help="check backpropagation against finite differences",
                       description="Compare backpropagated gradients with finite differences "
                       "on a small float64 network, for every loss; exit 1 if any disagree.")
    p.add_argument("--seed", type=_int_option(0), default=0, help="default: %(default)s")
    p.add_argument("--activation", choices=ACTIVATIONS, default="tanh", metavar="NAME",
                   help="hidden activation (smooth ones avoid kinks); default: %(default)s")
    p.set_defaults(run=cmd_gradcheck)

    p = sub.add_parser("bench", help="time a training step: cbp against plain NumPy",
                       description="Time one SGD training step of cbp's fit against the same "
                       "step in plain NumPy, side by side, on random float32 data.")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--quick", dest="seconds", action="store_const", const=3.0,
                        help="about 3 seconds (the default)")
    budget.add_argument("--seconds", type=_positive_float, metavar="N",
                        help="about N seconds in all")
    budget.add_argument("--full", action="store_true",
                        help="run the full suite, benchmarks/run.py of the source tree "
                        "(against the BLAS floor, NumPy, PyTorch, JAX, scikit-learn); "
                        "arguments after -- go to it")
    p.add_argument("suite_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=cmd_bench, seconds=3.0, full=False)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


def main(argv=None) -> int:
    """Run the command line with `argv` (default ``sys.argv[1:]``) and
    return the exit code."""
    from .errors import CBPError

    def out(line=""):
        print(line, flush=True)

    def fail(message, code):
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return code

    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        if args.command is None:
            raise UsageError("a command is required: train, predict, info, gradcheck or "
                             f"bench; got none (see '{PROG} --help')")
        return args.run(args, out)
    except UsageError as exc:
        return fail(_one_line(exc), 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # stdout closed early (`cbp predict … | head`): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except MemoryError:
        return fail("out of memory (are the layers or the data too large?)", 1)
    except (CBPError, ValueError, TypeError, OSError, FloatingPointError) as exc:
        return fail(_one_line(exc), 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
