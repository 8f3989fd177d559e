"""cbp.ops against torch.autograd in float64 (the third oracle): the same
formulas derived by a different machine.  Skipped when PyTorch is absent."""
import numpy as np
import pytest

import cbp.ops as ops

torch = pytest.importorskip("torch", reason="PyTorch not installed")
F = torch.nn.functional

TOL = 1e-10  # float64; cbp and PyTorch use different BLAS and summation orders

TORCH_ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "elu": F.elu,
    "gelu": lambda z: F.gelu(z, approximate="none"),
}


def test_every_cbp_activation_has_a_torch_counterpart():
    assert set(TORCH_ACTIVATIONS) == set(ops.ACTIVATIONS)


def t(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def close(got, expected):
    """Norm-wise: |got − ref| ≤ TOL·(|ref| + max(1, max|ref|)) (see
    tests/test_ops.py::assert_close for why products need the absolute part)."""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    expected = np.asarray(expected, dtype=np.float64)
    got = np.asarray(got)
    assert got.dtype == np.float64 and got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("n", [None, 1, 7, 64], ids=lambda n: "vector" if n is None else f"n{n}")
def test_linear_forward_and_backward(n, rng):
    n_in, n_out = 13, 6
    W, b = rng.normal(size=(n_out, n_in)), rng.normal(size=n_out)
    x = rng.normal(size=n_in if n is None else (n, n_in))
    delta = rng.normal(size=n_out if n is None else (n, n_out))
    tx, tW, tb = t(x, True), t(W, True), t(b, True)
    tz = F.linear(tx, tW, tb)                      # x Wᵀ + b, as nn.Linear
    close(ops.linear_forward(x, W, b), tz)
    tz.backward(t(delta))                          # upstream gradient δ
    dW, db, dx = ops.linear_backward(delta, x, W)
    close(dW, tW.grad)
    close(db, tb.grad)
    close(dx, tx.grad)
    close(ops.outer(delta, x), tW.grad)
    close(ops.matvec_t(W, delta), tx.grad)


@pytest.mark.parametrize("act", ops.ACTIVATIONS)
@pytest.mark.parametrize("vector", [False, True], ids=["batch", "vector"])
def test_backprop_delta(act, vector, rng):
    """δ = (W_nextᵀ δ_next) ⊙ σ'(z) is the gradient with respect to z of
    the next layer's pre-activation W_next σ(z) fed δ_next from above."""
    n, hidden, n_next = 9, 11, 5
    W = rng.normal(size=(n_next, hidden))
    z = rng.uniform(-4, 4, size=hidden if vector else (n, hidden))
    z.reshape(-1)[:3] = [0.0, -0.0, 1e-12]     # the kink convention matches PyTorch too
    delta_next = rng.normal(size=n_next if vector else (n, n_next))
    tz = t(z, True)
    z_next = F.linear(TORCH_ACTIVATIONS[act](tz), t(W))
    z_next.backward(t(delta_next))
    close(ops.backprop_delta(W, delta_next, z, act), tz.grad)


@pytest.mark.parametrize("act", ops.ACTIVATIONS)
def test_activations_and_derivatives(act, rng):
    z = np.concatenate([rng.uniform(-8, 8, 500), [0.0, -0.0, 1e-300, -1e-300],
                        [-40, -20, 20, 40, -1e4, 1e4, -1e300, 1e300]])
    tz = t(z, True)
    a = TORCH_ACTIVATIONS[act](tz)
    close(ops.activation_forward(act, z), a)
    a.backward(torch.ones_like(a))   # element-wise: ∂Σσ/∂z_k = σ'(z_k)
    close(ops.activation_derivative(act, z), tz.grad)


@pytest.mark.parametrize("n, c", [(1, 1), (1, 5), (8, 3), (64, 10), (5, 300)])
def test_softmax_cross_entropy(n, c, rng):
    Z = 3 * rng.normal(size=(n, c))
    Z[0, 0] = 1e4                               # stability, too
    y = rng.integers(0, c, size=n)
    tZ = t(Z, True)
    tl = F.cross_entropy(tZ, torch.tensor(y), reduction="mean")
    tl.backward()
    loss, dZ = ops.softmax_cross_entropy(Z, y)
    assert loss == pytest.approx(tl.item(), rel=TOL, abs=TOL)
    close(dZ, tZ.grad)
    # the vector form is one row, not averaged
    tz = t(Z[-1], True)
    tl = F.cross_entropy(tz[None], torch.tensor([int(y[-1])]))
    tl.backward()
    loss, dz = ops.softmax_cross_entropy(Z[-1], int(y[-1]))
    assert loss == pytest.approx(tl.item(), rel=TOL, abs=TOL)
    close(dz, tz.grad)


@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 4)], ids=str)
def test_gates(shape, rng):
    x, y, dz = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
    x.reshape(-1)[0] = 0.0                       # ReLU gate at its kink
    for name, forward in (("add", lambda a, b: a + b), ("mul", lambda a, b: a * b)):
        tx, ty = t(x, True), t(y, True)
        forward(tx, ty).backward(t(dz))
        if name == "add":
            dx, dy = ops.add_gate_backward(dz)
        else:
            dx, dy = ops.mul_gate_backward(dz, x, y)
        close(dx, tx.grad)
        close(dy, ty.grad)
    tx = t(x, True)
    torch.relu(tx).backward(t(dz))
    close(ops.relu_gate_backward(dz, x), tx.grad)


