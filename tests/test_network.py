"""cbp.Network: construction, parameters, initialisation, display, copying,
pickling, data conversion and validation, inference (API.md §2, §5, §8)."""
import copy
import inspect
import pickle
import re

import numpy as np
import pytest

import cbp
from cbp.ops import ACTIVATIONS
from random_data import random_xy

LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "mse")
DTYPES = ("float32", "float64")
HE = ("relu", "leaky_relu", "elu", "gelu")
GLOROT = ("identity", "sigmoid", "tanh", "softplus")
# (loss, number of outputs) pairs covering every output/target shape rule.
LOSS_OUTS = [("softmax_cross_entropy", 3), ("binary_cross_entropy", 1),
             ("binary_cross_entropy", 3), ("mse", 1), ("mse", 3)]


def make_data(loss, n=40, n_in=5, n_out=3, seed=0):
    return random_xy(loss, n, n_in, n_out, np.random.default_rng(seed))


def make_net(loss="softmax_cross_entropy", n_in=5, n_out=3, dtype="float64", seed=0,
             hidden=(7,), activation="tanh"):
    return cbp.Network.mlp([n_in, *hidden, n_out], activation=activation, loss=loss,
                           dtype=dtype, seed=seed)


def params_of(net):
    return [p.copy() for p in net.parameters()]


def assert_params_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y)


def reference_row_losses(loss, Z, y):
    """Per-row losses in float64 from the last layer's outputs Z."""
    Z = np.asarray(Z, np.float64)
    if loss == "softmax_cross_entropy":
        m = Z.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]
        return lse - Z[np.arange(len(y)), np.asarray(y)]
    Y = np.asarray(y, np.float64).reshape(Z.shape)
    if loss == "binary_cross_entropy":
        return (np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))).mean(axis=1)
    return ((Z - Y) ** 2).mean(axis=1)


# ---------------------------------------------------------------- construction
def test_network_defaults():
    net = cbp.Network([cbp.Dense(64, 32, activation="relu"), cbp.Dense(32, 10)])
    assert net.loss == "softmax_cross_entropy"
    assert net.dtype == np.dtype(np.float32)
    assert net.seed is None
    assert [type(l) for l in net.layers] == [cbp.Dense, cbp.Dense]
    assert net.layers[0].activation == "relu" and net.layers[1].activation == "identity"
    sig = inspect.signature(cbp.Network)
    assert sig.parameters["loss"].default == "softmax_cross_entropy"
    assert sig.parameters["dtype"].default == "float32"
    assert sig.parameters["seed"].default is None


def test_mlp_defaults():
    net = cbp.Network.mlp([64, 32, 16, 10])
    assert isinstance(net, cbp.Network)
    assert net.loss == "softmax_cross_entropy"
    assert net.dtype == np.dtype(np.float32)
    assert net.seed is None
    assert [(l.in_features, l.out_features) for l in net.layers] == [(64, 32), (32, 16), (16, 10)]
    assert [l.activation for l in net.layers] == ["relu", "relu", "identity"]
    sig = inspect.signature(cbp.Network.mlp)
    assert sig.parameters["activation"].default == "relu"
    assert sig.parameters["loss"].default == "softmax_cross_entropy"
    assert sig.parameters["dtype"].default == "float32"
    assert sig.parameters["seed"].default is None


def test_mlp_arguments_are_used():
    net = cbp.Network.mlp([4, 6, 2], activation="tanh", loss="mse", dtype="float64", seed=3)
    assert [l.activation for l in net.layers] == ["tanh", "identity"]
    assert net.loss == "mse" and net.dtype == np.float64 and net.seed == 3
    assert all(p.dtype == np.float64 for p in net.parameters() + net.gradients())
    one = cbp.Network.mlp([4, 2])
    assert len(one.layers) == 1 and one.layers[0].activation == "identity"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.dtype("float32"), "float64"])
def test_dtype_spellings(dtype):
    net = make_net(dtype=dtype)
    assert net.dtype == np.dtype(dtype)
    assert all(p.dtype == np.dtype(dtype) for p in net.parameters())
    assert net.forward(np.zeros((2, 5))).dtype == np.dtype(dtype)


def test_layer_chaining_error():
    with pytest.raises(ValueError, match=r"32|16"):
        cbp.Network([cbp.Dense(64, 32), cbp.Dense(16, 10)])
    with pytest.raises(ValueError):
        cbp.Network([])
    with pytest.raises(TypeError):
        cbp.Network([cbp.Dense(3, 4), "not a layer"])
    with pytest.raises(ValueError):
        cbp.Network.mlp([5])
    with pytest.raises(ValueError):
        cbp.Network.mlp([])


@pytest.mark.parametrize("args", [(0, 3), (3, 0), (-1, 3)])
def test_dense_bad_sizes_value_error(args):
    with pytest.raises(ValueError):
        cbp.Dense(*args)


@pytest.mark.parametrize("args", [(2.5, 3), ("3", 3), (True, 3), (None, 3)])
def test_dense_bad_size_types(args):
    with pytest.raises((TypeError, ValueError)):
        cbp.Dense(*args)


def test_dense_attributes_before_network():
    d = cbp.Dense(3, 4, activation="relu")
    assert (d.in_features, d.out_features, d.activation) == (3, 4, "relu")
    assert d.num_parameters == 16
    with pytest.raises(AttributeError):
        d.W


@pytest.mark.parametrize("name, value", [("activation", "tanh"), ("activation", "swish"),
                                         ("in_features", 7), ("out_features", 2)])
def test_a_layers_shape_and_activation_are_fixed(tmp_path, name, value):
    """A network compiles its layers into its plan: a changed activation
    was saved, copied and summarised while the plan kept computing the old
    one (a copy or a loaded model then predicted otherwise; a bad name was
    saved into a file that load refused)."""
    net = cbp.Network.mlp([4, 3, 2], seed=0)
    with pytest.raises(AttributeError):
        setattr(net.layers[0], name, value)
    with pytest.raises(AttributeError):
        setattr(cbp.Dense(4, 3), name, value)
    X = np.random.default_rng(0).standard_normal((20, 4))
    net.save(tmp_path / "m.npz")
    assert np.array_equal(cbp.load(tmp_path / "m.npz").predict_proba(X), net.predict_proba(X))
    assert np.array_equal(net.copy().predict_proba(X), net.predict_proba(X))


@pytest.mark.parametrize("name, value", [("loss", "mse"), ("layers", []), ("dtype", "float64"),
                                         ("seed", 3)])
def test_a_networks_architecture_is_fixed(name, value):
    """net.loss, net.layers, net.dtype and net.seed describe the compiled
    plan: they cannot be set (after net.loss = "mse", predict returned raw
    logits; after net.layers = net.layers[:1], train_step still ran the
    whole network), and the list net.layers returns is a copy."""
    net = cbp.Network.mlp([4, 3, 2], seed=0)
    config = net.get_config()
    with pytest.raises(AttributeError):
        setattr(net, name, value)
    net.layers.append(cbp.Dense(2, 2))
    net.layers.clear()
    assert net.get_config() == config and len(net.layers) == 2


