"""Gradients of cbp.Network (API.md §2, §4, §8) against three oracles:

(a) the plain-NumPy reference of the MLP forward/backward
    (tests/reference_network.py), for every activation and loss;
(b) central finite differences in float64 with smooth activations, both
    through cbp.gradcheck and through an independent second-order
    difference on the reference loss (so gradcheck itself is checked);
(c) torch.autograd in float64, when torch is installed.

How errors are measured.  An element-wise relative error means nothing for
an entry that happens to be near zero (a gradient entry of 1e-13 computed
as 2e-13 is perfectly accurate at the scale of the problem), so the
comparisons with the reference and with torch use the max-norm relative
error of each parameter's gradient, max|a − e| / max|e|
(reference_network.max_norm_rel_error), and `assert_meaningful` checks
that every compared gradient is far from zero so the ratio is not a
division by rounding noise.  cbp.gradcheck reports its own element-wise
measure |a − n| / max(|a|, |n|, 1e-8) (API §8); its rounding error is
≈ 1e-12 |L| absolute, so the inputs below are chosen (random non-zero
biases, O(1) inputs, small networks) to keep every gradient entry well
above 1e-5, where that measure stays below 1e-7.

Parameters are randomised (weights ~ N(0, 1/in), biases ~ N(0, 0.5²))
rather than left at the initialisation, whose zero biases would leave the
bias path of the backward pass less exercised.
"""
import numpy as np
import pytest

import cbp
import reference_network as R
from random_data import random_xy

LOSS_CASES = [("softmax_cross_entropy", 3), ("binary_cross_entropy", 1),
              ("binary_cross_entropy", 3), ("mse", 1), ("mse", 3)]
LOSS_IDS = [f"{loss}-out{k}" for loss, k in LOSS_CASES]
ALL_ACTIVATIONS = tuple(R.ACTIVATIONS)
# float64 against the NumPy reference: both are exact to rounding; the
# products are summed in different orders by two different BLAS builds, so
# agreement is ~1e-15 to 1e-14 of the largest entry; 1e-11 leaves margin for
# cancellation in sums over thousands of rows.
TOL_REFERENCE = 1e-11
TOL_TORCH = 1e-10
TOL_FD = 1e-7