# --------------------------------------------------------------------------
# The oracle's whole-MLP reference (tests/reference.py, used by the Network
# tests) against autograd: losses, weighting, the delta recurrence.
# --------------------------------------------------------------------------

import reference as ref  # noqa: E402


def torch_mlp_loss(layers, X, y, loss, w):
    a = t(X)
    params = []
    for W, b, act in layers:
        tW, tb = t(W, True), t(b, True)
        params += [tW, tb]
        a = TORCH_ACTIVATIONS[act](F.linear(a, tW, tb))
    if loss == "softmax_cross_entropy":
        rows = F.cross_entropy(a, torch.tensor(y), reduction="none")
    elif loss == "binary_cross_entropy":
        rows = F.binary_cross_entropy_with_logits(a, t(y).reshape(a.shape),
                                                  reduction="none").mean(dim=1)
    else:
        rows = F.mse_loss(a, t(y).reshape(a.shape), reduction="none").mean(dim=1)
    value = rows.mean() if w is None else (t(w) * rows).sum() / t(w).sum()
    value.backward()
    return value.item(), params


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("loss, n_out", [("softmax_cross_entropy", 4),
                                         ("binary_cross_entropy", 1),
                                         ("binary_cross_entropy", 3), ("mse", 1),
                                         ("mse", 3)])
def test_reference_mlp_backward_matches_autograd(loss, n_out, weighted, rng):
    sizes = [5, 7, 6, n_out]
    acts = ["tanh", "gelu", "identity"]
    layers = [(rng.normal(size=(o, i)), rng.normal(size=o), act)
              for i, o, act in zip(sizes[:-1], sizes[1:], acts)]
    n = 11
    X = rng.normal(size=(n, 5))
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, n_out, size=n)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, size=(n, n_out)).astype(float)
    else:
        y = rng.normal(size=(n, n_out))
    if n_out == 1 and loss != "softmax_cross_entropy":
        y = y[:, 0]                                  # (n,) targets when out == 1
    w = rng.uniform(0, 2, size=n) if weighted else None
    value, grads = ref.mlp_backward(layers, X, y, loss, sample_weight=w)
    t_value, params = torch_mlp_loss(layers, X, y, loss, w)
    assert value == pytest.approx(t_value, rel=TOL, abs=TOL)
    for (dW, db), tW, tb in zip(grads, params[::2], params[1::2]):
        close(dW, tW.grad)
        close(db, tb.grad)
    if not weighted and loss != "softmax_cross_entropy":
        # unweighted BCE / MSE is the mean over all n·out elements
        out, _ = ref.mlp_forward(layers, X)
        if loss == "mse":
            full = F.mse_loss(t(out), t(y).reshape(out.shape)).item()
        else:
            full = F.binary_cross_entropy_with_logits(t(out), t(y).reshape(out.shape)).item()
        assert value == pytest.approx(full, rel=TOL)
