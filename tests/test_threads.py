"""Threads (issue 5; docs/threads.md).

* Every call into C releases the GIL — shown without timing: a thread
  spinning in Python keeps advancing while another thread is inside a
  long C call (were the GIL held, the spinner would stall for the whole
  call).
* Two threads training two different networks run at the same time and
  each gets bit for bit the parameters it gets alone.
* Threads sharing one network are serialised by its lock: hammered by
  training, inference, backward, save and copy at once, every result is
  the result of one of the consistent snapshots the network went
  through, in order, and no update is lost.
* fit holds the lock per chunk, not per call: another thread's predict
  gets through while a long fit runs.
* The process's BLAS thread count is what it was after all that.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

import cbp
import cbp.network
from cbp import ops
from concurrency import in_forked_child, in_threads, needs_fork

threadpoolctl = pytest.importorskip("threadpoolctl")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@pytest.fixture
def one_blas_thread():
    with threadpoolctl.threadpool_limits(1):
        yield


@pytest.fixture
def fast_switching():
    """Python threads switch every 1 ms (default 5 ms), so Python-level
    gaps of the spinner stay small."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    yield
    sys.setswitchinterval(old)


def blas_threads():
    return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i.get("internal_api") == "openblas"}


# --------------------------------------------------------------------------
# Every C call releases the GIL
# --------------------------------------------------------------------------

def spinner_gap(call):
    """Run `call` while another thread spins in Python; return (duration of
    the call, the longest time the spinner did not advance during it)."""
    ticks = []
    stop = threading.Event()
    started = threading.Event()

    def spin():
        append, now = ticks.append, time.perf_counter
        while not stop.is_set():
            for _ in range(50):
                pass
            append(now())
            started.set()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    started.wait(5)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    thread.join(10)
    inside = [t for t in ticks if t0 < t < t1]
    points = [t0] + inside + [t1]
    return t1 - t0, max(b - a for a, b in zip(points, points[1:]))


def _rng():
    return np.random.default_rng(0)


def _network_call(method):
    def make(scale):
        rng = _rng()
        net = cbp.Network.mlp([256, 512, 256, 10], dtype="float64", seed=0)
        n = 2000 * scale
        X = rng.standard_normal((n, 256))
        y = rng.integers(0, 10, n)
        opt = cbp.SGD(lr=1e-4)
        return {
            "forward": lambda: net.forward(X),
            "predict_proba": lambda: net.predict_proba(X),
            "evaluate": lambda: net.evaluate(X, y),
            "backward": lambda: net.backward(X, y),
            "train_step": lambda: net.train_step(X, y, opt),
            "fit": lambda: net.fit(X, y, epochs=1, batch_size=n, optimizer=opt,
                                   progress=False),
        }[method]
    return make


def _ops_call(name):
    def make(scale):
        rng = _rng()
        k = int(300 * scale ** (1 / 3))
        A, B, W = (rng.standard_normal((k, k)) for _ in range(3))
        b = np.zeros(k)
        Z = rng.standard_normal(250_000 * scale)
        logits = Z.reshape(-1, 50)
        labels = rng.integers(0, 50, logits.shape[0])
        return {
            "linear_forward": lambda: ops.linear_forward(A, W, b),
            "outer": lambda: ops.outer(A, B),
            "matvec_t": lambda: ops.matvec_t(W, A),
            "linear_backward": lambda: ops.linear_backward(A, B, W),
            "backprop_delta": lambda: ops.backprop_delta(W, A, B, "gelu"),
            "activation_forward": lambda: ops.activation_forward("gelu", Z),
            "activation_derivative": lambda: ops.activation_derivative("gelu", Z),
            "softmax_cross_entropy": lambda: ops.softmax_cross_entropy(logits, labels),
            "add_gate_backward": lambda: ops.add_gate_backward(Z),
            "mul_gate_backward": lambda: ops.mul_gate_backward(Z, Z, Z),
            "relu_gate_backward": lambda: ops.relu_gate_backward(Z, Z),
        }[name]
    return make


C_CALLS = {f"Network.{m}": _network_call(m) for m in
           ("forward", "predict_proba", "evaluate", "backward", "train_step", "fit")}