# ---------------------------------------------------------------- helpers
def build(sizes, activations, loss, dtype="float64", seed=0):
    """A Network of Dense layers with `activations` (one per layer, the last
    included) and random non-zero parameters."""
    layers = [cbp.Dense(sizes[i], sizes[i + 1], activation=a)
              for i, a in enumerate(activations)]
    net = cbp.Network(layers, loss=loss, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    for layer in net.layers:
        layer.W[...] = rng.normal(0.0, 1.0 / np.sqrt(layer.in_features), layer.W.shape)
        layer.b[...] = rng.normal(0.0, 0.5, layer.b.shape)
    return net


def make_data(loss, n, n_in, n_out, seed=0):
    return random_xy(loss, n, n_in, n_out, np.random.default_rng(seed))


def make_weights(n, seed=0, zeros=True):
    rng = np.random.default_rng(seed + 500)
    w = rng.uniform(0.1, 3.0, size=n)
    if zeros and n > 2:
        w[rng.choice(n, size=max(1, n // 4), replace=False)] = 0.0
    return w


def params64(net):
    return [np.array(p, dtype=np.float64) for p in net.parameters()]


def activations_of(net):
    return [layer.activation for layer in net.layers]


def assert_meaningful(grads, floor=1e-6):
    """Every compared gradient must be far from zero, or a relative error is
    a ratio of rounding noise."""
    for k, g in enumerate(grads):
        assert np.max(np.abs(g)) > floor, f"gradient {k} is too small to compare ({g})"


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def network_gradients(net):
    """[dW1, db1, …] read through the layers, after checking net.gradients()
    holds the same arrays in the same order."""
    by_layer = [g for layer in net.layers for g in (layer.dW, layer.db)]
    listed = net.gradients()
    assert len(listed) == len(by_layer) == 2 * len(net.layers)
    for a, b in zip(listed, by_layer):
        assert a.shape == b.shape and np.array_equal(a, b)
    for layer in net.layers:
        assert layer.dW.shape == (layer.out_features, layer.in_features)
        assert layer.db.shape == (layer.out_features,)
        assert layer.dW.dtype == layer.db.dtype == net.dtype
    return [g.copy() for g in by_layer]


def compare_with_reference(net, X, y, sample_weight=None, tol=TOL_REFERENCE):
    """net.backward against the reference: loss, every dW/db, and forward.
    Returns the largest error seen."""
    acts = activations_of(net)
    params = params64(net)
    ref_loss, ref_grads = R.loss_and_gradients(params, acts, net.loss, X, y, sample_weight)
    loss = net.backward(X, y, sample_weight=sample_weight)
    assert isinstance(loss, float)
    grads = network_gradients(net)
    assert_meaningful(ref_grads)
    worst = rel(loss, ref_loss)
    assert worst <= tol, (loss, ref_loss)
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        err = R.max_norm_rel_error(g, r)
        assert err <= tol, f"gradient {k} ({'Wb'[k % 2]}{k // 2 + 1}): error {err:.3e}"
        worst = max(worst, err)
    out = net.forward(X)
    ref_out = R.output(params, acts, np.asarray(X, np.float64))
    assert out.shape == ref_out.shape and out.dtype == net.dtype
    err = R.max_norm_rel_error(out, ref_out)
    assert err <= tol
    return max(worst, err)


# ---------------------------------------------------------------- (a) reference
@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_every_activation_and_loss_match_reference(activation, loss, n_out):
    # Two hidden layers with the activation under test, identity output
    # (Network.mlp's shape).
    net = build([5, 8, 6, n_out], [activation, activation, "identity"], loss, seed=1)
    X, y = make_data(loss, 7, 5, n_out, seed=2)
    compare_with_reference(net, X, y)


@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_activation_on_the_output_layer_matches_reference(activation, loss, n_out):
    # The loss gradient passes through the last layer's own σ' (engine
    # loss_chunk → activation_backward), which Network.mlp never exercises.
    net = build([4, 6, n_out], ["tanh", activation], loss, seed=3)
    net.layers[-1].b += 1.0  # keep most outputs on the live side of a ReLU
    X, y = make_data(loss, 9, 4, n_out, seed=4)
    compare_with_reference(net, X, y)


DEPTH_SIZES = {1: [6], 2: [6, 9], 4: [6, 16, 3, 11]}
DEPTH_ACTS = ["relu", "gelu", "tanh"]
# 1: the vector (gemv/ger) path; 7, 64: one chunk; 2049 = 2·1024 + 1 and
# 2500 = 2·1024 + 452: gradients accumulated over chunks of the engine's
# 1024-row workspace, the 2049 case ending on a one-row (vector) chunk.
BATCHES = [1, 7, 64, 2049, 2500]


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("depth", sorted(DEPTH_SIZES))
@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_depths_and_batch_sizes_match_reference(depth, n, loss, n_out):
    sizes = DEPTH_SIZES[depth] + [n_out]
    acts = DEPTH_ACTS[:depth - 1] + ["identity"]
    net = build(sizes, acts, loss, seed=depth)
    X, y = make_data(loss, n, sizes[0], n_out, seed=n)
    compare_with_reference(net, X, y)
    if n > 1024:
        # The batch really was split: the workspace holds fewer rows.
        assert net._engine.capacity < n


@pytest.mark.parametrize("activation,slope", [("relu", 0.0), ("leaky_relu", 0.01)])
def test_kink_derivative_at_exactly_zero(activation, slope):
    # API §8: σ'(0) is 0 for relu and 0.01 for leaky_relu (as PyTorch).  A
    # zero input row with a zero first bias puts every first-layer
    # pre-activation of that row exactly at 0, so db1 picks up σ'(0).
    net = build([4, 5, 3], [activation, "identity"], "mse", seed=16)
    net.layers[0].b[...] = 0.0
    X, y = make_data("mse", 6, 4, 3, seed=16)
    X[0] = 0.0
    compare_with_reference(net, X, y)
    # Row 0 alone: its db1 is exactly slope · (Δ2 W2) for that row.
    net.backward(X[:1], y[:1])
    params = params64(net)
    out = R.output(params, activations_of(net), X[:1])
    delta2 = R.row_losses_grad("mse", out, y[:1])
    np.testing.assert_allclose(net.layers[0].db, slope * (delta2 @ params[2])[0],
                               rtol=1e-13, atol=1e-300)
    if slope == 0.0:
        assert not np.any(net.layers[0].db) and not np.any(net.layers[0].dW)
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    compare_with_torch(net, X, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_in_place_activations_keep_the_derivative_of_z(activation, dtype):
    # relu and leaky_relu overwrite Z with A (one workspace buffer, cbp.h),
    # and the backward pass reads σ' off A: that must be σ'(z) for every z,
    # also ±0, subnormals, and negatives whose leaky image rounds to -0.
    # W1 = I and b1 = 0 make the first layer's pre-activations those values.
    tiny = float(np.finfo(dtype).smallest_subnormal)
    z = np.array([-0.0, 0.0, tiny, -tiny, -50 * tiny, 1.0, -1.0, 3 * tiny, -2.0, 0.5])
    net = build([z.size, z.size, 3], [activation, "identity"], "mse", dtype=dtype, seed=3)
    net.layers[0].W[...] = np.eye(z.size)
    net.layers[0].b[...] = 0.0
    rng = np.random.default_rng(3)
    X = np.tile(z, (4, 1)) * rng.choice([1.0, 1.0, 2.0], size=(4, 1))
    y = rng.normal(size=(4, 3))
    compare_with_reference(net, X, y, tol=TOL_REFERENCE if dtype == "float64" else 1e-5)
    # The fused training step (plain SGD folds the update into the products)
    # reads σ' off A too: its update is -lr times the reference gradient.
    lr = 0.5
    before = params64(net)
    _, ref_grads = R.loss_and_gradients(before, activations_of(net), "mse", X, y, None)
    net.train_step(X, y, cbp.SGD(lr=lr))
    for k, (p0, p1, g) in enumerate(zip(before, params64(net), ref_grads)):
        err = R.max_norm_rel_error((p0 - p1) / lr, g)
        assert err <= (1e-10 if dtype == "float64" else 1e-4), (k, err)
    # No A of its own: the workspace is a sigmoid network's less one (rows, units).
    other = build([z.size, z.size, 3], ["sigmoid", "identity"], "mse", dtype=dtype, seed=3)
    other.backward(X, y)
    rows = net._engine.capacity
    assert other._engine.capacity == rows
    assert (other._engine.workspace_nbytes - net._engine.workspace_nbytes
            == rows * z.size * np.dtype(dtype).itemsize)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_the_derivative_of_the_output_is_the_derivative_of_z(activation, dtype):
    # Why the engine may apply relu and leaky_relu in place (cbp.h): σ'(σ(z))
    # is σ'(z) bit for bit, for ±0, NaN, ±inf, subnormals, the extremes, and
    # 20,000 values of every magnitude.
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    special = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, tiny, -tiny, -50 * tiny,
               -99 * tiny, info.tiny, -info.tiny, info.max, -info.max, 1.0, -1.0]
    rng = np.random.default_rng(7)
    scale = np.ldexp(np.ones(20_000, dtype), rng.integers(info.minexp - info.nmant,
                                                          info.maxexp, 20_000))
    with np.errstate(over="ignore"):   # a few overflow to ±inf: values too
        z = np.concatenate([np.array(special, dtype),
                            rng.standard_normal(20_000).astype(dtype) * scale])
    a = cbp.ops.activation_forward(activation, z)
    from_a = cbp.ops.activation_derivative(activation, a)
    from_z = cbp.ops.activation_derivative(activation, z)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(from_a.view(bits), from_z.view(bits))


@pytest.mark.parametrize("sizes", [[1, 1], [3, 1, 2], [1, 33, 2], [20, 64, 5],
                                   [7, 1, 1, 4], [2, 40, 40, 40, 1]],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
def test_widths_match_reference(sizes, loss):
    acts = ["softplus", "elu", "sigmoid", "tanh"][:len(sizes) - 2] + ["identity"]
    net = build(sizes, acts, loss, seed=len(sizes))
    X, y = make_data(loss, 13, sizes[0], sizes[-1], seed=5)
    compare_with_reference(net, X, y)


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "mse"])
def test_single_output_targets_1d_and_2d_agree(loss):
    net = build([4, 5, 1], ["tanh", "identity"], loss, seed=6)
    X, y = make_data(loss, 11, 4, 1, seed=6)
    assert y.shape == (11,)
    loss_1d = net.backward(X, y)
    g_1d = network_gradients(net)
    loss_2d = net.backward(X, y.reshape(-1, 1))
    g_2d = network_gradients(net)
    assert loss_1d == loss_2d
    for a, b in zip(g_1d, g_2d):
        assert np.array_equal(a, b)


def test_gradients_are_views_refreshed_by_each_backward():
    net = build([5, 6, 3], ["tanh", "identity"], "softmax_cross_entropy", seed=7)
    views = net.gradients()
    X1, y1 = make_data("softmax_cross_entropy", 8, 5, 3, seed=1)
    X2, y2 = make_data("softmax_cross_entropy", 8, 5, 3, seed=2)
    net.backward(X1, y1)
    first = [v.copy() for v in views]
    net.backward(X2, y2)
    _, ref = R.loss_and_gradients(params64(net), activations_of(net), net.loss, X2, y2)
    for v, f, r in zip(views, first, ref):
        assert not np.array_equal(v, f)
        assert R.max_norm_rel_error(v, r) <= TOL_REFERENCE


def test_backward_leaves_parameters_and_reuse_is_repeatable():
    # Two identical calls give bit-identical gradients: nothing accumulates
    # across calls (the gradient buffer is overwritten, not added to).
    net = build([5, 7, 3], ["gelu", "identity"], "softmax_cross_entropy", seed=8)
    before = [p.copy() for p in net.parameters()]
    X, y = make_data("softmax_cross_entropy", 2500, 5, 3, seed=8)
    l1 = net.backward(X, y)
    g1 = network_gradients(net)
    l2 = net.backward(X, y)
    g2 = network_gradients(net)
    assert l1 == l2
    for a, b in zip(g1, g2):
        assert np.array_equal(a, b)
    for p, q in zip(before, net.parameters()):
        assert np.array_equal(p, q)


# ---------------------------------------------------------------- forward / proba
@pytest.mark.parametrize("n", [1, 7, 2500])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_and_predict_proba_match_reference(dtype, n):
    tol = TOL_REFERENCE if dtype == "float64" else 2e-6  # float32: observed ≤ 1e-7
    net = build([5, 9, 4], ["elu", "identity"], "softmax_cross_entropy", dtype=dtype, seed=9)
    X, _ = make_data("softmax_cross_entropy", n, 5, 4, seed=9)
    X = X.astype(dtype)
    ref_out = R.output(params64(net), activations_of(net), X)
    out = net.forward(X)
    assert out.dtype == np.dtype(dtype)
    assert R.max_norm_rel_error(out, ref_out) <= tol
    proba = net.predict_proba(X)
    assert proba.shape == (n, 4) and proba.dtype == np.dtype(dtype)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=50 * np.finfo(dtype).eps)
    e = np.exp(ref_out - ref_out.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, e / e.sum(axis=1, keepdims=True), rtol=tol * 10,
                               atol=tol)


@pytest.mark.parametrize("n_out", [1, 3])
def test_predict_proba_binary_is_sigmoid_of_forward(n_out):
    net = build([4, 6, n_out], ["tanh", "identity"], "binary_cross_entropy", seed=10)
    X, _ = make_data("binary_cross_entropy", 2049, 4, n_out, seed=10)
    z = R.output(params64(net), activations_of(net), X)
    proba = net.predict_proba(X)
    assert proba.shape == (2049, n_out)
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-z)), rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- sample weights
@pytest.mark.parametrize("n", [1, 7, 2500])
@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_weighted_loss_and_gradients_match_reference(loss, n_out, n):
    # Σ wᵢ lᵢ / Σ wᵢ with lᵢ the mean over the row's outputs (BCE, MSE);
    # a quarter of the weights are zero.
    net = build([5, 8, n_out], ["softplus", "identity"], loss, seed=11)
    X, y = make_data(loss, n, 5, n_out, seed=11)
    w = make_weights(n, seed=n)
    compare_with_reference(net, X, y, sample_weight=w)
    # Written out by hand from the reference's per-row losses:
    out = R.output(params64(net), activations_of(net), X)
    expected = float(np.sum(w * R.row_losses(loss, out, y)) / np.sum(w))
    assert rel(net.backward(X, y, sample_weight=w), expected) <= TOL_REFERENCE