def test_dense_reused_in_second_network_is_refused_and_first_is_intact():
    d1, d2 = cbp.Dense(5, 4, activation="tanh"), cbp.Dense(4, 3)
    net1 = cbp.Network([d1, d2], dtype="float64", seed=0)
    X = make_data("softmax_cross_entropy")[0]
    out = net1.forward(X)
    with pytest.raises(ValueError):
        cbp.Network([d1, cbp.Dense(4, 3)], dtype="float64", seed=1)
    # net1 still owns d1: its views still drive net1.
    assert np.array_equal(net1.forward(X), out)
    d1.W[...] = 0
    d1.b[...] = 0
    assert np.allclose(net1.forward(X), np.broadcast_to(d2.b, out.shape))


def test_same_dense_twice_in_one_network_is_refused():
    d = cbp.Dense(4, 4, activation="tanh")
    with pytest.raises(ValueError):
        cbp.Network([d, d, cbp.Dense(4, 2)])


def test_failed_construction_leaves_layers_reusable():
    d = cbp.Dense(5, 4)
    with pytest.raises(ValueError):
        cbp.Network([d, cbp.Dense(3, 2)])
    with pytest.raises(ValueError):
        cbp.Network([d, cbp.Dense(4, 2)], loss="hinge")
    with pytest.raises(ValueError):
        cbp.Network([d, cbp.Dense(4, 2)], dtype="float16")
    net = cbp.Network([d, cbp.Dense(4, 2)])
    assert net.layers[0] is d and d.W.shape == (4, 5)


def test_unknown_loss_lists_known():
    with pytest.raises(ValueError) as e:
        cbp.Network([cbp.Dense(3, 2)], loss="hinge")
    msg = str(e.value)
    assert "hinge" in msg
    assert all(name in msg for name in LOSSES)
    with pytest.raises(ValueError):
        cbp.Network.mlp([3, 2], loss="cross_entropy")


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex128", "double precision", "f16",
                                   object, 3])
def test_unknown_dtype_lists_known(dtype):
    with pytest.raises((ValueError, TypeError)) as e:
        cbp.Network([cbp.Dense(3, 2)], dtype=dtype)
    if isinstance(e.value, ValueError):
        assert "float32" in str(e.value) and "float64" in str(e.value)


def test_dtype_none_is_never_left_unset():
    try:
        net = cbp.Network([cbp.Dense(3, 2)], dtype=None)
    except (TypeError, ValueError):
        return
    assert net.dtype in (np.dtype(np.float32), np.dtype(np.float64))
    assert all(p.dtype == net.dtype for p in net.parameters())


def test_unknown_activation_lists_known():
    for make in (lambda: cbp.Dense(3, 2, activation="swish"),
                 lambda: cbp.Network.mlp([3, 4, 2], activation="swish")):
        with pytest.raises(ValueError) as e:
            make()
        msg = str(e.value)
        assert "swish" in msg
        assert all(name in msg for name in ACTIVATIONS)
    assert set(ACTIVATIONS) >= set(HE) | set(GLOROT)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises((ValueError, TypeError)):
        cbp.Network.mlp([3, 2], seed=seed)


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize("dtype", DTYPES)
def test_W_b_are_writable_views(dtype):
    net = make_net(dtype=dtype, hidden=(6,), activation="relu")
    X = make_data("softmax_cross_entropy")[0]
    for layer in net.layers:
        assert layer.W.shape == (layer.out_features, layer.in_features)
        assert layer.b.shape == (layer.out_features,)
        assert layer.W.dtype == layer.b.dtype == np.dtype(dtype)
        assert layer.W.flags.writeable and layer.b.flags.writeable
    before = net.forward(X)
    last = net.layers[-1]
    last.W[...] = 0
    after = net.forward(X)
    assert not np.array_equal(before, after)
    assert np.array_equal(after, np.broadcast_to(last.b, after.shape))
    last.b[...] = np.arange(3)
    assert np.array_equal(net.forward(X), np.broadcast_to(np.arange(3.0), after.shape))
    # Assigning the attribute writes into the network as well.
    last.b = np.array([5.0, 6.0, 7.0])
    assert np.array_equal(net.forward(X)[0], [5.0, 6.0, 7.0])
    # Writing through parameters() is the same memory.
    net.parameters()[-1][...] = -1
    assert np.array_equal(last.b, [-1, -1, -1])
    assert np.array_equal(net.forward(X), np.full(after.shape, -1.0))


def test_W_of_first_layer_drives_forward():
    net = cbp.Network([cbp.Dense(2, 2)], loss="mse", dtype="float64")
    net.layers[0].W = [[1.0, 2.0], [3.0, 4.0]]
    net.layers[0].b = [0.5, -0.5]
    X = np.array([[1.0, 1.0], [2.0, -1.0]])
    assert np.array_equal(net.forward(X), [[3.5, 6.5], [0.5, 1.5]])


def test_parameters_and_gradients_aligned():
    net = make_net(hidden=(7, 6), activation="relu")
    params, grads = net.parameters(), net.gradients()
    assert len(params) == len(grads) == 2 * len(net.layers)
    for i, layer in enumerate(net.layers):
        assert np.shares_memory(params[2 * i], layer.W)
        assert np.shares_memory(params[2 * i + 1], layer.b)
        assert np.shares_memory(grads[2 * i], layer.dW)
        assert np.shares_memory(grads[2 * i + 1], layer.db)
    for p, g in zip(params, grads):
        assert p.shape == g.shape and p.dtype == g.dtype
    assert sum(p.size for p in params) == net.num_parameters
    X, y = make_data("softmax_cross_entropy")
    net.backward(X, y)
    grads_after = net.gradients()
    assert any(np.abs(g).sum() > 0 for g in grads_after)
    for layer, gW, gb in zip(net.layers, grads_after[::2], grads_after[1::2]):
        assert np.array_equal(layer.dW, gW) and np.array_equal(layer.db, gb)


