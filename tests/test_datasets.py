"""Tests for the bundled digits data set (cbp.datasets)."""
import subprocess
import sys

import numpy as np
import pytest

from cbp.datasets import load_digits


def test_shapes_and_dtypes():
    X, y = load_digits()
    assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
    assert X.shape == (1797, 64)
    assert y.shape == (1797,)
    assert X.dtype == np.float32
    assert y.dtype == np.int64


def test_value_ranges():
    X, y = load_digits()
    assert X.min() == 0.0
    assert X.max() == 1.0
    # Every value is a multiple of 1/16 (exact in float32).
    assert np.array_equal(X * 16, np.round(X * 16))
    assert np.isfinite(X).all()
    assert y.min() == 0 and y.max() == 9


def test_class_counts():
    _, y = load_digits()
    counts = np.bincount(y, minlength=10)
    assert counts.shape == (10,)
    assert counts.sum() == 1797
    assert np.all((counts >= 174) & (counts <= 183)), counts


def test_fresh_arrays_each_call():
    X1, y1 = load_digits()
    X1[:] = -1.0
    y1[:] = -1
    X2, y2 = load_digits()
    assert X2.min() == 0.0 and X2.max() == 1.0
    assert y2.min() == 0
    assert not np.shares_memory(X1, X2) and not np.shares_memory(y1, y2)
    assert X2.flags.writeable and y2.flags.writeable


def test_matches_sklearn():
    sk_datasets = pytest.importorskip("sklearn.datasets")
    X_sk, y_sk = sk_datasets.load_digits(return_X_y=True)
    X, y = load_digits()
    np.testing.assert_array_equal(X, (X_sk / 16).astype(np.float32))
    np.testing.assert_array_equal(y, y_sk)


def test_no_sklearn_import():
    code = (
        "import cbp.datasets, sys; cbp.datasets.load_digits(); "
        "assert 'sklearn' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