@pytest.mark.parametrize("n", [7, 2500])
@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_all_ones_weights_equal_unweighted(loss, n_out, n):
    net = build([5, 8, n_out], ["tanh", "identity"], loss, seed=12)
    X, y = make_data(loss, n, 5, n_out, seed=12)
    plain = net.backward(X, y)
    g_plain = network_gradients(net)
    ones = net.backward(X, y, sample_weight=np.ones(n))
    g_ones = network_gradients(net)
    assert rel(ones, plain) <= 1e-14
    for a, b in zip(g_ones, g_plain):
        assert R.max_norm_rel_error(a, b) <= 1e-14


@pytest.mark.parametrize("n", [9, 2500])
@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_zero_weights_remove_rows(loss, n_out, n):
    net = build([5, 8, n_out], ["sigmoid", "identity"], loss, seed=13)
    X, y = make_data(loss, n, 5, n_out, seed=13)
    w = make_weights(n, seed=13)
    keep = w > 0
    assert 0 < keep.sum() < n
    weighted = net.backward(X, y, sample_weight=w)
    g_weighted = network_gradients(net)
    subset = net.backward(X[keep], y[keep], sample_weight=w[keep])
    g_subset = network_gradients(net)
    assert rel(weighted, subset) <= 1e-13
    for a, b in zip(g_weighted, g_subset):
        assert R.max_norm_rel_error(a, b) <= 1e-12


