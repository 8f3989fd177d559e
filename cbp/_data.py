"""Conversion and validation of user data for the Network: inputs, targets
and sample weights come in as anything array-like and leave as
C-contiguous arrays of the network's dtype (int64 labels), or as a clear
ValueError / TypeError saying what was expected and what was given."""
from __future__ import annotations

import numpy as np

from . import _engine
from ._checks import shape_str

CLASSIFICATION_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy")
LOSSES = CLASSIFICATION_LOSSES + ("mse",)


def _numeric_array(what: str, data) -> np.ndarray:
    if data is None:
        raise TypeError(f"{what} must be array-like, got None")
    if isinstance(data, (str, bytes)):
        raise TypeError(f"{what} must be array-like of numbers, got {type(data).__name__}")
    try:
        a = np.asarray(data)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{what} could not be converted to an array: {exc}") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{what} must hold real numbers (float or int), got dtype {a.dtype}")
    return a


def _first_nonfinite_row(a: np.ndarray):
    rows = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    return int(bad[0]) if bad.size else None


def _nonfinite_error(what: str, original: np.ndarray, converted: np.ndarray):
    """Raise the ValueError for the first row of `converted` holding NaN or
    ±inf: either it was so given, or a finite value overflowed the dtype."""
    row = _first_nonfinite_row(converted)
    given = original.reshape(original.shape[0], -1)[row] if original.ndim > 1 else original[row:row + 1]
    if original.dtype.kind == "f" and not np.isfinite(given).all():
        raise ValueError(f"{what} must be finite; row {row} holds NaN or infinity")
    info = np.finfo(converted.dtype)
    raise ValueError(f"{what} must be finite in {converted.dtype.name}; row {row} holds a "
                     f"value beyond its range (±{float(info.max):.3g})")


def _convert(a: np.ndarray, dtype) -> np.ndarray:
    # Values beyond the range of `dtype` become ±inf here, which the caller's
    # finiteness check reports as a ValueError naming the row; NumPy's
    # "overflow encountered in cast" warning would only add noise.
    with np.errstate(over="ignore", invalid="ignore"):
        return _c_aligned(a, dtype)


def _c_aligned(a: np.ndarray, dtype) -> np.ndarray:
    """`a` as a C-contiguous, aligned ndarray of `dtype` (a copy only where
    needed).  np.ascontiguousarray alone keeps an unaligned buffer, which C
    must not read."""
    b = np.ascontiguousarray(a, dtype=dtype)
    return b if b.flags.aligned else b.copy()


def _finite_of_dtype(what: str, a: np.ndarray, dtype,
                     all_finite=_engine.all_finite) -> np.ndarray:
    """`a` converted to `dtype` (C-contiguous, aligned), or a ValueError
    naming the first row holding NaN/inf or a value beyond the dtype."""
    b = _convert(a, dtype)
    if not all_finite(b):
        _nonfinite_error(what, a, b)
    return b


def check_inputs(X, n_in: int, dtype: np.dtype, what: str = "X",
                 all_finite=_engine.all_finite) -> np.ndarray:
    """X as a C-contiguous (n, n_in) array of dtype, finite (as
    `all_finite` of the converted array tells)."""
    a = _numeric_array(what, X)
    if a.ndim != 2:
        hint = " (use X.reshape(1, -1) for a single sample)" if a.ndim == 1 else ""
        raise ValueError(f"{what} must be 2-D (n_samples, {n_in}), got shape "
                         f"{shape_str(a.shape)}{hint}")
    if a.shape[1] != n_in:
        raise ValueError(f"{what} must have {n_in} columns (the network's input size), "
                         f"got shape {shape_str(a.shape)}")
    return _finite_of_dtype(what, a, dtype, all_finite)


def check_targets(y, loss: str, n: int, n_out: int, dtype: np.dtype, what: str = "y"):
    """Targets for `loss`: int64 labels (n,) for softmax cross-entropy,
    else a C-contiguous (n, n_out) array of dtype."""
    a = _numeric_array(what, y)
    if loss == "softmax_cross_entropy":
        # Checked, converted and returned as our own copy: C uses each
        # label as an index, and the caller's array could change after the
        # check (another thread, a loader reusing its buffer).
        a = np.array(a, copy=True)
        if a.ndim != 1:
            raise ValueError(f"{what} must be 1-D integer class labels of shape ({n},), "
                             f"got shape {shape_str(a.shape)}")
        if a.shape[0] != n:
            raise ValueError(f"X and {what} must have the same number of rows: "
                             f"X has {n}, {what} has {a.shape[0]}")
        if a.dtype.kind == "f":
            if not np.isfinite(a).all() or not (a == np.round(a)).all():
                bad = int(np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))[0])
                raise ValueError(f"{what} must hold integer class labels; "
                                 f"row {bad} holds {a[bad].item()!r}")
        if a.size and (a.min() < 0 or a.max() >= n_out):
            bad = int(np.flatnonzero((a < 0) | (a >= n_out))[0])
            raise ValueError(f"{what} labels must lie in [0, {n_out}) for a network with "
                             f"{n_out} outputs; row {bad} holds {a[bad].item()!r}")
        return _c_aligned(a, np.int64)   # `a`, or a converted copy of it
    if a.ndim == 1 and n_out == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[1] != n_out:
        alt = f" or ({n},)" if n_out == 1 else ""
        raise ValueError(f"{what} must have shape ({n}, {n_out}){alt} for the {loss} loss, "
                         f"got {shape_str(a.shape)}")
    if a.shape[0] != n:
        raise ValueError(f"X and {what} must have the same number of rows: "
                         f"X has {n}, {what} has {a.shape[0]}")
    a = _finite_of_dtype(what, a, dtype)
    if loss == "binary_cross_entropy" and a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"{what} must lie in [0, 1] for binary_cross_entropy, got values "
                         f"in [{a.min()}, {a.max()}]")
    return a


def check_sample_weight(w, n: int, dtype: np.dtype):
    if w is None:
        return None
    a = _numeric_array("sample_weight", w)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},) (one weight per row), "
                         f"got {shape_str(a.shape)}")
    if a.dtype.kind == "f" and a.size:
        with np.errstate(invalid="ignore"):
            top, bottom = float(np.max(a)), float(np.min(a))
        info = np.finfo(dtype)
        if bottom >= 0 and (0 < top < float(info.tiny) * 2.0**64
                or float(info.max) / (2.0 * a.size) < top <= float(info.max)):
            # Weights so small that they would lose their digits, or all
            # become 0, in `dtype`, or so large that their sum would overflow
            # (Σ wᵢ = inf makes every wᵢ / Σ wᵢ zero): scaled by a power of
            # two (max into [0.5, 1)), which leaves every wᵢ / Σ wᵢ, so the
            # loss and the training, as they are.  A weight beyond the dtype
            # is refused below, as any value beyond it, and so are negative or
            # non-finite weights (before any scaling, so the message shows them).
            a = np.ldexp(a.astype(np.float64), -np.frexp(top)[1])
    with np.errstate(invalid="ignore"):
        negative = a < 0  # as given: a tiny negative weight would round to -0.0
    if negative.any():
        raise ValueError(f"sample_weight must be non-negative; row "
                         f"{int(np.flatnonzero(negative)[0])} holds {a[negative][0].item()!r}")
    return _finite_of_dtype("sample_weight", a, dtype)


def check_nonempty(n: int, what: str = "X") -> None:
    if n == 0:
        raise ValueError(f"{what} must have at least one row, got 0 rows (no rows: the "
                         "loss of an empty batch is undefined)")


def positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)