def test_backward_gradient_of_linear_mse():
    # One identity layer with mse: dW = 2/(n·out) (Z − Y)ᵀ X, db = 2/(n·out) Σ (Z − Y).
    X, y = make_data("mse", n=9, n_in=4, n_out=3, seed=5)
    net = cbp.Network([cbp.Dense(4, 3)], loss="mse", dtype="float64", seed=1)
    W, b = net.layers[0].W.copy(), net.layers[0].b.copy()
    b[...] = [0.1, -0.2, 0.3]
    net.layers[0].b = b
    loss = net.backward(X, y)
    R = X @ W.T + b - y
    assert loss == pytest.approx((R ** 2).mean(), rel=1e-12)
    np.testing.assert_allclose(net.layers[0].dW, 2 * R.T @ X / R.size, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(net.layers[0].db, 2 * R.sum(axis=0) / R.size, rtol=1e-10,
                               atol=1e-14)


def test_backward_does_not_change_parameters():
    net = make_net()
    before = params_of(net)
    net.backward(*make_data("softmax_cross_entropy"))
    assert_params_equal(before, net.parameters())


def test_num_parameters():
    assert cbp.Network.mlp([64, 32, 10]).num_parameters == 64 * 32 + 32 + 32 * 10 + 10 == 2410
    net = cbp.Network([cbp.Dense(3, 5, "relu"), cbp.Dense(5, 1)], loss="mse")
    assert net.num_parameters == 3 * 5 + 5 + 5 + 1
    assert isinstance(net.num_parameters, int)


# ---------------------------------------------------------------- initialisation
def _kurtosis(w):
    w = w - w.mean()
    return float((w ** 4).mean() / (w ** 2).mean() ** 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", HE + GLOROT)
def test_initialisation_statistics(activation, dtype):
    fan_in, fan_out = 800, 500
    net = cbp.Network([cbp.Dense(fan_in, fan_out, activation=activation)],
                      dtype=dtype, seed=7)
    W = net.layers[0].W.astype(np.float64).ravel()
    assert np.all(net.layers[0].b == 0)
    n = W.size
    if activation in HE:
        std = np.sqrt(2.0 / fan_in)
        assert abs(W.std() / std - 1) < 0.01
        assert abs(W.mean()) < 5 * std / np.sqrt(n)
        assert abs(_kurtosis(W) - 3.0) < 0.1  # normal, not uniform
        assert np.abs(W).max() > 4 * std
    else:
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(W).max() <= bound * (1 + 1e-6)
        assert np.abs(W).max() > 0.999 * bound
        assert W.min() < -0.999 * bound and W.max() > 0.999 * bound
        assert abs(W.std() / (bound / np.sqrt(3)) - 1) < 0.01
        assert abs(W.mean()) < 5 * bound / np.sqrt(3 * n)
        assert abs(_kurtosis(W) - 1.8) < 0.05  # uniform


def test_initialisation_follows_each_layers_own_activation():
    net = cbp.Network.mlp([600, 400, 300], activation="relu", dtype="float64", seed=2)
    W1, W2 = net.layers[0].W.ravel(), net.layers[1].W.ravel()
    assert abs(W1.std() / np.sqrt(2 / 600) - 1) < 0.01            # He, fan_in 600
    bound = np.sqrt(6 / (400 + 300))                                # Glorot (identity)
    assert np.abs(W2).max() <= bound * (1 + 1e-12)
    assert abs(W2.std() / (bound / np.sqrt(3)) - 1) < 0.01
    assert all(np.all(l.b == 0) for l in net.layers)


def test_seed_reproducible_initialisation():
    a = cbp.Network.mlp([20, 10, 3], seed=11)
    b = cbp.Network.mlp([20, 10, 3], seed=11)
    c = cbp.Network.mlp([20, 10, 3], seed=12)
    assert_params_equal(params_of(a), params_of(b))
    assert not np.array_equal(a.layers[0].W, c.layers[0].W)
    d = cbp.Network.mlp([20, 10, 3])
    e = cbp.Network.mlp([20, 10, 3])
    assert not np.array_equal(d.layers[0].W, e.layers[0].W)


# ---------------------------------------------------------------- display
def test_summary():
    net = cbp.Network.mlp([64, 32, 10], seed=0)
    s = net.summary()
    assert isinstance(s, str)
    flat = s.replace(",", "")
    assert "(32 64)" in flat and "(10 32)" in flat  # W shapes (commas removed)
    assert "2080" in flat and "330" in flat and "2410" in flat
    assert "relu" in s and "identity" in s
    assert "Dense" in s
    assert len(s.splitlines()) >= 3


def test_repr():
    net = cbp.Network.mlp([64, 32, 10], seed=0)
    r = repr(net)
    assert r.startswith("Network(")
    for part in ("Dense(64, 32", "relu", "Dense(32, 10", "softmax_cross_entropy", "float32"):
        assert part in r
    assert "\n" not in r
    assert repr(cbp.Dense(3, 4, activation="tanh")) == "Dense(3, 4, activation='tanh')"
    # The repr reads as the code that builds the same architecture.
    rebuilt = eval(r, {"Network": cbp.Network, "Dense": cbp.Dense})
    assert rebuilt.get_config() == net.get_config()


# ---------------------------------------------------------------- copy / pickle
@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_copy_independent(loss, out):
    net = make_net(loss=loss, n_out=out, dtype="float32", seed=4)
    X, y = make_data(loss, n_out=out)
    net.fit(X, y, epochs=2, batch_size=8, progress=False)
    twin = net.copy()
    assert twin is not net
    assert all(a is not b for a, b in zip(twin.layers, net.layers))
    assert twin.loss == net.loss and twin.dtype == net.dtype
    assert twin.get_config() == net.get_config()
    assert_params_equal(params_of(twin), params_of(net))
    assert np.array_equal(twin.forward(X), net.forward(X))
    for a, b in zip(twin.parameters(), net.parameters()):
        assert not np.shares_memory(a, b)
    before = params_of(net)
    twin.layers[0].W[...] = 0
    twin.fit(X, y, epochs=1, progress=False)
    assert_params_equal(before, net.parameters())
    net.layers[0].b[...] = 3
    assert not np.any(twin.layers[0].b == 3)


def test_copy_trains_like_original():
    X, y = make_data("softmax_cross_entropy", n=50)
    net = make_net(seed=9)
    twin = net.copy()
    net.fit(X, y, epochs=3, batch_size=7, progress=False)
    twin.fit(X, y, epochs=3, batch_size=7, progress=False)
    assert_params_equal(params_of(net), params_of(twin))


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_pickle_round_trip(loss, out, dtype, protocol):
    net = make_net(loss=loss, n_out=out, dtype=dtype, seed=1)
    X, y = make_data(loss, n_out=out)
    net.fit(X, y, epochs=1, batch_size=16, progress=False)
    clone = pickle.loads(pickle.dumps(net, protocol=protocol))
    assert isinstance(clone, cbp.Network)
    assert clone.get_config() == net.get_config()
    assert clone.dtype == net.dtype and clone.loss == net.loss
    assert_params_equal(params_of(clone), params_of(net))
    assert np.array_equal(clone.forward(X), net.forward(X))
    assert np.array_equal(clone.predict(X), net.predict(X))
    # Independent, live and trainable.
    clone.layers[0].W[...] = 0
    assert not np.array_equal(clone.forward(X), net.forward(X))
    clone.fit(X, y, epochs=1, progress=False)
    deep = copy.deepcopy(net)
    assert_params_equal(params_of(deep), params_of(net))


# ---------------------------------------------------------------- data conversion
def _x_variants(X):
    """(name, array-like) pairs that all denote X (float64 values)."""
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    tall = np.zeros((2 * X.shape[0], X.shape[1]))
    tall[::2] = X
    rev = np.ascontiguousarray(X[::-1])[::-1]
    ro = X.copy()
    ro.flags.writeable = False
    return [
        ("list", X.tolist()),
        ("fortran", np.asfortranarray(X)),
        ("column-strided", wide[:, ::2]),
        ("row-strided", tall[::2]),
        ("negative strides", rev),
        ("transposed", np.ascontiguousarray(X.T).T),
        ("big-endian", X.astype(">f8")),
        ("read-only", ro),
        ("float32-fortran", np.asfortranarray(X.astype(np.float32))),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_converted_never_misread(dtype):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(11, 5))
    net = make_net(dtype=dtype, seed=0)
    for name, Xv in _x_variants(X):
        reference = X.astype(np.float32) if "float32" in name else X
        reference = np.ascontiguousarray(reference, dtype=dtype)
        expected = net.forward(reference)
        got = net.forward(Xv)
        assert got.dtype == np.dtype(dtype), name
        assert np.array_equal(got, expected), name
        assert np.array_equal(net.predict(Xv), net.predict(reference)), name
        assert np.array_equal(net.predict_proba(Xv), net.predict_proba(reference)), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_integer_and_broadcast_inputs(dtype):
    net = make_net(dtype=dtype, seed=0)
    Xi = np.arange(-10, 45).reshape(11, 5) % 7 - 3
    expected = net.forward(np.ascontiguousarray(Xi, dtype=dtype))
    for Xv in (Xi, Xi.astype(np.int32), Xi.astype(np.int8), Xi.tolist(), np.asfortranarray(Xi)):
        assert np.array_equal(net.forward(Xv), expected)
    row = np.arange(5.0)
    b = np.broadcast_to(row, (4, 5))
    assert np.array_equal(net.forward(b), net.forward(np.tile(row, (4, 1))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_layouts_give_identical_loss_and_training(loss, out, dtype):
    X, y = make_data(loss, n=23, n_out=out, seed=8)
    Xc = np.ascontiguousarray(X, dtype=dtype)
    net = make_net(loss=loss, n_out=out, dtype=dtype, seed=5)
    ref_loss = net.backward(Xc, y)
    ref_grads = [g.copy() for g in net.gradients()]
    ref_eval = net.evaluate(Xc, y)
    y_variants = [y, np.asarray(y).tolist(), np.asfortranarray(y)]
    if loss == "softmax_cross_entropy":
        y_variants += [y.astype(np.int32), y.astype(np.float64), y.astype(">i8"), y.astype(np.uint8)]
    else:
        y_variants += [np.asarray(y).astype(">f8")]
        if dtype == "float32":
            y_variants += [np.asarray(y, np.float32)]
    for name, Xv in _x_variants(X):
        if "float32" in name:
            continue
        for yv in y_variants:
            assert net.backward(Xv, yv) == ref_loss, name
            for g, r in zip(net.gradients(), ref_grads):
                assert np.array_equal(g, r), name
            assert net.evaluate(Xv, yv) == ref_eval, name
    a, b = net.copy(), net.copy()
    a.fit(Xc, y, epochs=2, batch_size=5, progress=False)
    b.fit(np.asfortranarray(X), np.asarray(y).tolist(), epochs=2, batch_size=5, progress=False)
    assert_params_equal(params_of(a), params_of(b))


# ---------------------------------------------------------------- validation
def _calls(net, X, y):
    opt = cbp.SGD(lr=0.1)
    return {
        "fit": lambda: net.fit(X, y, epochs=1, progress=False),
        "forward": lambda: net.forward(X),
        "predict": lambda: net.predict(X),
        "predict_proba": lambda: net.predict_proba(X),
        "evaluate": lambda: net.evaluate(X, y),
        "backward": lambda: net.backward(X, y),
        "train_step": lambda: net.train_step(X, y, opt),
    }


CALLS = ["fit", "forward", "predict", "predict_proba", "evaluate", "backward", "train_step"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_X_names_the_row(call, bad, dtype):
    net = make_net(dtype=dtype)
    X, y = make_data("softmax_cross_entropy", n=10)
    X[6, 2] = bad
    X[8, 0] = bad
    before = params_of(net)
    with pytest.raises(ValueError, match=r"\brow 6\b"):
        _calls(net, X, y)[call]()
    assert_params_equal(before, net.parameters())


@pytest.mark.filterwarnings("error")  # a clean ValueError, no RuntimeWarning on the way
def test_nonfinite_X_float64_overflowing_float32():
    net = make_net(dtype="float32", loss="mse", n_out=2)
    X = np.zeros((5, 5))
    X[3, 1] = 1e300  # finite in float64, infinite once converted
    with pytest.raises(ValueError, match=r"\brow 3\b"):
        net.forward(X)
    y = np.zeros((5, 2))
    y[2, 0] = -1e300
    with pytest.raises(ValueError, match=r"\brow 2\b"):
        net.backward(np.zeros((5, 5)), y)
    with pytest.raises(ValueError, match=r"\brow 4\b"):
        net.backward(np.zeros((5, 5)), np.zeros((5, 2)), sample_weight=[1, 1, 1, 1, 1e300])


def test_nonfinite_validation_X():
    net = make_net()
    X, y = make_data("softmax_cross_entropy", n=10)
    Xv = X.copy()
    Xv[4, 4] = np.nan
    with pytest.raises(ValueError, match=r"\brow 4\b"):
        net.fit(X, y, epochs=1, validation_data=(Xv, y), progress=False)


@pytest.mark.parametrize("loss,out", LOSS_OUTS)
@pytest.mark.parametrize("call", ["fit", "evaluate", "backward", "train_step"])
def test_length_mismatch(loss, out, call):
    net = make_net(loss=loss, n_out=out)
    X, y = make_data(loss, n=10, n_out=out)
    before = params_of(net)
    for Xb, yb in ((X, y[:-1]), (X[:-1], y)):
        with pytest.raises(ValueError):
            _calls(net, Xb, yb)[call]()
    assert_params_equal(before, net.parameters())


def test_validation_length_mismatch():
    net = make_net()
    X, y = make_data("softmax_cross_entropy", n=10)
    with pytest.raises(ValueError):
        net.fit(X, y, epochs=1, validation_data=(X, y[:-1]), progress=False)
    with pytest.raises(ValueError):
        net.fit(X, y, epochs=1, validation_data=(X[:0], y[:0]), progress=False)


@pytest.mark.parametrize("loss,out", LOSS_OUTS)
@pytest.mark.parametrize("call", ["fit", "evaluate", "backward", "train_step"])
def test_empty_X_is_value_error(loss, out, call):
    net = make_net(loss=loss, n_out=out)
    X, y = make_data(loss, n=10, n_out=out)
    with pytest.raises(ValueError):
        _calls(net, X[:0], y[:0])[call]()


@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_empty_X_inference_gives_empty_results(loss, out):
    net = make_net(loss=loss, n_out=out)
    X = np.zeros((0, 5))
    assert net.forward(X).shape == (0, out)
    pred = net.predict(X)
    assert pred.shape[0] == 0 and pred.ndim == (1 if out == 1 or loss == "softmax_cross_entropy" else 2)
    if loss != "mse":
        assert net.predict_proba(X).shape == (0, out)


@pytest.mark.parametrize("shape", [(10,), (10, 6), (10, 5, 1), (5,)])
def test_wrong_X_shape(shape):
    net = make_net()
    X = np.zeros(shape)
    with pytest.raises(ValueError):
        net.forward(X)
    with pytest.raises(ValueError):
        net.fit(X, np.zeros(shape[0], dtype=int), epochs=1, progress=False)


def test_non_numeric_X_is_rejected():
    net = make_net()
    for X in (None, "abc", np.array([["a"] * 5]), [[1, 2, 3, 4, object()]]):
        with pytest.raises((TypeError, ValueError)):
            net.forward(X)
    with pytest.raises((TypeError, ValueError)):
        net.forward([[1, 2, 3, 4, 5], [1, 2]])  # ragged


@pytest.mark.parametrize("call", ["fit", "evaluate", "backward", "train_step"])
@pytest.mark.parametrize("labels", [[0, 1, 3], [0, -1, 2], [0, 1.5, 2], [0, np.nan, 1],
                                    [0, np.inf, 1], [0, 2 ** 40, 1]])
def test_bad_class_labels(call, labels):
    net = make_net()  # 3 classes
    X = make_data("softmax_cross_entropy", n=3)[0]
    before = params_of(net)
    with pytest.raises(ValueError):
        _calls(net, X, np.array(labels))[call]()
    assert_params_equal(before, net.parameters())


def test_bad_label_shapes():
    net = make_net()
    X = make_data("softmax_cross_entropy", n=4)[0]
    with pytest.raises(ValueError):
        net.backward(X, np.zeros((4, 3)))  # one-hot instead of labels
    with pytest.raises(ValueError):
        net.backward(X, np.zeros((4, 1), dtype=int))
    with pytest.raises((TypeError, ValueError)):
        net.backward(X, np.array(["a", "b", "c", "d"]))


@pytest.mark.parametrize("call", ["fit", "evaluate", "backward", "train_step"])
def test_bad_binary_targets(call):
    net = make_net(loss="binary_cross_entropy", n_out=2)
    X = make_data("softmax_cross_entropy", n=3)[0]
    for y in (np.array([[0, 1], [1, 2], [0, 0]]), np.array([[0, 1], [1, -1], [0, 0]]),
              np.array([[0, 1], [1, np.nan], [0, 0]]), np.zeros((3, 3)), np.zeros(3)):
        with pytest.raises(ValueError):
            _calls(net, X, y)[call]()


@pytest.mark.parametrize("call", ["fit", "evaluate", "backward", "train_step"])
def test_bad_mse_targets(call):
    net = make_net(loss="mse", n_out=2)
    X = make_data("softmax_cross_entropy", n=3)[0]
    for y in (np.array([[0, 1], [1, np.nan], [0, 0]]), np.array([[0, 1], [1, np.inf], [0, 0]]),
              np.zeros((3, 3)), np.zeros(3), np.zeros((3, 2, 1))):
        with pytest.raises(ValueError):
            _calls(net, X, y)[call]()


def _weighted_calls(net, X, y, w):
    opt = cbp.SGD(lr=0.1)
    return {
        "fit": lambda: net.fit(X, y, epochs=1, progress=False, sample_weight=w),
        "evaluate": lambda: net.evaluate(X, y, sample_weight=w),
        "backward": lambda: net.backward(X, y, sample_weight=w),
        "train_step": lambda: net.train_step(X, y, opt, sample_weight=w),
    }


@pytest.mark.parametrize("call", ["fit", "evaluate", "backward", "train_step"])
def test_bad_sample_weight(call):
    net = make_net()
    X, y = make_data("softmax_cross_entropy", n=6)
    before = params_of(net)
    bad = [np.ones(5), np.ones(7), np.ones((6, 1)), np.array([1, 1, -0.5, 1, 1, 1]),
           np.array([1, 1, np.nan, 1, 1, 1]), np.array([1, 1, np.inf, 1, 1, 1])]
    for w in bad:
        with pytest.raises(ValueError):
            _weighted_calls(net, X, y, w)[call]()
    assert_params_equal(before, net.parameters())


# ---------------------------------------------------------------- inference
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_inference_shapes_and_dtypes(loss, out, dtype):
    net = make_net(loss=loss, n_out=out, dtype=dtype, seed=2)
    X, y = make_data(loss, n=17, n_out=out)
    Z = net.forward(X)
    assert Z.shape == (17, out) and Z.dtype == np.dtype(dtype)
    pred = net.predict(X)
    ev = net.evaluate(X, y)
    assert isinstance(ev["loss"], float)
    if loss == "softmax_cross_entropy":
        assert pred.shape == (17,) and pred.dtype == np.int64
        assert np.array_equal(pred, Z.argmax(axis=1))
        P = net.predict_proba(X)
        assert P.shape == (17, out) and P.dtype == np.dtype(dtype)
        np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-6 if dtype == "float32" else 1e-12)
        Zd = Z.astype(np.float64)
        E = np.exp(Zd - Zd.max(axis=1, keepdims=True))
        np.testing.assert_allclose(P, E / E.sum(axis=1, keepdims=True),
                                   rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-7)
        assert np.array_equal(P.argmax(axis=1), pred)
        assert set(ev) == {"loss", "accuracy"}
        assert ev["accuracy"] == pytest.approx(np.mean(pred == y))
    elif loss == "binary_cross_entropy":
        assert pred.dtype == np.int64
        assert pred.shape == ((17,) if out == 1 else (17, out))
        assert set(np.unique(pred)) <= {0, 1}
        P = net.predict_proba(X)
        assert P.shape == (17, out) and P.dtype == np.dtype(dtype)
        np.testing.assert_allclose(P, 1 / (1 + np.exp(-Z.astype(np.float64))),
                                   rtol=1e-5 if dtype == "float32" else 1e-12)
        assert np.array_equal(pred, (P > 0.5).astype(np.int64).reshape(pred.shape))
        assert set(ev) == {"loss", "accuracy"}
        # Accuracy over all n·out elements.
        assert ev["accuracy"] == pytest.approx(np.mean(pred == np.asarray(y).reshape(pred.shape)))
    else:
        assert pred.shape == ((17,) if out == 1 else (17, out))
        assert pred.dtype == np.dtype(dtype)
        assert np.array_equal(pred, Z[:, 0] if out == 1 else Z)
        with pytest.raises(ValueError):
            net.predict_proba(X)
        assert set(ev) == {"loss"}


def test_bce_accuracy_counts_elements():
    net = cbp.Network([cbp.Dense(2, 3)], loss="binary_cross_entropy", dtype="float64")
    net.layers[0].W = 0
    net.layers[0].b = [1.0, -1.0, 1.0]  # predicts [1, 0, 1] for every row
    X = np.zeros((2, 2))
    y = np.array([[1, 0, 0], [1, 1, 0]])  # 3 of 6 elements right
    assert np.array_equal(net.predict(X), [[1, 0, 1], [1, 0, 1]])
    assert net.evaluate(X, y)["accuracy"] == pytest.approx(0.5)


def test_softmax_accuracy():
    net = cbp.Network([cbp.Dense(2, 3)], dtype="float64")
    net.layers[0].W = [[1, 0], [0, 1], [-1, -1]]
    net.layers[0].b = 0
    X = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [3.0, 0.0]])
    assert np.array_equal(net.predict(X), [0, 1, 2, 0])
    assert net.evaluate(X, [0, 1, 1, 2])["accuracy"] == pytest.approx(0.5)
    assert net.evaluate(X, [0, 1, 2, 0])["accuracy"] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_evaluate_loss_equals_backward_loss_and_reference(loss, out, dtype):
    net = make_net(loss=loss, n_out=out, dtype=dtype, seed=6)
    X, y = make_data(loss, n=29, n_out=out, seed=2)
    net.fit(X, y, epochs=2, batch_size=8, progress=False)  # move away from the init
    ev = net.evaluate(X, y)["loss"]
    bw = net.backward(X, y)
    assert isinstance(bw, float)
    rtol = 1e-6 if dtype == "float32" else 1e-13
    assert ev == pytest.approx(bw, rel=rtol)
    ref = reference_row_losses(loss, net.forward(X), y).mean()
    assert bw == pytest.approx(ref, rel=1e-5 if dtype == "float32" else 1e-12)
    # Weighted: Σ wᵢ lᵢ / Σ wᵢ, lᵢ the row's loss.
    w = np.random.default_rng(0).uniform(0, 3, size=29)
    w[3] = 0
    ref_w = (w * reference_row_losses(loss, net.forward(X), y)).sum() / w.sum()
    bw_w = net.backward(X, y, sample_weight=w)
    assert bw_w == pytest.approx(ref_w, rel=1e-5 if dtype == "float32" else 1e-12)
    assert net.evaluate(X, y, sample_weight=w)["loss"] == pytest.approx(bw_w, rel=rtol)


@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_sample_weight_scaling_and_duplication(loss, out):
    net = make_net(loss=loss, n_out=out, dtype="float64", seed=3)
    X, y = make_data(loss, n=12, n_out=out, seed=4)
    base = net.backward(X, y)
    g0 = [g.copy() for g in net.gradients()]
    # A constant weight is the unweighted mean.
    assert net.backward(X, y, sample_weight=np.full(12, 2.5)) == pytest.approx(base, rel=1e-13)
    for g, r in zip(net.gradients(), g0):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-15)
    # An integer weight is the row repeated.
    w = np.ones(12)
    w[[1, 5]] = [3, 2]
    rows = np.repeat(np.arange(12), w.astype(int))
    loss_w = net.backward(X, y, sample_weight=w)
    gw = [g.copy() for g in net.gradients()]
    assert net.backward(X[rows], np.asarray(y)[rows]) == pytest.approx(loss_w, rel=1e-12)
    for g, r in zip(net.gradients(), gw):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-14)