@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_integer_weights_equal_duplicated_rows_and_scale_is_irrelevant(loss, n_out):
    net = build([5, 8, n_out], ["elu", "identity"], loss, seed=14)
    X, y = make_data(loss, 10, 5, n_out, seed=14)
    counts = np.array([1, 2, 3, 1, 0, 4, 1, 2, 1, 1])
    weighted = net.backward(X, y, sample_weight=counts)
    g_weighted = network_gradients(net)
    rows = np.repeat(np.arange(10), counts)
    dup = net.backward(X[rows], y[rows])
    g_dup = network_gradients(net)
    assert rel(weighted, dup) <= 1e-13
    for a, b in zip(g_weighted, g_dup):
        assert R.max_norm_rel_error(a, b) <= 1e-12
    scaled = net.backward(X, y, sample_weight=counts * 1000.0)
    g_scaled = network_gradients(net)
    assert rel(scaled, weighted) <= 1e-13
    for a, b in zip(g_scaled, g_weighted):
        assert R.max_norm_rel_error(a, b) <= 1e-12


def test_all_zero_weights_give_zero_gradient():
    net = build([5, 8, 3], ["tanh", "identity"], "softmax_cross_entropy", seed=15)
    X, y = make_data("softmax_cross_entropy", 6, 5, 3, seed=15)
    net.backward(X, y)  # fill the buffer with something non-zero first
    loss = net.backward(X, y, sample_weight=np.zeros(6))
    assert np.isfinite(loss)
    for g in network_gradients(net):
        assert not np.any(g)


