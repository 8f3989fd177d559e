"""Small data sets bundled with cbp, loadable without scikit-learn."""
from __future__ import annotations

from importlib.resources import files

import numpy as np

__all__ = ["load_digits"]

_N_SAMPLES = 1797
_N_FEATURES = 64


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Load the 8x8 handwritten digits (1,797 images, 10 classes).

    Each image is 8x8 pixels flattened row by row to 64 features. The raw
    pixel values are counts 0..16 (each pixel is the number of "on" pixels
    in a 4x4 block of the original 32x32 bitmap); they are returned divided
    by 16, so they lie in [0, 1].

    Returns
    -------
    X : numpy.ndarray of float32, shape (1797, 64)
        Pixel intensities scaled to [0, 1].
    y : numpy.ndarray of int64, shape (1797,)
        Digit labels 0..9.

    Notes
    -----
    The arrays are freshly created on every call, so the caller may modify
    them in place.

    The data are the copy of the test set of the UCI ML hand-written digits
    (optdigits) data set that scikit-learn distributes as
    ``sklearn.datasets.load_digits``; ``X`` equals scikit-learn's ``X / 16``
    in float32 and ``y`` its ``y``. They are stored in the package
    (``cbp/datasets/digits.npz``, produced by ``tools/make_digits.py``) so
    that cbp never needs scikit-learn at run time.

    Licence: Creative Commons Attribution 4.0 International (CC BY 4.0).

    References
    ----------
    .. [1] E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten
       Digits", UCI Machine Learning Repository, 1998.
       https://doi.org/10.24432/C50P49

    Examples
    --------
    >>> from cbp.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, X.dtype, y.shape, y.dtype
    ((1797, 64), dtype('float32'), (1797,), dtype('int64'))
    """
    resource = files(__name__) / "digits.npz"
    with resource.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
        X_raw = data["X"]
        y_raw = data["y"]
    if X_raw.shape != (_N_SAMPLES, _N_FEATURES) or y_raw.shape != (_N_SAMPLES,):
        raise ValueError(
            f"digits.npz is corrupt: shapes {X_raw.shape} and {y_raw.shape}"
        )
    X = X_raw.astype(np.float32)
    X /= np.float32(16.0)
    y = y_raw.astype(np.int64)
    return X, y