def test_train_step_returns_loss_before_update():
    net = make_net(dtype="float64")
    X, y = make_data("softmax_cross_entropy", n=20)
    expected = net.backward(X, y)
    before = params_of(net)
    got = net.train_step(X, y, cbp.SGD(lr=0.5))
    assert got == pytest.approx(expected, rel=1e-13)
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.parameters()))
    assert net.backward(X, y) < expected


def test_train_step_sgd_update_rule():
    net = make_net(dtype="float64")
    X, y = make_data("softmax_cross_entropy", n=20)
    net.backward(X, y)
    expected = [p - 0.3 * g for p, g in zip(net.parameters(), net.gradients())]
    net.train_step(X, y, cbp.SGD(lr=0.3))
    for p, e in zip(net.parameters(), expected):
        np.testing.assert_allclose(p, e, rtol=1e-12, atol=1e-15)


def test_train_step_accepts_optimizer_names():
    X, y = make_data("softmax_cross_entropy", n=20)
    for name in ("sgd", "adam", "adamw"):
        net = make_net()
        before = params_of(net)
        assert np.isfinite(net.train_step(X, y, name))
        assert any(not np.array_equal(a, b) for a, b in zip(before, net.parameters()))


# ---------------------------------------------------------------- large batches
@pytest.mark.parametrize("loss,out", LOSS_OUTS)
def test_batches_larger_than_the_workspace(loss, out):
    """Inputs of thousands of rows (run in chunks) give the results of the
    same rows taken a few at a time."""
    n = 2600
    net = make_net(loss=loss, n_out=out, dtype="float64", seed=1)
    X, y = make_data(loss, n=n, n_out=out, seed=3)
    Z = net.forward(X)
    pieces = np.concatenate([net.forward(X[i:i + 100]) for i in range(0, n, 100)])
    np.testing.assert_allclose(Z, pieces, rtol=1e-13, atol=1e-14)
    assert np.array_equal(net.predict(X), np.concatenate(
        [net.predict(X[i:i + 100]) for i in range(0, n, 100)]))
    loss_all = net.backward(X, y)
    grads_all = [g.copy() for g in net.gradients()]
    assert loss_all == pytest.approx(reference_row_losses(loss, Z, y).mean(), rel=1e-12)
    # Mean of the gradients of equal chunks = gradient of the whole batch.
    acc = [np.zeros_like(g) for g in grads_all]
    chunk = 650
    for i in range(0, n, chunk):
        net.backward(X[i:i + chunk], np.asarray(y)[i:i + chunk])
        for a, g in zip(acc, net.gradients()):
            a += g * (chunk / n)
    for a, g in zip(acc, grads_all):
        np.testing.assert_allclose(g, a, rtol=1e-10, atol=1e-13)
    assert net.evaluate(X, y)["loss"] == pytest.approx(loss_all, rel=1e-12)
    w = np.random.default_rng(0).uniform(0, 2, n)
    ref_w = (w * reference_row_losses(loss, Z, y)).sum() / w.sum()
    assert net.backward(X, y, sample_weight=w) == pytest.approx(ref_w, rel=1e-12)