# ---------------------------------------------------------------- (b) finite differences
def fd_case(sizes, acts, loss, n, weighted=False, tries=20):
    """A network and batch whose gradient entries are all far from zero.

    cbp.gradcheck reports the element-wise |a − n| / max(|a|, |n|, 1e-8)
    (API §8), and a finite difference carries a rounding error of about
    1e-16 |L| / ε ≈ 1e-11 absolute whatever the entry, so an entry that
    happens to be 1e-6 shows a "relative error" of 1e-5 that says nothing
    about the backpropagation.  Among the first `tries` seeds this takes
    the draw whose smallest gradient entry (by the NumPy reference, not by
    cbp) is largest, and requires it above 1e-4, so that the element-wise
    measure is meaningful at 1e-7."""
    best = None
    for seed in range(tries):
        net = build(sizes, acts, loss, seed=seed)
        X, y = make_data(loss, n, sizes[0], sizes[-1], seed=seed + 100)
        w = make_weights(n, seed=seed) if weighted else None
        _, g = R.loss_and_gradients(params64(net), acts, loss, X, y, w)
        smallest = min(np.min(np.abs(x)) for x in g)
        if best is None or smallest > best[0]:
            best = (smallest, net, X, y, w)
    assert best[0] > 1e-4, f"no draw with gradient entries above 1e-4 ({best[0]:.2e})"
    return best[1:]