C_CALLS.update({f"ops.{name}": _ops_call(name) for name in ops.__all__ if name != "ACTIVATIONS"})


@pytest.mark.parametrize("name", list(C_CALLS))
def test_c_calls_release_the_gil(name, one_blas_thread, fast_switching):
    """While one thread is inside the C call, a Python thread keeps
    running: its longest stall is a small part of the call.  (Were the
    GIL held, the stall would be the whole call, at every attempt.)
    Inputs grow until a call takes at least 50 ms (timed after a warm-up
    call) or its arrays reach 64 MB (the memory-bound gates then take
    ~20 ms); since the operating system may also stall the spinner for a
    few milliseconds on a busy machine, up to 10 attempts."""
    scale, call = 1, None
    while True:
        call = C_CALLS[name](scale)
        call()
        t0 = time.perf_counter()
        call()
        if time.perf_counter() - t0 >= 0.05 or scale >= 32:
            break
        scale *= 2
    results = []
    for _ in range(10):
        duration, gap = spinner_gap(call)
        results.append((round(duration, 4), round(gap, 4)))
        if gap < 0.5 * duration and duration >= 0.005:
            return
    pytest.fail(f"{name}: the spinner stalled for most of the call "
                f"(duration, longest stall) = {results}: the GIL is held in C")


# --------------------------------------------------------------------------
# Two networks, two threads
# --------------------------------------------------------------------------

def _task(seed, epochs=3, hidden=64, variant=None):
    """Train a network of its own (architecture, data and optimizer from
    `seed`, or from `variant` when given): fit, then train_step, then a
    backward; return its parameters, its losses and when it ran."""
    rng = np.random.default_rng(seed)
    variant = seed if variant is None else variant
    sizes = [32, hidden + 16 * variant, 10]
    X = rng.standard_normal((2048, 32)).astype(np.float32)
    y = rng.integers(0, 10, 2048)

    def run():
        start = time.perf_counter()
        net = cbp.Network.mlp(sizes, activation=["relu", "tanh"][variant % 2], seed=seed)
        opt = [cbp.Adam(lr=1e-3), cbp.SGD(lr=0.05, momentum=0.9)][variant % 2]
        history = net.fit(X, y, epochs=epochs, batch_size=64, optimizer=opt, progress=False)
        losses = list(history.history["loss"])
        for i in range(0, 512, 32):
            losses.append(net.train_step(X[i:i + 32], y[i:i + 32], opt))
        losses.append(net.backward(X[:100], y[:100]))
        return [p.copy() for p in net.parameters()], losses, (start, time.perf_counter())
    return run


def _run_in_threads(tasks):
    results = [None] * len(tasks)
    errors = []
    barrier = threading.Barrier(len(tasks))

    def worker(i):
        try:
            barrier.wait()
            results[i] = tasks[i]()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(tasks))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    assert not errors, errors
    return results, wall


def test_two_networks_train_in_parallel_each_as_alone(one_blas_thread):
    """Each thread's network ends bit for bit as when trained alone (two
    different architectures, activations and optimizers, ~0.1 s each)."""
    tasks = [_task(0, epochs=15), _task(1, epochs=15)]
    alone = [task() for task in tasks]
    overlapped = False
    for _ in range(3):
        together, _ = _run_in_threads(tasks)
        for (p_alone, l_alone, _), (p_together, l_together, _) in zip(alone, together):
            assert l_together == l_alone
            for a, b in zip(p_alone, p_together):
                assert a.tobytes() == b.tobytes()
        (s0, e0), (s1, e1) = together[0][2], together[1][2]
        overlapped = overlapped or min(e0, e1) > max(s0, s1)
    assert overlapped, "the two trainings never ran at the same time"


