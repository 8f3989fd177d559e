"""fit's check that X is finite, on the threads its steps use
(``Engine.all_finite``; src_c/engine_impl.h ``all_finite_parts``;
docs/threads.md): from ``FINITE_SPLIT_BYTES`` on, X is read in blocks of
whole cache lines by OpenBLAS's threads (steps on OpenBLAS's threads) or
by cbp's pool (steps on the pool), else by the caller alone.

* Every test that expects the split first checks that it happened (the
  job counter of OpenBLAS's threads or of the pool moves), so none can
  pass by reading on the caller.
* The split check answers as ``np.isfinite(a).all()`` for NaN, +inf and
  -inf at the first and last element and on both sides of every part's
  boundary, for 2, 3 and 8 parts and both dtypes.
* It stays on the caller below the size, with one BLAS thread, and with
  the switch off; ``fit`` still refuses a non-finite X, naming the row,
  before any step, when another thread found it.
"""
from __future__ import annotations


import numpy as np
import pytest

import cbp
import cbp._threads as cbp_threads
from cbp import _engine
from openblas_threads import steps_on_openblas_threads

threadpoolctl = pytest.importorskip("threadpoolctl")

SIZES = [784, 64, 10]
BAD = [np.nan, np.inf, -np.inf]


@pytest.fixture(autouse=True)
def openblas_threads(monkeypatch):
    """Steps on OpenBLAS's threads (two unless a test sets more), the pool
    off unless a test turns it on."""
    with steps_on_openblas_threads(monkeypatch):
        yield


def engine_of(dtype):
    return cbp.Network.mlp(SIZES, dtype=dtype, seed=0)._engine


def check(engine, a, threads=0, pool=0, rows=32):
    """Engine.all_finite for steps of `rows` rows asking for `threads`
    BLAS threads (0: as BLAS is set, two or more here) and `pool`."""
    return engine.all_finite(a, threads, pool, rows)


@pytest.fixture
def split_everything():
    old = _engine.set_finite_split_bytes(0)
    yield
    _engine.set_finite_split_bytes(old)


def big(dtype, extra=13, seed=0):
    """Just above the split size, not a whole number of cache lines."""
    n = _engine.FINITE_SPLIT_BYTES // np.dtype(dtype).itemsize + extra
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)