def check_finite_differences(net, X, y, sample_weight=None):
    """cbp.gradcheck and an independent FD loop on the reference loss.
    Returns (gradcheck's max_rel_error, the largest max-norm error of the
    network's gradients against our own differences)."""
    acts, params = activations_of(net), params64(net)
    net.backward(X, y, sample_weight=sample_weight)
    grads = network_gradients(net)
    own_fd = R.finite_difference_gradients(params, acts, net.loss, X, y, sample_weight)

    # Our differences against the network's backpropagation.  Second-order
    # central difference with ε = 1e-5: truncation ≈ ε² |L‴| / 6 ≈ 1e-11
    # and rounding ≈ 1e-16 |L| / ε ≈ 1e-11, both far below 1e-7 of each
    # gradient's largest entry.
    own = max(R.max_norm_rel_error(g, f) for g, f in zip(grads, own_fd))
    assert own < TOL_FD

    result = cbp.gradcheck(net, X, y, sample_weight=sample_weight)
    names = [f"{kind}{i + 1}" for i in range(len(net.layers)) for kind in ("W", "b")]
    assert list(result.errors) == names
    assert result.max_rel_error == max(result.errors.values())
    # The API's own element-wise measure (fd_case keeps every entry > 1e-4).
    assert result.max_rel_error < TOL_FD, result
    assert result.passed(TOL_FD)
    for name, g, f in zip(names, grads, own_fd):
        # gradcheck's analytic side is the network's own gradient (computed
        # on a float64 copy), its numeric side agrees with our differences,
        # and its reported error is the documented formula.
        a, num = result.analytic[name], result.numeric[name]
        assert a.shape == num.shape == g.shape
        assert R.max_norm_rel_error(a, g) <= (TOL_REFERENCE if net.dtype == np.float64 else 1e-5)
        assert R.max_norm_rel_error(num, f) < TOL_FD
        expected = np.max(np.abs(a - num) / np.maximum(np.maximum(np.abs(a), np.abs(num)), 1e-8))
        assert result.errors[name] == pytest.approx(expected, rel=1e-12, abs=1e-300)
    return result.max_rel_error, own


