"""The command line (API.md §7 and §8 "CLI data"): ``cbp train``,
``predict``, ``info``, ``gradcheck``, ``bench`` and ``python -m cbp``.

Most tests call ``cbp.cli.main(argv)`` in-process (it returns the exit
code); a few run real subprocesses.  Every error path must be one line
``cbp: error: …`` on stderr, exit 1 (data/model) or 2 (usage), and never
a traceback.  No test asserts on times."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cbp
from cbp import cli

N_IN, N_CLASSES = 6, 3


def run(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``cbp argv…`` run in-process."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, *fragments):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cbp: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def make_classification(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_IN))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)  # labels 0..2
    return X, y


def write_csv(path, X, y=None, header=True):
    table = X if y is None else np.column_stack([X, y])
    with open(path, "w") as f:
        if header:
            names = [f"x{i}" for i in range(X.shape[1])] + ([] if y is None else ["target"])
            f.write(",".join(names) + "\n")
        for row in table:
            f.write(",".join(repr(float(v)) for v in row) + "\n")
    return path


@pytest.fixture
def data(tmp_path):
    X, y = make_classification()
    path = tmp_path / "train.npz"
    np.savez(path, X=X, y=y)
    return path, X, y


@pytest.fixture
def model(tmp_path, data, capsys):
    path, X, y = data
    out = tmp_path / "model.npz"
    code, _, err = run(capsys, "train", "--data", path, "--epochs", 2, "--hidden", "8,5",
                       "--out", out, "--no-progress")
    assert code == 0, err
    return out


FINAL_ACCURACY = re.compile(r"^test accuracy: (\d\.\d{4})$")
FINAL_MSE = re.compile(r"^test mse: (\S+)$")


# ---------------------------------------------------------------- train
def test_train_default_digits_reaches_95_percent(capsys):
    code, out, err = run(capsys, "train", "--no-progress")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "1797 samples x 64 features, 10 classes" in lines[0]
    assert "64-64-10" in out and "Adam(" in out
    match = FINAL_ACCURACY.match(lines[-1])
    assert match, lines[-1]
    assert float(match.group(1)) >= 0.95
    assert err == ""  # no progress bar when asked for none


def test_train_npz_saves_a_loadable_model(tmp_path, data, capsys):
    path, X, y = data
    out = tmp_path / "sub" / "m.npz"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "train", "--data", path, "--epochs", 2, "--hidden", "8,5",
                            "--activation", "tanh", "--optimizer", "sgd", "--lr", 0.05,
                            "--batch-size", 16, "--dtype", "float64", "--seed", 3,
                            "--out", out, "--no-progress")
    assert code == 0, err
    assert FINAL_ACCURACY.match(stdout.strip().splitlines()[-1])
    net = cbp.load(out)
    assert [(l.in_features, l.out_features, l.activation) for l in net.layers] == [
        (N_IN, 8, "tanh"), (8, 5, "tanh"), (5, N_CLASSES, "identity")]
    assert net.loss == "softmax_cross_entropy" and net.dtype == np.float64 and net.seed == 3
    assert "SGD(lr=0.05" in stdout
    assert not [p for p in os.listdir(out.parent) if p != "m.npz"]  # no temporary left


def test_train_is_reproducible_and_seeded(tmp_path, data, capsys):
    path = data[0]
    outs = [run(capsys, "train", "--data", path, "--epochs", 2, "--seed", s,
                "--out", tmp_path / f"m{i}.npz")[1] for i, s in enumerate((1, 1, 2))]
    p = [cbp.load(tmp_path / f"m{i}.npz")._params for i in range(3)]
    assert outs[0].splitlines()[-1] == outs[1].splitlines()[-1]
    assert np.array_equal(p[0], p[1])
    assert not np.array_equal(p[0], p[2])


@pytest.mark.parametrize("header", [True, False])
def test_train_csv_with_and_without_header(tmp_path, data, capsys, header):
    _, X, y = data
    csv_path = write_csv(tmp_path / "train.csv", X, y, header=header)
    code, out, err = run(capsys, "train", "--data", csv_path, "--epochs", 2)
    assert code == 0, err
    assert f"{len(X)} samples x {N_IN} features, {N_CLASSES} classes" in out
    # the same rows as the .npz: the same training, the same result
    code, out_npz, _ = run(capsys, "train", "--data", data[0], "--epochs", 2)
    assert out.splitlines()[-1] == out_npz.splitlines()[-1]


def test_train_regression_prints_test_mse(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    path = write_csv(tmp_path / "reg.csv", X, X @ [1.0, -2.0, 0.5])
    code, out, err = run(capsys, "train", "--data", path, "--task", "regression",
                         "--epochs", 2)
    assert code == 0, err
    match = FINAL_MSE.match(out.strip().splitlines()[-1])
    assert match and float(match.group(1)) >= 0
    assert "3-64-1" in out and "loss mse" in out


def test_train_hidden_none_is_a_linear_model(tmp_path, data, capsys):
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", "--data", data[0], "--hidden", "none", "--epochs", 1,
                       "--out", out)
    assert code == 0, err
    assert len(cbp.load(out).layers) == 1


def test_train_progress_bar_on_request(data, capsys):
    code, _, err = run(capsys, "train", "--data", data[0], "--epochs", 1, "--progress")
    assert code == 0
    assert "batch" in err  # tqdm's bar, on stderr


# ---------------------------------------------------------------- predict
def read_lines(text):
    return text.strip("\n").split("\n")


def test_predict_npz_to_file_equals_net_predict(tmp_path, data, model, capsys):
    path, X, _ = data
    target = tmp_path / "pred.txt"
    code, out, err = run(capsys, "predict", "--model", model, "--data", path,
                         "--output", target)
    assert code == 0, err
    assert out == ""
    lines = read_lines(target.read_text())
    assert len(lines) == len(X)
    assert all(re.fullmatch(r"\d+", line) for line in lines)
    np.testing.assert_array_equal(np.array(lines, dtype=np.int64), cbp.load(model).predict(X))


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("with_target", [True, False])
def test_predict_csv_to_stdout(tmp_path, data, model, capsys, header, with_target):
    _, X, y = data
    path = write_csv(tmp_path / "in.csv", X, y if with_target else None, header=header)
    code, out, err = run(capsys, "predict", "--model", model, "--data", path)
    assert code == 0, err
    lines = read_lines(out)
    assert len(lines) == len(X)
    np.testing.assert_array_equal(np.array(lines, dtype=np.int64), cbp.load(model).predict(X))


def test_predict_npz_with_a_target_column_in_X(tmp_path, data, model, capsys):
    _, X, y = data
    path = tmp_path / "xy.npz"
    np.savez(path, X=np.column_stack([X, y]))  # no y needed for predict
    code, out, err = run(capsys, "predict", "--model", model, "--data", path)
    assert code == 0, err
    np.testing.assert_array_equal(np.array(read_lines(out), dtype=np.int64),
                                  cbp.load(model).predict(X))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_out", [1, 2])
def test_predict_regression_floats_round_trip(tmp_path, capsys, dtype, n_out):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    Y = np.column_stack([X @ [1.0, -2.0, 0.5], X[:, 0] ** 2])[:, :n_out]
    path = tmp_path / "reg.npz"
    np.savez(path, X=X, y=Y[:, 0] if n_out == 1 else Y)
    model = tmp_path / "reg_model.npz"
    code, _, err = run(capsys, "train", "--data", path, "--task", "regression", "--epochs", 2,
                       "--dtype", dtype, "--out", model)
    assert code == 0, err
    code, out, err = run(capsys, "predict", "--model", model, "--data", path)
    assert code == 0, err
    lines = read_lines(out)
    assert len(lines) == len(X)
    assert all(len(line.split(",")) == n_out for line in lines)
    got = np.array([[float(v) for v in line.split(",")] for line in lines], dtype=dtype)
    expected = cbp.load(model).predict(X).reshape(len(X), n_out)
    np.testing.assert_array_equal(got, expected)  # exact: repr precision


def test_predict_closed_stdout_is_quiet(tmp_path):
    """``cbp predict … | head -1``: no traceback when the reader leaves."""
    rng = np.random.default_rng(0)
    net = cbp.Network.mlp([2, 3, 2], seed=0)
    model = tmp_path / "m.npz"
    net.save(model)
    data = tmp_path / "big.npz"
    np.savez(data, X=rng.normal(size=(200_000, 2)))
    proc = subprocess.Popen([sys.executable, "-m", "cbp", "predict", "--model", str(model),
                             "--data", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.read(2) in (b"0\n", b"1\n")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) in (0, 1)
    assert err == ""


# ---------------------------------------------------------------- info
def test_info(model, capsys):
    net = cbp.load(model)
    code, out, err = run(capsys, "info", model)
    assert code == 0, err
    assert net.summary() in out
    assert f"parameters: {net.num_parameters}" in out
    assert "loss: softmax_cross_entropy" in out and "dtype: float32" in out
    assert re.search(r"format: cbp\.model version 2$", out, re.M)


# ---------------------------------------------------------------- gradcheck
def test_gradcheck_passes(capsys):
    code, out, err = run(capsys, "gradcheck", "--seed", 1)
    assert code == 0, err
    for loss in ("softmax_cross_entropy", "binary_cross_entropy", "mse"):
        line = next(l for l in out.splitlines() if l.startswith(loss))
        error = float(re.search(r"max_rel_error (\S+)", line).group(1))
        assert error < 1e-6 and line.endswith("ok")


def test_gradcheck_failure_exits_1(capsys, monkeypatch):
    class Bad:
        max_rel_error = 0.5

    monkeypatch.setattr(cbp, "gradcheck", lambda *a, **k: Bad())
    code, out, _ = run(capsys, "gradcheck")
    assert code == 1
    assert "FAILED" in out


# ---------------------------------------------------------------- bench
def test_bench_prints_ratios(capsys):
    code, out, err = run(capsys, "bench", "--seconds", 0.05)
    assert code == 0, err
    assert "numpy/cbp" in out
    rows = [l for l in out.splitlines() if re.match(r"^[SM] ", l)]
    assert [r.split()[1] for r in rows] == ["64-32-10", "784-256-128-10"]
    for row in rows:
        assert re.search(r"\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+x$", row), row
    assert "parameters agree" in out


def test_bench_numpy_step_is_the_cbp_step():
    from cbp import _bench

    rng = np.random.default_rng(0)
    net = cbp.Network.mlp([5, 4, 3], dtype="float64", seed=0)
    params = [(l.W.copy(), l.b.copy()) for l in net.layers]
    X, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    loss_np = _bench.numpy_train_step(params, X, y, 0.1)
    loss_cbp = net.train_step(X, y, cbp.SGD(lr=0.1))
    assert loss_np == pytest.approx(loss_cbp, rel=1e-12)
    for layer, (W, b) in zip(net.layers, params):
        np.testing.assert_allclose(W, layer.W, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b, layer.b, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- errors
def error_files(tmp):
    """name → path of a bad data file."""
    X, y = make_classification(20)
    files = {}
    files["missing.csv"] = tmp / "missing.csv"
    (tmp / "words.csv").write_text("a,b,c\n1,2,0\n3,oops,1\n")
    files["words.csv"] = tmp / "words.csv"
    # No header: a first row with a number in it is data, its fault reported.
    (tmp / "first_row_na.csv").write_text("1,NA,0\n3,4,1\n")
    files["first_row_na.csv"] = tmp / "first_row_na.csv"
    (tmp / "ragged.csv").write_text("1,2,0\n3,4\n")
    files["ragged.csv"] = tmp / "ragged.csv"
    (tmp / "empty.csv").write_text("\n\n")
    files["empty.csv"] = tmp / "empty.csv"
    (tmp / "header_only.csv").write_text("a,b,target\n")
    files["header_only.csv"] = tmp / "header_only.csv"
    (tmp / "one_column.csv").write_text("1\n2\n3\n")
    files["one_column.csv"] = tmp / "one_column.csv"
    (tmp / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    files["binary.csv"] = tmp / "binary.csv"
    np.savez(tmp / "no_y.npz", X=X)
    files["no_y.npz"] = tmp / "no_y.npz"
    np.savez(tmp / "no_X.npz", data=X, y=y)
    files["no_X.npz"] = tmp / "no_X.npz"
    np.savez(tmp / "strings.npz", X=np.array([["a", "b"]] * 3), y=np.array([0, 1, 0]))
    files["strings.npz"] = tmp / "strings.npz"
    np.savez(tmp / "rows.npz", X=X, y=y[:-1])
    files["rows.npz"] = tmp / "rows.npz"
    (tmp / "text.npz").write_text("not a zip archive\n")
    files["text.npz"] = tmp / "text.npz"
    np.save(tmp / "array.npy", X)
    files["array.npy"] = tmp / "array.npy"
    np.savez(tmp / "negative.npz", X=X, y=np.where(y == 0, -1, y))
    files["negative.npz"] = tmp / "negative.npz"
    np.savez(tmp / "fraction.npz", X=X, y=y + 0.5)
    files["fraction.npz"] = tmp / "fraction.npz"
    np.savez(tmp / "one_class.npz", X=X, y=np.zeros(len(X), dtype=int))
    files["one_class.npz"] = tmp / "one_class.npz"
    np.savez(tmp / "huge_label.npz", X=X, y=np.r_[y[:-1], 10**9])
    files["huge_label.npz"] = tmp / "huge_label.npz"
    np.savez(tmp / "nan.npz", X=np.r_[X[:-1], np.full((1, N_IN), np.nan)], y=y)
    files["nan.npz"] = tmp / "nan.npz"
    return files


TRAIN_DATA_ERRORS = [
    ("missing.csv", "No such file"),
    ("words.csv", "line 3, column 2: 'oops' is not a number"),
    ("first_row_na.csv", "line 1, column 2: 'NA' is not a number (a header row must have no "
                         "numeric field)"),
    ("ragged.csv", "line 2: 2 columns, expected 3"),
    ("empty.csv", "empty"),
    ("header_only.csv", "only a header"),
    ("one_column.csv", "at least two columns"),
    ("binary.csv", "not a text CSV"),
    ("no_y.npz", "no 'y'"),
    ("no_X.npz", "no 'X'"),
    ("strings.npz", "must hold numbers"),
    ("rows.npz", "rows"),
    ("text.npz", "not a readable .npz"),
    ("array.npy", "unknown data format"),
    ("negative.npz", "non-negative integers"),
    ("fraction.npz", "non-negative integers"),
    ("one_class.npz", "at least 2 classes"),
    ("huge_label.npz", "--task regression"),
    ("nan.npz", "finite"),
]


@pytest.mark.parametrize("name, fragment", TRAIN_DATA_ERRORS)
def test_train_bad_data_is_one_line_exit_1(tmp_path, capsys, name, fragment):
    path = error_files(tmp_path)[name]
    code, out, err = run(capsys, "train", "--data", path, "--epochs", 1)
    assert code == 1
    assert_one_line_error(err, fragment)


USAGE_ERRORS = [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "two"], "--epochs"),
    (["train", "--batch-size", "-1"], "--batch-size"),
    (["train", "--hidden", "64,x"], "--hidden"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--optimizer", "rmsprop"], "--optimizer"),
    (["train", "--activation", "swish"], "--activation"),
    (["train", "--dtype", "float16"], "--dtype"),
    (["train", "--task", "ranking"], "--task"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--test-size", "1"], "--test-size"),
    (["train", "--bogus"], "unrecognized"),
    (["predict", "--data", "x.csv"], "--model"),
    (["info"], "MODEL"),
    (["bench", "--seconds", "0"], "--seconds"),
    (["bench", "--quick", "--seconds", "1"], "not allowed"),
    (["frobnicate"], "invalid choice"),
    ([], "a command is required"),
]


@pytest.mark.parametrize("argv, fragment", USAGE_ERRORS)
def test_usage_errors_are_one_line_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, fragment)
    assert out == ""


def test_help_and_version_exit_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "train" in out and "bench" in out
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--hidden" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and cbp.__version__ in out


@pytest.mark.parametrize("kind", ["missing", "data csv", "data npz", "directory"])
def test_predict_and_info_bad_model_exit_1(tmp_path, data, capsys, kind):
    path = data[0]
    bad = {"missing": tmp_path / "none.npz",
           "data csv": write_csv(tmp_path / "d.csv", data[1], data[2]),
           "data npz": path,
           "directory": tmp_path}[kind]
    code, out, err = run(capsys, "predict", "--model", bad, "--data", path)
    assert code == 1 and out == ""
    assert_one_line_error(err)
    code, out, err = run(capsys, "info", bad)
    assert code == 1 and out == ""
    assert_one_line_error(err)


@pytest.mark.parametrize("name, fragment", [
    ("missing.csv", "No such file"),
    ("words.csv", "is not a number"),
    ("no_X.npz", "no 'X'"),
    ("text.npz", "not a readable .npz"),
    ("ragged.csv", "columns"),
    ("nan.npz", "finite"),
])
def test_predict_bad_data_exit_1(tmp_path, model, capsys, name, fragment):
    code, out, err = run(capsys, "predict", "--model", model, "--data",
                         error_files(tmp_path)[name])
    assert code == 1 and out == ""
    assert_one_line_error(err, fragment)


def test_predict_wrong_column_count_exit_1(tmp_path, model, capsys):
    path = tmp_path / "wide.csv"
    path.write_text("1,2,3\n4,5,6\n")
    code, out, err = run(capsys, "predict", "--model", model, "--data", path)
    assert code == 1 and out == ""
    assert_one_line_error(err, "3 columns", f"takes {N_IN} inputs")


def test_train_out_directory_checked_before_training(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(cbp.Network, "fit", lambda *a, **k: pytest.fail("trained anyway"))
    # a device, which save refuses: refused before training, not after
    devices = [os.devnull] if os.path.exists(os.devnull) and os.name == "posix" else []
    for out in (tmp_path / "no" / "such" / "m.npz", tmp_path, *devices):
        code, _, err = run(capsys, "train", "--data", data[0], "--out", out)
        assert code == 1
        assert_one_line_error(err, "--out")


def test_train_names_the_bad_row_of_the_file(tmp_path, capsys):
    """A NaN in row 37 of the file is reported as row 37, not as its row in
    the shuffled training split."""
    X, y = make_classification()
    X[37, 2] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, X=X, y=y)
    code, _, err = run(capsys, "train", "--data", path, "--epochs", 1)
    assert code == 1
    assert_one_line_error(err, "must be finite", "row 37 ")


def test_divergence_is_one_line_exit_1(data, capsys):
    code, out, err = run(capsys, "train", "--data", data[0], "--optimizer", "sgd",
                         "--lr", "1e30", "--epochs", 2)
    assert code == 1
    assert_one_line_error(err, "diverged")


def test_keyboard_interrupt_exits_130(capsys, monkeypatch):
    def interrupted(args, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    code, _, err = run(capsys, "info", "whatever.npz")
    assert code == 130
    assert "interrupted" in err and "Traceback" not in err


# ---------------------------------------------------------------- entry points
def test_python_m_cbp(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cbp", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "usage: cbp" in proc.stdout and "gradcheck" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "cbp", "train", "--data",
                           str(tmp_path / "missing.npz")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "missing.npz")
    proc = subprocess.run([sys.executable, "-m", "cbp", "train", "--epochs", "x"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "--epochs")


@pytest.mark.skipif(shutil.which("cbp") is None, reason="the cbp console script is not on PATH")
def test_console_script(tmp_path, data):
    proc = subprocess.run(["cbp", "info", str(data[0])], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "not a cbp model")


def test_csv_header_rule(tmp_path):
    # A first row with no numeric field is a header; with one, it is data,
    # and its fault is reported with the hint, wherever the first row is.
    path = tmp_path / "d.csv"
    path.write_text("a,b,target\n1,2,0\n")
    np.testing.assert_array_equal(cli._read_csv(path), [[1, 2, 0]])
    path.write_text("\n\n1,NA,0\n3,4,1\n")
    with pytest.raises(cli.DataError, match=r"line 3, column 2: 'NA' is not a number "
                                            r"\(a header row must have no numeric field\)"):
        cli._read_csv(path)
    path.write_text("a,b,target\n1,x,0\n")  # after a header: no hint
    with pytest.raises(cli.DataError, match=r"line 2, column 2: 'x' is not a number$"):
        cli._read_csv(path)


# ---------------------------------------------------------------- errors found by review
def test_predict_overflow_is_a_one_line_error(tmp_path, model, capsys):
    """FloatingPointError (the outputs overflow float32) once escaped main
    as a traceback."""
    big = tmp_path / "big.npz"
    np.savez(big, X=np.full((2, N_IN), 3e38))
    code, out, err = run(capsys, "predict", "--model", model, "--data", big)
    assert code == 1
    assert_one_line_error(err, "overflowed float32")


def test_predict_with_non_finite_parameters_says_so(tmp_path, capsys):
    net = cbp.Network.mlp([N_IN, 4, N_CLASSES], activation="relu", seed=0)
    net.layers[0].W[...] = np.abs(net.layers[0].W)
    net.layers[0].W[0, 0] = np.nan
    path = tmp_path / "nan.npz"
    net.save(path)
    X = tmp_path / "X.npz"
    np.savez(X, X=np.ones((2, N_IN)))
    code, out, err = run(capsys, "predict", "--model", path, "--data", X)
    assert code == 1
    assert_one_line_error(err, "parameters hold NaN or infinity")


def test_bench_refuses_stray_arguments(capsys):
    code, out, err = run(capsys, "bench", "--seconds", 0.05, "foo", "bar")
    assert code == 2 and out == ""
    assert_one_line_error(err, "unrecognized arguments: foo bar")


def test_bench_accepts_a_bare_double_dash(capsys):
    code, out, err = run(capsys, "bench", "--seconds", 0.05, "--")
    assert code == 0, err
