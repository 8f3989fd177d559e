"""No leaks: memory stays flat over many training steps, fit epochs, kernel
calls and network create/destroy cycles.

Each workload runs once to warm up (caches, BLAS buffers, the allocator's
arenas, lazily imported modules), then again with ``tracemalloc`` tracing
and the resident set size (RSS) read before and after.  tracemalloc sees
every allocation made through Python's allocators, NumPy's data buffers
and ``PyMem_Malloc`` (the Cython bindings' own buffers); RSS also sees raw
``malloc`` in C.  After ``gc.collect()``:

- the bytes that tracemalloc still holds from the measured run must stay
  under ``CBP_LEAK_TRACE_KB`` (default 256 KB: what the interpreter's
  caches keep is a few KB to ~40 KB, while a leak of 16 bytes per step or
  of 64 bytes per network already exceeds it);
- RSS may grow by less than ``CBP_LEAK_RSS_MB`` (default 5 MB);
- no ``Engine`` or ``OptimizerState`` (the C plans) outlives its network,
  and a deleted network is freed.

The counts are environment variables, so a long run can be done by hand
(see docs/reliability.md)::

    CBP_LEAK_STEPS=100000 CBP_LEAK_CYCLES=10000 python -m pytest tests/test_leaks.py -s

==================  =======  ==============================================
variable            default  meaning
==================  =======  ==============================================
CBP_LEAK_STEPS      20000    train_steps per measured run (and STEPS/10
                             rounds of calls of every cbp.ops kernel)
CBP_LEAK_FITS       200      fit calls of CBP_LEAK_EPOCHS epochs each
CBP_LEAK_EPOCHS     5        epochs per fit call
CBP_LEAK_CYCLES     1000     network create/train/save/load/destroy cycles
CBP_LEAK_RSS_MB     5        allowed RSS growth
CBP_LEAK_TRACE_KB   256      allowed tracemalloc growth
==================  =======  ==============================================

RSS comes from /proc/self/statm on Linux, from the peak RSS of
``resource.getrusage`` on other POSIX systems; where neither exists, or
under AddressSanitizer (whose quarantine keeps freed memory resident on
purpose), only tracemalloc is checked and the test says so by skipping
at its end.
"""
from __future__ import annotations

import ctypes
import gc
import os
import pickle
import sys
import time
import tracemalloc

import numpy as np
import pytest

import cbp
from cbp import _engine, ops


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value.strip():
        return default
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}")
    return n


STEPS = _env_int("CBP_LEAK_STEPS", 20_000)
FITS = _env_int("CBP_LEAK_FITS", 200)
EPOCHS = _env_int("CBP_LEAK_EPOCHS", 5)
CYCLES = _env_int("CBP_LEAK_CYCLES", 1_000)
RSS_LIMIT = _env_int("CBP_LEAK_RSS_MB", 5) * 2**20
TRACE_LIMIT = _env_int("CBP_LEAK_TRACE_KB", 256) * 2**10


# ---------------------------------------------------------------- memory probes
def _under_asan() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def _rss_probe():
    """``(read_rss, None)`` or ``(None, why RSS cannot be checked)``."""
    if _under_asan():
        return None, "AddressSanitizer is loaded (its quarantine keeps freed memory resident)"
    if sys.platform.startswith("linux") and os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def current_rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        return current_rss, None
    try:
        import resource
    except ImportError:
        return None, f"no /proc/self/statm nor resource module on {sys.platform}"
    # Peak RSS: a leak still shows as growth of the peak after warm-up.
    unit = 1 if sys.platform == "darwin" else 1024

    def peak_rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit

    return peak_rss, None


READ_RSS, NO_RSS = _rss_probe()