def boundaries(size, itemsize, parts):
    """Where each part starts (all_finite_parts' split) and the ends."""
    line = 64 // itemsize
    lines = -(-size // line)
    starts = [lines * p // parts * line for p in range(1, parts)]
    return [0, size - 1] + [i for s in starts for i in (s - 1, s)]


def on_openblas(fn):
    jobs, pool_jobs = _engine.ob_gather_jobs(), _engine.pool_jobs()
    result = fn()
    assert _engine.ob_gather_jobs() > jobs, "the check did not run on OpenBLAS's threads"
    assert _engine.pool_jobs() == pool_jobs
    return result


def on_caller(fn):
    jobs, pool_jobs = _engine.ob_gather_jobs(), _engine.pool_jobs()
    result = fn()
    assert _engine.ob_gather_jobs() == jobs and _engine.pool_jobs() == pool_jobs
    return result


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [2, 3, 8])
def test_the_split_check_finds_every_bad_value(dtype, parts):
    engine, a = engine_of(dtype), big(dtype)
    with threadpoolctl.threadpool_limits(parts, user_api="blas"):
        assert on_openblas(lambda: check(engine, a)) is True
        for i in boundaries(a.size, a.itemsize, parts):
            for bad in BAD:
                b = a.copy()
                b[i] = bad
                assert not np.isfinite(b).all()
                assert on_openblas(lambda: check(engine, b)) is False, (i, bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_pool_checks_when_the_steps_take_it(dtype):
    _engine.set_pool(True)   # the fixture puts the setting back
    engine, a = engine_of(dtype), big(dtype)
    for i, expected in [(None, True), (a.size - 1, False), (a.size // 2, False)]:
        b = a.copy()
        if i is not None:
            b[i] = np.nan
        _engine.pool_settle()   # nothing to stand aside for (see cbp_pool_acquire)
        jobs, ob_jobs = _engine.pool_jobs(), _engine.ob_gather_jobs()
        assert check(engine, b, pool=1) is expected
        assert _engine.pool_jobs() > jobs, "the check did not take the pool"
        assert _engine.ob_gather_jobs() == ob_jobs


def test_steps_of_one_row_never_take_the_pool():
    """Such steps cannot run on the pool, so neither does their check."""
    _engine.set_pool(True)
    engine, a = engine_of(np.float32), big(np.float32)
    _engine.pool_settle()   # nothing to stand aside for (see cbp_pool_acquire)
    pool_jobs = _engine.pool_jobs()
    assert on_openblas(lambda: check(engine, a, pool=1, rows=1)) is True
    assert _engine.pool_jobs() == pool_jobs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [2, 3])   # 8 (oversubscribed): the big arrays' test
def test_every_position_of_small_arrays(split_everything, dtype, parts):
    """Split from 0 bytes: sizes around one, two and four cache lines of
    either dtype, NaN at every position in turn, against np.isfinite (not
    the split's own formula)."""
    engine = engine_of(dtype)
    with threadpoolctl.threadpool_limits(parts, user_api="blas"):
        for size in [0, 1, 2, 7, 8, 9, 15, 16, 17, 33, 47, 64, 65]:
            a = np.arange(size, dtype=dtype)
            assert on_openblas(lambda: check(engine, a)) is True
            for i in range(size):
                b = a.copy()
                b[i] = np.nan
                assert on_openblas(lambda: check(engine, b)) is False, (size, i)


def _extremes(dtype):
    """Every kind of finite value, the largest first, and every kind of
    non-finite one (NaN with other payloads and signs too), as bits."""
    info = np.finfo(dtype)
    finite = np.array([info.max, -info.max, info.tiny, -info.tiny, info.smallest_subnormal,
                       -info.smallest_subnormal, 0.0, -0.0, 1.0, np.nextafter(info.max, 0)],
                      dtype=dtype)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    inf_bits = int(np.array(np.inf, dtype).view(uint))
    sign = 1 << (8 * np.dtype(dtype).itemsize - 1)
    nonfinite_bits = [inf_bits, inf_bits | sign, inf_bits + 1, inf_bits | (inf_bits >> 1),
                      (sign - 1), (sign - 1) | sign]           # ±inf, NaNs (quiet, signalling)
    nonfinite = np.array(nonfinite_bits, dtype=uint).view(dtype)
    return finite, nonfinite


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("split", [False, True])
def test_the_largest_finite_values_pass_and_every_nan_fails(dtype, split):
    """±max, ±tiny, subnormals and ±0 are finite; ±inf and NaNs of any
    payload and sign are not, on the caller and split over threads."""
    engine = engine_of(dtype)
    finite, nonfinite = _extremes(dtype)
    old = _engine.set_finite_split_bytes(0 if split else 1 << 40)
    try:
        with threadpoolctl.threadpool_limits(2, user_api="blas"):
            a = np.tile(finite, 7)
            assert np.isfinite(a).all() and check(engine, a) is True
            for bad in nonfinite:
                assert not np.isfinite(bad)
                for i in (0, a.size // 2, a.size - 1):
                    b = a.copy()
                    b[i] = bad
                    assert check(engine, b) is False, (bad, i)
    finally:
        _engine.set_finite_split_bytes(old)


def test_small_arrays_are_checked_by_the_caller():
    engine = engine_of(np.float32)
    a = big(np.float32, extra=-1)
    assert on_caller(lambda: check(engine, a)) is True
    a[-1] = np.inf
    assert on_caller(lambda: check(engine, a)) is False


def test_one_blas_thread_checks_on_the_caller():
    engine, a = engine_of(np.float64), big(np.float64)
    a[-1] = np.nan
    assert on_caller(lambda: check(engine, a, threads=1)) is False
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert on_caller(lambda: check(engine, a)) is False


def test_the_switch_keeps_the_check_on_the_caller():
    engine, a = engine_of(np.float32), big(np.float32)
    a[-1] = -np.inf
    old = _engine.set_ob_gather(False)
    try:
        assert on_caller(lambda: check(engine, a)) is False
    finally:
        _engine.set_ob_gather(old)


def test_bad_arrays_are_refused():
    engine = engine_of(np.float32)
    with pytest.raises(TypeError, match="dtype"):
        engine.all_finite(np.zeros(10))
    with pytest.raises(ValueError, match="C-contiguous"):
        engine.all_finite(np.zeros((10, 10), np.float32)[:, ::2])
    for not_an_array in (None, [1.0, 2.0]):     # never read as an ndarray
        with pytest.raises(TypeError):
            engine.all_finite(not_an_array)
        with pytest.raises(TypeError):
            _engine.all_finite(not_an_array)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool", [0, 1])
def test_fit_names_the_row_another_thread_found(monkeypatch, dtype, pool):
    """A non-finite value in the last row of a large X (read by the last
    part): fit refuses it before any step and names the row."""
    if pool:
        monkeypatch.setattr(cbp_threads, "POOL_MAX_WORK", float("inf"))
        _engine.set_pool(True)
        _engine.pool_settle()   # nothing to stand aside for (see cbp_pool_acquire)
    rows = _engine.FINITE_SPLIT_BYTES // (SIZES[0] * np.dtype(dtype).itemsize) + 3
    rng = np.random.default_rng(2)
    X = rng.standard_normal((rows, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], rows)
    X[-1, -1] = np.nan
    net = cbp.Network.mlp(SIZES, dtype=dtype, seed=0)
    before = [p.copy() for p in net.parameters()]
    jobs = _engine.pool_jobs() if pool else _engine.ob_gather_jobs()
    with pytest.raises(ValueError, match=f"X must be finite; row {rows - 1} holds NaN"):
        net.fit(X, y, epochs=1, batch_size=32, optimizer=cbp.SGD(lr=0.1), progress=False)
    assert (_engine.pool_jobs() if pool else _engine.ob_gather_jobs()) > jobs
    for p, q in zip(before, net.parameters()):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("method", ["forward", "predict", "predict_proba", "evaluate"])
def test_inference_checks_a_large_x_on_openblas_threads(method):
    """Inference checks X on the BLAS threads of its forward pass (never
    the pool): a non-finite value in the last row is refused, named."""
    rows = _engine.FINITE_SPLIT_BYTES // (SIZES[0] * 4) + 3
    rng = np.random.default_rng(4)
    X = rng.standard_normal((rows, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], rows)
    net = cbp.Network.mlp(SIZES, seed=0)
    args = (X, y) if method == "evaluate" else (X,)
    clean = on_openblas(lambda: getattr(net, method)(*args))
    kept, X[-1, 0] = X[-1, 0], np.inf
    with pytest.raises(ValueError, match=f"X must be finite; row {rows - 1} holds NaN or inf"):
        on_openblas(lambda: getattr(net, method)(*args))
    X[-1, 0] = kept
    again = getattr(net, method)(*args)
    if method == "evaluate":
        assert again == clean
    else:
        np.testing.assert_array_equal(again, clean)
