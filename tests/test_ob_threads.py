"""Work between the products on OpenBLAS's threads (src_c/pool.c and
src_c/engine_impl.h, cbp_obx_*; docs/threads.md): a step whose products
run on two or more OpenBLAS threads, not on cbp's pool, has those threads
copy each shuffled batch and make a large layer's passes (bias rows,
activation, σ' with the bias sums), through OpenBLAS's exported
``blas_level1_thread``.

* Every test that expects that work there first checks that it happened
  (the job counter moves) and that the pool did not take the steps, so
  none can pass by running the caller's path.
* Rows are copied and the passes are split by whole columns, so a fit
  with it is bit for bit the fit without it: every loss and every
  parameter, for both dtypes, the three losses, several activations
  (identity too), sample weights, a last batch of one row, 2-8 threads
  (more threads than this machine's cores), an optimizer that stores the
  gradient (Adam), ``train_step``, the overflow guard's decisions, and a
  caller that flushes subnormals (the parts run under the caller's
  floating-point control).
* It is off where it should be: one BLAS thread, the switch (in the
  process and by the environment), steps on the pool, batches in
  sequence through small layers, and an entry point that fails the
  self-test (a stand-in that runs nothing, passes the wrong argument or
  skips a part).  An entry point that passes the self-test but runs its
  items oddly (twice, on other threads, one fewer later) still runs
  every part once.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cbp
import cbp._threads as cbp_threads
from cbp import _engine
from concurrency import in_forked_child, in_threads, needs_fork
from openblas_threads import steps_on_openblas_threads
from random_data import training_data as data

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture(autouse=True)
def openblas_threads(monkeypatch):
    """Every step on two OpenBLAS threads (none on one thread, none on the
    pool), the work on OpenBLAS's threads switched on."""
    with steps_on_openblas_threads(monkeypatch):
        yield


def fit(sizes, X, y, *, activation="relu", loss="softmax_cross_entropy", optimizer=None,
        batch_size=16, shuffle=True, sample_weight=None, seed=0, epochs=3):
    net = cbp.Network.mlp(sizes, activation=activation, loss=loss, dtype=X.dtype, seed=seed)
    history = net.fit(X, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                      sample_weight=sample_weight, progress=False,
                      optimizer=optimizer or cbp.SGD(lr=0.05))
    return history.history["loss"], net.parameters()


def gathered(fn):
    """fn() with work on OpenBLAS's threads: assert that it was used and
    that the pool was not."""
    jobs, pool_jobs = _engine.ob_gather_jobs(), _engine.pool_jobs()
    result = fn()
    assert _engine.ob_gather_jobs() > jobs, "no work ran on OpenBLAS's threads"
    assert _engine.pool_jobs() == pool_jobs, "a step took cbp's pool"
    return result


def without(fn):
    old = _engine.set_ob_gather(False)
    try:
        jobs = _engine.ob_gather_jobs()
        result = fn()
        assert _engine.ob_gather_jobs() == jobs
        return result
    finally:
        _engine.set_ob_gather(old)


def assert_same_fit(a, b):
    (loss_a, params_a), (loss_b, params_b) = a, b
    assert loss_a == loss_b
    for p, q in zip(params_a, params_b):
        np.testing.assert_array_equal(p, q)