def test_inference_inside_a_callback_does_not_disturb_fit():
    X, y = make_data("softmax_cross_entropy", n=300, seed=2)
    net = make_net(seed=0)
    twin = net.copy()

    def meddle(epoch, logs):
        net.predict(X[:2])
        net.evaluate(X[:3], y[:3])
        net.forward(np.concatenate([X] * 10))
        net.backward(X[:1], y[:1])

    net.fit(X, y, epochs=3, batch_size=256, shuffle=False, callbacks=[meddle],
            validation_data=(X[:2], y[:2]), progress=False)
    twin.fit(X, y, epochs=3, batch_size=256, shuffle=False, progress=False)
    assert_params_equal(params_of(net), params_of(twin))


def test_pickled_network_trains_like_original():
    X, y = make_data("softmax_cross_entropy", n=50)
    net = make_net(seed=9)
    net.fit(X, y, epochs=1, batch_size=7, progress=False)  # advance the shuffling RNG
    clone = pickle.loads(pickle.dumps(net))
    net.fit(X, y, epochs=2, batch_size=7, progress=False)
    clone.fit(X, y, epochs=2, batch_size=7, progress=False)
    assert_params_equal(params_of(net), params_of(clone))


# ------------------------------------------------- outputs beyond the dtype
def _overflowing(loss, dtype, w):
    net = cbp.Network([cbp.Dense(1, 2)], loss=loss, dtype=dtype, seed=0)
    net.layers[0].W[...] = [[w], [-w]]
    net.layers[0].b[...] = 0
    return net


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy", "mse"])
def test_outputs_that_overflow_raise(loss):
    # Finite X, finite weights, logits beyond float32: a clear error from
    # every inference call, never inf/NaN probabilities or an argmax over NaN.
    net = _overflowing(loss, "float32", 10.0)
    X = np.array([[1.0], [1e38]], dtype=np.float32)
    y = np.array([0, 0]) if loss == "softmax_cross_entropy" else np.zeros((2, 2))
    calls = [net.forward, net.predict, lambda X: net.evaluate(X, y)]
    if loss == "softmax_cross_entropy":  # softmax of ±inf would be NaN
        calls.append(net.predict_proba)
    if loss == "binary_cross_entropy":  # sigmoid(±inf) is the right limit
        np.testing.assert_array_equal(net.predict_proba(X)[1], [1.0, 0.0])
    for call in calls:
        with pytest.raises(FloatingPointError, match="row 1 of X .* overflowed float32"):
            call(X)
    # Row 0 alone is fine, and so is the same network in float64.
    assert np.isfinite(net.forward(X[:1])).all()
    net64 = _overflowing(loss, "float64", 10.0)
    assert np.isfinite(net64.forward(X)).all()
    if loss == "softmax_cross_entropy":
        np.testing.assert_array_equal(net64.predict_proba(X)[1], [1.0, 0.0])