def _settle():
    """Collect garbage and hand free heap pages back to the OS (glibc), so
    RSS reflects live memory."""
    for _ in range(3):
        gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _count(cls) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def check_flat(workload, warmup: int, count: int, what: str):
    """Run ``workload(warmup)``, then ``workload(count)`` measured; assert
    that tracemalloc and RSS stay flat.  Prints the figures (see them with
    ``pytest -s``)."""
    workload(warmup)
    _settle()
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:  # e.g. python -X tracemalloc: measure from a clean start
        tracemalloc.stop()
    rss_before = READ_RSS() if READ_RSS else None
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        workload(count)
        elapsed = time.perf_counter() - t0
        _settle()
        traced, traced_peak = tracemalloc.get_traced_memory()
        overhead = tracemalloc.get_tracemalloc_memory()
        top = tracemalloc.take_snapshot().statistics("lineno")[:5] if traced > TRACE_LIMIT else []
    finally:
        tracemalloc.stop()
        if was_tracing:
            tracemalloc.start()
    _settle()
    rss_after = READ_RSS() if READ_RSS else None

    lines = [f"{what}: {count} iterations in {elapsed:.1f} s; tracemalloc holds "
             f"{traced / 1024:.1f} KB (peak {traced_peak / 1024:.1f} KB, limit "
             f"{TRACE_LIMIT / 1024:.0f} KB)"]
    if rss_before is not None:
        lines.append(f"RSS {rss_before / 2**20:.1f} MB -> {rss_after / 2**20:.1f} MB "
                     f"({(rss_after - rss_before) / 2**20:+.2f} MB, limit "
                     f"{RSS_LIMIT / 2**20:.0f} MB)")
    report = "; ".join(lines)
    print("\n[leak] " + report)
    assert traced < TRACE_LIMIT, (
        f"{report}\nlargest holders:\n" + "\n".join(str(s) for s in top))
    if rss_before is not None:
        # tracemalloc's own tables were freed by stop(); _settle() trimmed.
        assert rss_after - rss_before < RSS_LIMIT, report
    return report


def finish(report: str):
    """tracemalloc passed; say so when RSS could not be checked."""
    if NO_RSS is not None:
        pytest.skip(f"tracemalloc flat, RSS not checked: {NO_RSS} ({report})")


# ---------------------------------------------------------------- data
def _data(n, n_in, n_out, loss, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, n_out, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, n_out)) > 0.5).astype(dtype)
    else:
        y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, y


# ---------------------------------------------------------------- workloads
@pytest.mark.parametrize("dtype,loss,make_optimizer", [
    ("float32", "softmax_cross_entropy", lambda: cbp.Adam(lr=1e-3)),
    ("float64", "mse", lambda: cbp.SGD(lr=1e-3, momentum=0.9, nesterov=True,
                                       weight_decay=1e-4)),
], ids=["float32-softmax-adam", "float64-mse-sgd"])
def test_train_steps_do_not_leak(dtype, loss, make_optimizer):
    """train_step on a tiny network, with backward/forward/predict/evaluate
    every 10th step and a refused (diverging) step every 50th."""
    net = cbp.Network.mlp([6, 8, 3], activation="tanh", loss=loss, dtype=dtype, seed=0)
    X, y = _data(16, 6, 3, loss, dtype)
    w = np.linspace(0.5, 1.5, 16).astype(dtype)
    optimizer = make_optimizer()
    # Huge inputs and lr = 1e30 make every step diverge (a non-finite loss,
    # gradient or update): it is refused and DivergenceError raised, again
    # and again.
    bad_net = cbp.Network.mlp([6, 3], loss=loss, dtype=dtype, seed=1)
    bad_opt = cbp.SGD(lr=1e30)
    X_bad = X * (1e30 if dtype == "float32" else 1e300)

    def workload(n):
        for i in range(n):
            net.train_step(X, y, optimizer)
            if i % 10 == 0:
                net.train_step(X[:1], y[:1], optimizer, sample_weight=w[:1])
                net.backward(X, y, sample_weight=w)
                net.forward(X)
                net.predict(X)
                net.evaluate(X, y)
            if i % 50 == 0:
                with pytest.raises(cbp.DivergenceError):
                    bad_net.train_step(X_bad, y, bad_opt)

    finish(check_flat(workload, min(2_000, STEPS), STEPS, f"train_step {dtype} {loss}"))
    assert np.isfinite(net._params).all()


def test_fit_epochs_do_not_leak():
    """Repeated fit calls (shuffled mini-batches, sample weights,
    validation, a callback) and evaluate/predict_proba on more rows than
    the engine's chunk."""
    net = cbp.Network.mlp([8, 16, 4], activation="relu", seed=0)
    X, y = _data(256, 8, 4, "softmax_cross_entropy", "float32")
    Xv, yv = _data(1500, 8, 4, "softmax_cross_entropy", "float32", seed=1)
    w = np.random.default_rng(2).random(256).astype(np.float32)
    optimizer = cbp.AdamW(lr=1e-3)
    seen = []

    def callback(epoch, logs):
        seen.append(epoch)
        del seen[:-1]

    def workload(n):
        for i in range(n):
            net.fit(X, y, epochs=EPOCHS, batch_size=16, optimizer=optimizer,
                    sample_weight=w if i % 2 else None, validation_data=(Xv, yv),
                    callbacks=[callback], progress=False)
            net.evaluate(Xv, yv)
            net.predict_proba(Xv)

    finish(check_flat(workload, min(10, FITS), FITS, f"fit x{EPOCHS} epochs"))
    assert len(net.history.history["loss"]) == EPOCHS


