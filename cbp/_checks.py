"""Argument checks shared by cbp.ops and the network: every bad input is
answered here, in Python, with a message naming what was expected and what
was given, before any C code runs."""
from __future__ import annotations

import numpy as np

REAL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
BLAS_INT_MAX = 2**31 - 1  # SciPy's BLAS is LP64: every size is a C int


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def real_arrays(fn: str, **arrays):
    """Check that every argument is a float32/float64 ndarray, all of one
    dtype; return them C-contiguous (copies only where needed) in order."""
    dtype = None
    first = None
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(
                f"{fn}: {name} must be a numpy.ndarray of float32 or float64, "
                f"got {type(a).__name__}"
            )
        if a.dtype not in REAL_DTYPES:
            raise TypeError(
                f"{fn}: {name} must have dtype float32 or float64, got {a.dtype}"
            )
        if dtype is None:
            dtype, first = a.dtype, name
        elif a.dtype != dtype:
            raise TypeError(
                f"{fn}: all arrays must share one dtype; {first} is {dtype} "
                f"but {name} is {a.dtype}"
            )
        for s in a.shape:
            if s > BLAS_INT_MAX:
                raise ValueError(
                    f"{fn}: {name} has shape {shape_str(a.shape)}; every dimension "
                    f"must be at most {BLAS_INT_MAX} (the BLAS integer limit)"
                )
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).  Copy
    # only what is not already C-contiguous and aligned (also drops ndarray
    # subclasses such as np.matrix, whose reshape keeps two dimensions).
    return [a if type(a) is np.ndarray and a.flags.c_contiguous and a.flags.aligned
            else np.array(a, order="C", subok=False)
            for a in arrays.values()]


def require_ndim(fn: str, name: str, a: np.ndarray, allowed, meaning: str = "") -> None:
    if a.ndim not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        extra = f" ({meaning})" if meaning else ""
        raise ValueError(
            f"{fn}: {name} must be {want}{extra}, got a {a.ndim}-D array of "
            f"shape {shape_str(a.shape)}"
        )


def require_shape(fn: str, name: str, a: np.ndarray, expected, why: str = "") -> None:
    expected = tuple(int(s) for s in expected)
    if a.shape != expected:
        extra = f" {why}" if why else ""
        raise ValueError(
            f"{fn}: {name} must have shape {shape_str(expected)}{extra}, "
            f"got {shape_str(a.shape)}"
        )


def output(fn: str, out, shape, dtype, inputs=(), elementwise: bool = False):
    """Return ``(target, out)``: the buffer the C routine writes and the
    array the caller gets back.  ``out`` must be C-contiguous, writable and
    of exactly the result's shape and dtype.  When ``out`` overlaps an input
    the routine writes a scratch array that is then copied into ``out`` (an
    element-wise routine may write an input it reads in place, when both
    are the very same buffer)."""
    shape = tuple(int(s) for s in shape)
    if out is None:
        result = np.empty(shape, dtype=dtype)
        return result, result
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{fn}: out must have dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(
            f"{fn}: out must have shape {shape_str(shape)}, got {shape_str(out.shape)}"
        )
    if not out.flags.c_contiguous:
        raise ValueError(f"{fn}: out must be C-contiguous, got an array with strides "
                         f"{tuple(out.strides)}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out must be writable, got a read-only array")
    if not out.flags.aligned:  # C stores REALs: write a scratch array, then copy
        return np.empty(shape, dtype=dtype), out
    for a in inputs:
        if np.may_share_memory(out, a):
            same = (elementwise and a.shape == out.shape
                    and a.__array_interface__["data"][0] == out.__array_interface__["data"][0])
            if not same:
                return np.empty(shape, dtype=dtype), out
    # A subclass (np.matrix: always 2-D, even reshaped) is written through a
    # plain view of its buffer; the caller gets `out` itself back.
    return (out if type(out) is np.ndarray else out.view(np.ndarray)), out


def finish(target: np.ndarray, out: np.ndarray) -> np.ndarray:
    if target is not out and not np.may_share_memory(target, out):  # a scratch array
        out[...] = target
    return out