CASES = [
    # sizes, activation, loss, batch
    ([784, 256, 128, 10], "relu", "softmax_cross_entropy", 32),
    ([37, 100, 23, 5], "tanh", "mse", 9),
    ([20, 64, 3], "gelu", "binary_cross_entropy", 2),   # one row per part
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes, activation, loss, batch", CASES, ids=str)
@pytest.mark.parametrize("weighted", [False, True])
def test_the_fit_is_the_fit_without_it_bit_for_bit(sizes, activation, loss, batch, dtype,
                                                  weighted):
    X, y = data(sizes, 7 * batch + 1, loss, dtype)   # a last batch of one row
    w = np.random.default_rng(3).random(len(X)).astype(dtype) if weighted else None

    def run():
        return fit(sizes, X, y, activation=activation, loss=loss, batch_size=batch,
                   sample_weight=w)

    assert_same_fit(gathered(run), without(run))


# Layers whose passes are split (n · width · itemsize >= 512 KiB) next to
# ones whose passes are not.
PASS_CASES = [
    # sizes, activation, loss, batch, dtype
    ([64, 1024, 512, 5], "relu", "softmax_cross_entropy", 128, np.float32),
    ([48, 2048, 3], "tanh", "binary_cross_entropy", 100, np.float32),     # width off 128
    ([64, 1030, 700, 4], "gelu", "mse", 130, np.float32),                   # shares off lines
    ([64, 512, 600, 3], "identity", "softmax_cross_entropy", 128, np.float64),
    ([30, 1024, 1024, 6], "sigmoid", "softmax_cross_entropy", 64, np.float64),
    ([32, 64, 1100], "relu", "mse", 128, np.float32),                       # the last layer's
]


@pytest.mark.parametrize("sizes, activation, loss, batch, dtype", PASS_CASES, ids=str)
@pytest.mark.parametrize("shuffle", [True, False])
def test_large_layers_passes_give_the_fit_without_them_bit_for_bit(sizes, activation, loss,
                                                                  batch, dtype, shuffle):
    X, y = data(sizes, 3 * batch + 1, loss, dtype)
    w = np.random.default_rng(5).random(len(X)).astype(dtype)

    def run():
        return fit(sizes, X, y, activation=activation, loss=loss, batch_size=batch,
                   sample_weight=w, shuffle=shuffle, epochs=2)

    assert_same_fit(gathered(run), without(run))


@pytest.mark.parametrize("sizes, activation, loss, batch, dtype", PASS_CASES[:2], ids=str)
def test_train_step_splits_large_layers_passes(sizes, activation, loss, batch, dtype):
    X, y = data(sizes, batch, loss, dtype)

    def run():
        net = cbp.Network.mlp(sizes, activation=activation, loss=loss, dtype=dtype, seed=0)
        opt = cbp.SGD(lr=0.1)
        losses = [net.train_step(X, y, opt) for _ in range(3)]
        return losses, net.parameters()

    assert_same_fit(gathered(run), without(run))


def test_small_layers_passes_stay_on_the_caller():
    """784-256-128-10 at batch 32: no pass reaches 512 KiB, and batches in
    sequence need no gather."""
    sizes = [784, 256, 128, 10]
    X, y = data(sizes, 96, "softmax_cross_entropy", np.float32)
    jobs = _engine.ob_gather_jobs()
    fit(sizes, X, y, batch_size=32, shuffle=False)
    assert _engine.ob_gather_jobs() == jobs


@pytest.mark.parametrize("threads", [3, 4, 8])
def test_more_threads_than_cores(threads):
    sizes = [50, 1024, 6]
    X, y = data(sizes, 403, "softmax_cross_entropy", np.float32)

    def run():
        return fit(sizes, X, y, batch_size=130)

    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        assert_same_fit(gathered(run), without(run))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_optimizer_that_stores_the_gradient(dtype):
    sizes = [60, 48, 32, 4]
    X, y = data(sizes, 150, "softmax_cross_entropy", dtype)

    def run():
        return fit(sizes, X, y, batch_size=16, optimizer=cbp.Adam(lr=1e-3))

    assert_same_fit(gathered(run), without(run))


@pytest.mark.parametrize("lr", [1e12, 1e30])   # 1e30: the guard sends steps to the checked path
@pytest.mark.parametrize("sizes", [[20, 30, 3], [20, 1100, 3]], ids=str)
def test_a_diverging_fit_stops_as_without_it(sizes, lr):
    """The gather's max |x| and the split passes' maxima feed the fused
    update's overflow guard; at a huge learning rate both fits stop at
    the same batch, same weights."""
    X, y = data(sizes, 200, "softmax_cross_entropy", np.float32)
    X[17] *= 1e30

    def run():
        net = cbp.Network.mlp(sizes, seed=0)
        try:
            net.fit(X, y, epochs=3, batch_size=120, optimizer=cbp.SGD(lr=lr),
                    progress=False)
            outcome = "finished"
        except (FloatingPointError, ValueError, RuntimeError) as exc:
            outcome = str(exc)
        return outcome, net.parameters()

    a, b = gathered(run), without(run)
    assert a[0] == b[0]
    for p, q in zip(a[1], b[1]):
        np.testing.assert_array_equal(p, q)
        assert np.isfinite(p).all()


def test_not_on_one_blas_thread():
    sizes = [30, 20, 3]
    X, y = data(sizes, 100, "softmax_cross_entropy", np.float32)
    jobs = _engine.ob_gather_jobs()
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        fit(sizes, X, y)
    assert _engine.ob_gather_jobs() == jobs


def test_not_for_batches_in_sequence():
    sizes = [30, 20, 3]
    X, y = data(sizes, 100, "softmax_cross_entropy", np.float32)
    jobs = _engine.ob_gather_jobs()
    fit(sizes, X, y, shuffle=False)
    assert _engine.ob_gather_jobs() == jobs


def test_not_for_steps_on_the_pool(monkeypatch):
    monkeypatch.setattr(cbp_threads, "POOL_MAX_WORK", float("inf"))
    sizes = [30, 20, 3]
    X, y = data(sizes, 100, "softmax_cross_entropy", np.float32)
    old = _engine.set_pool(True)
    try:
        _engine.pool_settle()   # nothing to stand aside for (fit would not anyway)
        jobs, pool_jobs = _engine.ob_gather_jobs(), _engine.pool_jobs()
        fit(sizes, X, y)
        assert _engine.pool_jobs() > pool_jobs, "the steps did not take the pool"
        assert _engine.ob_gather_jobs() == jobs
    finally:
        _engine.set_pool(old)


def test_the_environment_switch():
    code = ("import numpy as np, threadpoolctl, cbp, cbp._threads as t\n"
            "from cbp import _engine\n"
            "t.SINGLE_THREAD_WORK = 0.0; t.POOL_MAX_WORK = 0.0\n"
            "X = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)\n"
            "y = np.arange(64) % 3\n"
            "with threadpoolctl.threadpool_limits(2, user_api='blas'):\n"
            "    cbp.Network.mlp([10, 8, 3], seed=0).fit(X, y, epochs=2, batch_size=8,\n"
            "                                        optimizer=cbp.SGD(lr=0.1), progress=False)\n"
            "print(_engine.ob_gather_jobs())\n")
    counts = {}
    for value in ("0", "1"):
        env = dict(os.environ, CBP_OB_GATHER=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        counts[value] = int(out.stdout.split()[-1])
    assert counts == {"0": 0, "1": 16}


def _child_fit():
    sizes = [30, 40, 3]
    X, y = data(sizes, 120, "softmax_cross_entropy", np.float32)
    jobs = _engine.ob_gather_jobs()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        _, params = fit(sizes, X, y, batch_size=10)
    return _engine.ob_gather_jobs() > jobs, [p.tolist() for p in params]


@needs_fork
def test_a_forked_child_gathers_on_its_own_openblas_threads():
    sizes = [30, 40, 3]
    X, y = data(sizes, 120, "softmax_cross_entropy", np.float32)
    _, params = gathered(lambda: fit(sizes, X, y, batch_size=10))  # the parent's workers run
    took, child_params = in_forked_child(_child_fit)
    assert took
    for a, b in zip(child_params, params):
        np.testing.assert_array_equal(np.asarray(a, np.float32), b)


def test_two_networks_fitting_at_once():
    """Each Python thread's fit hands its gathers to the same OpenBLAS
    workers; each ends exactly as when fit alone."""
    sizes = [40, 60, 30, 5]
    X, y = data(sizes, 600, "softmax_cross_entropy", np.float32)

    def train(seed):
        return fit(sizes, X, y, batch_size=12, seed=seed, epochs=4)

    alone = [train(0), train(1)]
    jobs = _engine.ob_gather_jobs()
    results = in_threads(train, [0, 1])
    assert _engine.ob_gather_jobs() > jobs
    for got, expected in zip(results, alone):
        assert_same_fit(got, expected)


# A stand-in for OpenBLAS's blas_level1_thread that breaks its contract,
# bound before the real one in a fresh process: the self-test must refuse
# it, and training must run as without it (the work on the caller).
_FAKE_LEVEL1 = r'''
import ctypes, sys
import numpy as np
from cbp import _engine

ITEM = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                        ctypes.c_double, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                        ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p)
calls = []

@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                  ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_int)
def level1(mode, m, n, k, alpha, a, lda, b, ldb, c, ldc, function, nthreads):
    calls.append(mode)
    item = ITEM(function)
    kind = sys.argv[1]
    if kind == "runs_nothing":
        return 0
    if kind == "on_other_threads":    # the caller runs no item: a worker claims part 0
        import threading
        ts = [threading.Thread(target=item, args=(1, 0, 0, 0.0, a, 0, b, 0, c, 0, None))
              for _ in range(m)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        return 0
    if kind == "skips_after_the_probe" and len(calls) > 2:
        m -= 1                        # the caller must run the part left
    for i in range(m):
        if kind == "wrong_argument":
            item(1, 0, 0, 0.0, b if i else None, 0, None, 0, None, 0, None)
        elif kind == "runs_twice":
            item(1, 0, 0, 0.0, a, 0, b, 0, c, 0, None)
            item(1, 0, 0, 0.0, a, 0, b, 0, c, 0, None)
        elif kind == "runs_one_part_less":
            if i < m - 1:
                item(1, 0, 0, 0.0, a, 0, b, 0, c, 0, None)
        else:
            item(1, 0, 0, 0.0, a, 0, b, 0, c, 0, None)
    return 0

assert _engine.bind_blas_level1(ctypes.cast(level1, ctypes.c_void_p).value)
import threadpoolctl, cbp, cbp._threads as t
t.SINGLE_THREAD_WORK = 0.0; t.POOL_MAX_WORK = 0.0
X = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
y = np.arange(64) % 3
nets = []
for on in (True, False):
    _engine.set_ob_gather(on)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        net = cbp.Network.mlp([10, 8, 3], seed=0)
        net.fit(X, y, epochs=2, batch_size=8, optimizer=cbp.SGD(lr=0.1), progress=False)
    nets.append(net.parameters())
same = all(np.array_equal(p, q) for p, q in zip(*nets))
print(len(calls) > 0, _engine.ob_gather_jobs(), same)
'''


@pytest.mark.parametrize("kind", ["runs_nothing", "wrong_argument", "runs_one_part_less"])
def test_the_self_test_refuses_an_entry_that_breaks_its_contract(kind):
    out = subprocess.run([sys.executable, "-c", _FAKE_LEVEL1, kind], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    probed, jobs, same = out.stdout.split()
    assert probed == "True"      # the stand-in was tried ...
    assert jobs == "0"           # ... refused, so no work went to it
    assert same == "True"        # and the fit is the fit without it


@pytest.mark.parametrize("kind", ["runs_twice", "on_other_threads", "skips_after_the_probe"])
def test_entries_that_run_items_oddly_still_run_each_part_once(kind):
    """Every call of an item claims a part not yet claimed (or none), a
    worker takes part 0 if the caller runs no item, and the caller runs
    whatever parts are left when the entry returns: such an entry is used,
    and the fit is the fit without it."""
    out = subprocess.run([sys.executable, "-c", _FAKE_LEVEL1, kind],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    probed, jobs, same = out.stdout.split()
    assert probed == "True" and int(jobs) > 0 and same == "True"


def test_parts_run_under_the_callers_floating_point_control():
    """OpenBLAS's workers keep their own MXCSR (SciPy's build does not pass
    the caller's on); cbp's parts on them run under the caller's, so a
    caller that flushes subnormals (PyTorch's set_flush_denormal sets
    FTZ and DAZ on its own thread) has its passes flushed on every thread,
    as the serial pass would be."""
    torch = pytest.importorskip("torch")
    assert _engine.ob_fpenv_mismatches() == 0
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        mismatches = _engine.ob_fpenv_mismatches()
    finally:
        torch.set_flush_denormal(False)
    assert mismatches == 0
    assert _engine.ob_fpenv_mismatches() == 0


def test_a_step_under_flush_to_zero_is_the_step_without_the_split():
    """End to end: with subnormals flushed on the caller's thread, a step
    whose wide hidden layer's deltas would be subnormal (tiny output
    weights) is the same with its passes on OpenBLAS's threads as without."""
    torch = pytest.importorskip("torch")
    sizes = [32, 1100, 3]
    X, y = data(sizes, 128, "softmax_cross_entropy", np.float32)

    def net_of():
        net = cbp.Network.mlp(sizes, seed=0)
        W_out = net.layers[1].W
        W_out *= np.float32(1e-38)        # subnormal, set before flushing starts
        return net

    def step(net):
        def run():
            loss = net.train_step(X, y, cbp.SGD(lr=0.5))
            return [loss], net.parameters()
        return run

    nets = [net_of() for _ in range(3)]
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        flushed = gathered(step(nets[0])), without(step(nets[1]))
    finally:
        torch.set_flush_denormal(False)
    assert_same_fit(*flushed)
    kept = step(nets[2])()
    # Flushing changed the step, so the comparison above saw subnormals.
    assert any(not np.array_equal(p, q) for p, q in zip(flushed[0][1], kept[1]))
