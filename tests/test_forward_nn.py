"""The forward product's second form, Zᵀ = W Xᵀ between two transposes
(cbp_linear_forward_nn, taken where cbp_forward_nn_pays with OpenBLAS's
AVX-512 kernels): its transposes move values exactly, its product matches
the float64 reference, and a network computes the same forward, loss,
gradients and training with it as without it, on any machine (the tests
switch it on and off themselves)."""
import os

import numpy as np
import pytest

import cbp
import reference_network as refnet
from cbp import _ops

DTYPES = [np.float32, np.float64]
# float32 / float64 transpose blocks are 16 x 16 / 8 x 8: sizes around them.
SIDES = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 70]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_add", [False, True])
def test_transpose_add_is_exact(dtype, with_add):
    rng = np.random.default_rng(0)
    for rows in SIDES:
        for cols in SIDES:
            src = rng.standard_normal((rows, cols)).astype(dtype)
            src[rng.random((rows, cols)) < 0.1] = -0.0
            add = rng.standard_normal(rows).astype(dtype) if with_add else None
            dst = np.full((cols, rows), np.nan, dtype)
            _ops.transpose_add(src, add, dst)
            expected = (src + add[:, None]).T if with_add else src.T
            # Bits, -0.0 included: without `add` nothing is computed.
            assert np.array_equal(dst.view(f"u{dst.itemsize}"),
                                  expected.view(f"u{dst.itemsize}")), (rows, cols)


def _bound(X, W, b, dtype):
    """|fl(X Wᵀ + b) − (X Wᵀ + b)| <= (n_in + 1) u (|X| |W|ᵀ + |b|)."""
    u = np.finfo(dtype).eps / 2
    X, W, b = (np.abs(a.astype(np.float64)) for a in (X, W, b))
    return (X.shape[1] + 1) * u * (X @ W.T + b) * 1.01


SHAPES = [  # (n, n_in, n_out): the digits layer, its last batch, a tiny input,
    (32, 64, 64), (30, 64, 64), (32, 4, 16), (128, 128, 10),  # M128's last layer,
    (17, 33, 71), (2, 1, 1), (5, 3, 300), (40, 31, 40)]       # odd sizes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, n_in, n_out", SHAPES)
def test_linear_forward_nn_matches_reference(n, n_in, n_out, dtype):
    rng = np.random.default_rng(n * 1000 + n_in)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    Z = np.full((n, n_out), np.nan, dtype)
    _ops.linear_forward_nn(W, b, X, Z)
    # long double (64-bit significand on x86) so float64's bound is meaningful too
    exact = X.astype(np.longdouble) @ W.T.astype(np.longdouble) + b.astype(np.longdouble)
    assert np.all(np.abs(Z - exact) <= _bound(X, W, b, dtype))


def test_forward_nn_pays_follows_openblas_small_kernel_limits():
    pays = _ops.forward_nn_pays
    # TN's small kernel takes M N <= 1200 with K >= 32 (M = n_out, N = n, K = n_in)
    assert not pays(32, 37, 64)        # M N = 1184: TN is fast already
    assert pays(32, 38, 64)            # 1216
    assert pays(32, 32, 31) and not pays(32, 32, 32)   # K < 32
    # NN's small kernel needs M N K <= 10⁶, else both forms pack
    assert pays(64, 64, 244) and not pays(64, 64, 250)
    assert not pays(1, 4096, 4)        # one row takes gemv


def _net(sizes, dtype, nn, seed=3):
    net = cbp.Network.mlp(sizes, activation="tanh", dtype=dtype, seed=seed)
    net._engine.forward_nn = nn
    return net


NETS = [([64, 64, 10], 32), ([4, 40, 3], 32), ([33, 71, 5], 17), ([8, 16, 64, 3], 32)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, n", NETS, ids=str)
def test_network_with_forward_nn_matches_reference(sizes, n, dtype):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    net = _net(sizes, dtype, True)
    params = [p.astype(np.float64) for p in net.parameters()]
    acts = [layer.activation for layer in net.layers]
    out = net.forward(X)
    np.testing.assert_allclose(out, refnet.output(params, acts, X), rtol=rtol, atol=rtol)
    loss = net.backward(X, y)
    ref_loss, ref_grads = refnet.loss_and_gradients(params, acts, "softmax_cross_entropy", X, y)
    assert loss == pytest.approx(ref_loss, rel=rtol)
    for g, r in zip(net.gradients(), ref_grads):
        scale = max(1.0, np.abs(r).max())
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, n", NETS, ids=str)
def test_fit_and_predict_agree_with_and_without_forward_nn(sizes, n, dtype):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((5 * n + 3, sizes[0])).astype(dtype)   # a short last batch
    y = rng.integers(0, sizes[-1], len(X))
    nets = [_net(sizes, dtype, nn) for nn in (False, True)]
    for net in nets:
        net.fit(X, y, epochs=3, batch_size=n, optimizer=cbp.Adam(lr=1e-3), progress=False)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)
    big = rng.standard_normal((1000, sizes[0])).astype(dtype)    # many chunks of capacity
    np.testing.assert_allclose(nets[1].predict_proba(big), nets[0].predict_proba(big),
                               rtol=rtol, atol=rtol)


def test_forward_nn_can_be_switched_on_after_reserve():
    net = _net([64, 64, 10], np.float32, False)
    X = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    expected = net.forward(X)          # reserves 300 rows without the XT workspace
    net._engine.forward_nn = True      # allocates it now
    np.testing.assert_allclose(net.forward(X), expected, rtol=1e-5, atol=1e-6)


def test_forward_nn_default_follows_scipys_openblas_core():
    """On where threadpoolctl (an independent reader of the same library)
    says SciPy's OpenBLAS runs an AVX-512 core, off elsewhere."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS)

    from cbp import _threads

    if not _threads.bind():
        assert not _threads.forward_nn_default()
        return
    bound = os.path.basename(_threads._bound[2])
    infos = [i for i in threadpoolctl.threadpool_info()
             if i.get("internal_api") == "openblas" and os.path.basename(i["filepath"]) == bound]
    assert infos, f"threadpoolctl does not list the OpenBLAS cbp bound ({bound})"
    core = (infos[0].get("architecture") or "").lower()
    assert _threads.forward_nn_default() == (core in ("skylakex", "cooperlake",
                                                       "sapphirerapids"))
    assert cbp.Network.mlp([4, 3])._engine.forward_nn == _threads.forward_nn_default()