def test_evaluate_with_zero_total_weight_raises():
    X, y = random_xy("softmax_cross_entropy", 8, 4, 3, np.random.default_rng(0))
    net = cbp.Network.mlp([4, 5, 3], seed=0)
    with pytest.raises(ValueError, match="sums to 0"):
        net.evaluate(X, y, sample_weight=np.zeros(8))
    w = np.zeros(8)
    w[3] = 2.0
    one = net.evaluate(X[3:4], y[3:4])
    assert net.evaluate(X, y, sample_weight=w) == pytest.approx(one, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_of_weight_zero_are_absent_even_where_their_loss_overflows(dtype):
    # (p − y)² overflows for y = −1e300 (float64) or −3e38 (float32): with
    # weight 0 that row is absent, not 0 · inf = NaN.
    huge = -1e300 if dtype == "float64" else -3e38
    net = cbp.Network.mlp([3, 4, 2], loss="mse", dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 3))
    y = np.array([[huge, 0.0], [0.5, -0.5]])
    before = [p.copy() for p in net.parameters()]
    # All weights zero: loss 0, gradient 0, train_step changes nothing.
    assert net.backward(X, y, sample_weight=[0.0, 0.0]) == 0.0
    assert all(not g.any() for g in net.gradients())
    net.train_step(X, y, cbp.SGD(lr=0.1), sample_weight=[0.0, 0.0])
    assert all(np.array_equal(a, b) for a, b in zip(before, net.parameters()))
    # Row 0 absent: the loss and gradient of row 1 alone.
    loss = net.backward(X, y, sample_weight=[0.0, 2.0])
    grads = [g.copy() for g in net.gradients()]
    assert loss == pytest.approx(net.backward(X[1:], y[1:]), rel=1e-6)
    for g, h in zip(grads, net.gradients()):
        np.testing.assert_allclose(g, h, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [7, (3, 5), (128, 784), (0, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_buffers_start_on_a_cache_line(shape, dtype):
    """Parameters and workspace live in aligned_empty / aligned_zeros
    buffers: the shape and dtype asked for, 64-byte aligned (nothing to
    align when empty), zeros where asked."""
    from cbp import _engine
    a, z = _engine.aligned_empty(shape, dtype), _engine.aligned_zeros(shape, dtype)
    expected = shape if isinstance(shape, tuple) else (shape,)
    for b in (a, z):
        assert b.shape == expected and b.dtype == dtype and b.flags.c_contiguous
        assert b.size == 0 or b.ctypes.data % 64 == 0
    assert not z.any()


def test_aligned_buffers_refuse_impossible_sizes():
    from cbp import _engine
    with pytest.raises(ValueError, match="negative dimension"):
        _engine.aligned_empty((2, -1), np.float32)
    with pytest.raises(ValueError, match="exceed the address space"):
        _engine.aligned_empty(2**62, np.float64)          # 2**65 bytes
    with pytest.raises(OverflowError):
        _engine.aligned_empty((2**61, 8), np.float64)     # 2**64 elements


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out", [("softmax_cross_entropy", 3), ("mse", 2)])
def test_train_step_big_endian_is_converted_never_misread(dtype, loss, out):
    """train_step's fast path took a byte-swapped X (or target) of the
    network's dtype as it was: C read the swapped bytes (a loss of 9.8e36
    instead of 1.70), and its NaN check missed a NaN."""
    X, y = make_data(loss, n=9, n_out=out, seed=5)
    X = X.astype(dtype)
    swapped = X.astype(X.dtype.newbyteorder(">" if np.little_endian else "<"))
    y_swapped = y
    if loss == "mse":
        y = y.astype(dtype)
        y_swapped = y.astype(y.dtype.newbyteorder(">" if np.little_endian else "<"))
    for opt in ("sgd", "adam"):
        a, b = make_net(loss, n_out=out, dtype=dtype, seed=1), make_net(loss, n_out=out, dtype=dtype, seed=1)
        for Xv, yv in ((swapped, y), (X, y_swapped), (swapped, y_swapped)):
            assert b.train_step(Xv, yv, opt) == a.train_step(X, y, opt)
            assert_params_equal(params_of(a), params_of(b))
    bad = X.copy()
    bad[4, 2] = np.nan
    bad = bad.astype(swapped.dtype)
    net = make_net(loss, n_out=out, dtype=dtype, seed=1)
    before = params_of(net)
    with pytest.raises(ValueError, match="row 4"):
        net.train_step(bad, y, "sgd")
    assert_params_equal(params_of(net), before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_sample_weights_are_not_lost(dtype):
    """Weights far below the dtype's smallest normal number (1e-50 in
    float32 rounds to 0) once made fit a silent no-op with loss 0, and
    evaluate claim they sum to 0; the loss Σ wᵢ lᵢ / Σ wᵢ does not depend on
    their scale, and weights scaled by a power of two train bit for bit as
    the unscaled ones."""
    X, y = make_data("softmax_cross_entropy", n=12, seed=6)
    w = np.random.default_rng(7).uniform(0.5, 3, size=12)
    w[2] = 0
    tiny = np.finfo(dtype).tiny
    runs = []
    # (scales that keep every weight a normal float64: their digits intact)
    for weights in (w, w * 2.0**-200, w * 2.0**-1000, w * (4 * tiny)):
        net = make_net(dtype=dtype, seed=2)
        h = net.fit(X, y, epochs=3, batch_size=5, optimizer=cbp.SGD(lr=0.1, momentum=0.9),
                    sample_weight=weights, progress=False)
        runs.append((h.history["loss"], params_of(net),
                     net.evaluate(X, y, sample_weight=weights)["loss"]))
    for losses, params, evaluated in runs[1:]:
        assert losses == runs[0][0]
        assert evaluated == runs[0][2]
        for p, q in zip(params, runs[0][1]):
            assert np.array_equal(p, q)
    # Not a power of two: the same training up to the rounding of the weights.
    net = make_net(dtype=dtype, seed=2)
    h = net.fit(X, y, epochs=3, batch_size=5, optimizer=cbp.SGD(lr=0.1, momentum=0.9),
                sample_weight=w * 1e-50, progress=False)
    np.testing.assert_allclose(h.history["loss"], runs[0][0],
                               rtol=1e-5 if dtype == "float32" else 1e-12)
    # Mixed scales: the tiny weights are negligible beside the others, as before.
    mixed = w.copy()
    mixed[5] = 1e-60
    net = make_net(dtype=dtype, seed=2)
    assert np.isfinite(net.evaluate(X, y, sample_weight=mixed)["loss"])


def test_from_config_refuses_bad_configs_clearly():
    good = make_net().get_config()
    with pytest.raises(TypeError, match="config must be a dict"):
        cbp.Network.from_config([good])
    for config, fragment in [({}, "lacks 'layers', 'loss', 'dtype'"),
                             ({"layers": []}, "lacks 'loss', 'dtype'"),
                             ({**good, "layers": []}, "non-empty list"),
                             ({**good, "layers": "dense"}, "non-empty list"),
                             ({**good, "layers": [{"in_features": 5}]},
                              r"config\['layers'\]\[0\] lacks 'out_features', 'activation'"),
                             ({**good, "layers": [good["layers"][0], 7]},
                              r"config\['layers'\]\[1\] must be a dict")]:
        with pytest.raises(ValueError, match=fragment):
            cbp.Network.from_config(config)
    copy_ = cbp.Network.from_config(good)
    assert copy_.get_config() == good
    # Any mapping and any iterable of mappings, as before the checks.
    from types import MappingProxyType
    proxied = MappingProxyType({**good, "layers": (MappingProxyType(c) for c in good["layers"])})
    assert cbp.Network.from_config(proxied).get_config() == good


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_outputs_of_non_finite_parameters_say_so(bad):
    """Non-finite outputs from non-finite parameters are not an overflow
    on finite inputs: the message names the parameters."""
    net = make_net(dtype="float32", activation="relu")
    X = np.ones((3, 5))
    net.layers[0].W[...] = np.abs(net.layers[0].W)   # so that inf reaches the outputs
    net.layers[0].W[1, 1] = bad
    for call in (net.forward, net.predict, net.predict_proba):
        with pytest.raises(FloatingPointError, match="parameters hold NaN or infinity"):
            call(X)
    net.layers[0].W[1, 1] = 0
    net.layers[0].W[...] = 1e30
    with pytest.raises(FloatingPointError, match="overflowed float32"):
        net.forward(np.full((1, 5), 1e30))


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_sample_weights_are_not_lost(dtype):
    """Finite weights whose sum overflows (4 × 1e308 in float64) once made
    every wᵢ / Σ wᵢ zero: a loss of 0, no training, accuracy 1.0."""
    X, y = make_data("softmax_cross_entropy", n=8, seed=8)
    w = np.random.default_rng(9).uniform(0.5, 3, size=8)
    big = 2.0 ** (np.finfo(dtype).maxexp - 1)   # the largest power of two: weights up to it
    results = []
    for weights in (w / w.max(), w / w.max() * big):
        net = make_net(dtype=dtype, seed=3)
        h = net.fit(X, y, epochs=2, batch_size=4, optimizer=cbp.SGD(lr=0.2),
                    sample_weight=weights, progress=False)
        results.append((h.history["loss"], params_of(net), net.evaluate(X, y, weights),
                        net.backward(X, y, weights)))
    assert results[0][0] == results[1][0] and results[0][0][0] > 0
    assert_params_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2] and results[0][3] == results[1][3]


@pytest.mark.parametrize("weights,fragment", [
    ([-5.0, 1e-50], "row 0 holds -5.0"),
    ([1e-300, -1e-300], "row 1 holds -1e-300"),
    ([-1e10, 1e-300], "row 0 holds -10000000000.0"),
])
def test_negative_weights_are_reported_as_given(weights, fragment):
    net = make_net(dtype="float32")
    with pytest.raises(ValueError, match=f"non-negative; {re.escape(fragment)}"):
        net.backward(np.zeros((2, 5)), [0, 1], sample_weight=weights)


@pytest.mark.parametrize("loss,out", [("softmax_cross_entropy", 3), ("mse", 2),
                                      ("binary_cross_entropy", 2)])
def test_backward_and_evaluate_refuse_a_non_finite_loss(loss, out):
    """backward once returned NaN (and left NaN gradients) and evaluate an
    infinite loss where forward raises FloatingPointError."""
    net = make_net(loss, n_out=out, dtype="float32", activation="relu")
    for layer in net.layers:
        layer.W[...] = np.abs(layer.W)
    X = np.full((2, 5), 3e38)
    _, y = make_data(loss, n=2, n_out=out)
    with pytest.raises(FloatingPointError, match="overflowed float32"):
        net.forward(X)
    with pytest.raises(FloatingPointError, match="of this batch is not finite: the computation "
                                                 "overflowed float32"):
        net.backward(X, y)
    with pytest.raises(FloatingPointError, match="overflowed float32"):
        net.evaluate(X, y)
    # An output that is finite but whose squared error is not (float64).
    reg = cbp.Network([cbp.Dense(1, 1)], loss="mse", dtype="float64")
    reg.layers[0].W[...] = 1
    reg.layers[0].b[...] = 0
    Xr, yr = np.array([[1e200], [1.0]]), np.array([0.0, 1.0])
    with pytest.raises(FloatingPointError, match="loss on these data is not finite"):
        reg.evaluate(Xr, yr)
    with pytest.raises(FloatingPointError, match="loss of this batch is not finite"):
        reg.backward(Xr, yr)
    assert reg.evaluate(Xr[1:], yr[1:])["loss"] == 0.0


def test_float32_momentum_below_its_range_keeps_the_buffer():
    """A momentum that rounds to 0 in float32 (1e-300) still writes the
    momentum buffer, as torch's does: raising the momentum later then
    continues from the last gradient instead of starting afresh."""
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(6, 5)), rng.integers(0, 3, 6)
    net = make_net(dtype="float32", seed=4)
    ref = [p.astype(np.float64) for p in params_of(net)]
    opt = cbp.SGD(lr=0.1, momentum=1e-300)
    buf = None
    for step in range(4):
        if step == 2:
            opt.momentum = 0.9
        probe = make_net(dtype="float64", seed=4)
        for p, r in zip(probe.parameters(), ref):
            p[...] = r
        probe.backward(X.astype(np.float32).astype(np.float64), y)
        grads = [g.copy() for g in probe.gradients()]
        mu = np.float32(opt.momentum)   # torch: the scalar applied in float32
        buf = grads if buf is None else [mu * b + g for b, g in zip(buf, grads)]
        ref = [r - 0.1 * b for r, b in zip(ref, buf)]
        net.train_step(X, y, opt)
    for p, r in zip(params_of(net), ref):
        np.testing.assert_allclose(p, r, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_hidden_overflow_is_reported_not_saturated_away(act, dtype, sign):
    """A hidden layer's product that overflows the dtype on finite inputs:
    tanh, sigmoid, relu (for −inf) and the other saturating activations
    once turned its ±inf into a finite value of either sign (tanh(+inf) =
    1 where the exact pre-activation, −3e38 in float32, gives −1), so
    forward, evaluate and train_step returned wrong finite results.  Every
    path now reports it."""
    big = float(np.finfo(dtype).max) * 0.9
    net = cbp.Network([cbp.Dense(5, 1, activation=act), cbp.Dense(1, 1)], loss="mse",
                      dtype=dtype)
    for layer in net.layers:
        layer.W[...] = 1
        layer.b[...] = 0
    # row 0's exact pre-activation is ∓big, its float sum ±inf (relu, softplus
    # and elu turn −inf into 0, 0 and −1 where the exact answer is big)
    X = sign * np.array([[big, big, -big, -big, -big], [1, 0, 0, 0, 0]])
    y = np.zeros((2, 1))
    before = params_of(net)
    with pytest.raises(FloatingPointError, match="row 0 of X") as e:
        net.forward(X)
    # the advice fits the dtype (a float64 network was told to use float64)
    assert ("dtype='float64'" in str(e.value)) == (np.dtype(dtype) == np.float32)
    assert np.isfinite(net.forward(X[1:])).all()
    with pytest.raises(FloatingPointError):
        net.evaluate(X, y)
    with pytest.raises(FloatingPointError):
        net.backward(X, y)
    for opt in ("sgd", "adam"):
        with pytest.raises(cbp.DivergenceError):
            net.train_step(X, y, opt)
        with pytest.raises(cbp.DivergenceError):
            net.fit(X, y, epochs=1, batch_size=2, optimizer=opt, progress=False)
    assert_params_equal(params_of(net), before)


def test_hidden_overflow_reported_on_the_pool_and_threads():
    """The same on a layer wide enough for cbp's pool and OpenBLAS's threads
    (training steps and the validation inside fit)."""
    rng = np.random.default_rng(11)
    net = cbp.Network.mlp([64, 512, 10], activation="tanh", dtype="float32", seed=0)
    net.layers[0].W[...] = np.abs(net.layers[0].W)
    X = rng.normal(size=(512, 64)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    bad = X.copy()
    bad[300, :32] = 3e38
    bad[300, 32:] = -3e38
    with pytest.raises(FloatingPointError, match="row 300 of X"):
        net.predict(bad)
    with pytest.raises(cbp.DivergenceError):
        net.fit(bad, y, epochs=1, batch_size=256, optimizer=cbp.SGD(lr=0.01), shuffle=False,
                progress=False)
    with pytest.raises(FloatingPointError):
        net.fit(X, y, epochs=1, batch_size=256, optimizer=cbp.SGD(lr=0.01), progress=False,
                validation_data=(bad, y))
