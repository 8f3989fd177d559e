"""BLAS thread count for small problems.

SciPy's OpenBLAS runs every call on all cores by default.  For the small
products of a small network that costs more than it gives — each call
pays the threads' wake-up, and on a busy machine two threads can make a
step several times slower — so the engine runs steps whose work is below a
threshold on one BLAS thread, and restores the previous count after each
call.  Larger problems keep whatever the process set (for instance with
``threadpoolctl.threadpool_limits``).

The thread functions are found in the OpenBLAS that SciPy's
``cython_blas`` calls (the LP64 ``libscipy_openblas``; NumPy's is the
ILP64 one with suffixed symbols).  Where it cannot be found (another BLAS,
another platform), nothing is changed.
"""
from __future__ import annotations

import ctypes
import os
import sys

from . import _engine

# Work of one training step, 6 · rows · parameters flops, below which one
# BLAS thread is used.  Measured on 2 idle cores (fit, float32, 1 vs 2
# threads): 784-256-128-10 at batch 1 (1.4e6) 37 vs 75 µs, batch 4
# (5.6e6) 68 vs 70, batch 8 (1.1e7) 193 vs 174, batch 32 (4.5e7) 559 vs
# 386; 64-32-10 at batch 256 (3.6e6) 74 vs 76, batch 1024 (1.5e7) 335 vs
# 318; 784-2048-2048-10 at batch 1 (3.5e7) 1,952 vs 924.
SINGLE_THREAD_WORK = 1e7

# Work of one plain-SGD training step below which a step that gets two or
# more threads runs on cbp's own pool (src_c/pool.c: each thread owns a
# share of every layer's units and calls BLAS single-threaded) instead of
# OpenBLAS's threads.  Measured 2026-12-06 on 2 cores, the C training loop
# on shuffled batches, pool ÷ OpenBLAS threads, medians of 9 alternating
# blocks: 784-256-128-10 float32 at batch 8 (1.1e7) 0.41, 16 (2.3e7) 0.65,
# 32 (4.5e7) 0.80, 64 (9.0e7) 0.95, 128 (1.8e8) 1.02; float64 at batch 32
# 0.99, 128 0.98; 784-2048-2048-10 float32 at batch 256 (9.0e9) 1.01.
# Above the threshold the products are large enough for OpenBLAS's own
# split (it shares the packed operands between its threads).
#
# Steps with any other optimizer (Adam, AdamW, SGD with momentum or weight
# decay) take the pool at every size from SINGLE_THREAD_WORK (above
# POOL_MAX_WORK only if BLAS would use at most 8 threads; see pool_for):
# they also store the gradient and make the optimizer's pass over every
# parameter, which on OpenBLAS's threads runs on one core and on the pool
# on all.
# Measured 2026-12-06 on 2 cores (AMD EPYC) with benchmarks/pool.py (fit
# on shuffled batches, pool ÷ OpenBLAS threads, median over 21 rounds of
# two adjacent one-epoch fits): Adam on 784-256-128-10 float32 at batch 8
# 0.43-0.47, 32 0.50-0.75, 128 0.76-0.89, 512 0.96, 1024 0.97; float64 at 32
# 0.75, 128 0.89; 784-2048-2048-10 float32 at batch 256 0.96 and 1.01 (a
# wash); SGD with momentum 0.9 at batch 8 0.45, 32 0.78, 128 0.93.
POOL_MAX_WORK = 1.5e8

_bound = None


def _candidate_paths():
    try:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
    except ImportError:  # pragma: no cover
        return []
    paths = []
    try:
        from threadpoolctl import threadpool_info

        paths = [i["filepath"] for i in threadpool_info() if i.get("internal_api") == "openblas"]
    except Exception:
        pass
    if not paths and sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.rsplit(" ", 1)[-1].strip()
                    if "openblas" in os.path.basename(path) and path not in paths:
                        paths.append(path)
        except OSError:
            pass
    return paths


def _find():
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            get = getattr(lib, f"{prefix}openblas_get_num_threads", None)
            set_ = getattr(lib, f"{prefix}openblas_set_num_threads", None)
            if get is not None and set_ is not None:
                core = _corename(lib, prefix)
                level1 = getattr(lib, "blas_level1_thread", None)
                return (ctypes.cast(get, ctypes.c_void_p).value,
                        ctypes.cast(set_, ctypes.c_void_p).value, path, core,
                        ctypes.cast(level1, ctypes.c_void_p).value if level1 is not None else 0)
    return None


def _corename(lib, prefix):
    fn = getattr(lib, f"{prefix}openblas_get_corename", None)
    if fn is None:
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    try:
        name = fn()
    except Exception:  # pragma: no cover
        return None
    return name.decode("ascii", "replace").lower() if name else None


# OpenBLAS cores whose "small matrix" kernels refuse the forward product's
# transposed form at some small sizes but not its NN form (see
# cbp_forward_nn_pays in src_c/cbp.h).
_SMALL_KERNEL_CORES = ("skylakex", "cooperlake", "sapphirerapids")


def forward_nn_default() -> bool:
    """Whether engines should take the NN forward where it pays: when the
    BLAS that SciPy calls is OpenBLAS running one of its AVX-512 cores
    (the core OpenBLAS chose, or OPENBLAS_CORETYPE)."""
    bind()
    return _bound is not None and _bound[3] in _SMALL_KERNEL_CORES


def bind() -> bool:
    """Give the engine SciPy's OpenBLAS thread functions (once).  Returns
    whether they were found."""
    global _bound
    if _bound is None:
        found = None if os.environ.get("CBP_NO_THREAD_CONTROL") else _find()
        if found is not None:
            _engine.bind_blas_threads(found[0], found[1])
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_engine.restore_threads_after_fork)
            if found[4]:
                # OpenBLAS's threads for the passes of the steps whose
                # products they run (src_c/pool.c, cbp_obx_*).
                _engine.bind_blas_level1(found[4])
        _bound = found
    return _bound is not None


def pool_for(work: float, fused: bool = True) -> int:
    """Whether training steps of `work` flops should run on cbp's pool
    when BLAS gets two or more threads for them (see POOL_MAX_WORK): 0 no;
    1 yes, from SINGLE_THREAD_WORK to POOL_MAX_WORK; above it 0 for plain
    SGD (`fused`) and 2 for the other optimizers: the pool only if it can
    have as many threads as BLAS would (at most 8, CBP_POOL_MAX_PARTS),
    since their gain above the limit was measured on two cores only and
    OpenBLAS may use more threads than the pool."""
    if work < SINGLE_THREAD_WORK:
        return 0
    if work < POOL_MAX_WORK:
        return 1
    return 0 if fused else 2


def threads_for(work: float) -> int:
    """The BLAS thread count for a step of `work` flops: 1 below the
    threshold, else 0 (leave the process's setting)."""
    return 1 if work < SINGLE_THREAD_WORK else 0