def test_one_optimizer_shared_by_two_networks_in_two_threads(one_blas_thread):
    """An optimizer keeps one state per network: shared by two networks
    stepping in two threads, each network ends as with an optimizer of its
    own."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((64, 16)).astype(np.float32)
    y = rng.integers(0, 4, 64)

    def steps(net, opt):
        def run():
            for i in range(300):
                rows = slice((i * 8) % 64, (i * 8) % 64 + 8)
                net.train_step(X[rows], y[rows], opt)
            return [p.copy() for p in net.parameters()]
        return run

    expected = [steps(cbp.Network.mlp([16, 8 + s, 4], seed=s), cbp.Adam(lr=1e-2))()
                for s in (0, 1)]
    shared = cbp.Adam(lr=1e-2)
    nets = [cbp.Network.mlp([16, 8 + s, 4], seed=s) for s in (0, 1)]
    results, _ = _run_in_threads([steps(nets[0], shared), steps(nets[1], shared)])
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            assert a.tobytes() == b.tobytes()
    assert all(shared._states[net].step == 300 for net in nets)


# --------------------------------------------------------------------------
# One network, many threads
# --------------------------------------------------------------------------

def _snapshots(net, X, y, lr, steps):
    """Everything observable of `net` after 0, 1, …, steps SGD steps on
    (X, y), computed serially on a copy."""
    twin = net.copy()
    opt = cbp.SGD(lr=lr)
    snaps = []
    for k in range(steps + 1):
        snaps.append(dict(
            params=np.concatenate([p.ravel() for p in twin.parameters()]).tobytes(),
            forward=twin.forward(X).tobytes(),
            proba=twin.predict_proba(X).tobytes(),
            evaluate=twin.evaluate(X, y)["loss"],
            backward=twin.backward(X, y)))
        if k < steps:
            twin.train_step(X, y, opt)
    return snaps


def _index_of(snaps, key, value):
    hits = [k for k, s in enumerate(snaps) if s[key] == value]
    assert hits, f"a {key} result matches no state the network went through"
    return hits


def _non_decreasing(observations):
    """Each observation is the list of snapshot indices it matches; some
    choice of them must be non-decreasing (the parameters only move on)."""
    low = 0
    for hits in observations:
        ok = [k for k in hits if k >= low]
        assert ok, f"a later result shows an earlier state ({hits} after {low})"
        low = min(ok)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hammering_one_network_from_four_threads(dtype, tmp_path):
    """Two threads train (train_step with one stateless SGD), two read
    (forward, predict_proba, evaluate; backward, save, copy), all at once
    on one network.  Every read equals the read of one of the states the
    network went through, in order; no step is lost; nothing fails."""
    rng = np.random.default_rng(1)
    net = cbp.Network.mlp([12, 24, 3], activation="tanh", dtype=dtype, seed=2)
    X = rng.standard_normal((32, 12)).astype(dtype)
    y = rng.integers(0, 3, 32)
    per_trainer, lr = 60, 0.05
    snaps = _snapshots(net, X, y, lr, 2 * per_trainer)
    assert len({s["params"] for s in snaps}) == len(snaps)  # every step moves
    opt = cbp.SGD(lr=lr)
    done = threading.Event()
    seen = {"a": [], "b": []}
    saved = []

    def trainer():
        for _ in range(per_trainer):
            net.train_step(X, y, opt)

    def reader_a():
        while not done.is_set():
            seen["a"].append(("forward", net.forward(X).tobytes()))
            seen["a"].append(("proba", net.predict_proba(X).tobytes()))
            seen["a"].append(("evaluate", net.evaluate(X, y)["loss"]))

    def reader_b():
        i = 0
        while not done.is_set():
            seen["b"].append(("backward", net.backward(X, y)))
            path = tmp_path / f"m{i % 3}.npz"
            net.save(path)
            loaded = cbp.load(path)
            seen["b"].append(("params", np.concatenate(
                [p.ravel() for p in loaded.parameters()]).tobytes()))
            seen["b"].append(("params", np.concatenate(
                [p.ravel() for p in net.copy().parameters()]).tobytes()))
            i += 1
        saved.append(i)

    errors = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                done.set()
        return run

    trainers = [threading.Thread(target=guarded(trainer)) for _ in range(2)]
    readers = [threading.Thread(target=guarded(reader_a)),
               threading.Thread(target=guarded(reader_b))]
    for t in readers + trainers:
        t.start()
    for t in trainers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert not errors, errors

    final = np.concatenate([p.ravel() for p in net.parameters()])
    assert np.isfinite(final).all()
    assert final.tobytes() == snaps[-1]["params"], "a training step was lost or raced"
    for name, observations in seen.items():
        assert observations, f"reader {name} never ran"
        _non_decreasing([_index_of(snaps, key, value) for key, value in observations])
    assert saved and saved[0] > 0
    # backward's loss and evaluate's loss agree state by state.
    rtol = 1e-6 if dtype == "float32" else 1e-13
    for s in snaps:
        assert s["backward"] == pytest.approx(s["evaluate"], rel=rtol)


def test_two_threads_fitting_one_network(monkeypatch):
    """Two fits of one network in two threads (the lock is taken per chunk,
    so their chunks may interleave; how is up to the scheduler): neither
    fails, and every batch of both makes exactly one step (the shared
    Adam's step count)."""
    monkeypatch.setattr(cbp.network, "_WORK_PER_CALL", 1.0)  # one batch per chunk,
    monkeypatch.setattr(cbp.network, "_SECONDS_PER_CALL", 0.0)  # and no more later
    rng = np.random.default_rng(3)
    X = rng.standard_normal((640, 10)).astype(np.float32)
    y = rng.integers(0, 3, 640)
    net = cbp.Network.mlp([10, 16, 3], seed=0)
    chunks = []  # the thread of each chunk, in the order they ran
    net._engine = RecordingEngine(net._engine, chunks)
    opt = cbp.Adam(lr=1e-3)
    histories = []
    _run_in_threads([
        lambda: histories.append(net.fit(X, y, epochs=3, batch_size=32, optimizer=opt,
                                         progress=False)),
        lambda: histories.append(net.fit(X[:320], y[:320], epochs=4, batch_size=32,
                                         optimizer=opt, progress=False)),
    ])
    assert sorted(len(h.history["loss"]) for h in histories) == [3, 4]
    assert opt._states[net].step == 3 * 20 + 4 * 10
    assert all(np.isfinite(p).all() for p in net.parameters())
    assert len(chunks) == 3 * 20 + 4 * 10 and len(set(chunks)) == 2


class RecordingEngine:
    """Wraps an Engine and records which thread ran each train_batches."""

    def __init__(self, real, log):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_log", log)

    def __getattr__(self, name):
        attr = getattr(object.__getattribute__(self, "_real"), name)
        if name != "train_batches":
            return attr

        def train_batches(*args, **kwargs):
            object.__getattribute__(self, "_log").append(threading.get_ident())
            return attr(*args, **kwargs)
        return train_batches

    def __setattr__(self, name, value):
        setattr(object.__getattribute__(self, "_real"), name, value)


def test_predict_gets_through_while_another_thread_fits():
    """fit does not hold the network for the whole call: a predict from
    another thread returns while the fit is still running."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((4096, 64)).astype(np.float32)
    y = rng.integers(0, 10, 4096)
    net = cbp.Network.mlp([64, 256, 10], seed=0)
    started, finished = threading.Event(), threading.Event()
    errors = []

    def fit():
        try:
            net.fit(X, y, epochs=1000, batch_size=64, progress=False,
                    callbacks=[lambda epoch, logs: started.set() or finished.is_set()])
        except BaseException as exc:
            errors.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=fit)  # stops at the epoch's end once `finished`
    thread.start()
    try:
        assert started.wait(60), "fit never finished an epoch"
        for _ in range(5):
            out = net.predict(X[:8])
            assert out.shape == (8,)
        assert thread.is_alive(), "fit ended before the predicts: nothing was shown"
    finally:
        finished.set()
        thread.join(120)
    assert not errors, errors


def test_blas_thread_count_is_restored_after_concurrent_calls():
    """cbp switches OpenBLAS to one thread around small steps and back
    after; from several threads at once, the process's setting is what it
    was (here: 2 threads, which makes cbp switch at every call)."""
    if not blas_threads():
        pytest.skip("no OpenBLAS found by threadpoolctl")
    with threadpoolctl.threadpool_limits(2):
        before = blas_threads()
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, 20)).astype(np.float32)
        y = rng.integers(0, 5, 64)

        def work(seed):
            def run():
                net = cbp.Network.mlp([20, 30, 5], seed=seed)
                for _ in range(200):
                    net.train_step(X, y, "sgd")
                    net.predict(X)
                return [p.copy() for p in net.parameters()]
            return run

        results, _ = _run_in_threads([work(s) for s in range(4)])
        assert blas_threads() == before
        assert all(np.isfinite(p).all() for params in results for p in params)


# A thread that keeps writing an out-of-range label into the caller's
# array while the main thread trains and evaluates on it.  Labels are
# checked with the GIL held, and C runs without it, using each label as
# an index: C must read a copy made as the labels were checked, never the
# caller's array.  (When it read the caller's array, each of these calls
# crashed the interpreter within half a second.)  A subprocess, so that a
# crash fails the test instead of ending pytest.
_LABEL_RACE = r"""
import sys, threading, time
import numpy as np
import cbp
from cbp import ops

what = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.standard_normal((512, 64)).astype(np.float32)
y = rng.integers(0, 10, 512)
Z = rng.standard_normal((512, 10))
net = cbp.Network.mlp([64, 32, 10], seed=0)
done = False

def mutate():
    while not done:
        y[100] = 10**15
        y[100] = 3

threading.Thread(target=mutate, daemon=True).start()
calls = {
    "evaluate": lambda: net.evaluate(X, y),
    "train_step": lambda: net.train_step(X[:256], y[:256], "sgd"),
    "backward": lambda: net.backward(X, y),
    "fit": lambda: net.fit(X, y, epochs=1, batch_size=64, progress=False),
    "ops": lambda: ops.softmax_cross_entropy(Z, y),
}
start, refused = time.perf_counter(), 0
while time.perf_counter() - start < 1.5:
    try:
        calls[what]()
    except ValueError as e:
        assert "10000000" in str(e), e      # the bad label, named
        refused += 1
done = True
print("ok", refused)
"""


@pytest.mark.parametrize("what", ["evaluate", "train_step", "backward", "fit", "ops"])
def test_labels_changed_during_a_call_never_reach_c(what):
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _LABEL_RACE, what], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok"), proc.stdout


def _child_blas_threads():
    return blas_threads()


@needs_fork
@pytest.mark.skipif(usable_cpus() < 2, reason="needs two CPUs: OpenBLAS at one thread anyway")
def test_a_child_forked_during_another_thread_s_call_gets_the_thread_count_back():
    """A small step runs with OpenBLAS at one thread and puts the count
    back when it returns; a child forked meanwhile by another thread has
    no thread to put it back, and kept one BLAS thread for good (NumPy's
    and SciPy's work too, and cbp's pool never ran: 9 of 10 children in a
    review).  cbp puts the count back in the child (os.register_at_fork)."""
    parent = blas_threads()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 20)).astype(np.float32)
    y = rng.integers(0, 3, 512)
    net = cbp.Network.mlp([20, 16, 3], seed=0)   # one BLAS thread per step
    stop = threading.Event()

    def train():
        while not stop.is_set():
            net.fit(X, y, epochs=1, batch_size=8, progress=False)

    worker = threading.Thread(target=train)
    worker.start()
    try:
        time.sleep(0.05)
        children = [in_forked_child(_child_blas_threads) for _ in range(4)]
    finally:
        stop.set()
        worker.join()
    assert all(child == parent for child in children), (parent, children)
    assert blas_threads() == parent


def test_threads_first_steps_with_a_named_optimizer_share_it():
    """Threads making their first train_step(..., "adam") at once get the
    network's one Adam, so no step's moments or count are lost (each
    could make an Adam of its own, and all but one were dropped: 10 of
    300 runs in a review, with a short switch interval)."""
    X, y = cbp.datasets.load_digits()
    X, y = X[:32], y[:32]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(300):
            net = cbp.Network.mlp([64, 32, 10], seed=0)
            barrier = threading.Barrier(4)

            def work(_):
                barrier.wait()
                for _ in range(5):
                    net.train_step(X, y, "adam")

            in_threads(work, range(4))
            assert net._named_optimizers["adam"]._states[net].step == 20
    finally:
        sys.setswitchinterval(old)