def test_kernel_calls_do_not_leak():
    """Every cbp.ops kernel, vector and batch forms, with and without out=
    (including out aliasing an input)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 4))
    b = rng.standard_normal(5)
    x = rng.standard_normal(4)
    X = rng.standard_normal((3, 4))
    d = rng.standard_normal(5)
    D = rng.standard_normal((3, 5))
    Z = rng.standard_normal((3, 4))
    y = np.array([0, 4, 2])
    out = np.empty((3, 5))
    Xf = np.asfortranarray(X.astype(np.float32))
    Wf = W.astype(np.float32)
    bf = b.astype(np.float32)

    def workload(n):
        for i in range(n):
            ops.linear_forward(x, W, b)
            ops.linear_forward(X, W, b, out=out)
            ops.linear_forward(Xf, Wf, bf)  # float32, copied to C order
            ops.outer(d, x)
            ops.outer(D, X)
            ops.matvec_t(W, d)
            ops.linear_backward(D, X, W)
            ops.linear_backward(d, x, W)
            ops.backprop_delta(W, D, Z, "relu")
            ops.backprop_delta(W, D, D[:, :4], "tanh", out=Z)  # out aliases nothing it reads
            ops.activation_forward("gelu", Z)
            ops.activation_derivative("sigmoid", Z, out=Z)     # in place
            ops.softmax_cross_entropy(D, y)
            ops.softmax_cross_entropy(d, 3)
            ops.add_gate_backward(d)
            ops.mul_gate_backward(d, d, b)
            ops.relu_gate_backward(Z, Z, out=Z)
            if i % 100 == 0:
                with pytest.raises(ValueError):
                    ops.linear_forward(X, W.T, b)

    rounds = max(1, STEPS // 10)
    finish(check_flat(workload, min(200, rounds), rounds, "kernels (17 calls a round)"))


def test_create_destroy_cycles_do_not_leak(tmp_path):
    """Networks built, trained, saved, loaded, copied, pickled and dropped:
    nothing stays behind, in memory or on disk."""
    X, y = _data(32, 6, 3, "softmax_cross_entropy", "float32")
    Xd = X.astype(np.float64)
    yr = np.random.default_rng(3).standard_normal((32, 2))
    path = tmp_path / "model.npz"
    shared_optimizer = cbp.Adam()  # outlives the networks: its per-network state must not

    def workload(n):
        for i in range(n):
            net = cbp.Network.mlp([6, 10, 3], activation="relu", seed=i)
            net.train_step(X, y, shared_optimizer)
            net.fit(X, y, epochs=1, batch_size=8, progress=False,
                    callbacks=[cbp.EarlyStopping(monitor="loss", patience=1)])
            net.save(path)
            same = cbp.load(path)
            assert same.predict(X[:4]).shape == (4,)
            clone = pickle.loads(pickle.dumps(same)).copy()
            reg = cbp.Network([cbp.Dense(6, 4, activation="sigmoid"), cbp.Dense(4, 2)],
                              loss="mse", dtype="float64")
            reg.train_step(Xd, yr, "sgd")
            del net, same, clone, reg

    engines, states = _count(_engine.Engine), _count(_engine.OptimizerState)
    report = check_flat(workload, min(50, CYCLES), CYCLES, "create/save/load/destroy")
    assert _count(_engine.Engine) == engines, "Engine objects outlive their networks"
    assert _count(_engine.OptimizerState) == states, "optimizer states outlive their networks"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"], \
        "save left temporary files behind"
    finish(report)


def test_deleted_network_is_freed(tmp_path):
    """A trained network (with optimizer state, history, an EarlyStopping
    that saw it, a save/load round trip) is freed once dropped."""
    import weakref

    X, y = _data(40, 5, 3, "softmax_cross_entropy", "float32")
    optimizer = cbp.Adam()
    stopper = cbp.EarlyStopping(monitor="val_loss", patience=2)
    net = cbp.Network.mlp([5, 7, 3], seed=0)
    net.fit(X, y, epochs=3, optimizer=optimizer, validation_data=(X, y),
            callbacks=[stopper], progress=False)
    net.save(tmp_path / "m.npz")
    loaded = cbp.load(tmp_path / "m.npz")
    refs = [weakref.ref(net), weakref.ref(loaded), weakref.ref(net._params),
            weakref.ref(net.layers[0])]
    engines = _count(_engine.Engine)
    del net, loaded, stopper  # EarlyStopping keeps the network it last trained
    gc.collect()
    assert [r() is None for r in refs] == [True] * len(refs)
    assert _count(_engine.Engine) == engines - 2
    assert len(optimizer._states) == 0
