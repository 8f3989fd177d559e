"""Random inputs and targets for each loss, shared by the network tests."""
import numpy as np


def random_xy(loss, n, n_in, n_out, rng):
    """X ~ N(0, 1) of shape (n, n_in), then targets drawn from the same
    generator: class labels for softmax cross-entropy, 0/1 targets for
    binary cross-entropy, N(0, 1) targets for MSE; targets are (n,) when
    there is one output (the API's 1-D form)."""
    X = rng.normal(size=(n, n_in))
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, n_out, size=n)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, size=(n, n_out)).astype(np.float64)
    else:
        y = rng.normal(size=(n, n_out))
    if loss != "softmax_cross_entropy" and n_out == 1:
        y = y[:, 0]
    return X, y


def training_data(sizes, n, loss, dtype, seed=1):
    """X (n, sizes[0]) ~ N(0, 1) of `dtype` and targets for `loss` with
    sizes[-1] outputs (labels; 0/1 of dtype; N(0, 1) of dtype), seeded:
    the data of the pool and OpenBLAS-thread tests."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, sizes[-1], n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, sizes[-1])) < 0.5).astype(dtype)
    else:
        y = rng.standard_normal((n, sizes[-1])).astype(dtype)
    return X, y