@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("activation", R.SMOOTH_ACTIVATIONS)
def test_finite_differences_every_smooth_activation_and_loss(activation, loss, n_out):
    net, X, y, _ = fd_case([4, 5, n_out], [activation, "identity"], loss, 6)
    check_finite_differences(net, X, y)


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("sizes,acts", [
    ([3, 4], ["identity"]),
    ([3, 4], ["tanh"]),
    ([3, 5, 4, 3, 2], ["gelu", "sigmoid", "softplus", "identity"]),
    ([3, 5, 4, 3, 2], ["elu", "tanh", "gelu", "sigmoid"]),
], ids=["depth1-identity", "depth1-tanh", "depth4-a", "depth4-b"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy", "mse"])
def test_finite_differences_depths(sizes, acts, loss, n):
    net, X, y, _ = fd_case(sizes, acts, loss, n)
    check_finite_differences(net, X, y)


@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_finite_differences_with_sample_weights(loss, n_out):
    net, X, y, w = fd_case([4, 5, 3, n_out], ["tanh", "gelu", "identity"], loss, 8,
                           weighted=True)
    assert np.any(w == 0)
    check_finite_differences(net, X, y, sample_weight=w)


def test_finite_differences_float32_network_in_float64():
    # gradcheck runs on a float64 copy: a float32 network checks as tightly,
    # and is left untouched.
    net = build([4, 6, 3], ["softplus", "identity"], "softmax_cross_entropy",
                dtype="float32", seed=23)
    before = [p.copy() for p in net.parameters()]
    X, y = make_data("softmax_cross_entropy", 5, 4, 3, seed=23)
    result = cbp.gradcheck(net, X, y)
    assert result.max_rel_error < TOL_FD
    own_fd = R.finite_difference_gradients(params64(net), activations_of(net), net.loss, X, y)
    names = ["W1", "b1", "W2", "b2"]
    for name, f in zip(names, own_fd):
        assert R.max_norm_rel_error(result.analytic[name], f) < TOL_FD
    for p, q in zip(before, net.parameters()):
        assert p.dtype == q.dtype == np.float32 and np.array_equal(p, q)
    assert net.dtype == np.float32


def test_gradcheck_gives_exactly_zero_where_a_parameter_cannot_change_the_loss():
    """Weights on an input that is always 0 (as the digits' blank border
    pixels) cannot change the loss: the four perturbed losses are equal,
    and the numeric derivative must be exactly 0, as the analytic one is.
    (The formula evaluated left to right left a 3.7e-13 residue, a
    relative error of 3.7e-5 against the 1e-8 floor, and gradcheck failed
    a correct network; found by a review against PyTorch.)"""
    rng = np.random.default_rng(0)
    net = cbp.Network.mlp([3, 4, 2], activation="tanh", dtype="float64", seed=0)
    X = rng.standard_normal((5, 3))
    X[:, 0] = 0.0
    y = rng.integers(0, 2, 5)
    result = cbp.gradcheck(net, X, y)
    assert np.all(result.analytic["W1"][:, 0] == 0)
    assert np.all(result.numeric["W1"][:, 0] == 0)
    assert result.passed() and result.max_rel_error < TOL_FD


# ---------------------------------------------------------------- (c) torch.autograd
def compare_with_torch(net, X, y, sample_weight=None, tol=TOL_TORCH):
    pytest.importorskip("torch")
    acts, params = activations_of(net), params64(net)
    t_loss, t_grads = R.torch_loss_and_gradients(params, acts, net.loss, X, y, sample_weight)
    loss = net.backward(X, y, sample_weight=sample_weight)
    grads = network_gradients(net)
    assert_meaningful(t_grads)
    worst = rel(loss, t_loss)
    assert worst <= tol, (loss, t_loss)
    for k, (g, t) in enumerate(zip(grads, t_grads)):
        err = R.max_norm_rel_error(g, t)
        assert err <= tol, f"gradient {k}: error {err:.3e} against torch"
        worst = max(worst, err)
    return worst


@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_every_activation_and_loss_match_torch(activation, loss, n_out):
    net = build([5, 8, 6, n_out], [activation, activation, "identity"], loss, seed=30)
    X, y = make_data(loss, 7, 5, n_out, seed=30)
    compare_with_torch(net, X, y)


@pytest.mark.parametrize("n", [1, 64, 2500])
@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_deep_network_and_weights_match_torch(loss, n_out, n):
    net = build([6, 16, 3, 11, n_out], ["gelu", "leaky_relu", "softplus", "identity"], loss,
                seed=31)
    X, y = make_data(loss, n, 6, n_out, seed=31 + n)
    compare_with_torch(net, X, y)
    if n > 2:
        compare_with_torch(net, X, y, sample_weight=make_weights(n, seed=31))


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_output_layer_activation_matches_torch(activation):
    net = build([4, 6, 2], ["elu", activation], "mse", seed=32)
    net.layers[-1].b += 1.0  # keep most outputs on the live side of a ReLU
    X, y = make_data("mse", 9, 4, 2, seed=32)
    compare_with_torch(net, X, y)


# ---------------------------------------------------------------- float32
# A float32 network against the float64 reference evaluated at the same
# (float32) parameters and inputs: the differences are float32 rounding,
# ≈ 6e-8 per operation, growing with the length of the sums (up to 2500
# rows here) and with cancellation in them.  Observed: ≤ 3e-7 of the
# largest entry up to 64 rows, ≤ 6e-7 at 2500 rows; the bounds 5e-6 and
# 2e-5 (≈ 100 and 300 float32 ulps) leave room for other BLAS kernels
# and still catch any formula error (those are O(1e-2) or larger).
@pytest.mark.parametrize("n", [1, 7, 64, 2500])
@pytest.mark.parametrize("loss,n_out", LOSS_CASES, ids=LOSS_IDS)
def test_float32_network_matches_float64_reference(loss, n_out, n):
    tol = 2e-5 if n > 1024 else 5e-6
    net = build([6, 10, 7, n_out], ["tanh", "relu", "identity"], loss, dtype="float32",
                seed=40)
    X, y = make_data(loss, n, 6, n_out, seed=40 + n)
    X32 = X.astype(np.float32)
    if loss != "softmax_cross_entropy":
        y = y.astype(np.float32)  # the same targets the network sees
    w = make_weights(n, seed=n, zeros=False) if n > 1 else None
    for sample_weight in (None, w):
        compare_with_reference(net, X32, y, sample_weight=sample_weight, tol=tol)


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_float32_every_activation_matches_reference(activation):
    net = build([5, 8, 6, 3], [activation, activation, "identity"], "softmax_cross_entropy",
                dtype="float32", seed=41)
    X, y = make_data("softmax_cross_entropy", 33, 5, 3, seed=41)
    compare_with_reference(net, X.astype(np.float32), y, tol=5e-6)
