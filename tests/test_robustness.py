"""Numerical robustness at extreme values (issue 5): softmax cross-entropy,
binary cross-entropy with logits, and the activations sigmoid, softplus,
elu, gelu and tanh stay finite and accurate for logits up to ±1e4 in
float32 and ±1e300 in float64 (and at denormals) — through cbp.ops and
through a Network's forward, evaluate and backward.

The oracle is mpmath (arbitrary precision) evaluating each function on the
exact values cbp is given; it shares no code with cbp.  Where a textbook
formula would cancel even in 40 digits (1 + e^−700, e^(−1e−30) − 1), the
oracle uses the mathematically identical form that does not (log1p,
expm1, log-sum-exp shifted by the maximum), which mpmath evaluates
exactly at any magnitude.

"Accurate" means what floating point can promise: the result is within a
few units in the last place of f(z') for some z' within one ulp of z —
a few ulps of |f(z)| plus the change of f over one ulp of its argument
(which matters only where f is ill-conditioned, e.g. gelu's left tail);
below the smallest normal number of the dtype, within that number.
Losses (returned in double precision) are within a few ulps of the dtype
relative, or a few 1e−16 absolute (log(1 + δ) of a tiny δ, evaluated in
double as PyTorch does); gradient elements of softmax cross-entropy, which
are differences p − 1, within a few ulps of their bound 1/n.
"""
from __future__ import annotations

import mpmath
import numpy as np
import pytest

import cbp
from cbp import ops

mp = mpmath.mp
mp.dps = 40

DTYPES = [np.float32, np.float64]
BIG = {np.float32: 1e4, np.float64: 1e300}
# Extreme and ordinary magnitudes; each is used with both signs.  The
# float32 ones include its overflow edges (88.7: e^z overflows; 104: e^−z
# underflows to 0) and a denormal (1e-45); the float64 ones its (709.8,
# 745) and denormal 5e-324.
MAGNITUDES = {
    np.float32: [0.0, 1e-45, 1e-38, 1e-30, 1e-8, 1e-3, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0,
                 30.0, 40.0, 50.0, 80.0, 88.7, 89.0, 100.0, 104.0, 110.0, 1e3, 1e4],
    np.float64: [0.0, 5e-324, 1e-310, 1e-300, 1e-30, 1e-8, 0.5, 1.0, 5.0, 20.0, 37.0, 40.0,
                 100.0, 700.0, 709.8, 710.0, 745.0, 800.0, 1e4, 1e5, 1e100, 1e300],
}
ULPS = 8        # allowed error in units of the dtype's epsilon
DOUBLE_EPS = 2.0 ** -52


def extreme_values(dtype):
    mags = np.array(MAGNITUDES[dtype], dtype=dtype)
    return np.concatenate([-mags[::-1], mags])


def _mpf(v):
    return mp.mpf(float(v))


def check(got, exact, tolerance, z, what):
    """Every |got − exact| ≤ tolerance (lists of mpf), got finite."""
    bad = [i for i, (g, e, t) in enumerate(zip(np.ravel(got), exact, tolerance))
           if not np.isfinite(g) or abs(_mpf(g) - e) > t]
    assert not bad, "\n".join(
        f"{what} at z = {np.ravel(z)[min(i, np.size(z) - 1)]!r}: got {np.ravel(got)[i]!r}, "
        f"exact {mpmath.nstr(exact[i], 17)}, tolerance {mpmath.nstr(tolerance[i], 3)}"
        for i in bad[:10])


def check_function(got, fn, z, dtype, what, ulps=ULPS):
    """got ≈ fn(z) element-wise, to `ulps` ulps of f(z') for z' within one
    ulp of z (see the module docstring)."""
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
    exact, tolerance = [], []
    for v in np.ravel(z):
        x = _mpf(v)
        fx = fn(x)
        step = abs(x) * eps
        wobble = max(abs(fn(x + step) - fx), abs(fn(x - step) - fx)) if step else 0
        exact.append(fx)
        tolerance.append(ulps * (eps * abs(fx) + wobble) + tiny)
    check(got, exact, tolerance, z, what)


def check_loss(got, exact, dtype, what, z=()):
    eps = float(np.finfo(dtype).eps)
    check([got], [exact], [ULPS * (eps * abs(exact) + DOUBLE_EPS)], z if np.size(z) else [0],
          what)


# --------------------------------------------------------------------------
# The oracle, in 40-digit arithmetic
# --------------------------------------------------------------------------

def m_sigmoid(z):
    return 1 / (1 + mp.exp(-z))


def m_sigmoid_prime(z):              # σ(1 − σ) = e^−|z| / (1 + e^−|z|)²
    e = mp.exp(-abs(z))
    return e / (1 + e) ** 2


def m_Phi(z):
    """Φ(z) = erfc(−z/√2) / 2.  (mpmath's erfc overflows beyond |x| ~ 1e150;
    there Φ is 0 or 1 to far more digits than any float carries.)"""
    if abs(z) > 1e4:
        tail = mp.exp(-z * z / 2) / (abs(z) * mp.sqrt(2 * mp.pi))
        return tail if z < 0 else 1 - tail
    return mp.erfc(-z / mp.sqrt(2)) / 2


def m_phi(z):
    return mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)


ORACLE = {  # name → (σ, σ')
    "sigmoid": (m_sigmoid, m_sigmoid_prime),
    "softplus": (lambda z: mp.log1p(mp.exp(z)), m_sigmoid),
    "elu": (lambda z: z if z > 0 else mp.expm1(z), lambda z: mp.mpf(1) if z > 0 else mp.exp(z)),
    "gelu": (lambda z: z * m_Phi(z), lambda z: m_Phi(z) + z * m_phi(z)),
    "tanh": (mp.tanh, lambda z: 1 / mp.cosh(z) ** 2),
}
ACTS = list(ORACLE)


def exact(fn, values):
    return [fn(_mpf(v)) for v in np.ravel(values)]


def m_softmax_ce(row, label):
    """(−log softmax(row)[label], softmax(row) − onehot(label)):
    log Σ e^(z_j) − z_label with the sum shifted by m = max z."""
    zs = [_mpf(v) for v in row]
    m = max(zs)
    total = mp.fsum(mp.exp(v - m) for v in zs)
    p = [mp.exp(v - m) / total for v in zs]
    return (m - zs[label]) + mp.log(total), [pj - (j == label) for j, pj in enumerate(p)]


def m_bce(z, t):
    """log(1 + e^z) − z·t and its derivative σ(z) − t."""
    z = _mpf(z)
    return mp.log1p(mp.exp(z)) - z * t, m_sigmoid(z) - t


def check_softmax_gradient(got, exact_values, dtype, n, z, what):
    eps = float(np.finfo(dtype).eps)
    check(got, exact_values, [ULPS * eps * (abs(e) + mp.mpf(1) / n) for e in exact_values],
          z, what)


# --------------------------------------------------------------------------
# Through cbp.ops
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("act", ACTS)
def test_activation_and_derivative_against_mpmath(act, dtype):
    z = extreme_values(dtype)
    sigma, sigma_prime = ORACLE[act]
    a = ops.activation_forward(act, z)
    d = ops.activation_derivative(act, z)
    assert a.dtype == dtype and d.dtype == dtype
    check_function(a, sigma, z, dtype, act)
    check_function(d, sigma_prime, z, dtype, f"{act}'")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("act", ACTS)
def test_backprop_delta_at_extreme_z_against_mpmath(act, dtype):
    """δ = (Wᵀ δ_next) ⊙ σ'(z) with W = I, δ_next = 1: exactly σ'(z)."""
    z = extreme_values(dtype).reshape(1, -1)
    eye = np.eye(z.shape[1], dtype=dtype)
    delta = ops.backprop_delta(eye, np.ones_like(z), z, act)
    check_function(delta, ORACLE[act][1], z, dtype, f"backprop_delta {act}")


def _logit_rows(dtype):
    """Rows of logits at ±BIG and mixed, with their labels."""
    B = BIG[dtype]
    rows = [([B, -B, 0.0], 1), ([-B, -B, -B], 0), ([B, B, -B], 2), ([0.0, 0.0, B], 2),
            ([B, B - 1, B - 2], 0), ([-B, -B + 1, -B + 30], 2), ([B, -B, B], 0),
            ([1e-30, -1e-30, 0.0], 1), ([B / 2, -B / 3, B / 7], 0), ([-B, 0.0, 0.0], 0),
            ([0.0, -30.0, -40.0], 0), ([B, B / 2, 0.0], 1)]
    Z = np.array([r for r, _ in rows], dtype=dtype)
    y = np.array([label for _, label in rows])
    return Z, y


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_softmax_cross_entropy_huge_logits_against_mpmath(dtype):
    Z, y = _logit_rows(dtype)
    for i in range(len(y)):  # vector form: one row, not divided by n
        loss, dz = ops.softmax_cross_entropy(Z[i], int(y[i]))
        m_loss, m_dz = m_softmax_ce(Z[i], y[i])
        check_loss(loss, m_loss, dtype, f"loss of row {i}", Z[i])
        check_softmax_gradient(dz, m_dz, dtype, 1, Z[i], f"dz of row {i}")
    loss, dZ = ops.softmax_cross_entropy(Z, y)  # batch form: mean, dZ / n
    exact_rows = [m_softmax_ce(Z[i], y[i]) for i in range(len(y))]
    n = len(y)
    check_loss(loss, mp.fsum(l for l, _ in exact_rows) / n, dtype, "mean loss")
    check_softmax_gradient(dZ, [g / n for _, row in exact_rows for g in row], dtype, n, Z,
                           "dZ")


# --------------------------------------------------------------------------
# Through a Network: the last layer's weights make the huge logits
# --------------------------------------------------------------------------

def logits_network(Z, loss):
    """A one-layer network whose outputs for X = I (n × n) are exactly Z:
    row i of X picks column i of Wᵀ, so Z = I·Wᵀ + 0 = Wᵀ."""
    n, c = Z.shape
    dtype = Z.dtype.name
    net = cbp.Network([cbp.Dense(n, c)], loss=loss, dtype=dtype, seed=0)
    net.layers[0].W = Z.T
    net.layers[0].b = 0
    return net, np.eye(n, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_network_softmax_cross_entropy_huge_logits(dtype):
    Z, y = _logit_rows(dtype)
    net, X = logits_network(Z, "softmax_cross_entropy")
    assert net.forward(X).tobytes() == Z.tobytes()
    n = len(y)
    exact_rows = [m_softmax_ce(Z[i], y[i]) for i in range(n)]
    m_loss = mp.fsum(l for l, _ in exact_rows) / n
    result = net.evaluate(X, y)
    check_loss(result["loss"], m_loss, dtype, "evaluate loss")
    check_loss(net.backward(X, y), m_loss, dtype, "backward loss")
    assert result["accuracy"] == np.mean(Z.argmax(axis=1) == y)
    # dW = Δᵀ X = Δᵀ: dW[j, i] = (softmax(z_i)_j − [j = y_i]) / n.
    check_softmax_gradient(net.layers[0].dW.T, [g / n for _, row in exact_rows for g in row],
                           dtype, n, Z, "dW")
    # db = Σ_i Δ_i: n terms, each within its bound 1/n.
    db_exact = [mp.fsum(row[j] for _, row in exact_rows) / n for j in range(Z.shape[1])]
    eps = float(np.finfo(dtype).eps)
    check(net.layers[0].db, db_exact, [2 * n * ULPS * eps / n] * Z.shape[1], Z, "db")
    proba = net.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=4 * eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_network_binary_cross_entropy_huge_logits(dtype):
    """BCE with logits, as torch's BCEWithLogitsLoss: the mean over all
    elements of log(1 + e^z) − z·t, gradient (σ(z) − t) / (n·out)."""
    B = BIG[dtype]
    Z = np.array([[B, -B, B, -B], [B / 3, -B / 7, 0.0, 1e-30], [30.0, -30.0, 100.0, -100.0],
                  [B, B, -B, -B], [-20.0, 20.0, 5e-324 if dtype == np.float64 else 1e-45, 1.0]],
                 dtype=dtype)
    T = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0.5, 1, 0.25, 0], [0, 1, 1, 0]],
                 dtype=dtype)
    net, X = logits_network(Z, "binary_cross_entropy")
    count = Z.size
    terms = [m_bce(z, _mpf(t)) for z, t in zip(Z.ravel(), T.ravel())]
    m_loss = mp.fsum(l for l, _ in terms) / count
    check_loss(net.evaluate(X, T)["loss"], m_loss, dtype, "evaluate loss")
    check_loss(net.backward(X, T), m_loss, dtype, "backward loss")
    # σ(z) − t: within a few ulps of its bound 1, divided by n·out.
    check_softmax_gradient(net.layers[0].dW.T, [g / count for _, g in terms], dtype, count, Z,
                           "dW")
    check_function(net.predict_proba(X), m_sigmoid, Z, dtype, "predict_proba")
    assert (net.predict(X) == (Z > 0)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("act", ACTS)
def test_network_hidden_activation_at_extreme_values(act, dtype):
    """Dense(1, m, act) then Dense(m, m) = identity, BCE with t = 0.  For
    X = [[1]] the hidden pre-activations are the extreme values z, the
    output is σ(z), and backpropagation gives the first layer
    dW = dL/dσ · σ'(z) with dL/dσ = sigmoid(σ(z)) / m."""
    z = extreme_values(dtype)
    m = z.size
    net = cbp.Network([cbp.Dense(1, m, activation=act), cbp.Dense(m, m)],
                      loss="binary_cross_entropy", dtype=np.dtype(dtype).name, seed=0)
    net.layers[0].W = z.reshape(m, 1)
    net.layers[0].b = 0
    net.layers[1].W = np.eye(m)
    net.layers[1].b = 0
    X = np.ones((1, 1), dtype)
    sigma, sigma_prime = ORACLE[act]
    check_function(net.forward(X), sigma, z, dtype, f"forward through {act}")
    loss = net.backward(X, np.zeros((1, m), dtype))
    m_loss = mp.fsum(mp.log1p(mp.exp(s)) for s in exact(sigma, z)) / m
    check_loss(loss, m_loss, dtype, f"loss through {act}")
    check_function(net.layers[0].dW[:, 0],
                   lambda x: m_sigmoid(sigma(x)) / m * sigma_prime(x), z, dtype,
                   f"dW through {act}'", ulps=4 * ULPS)
    assert np.isfinite(net.layers[1].dW).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_training_on_huge_logits_stays_finite(dtype):
    """A step on saturated logits moves the weights by a bounded amount
    (each gradient element is at most 1 / n), so training neither
    overflows nor raises."""
    Z, y = _logit_rows(dtype)
    for loss, target in [("softmax_cross_entropy", y),
                         ("binary_cross_entropy", (Z > 0).astype(dtype))]:
        net, X = logits_network(Z, loss)
        before = [p.astype(np.float64) for p in net.parameters()]
        for _ in range(3):
            assert np.isfinite(net.train_step(X, target, cbp.SGD(lr=0.1)))
        for p, q in zip(net.parameters(), before):
            assert np.isfinite(p).all()
            # 3 steps of at most lr = 0.1 each, plus the rounding of |p| ≤ BIG
            bound = 0.3 + 4 * float(np.finfo(dtype).eps) * np.abs(q)
            assert (np.abs(p.astype(np.float64) - q) <= bound).all()


def test_weighted_accuracy_of_float32_weights_is_at_most_one():
    """Regression (found by tests/test_fuzz.py): with float32 sample
    weights, Σ wᵢ [correct] / Σ wᵢ was divided by a float32 sum that rounds
    down, giving an accuracy of 1.00000002."""
    w = np.array([2.4475605487823486, 0.008215500973165035, 2.5722129344940186,
                  0.10075672715902328, 2.1889662742614746], dtype=np.float32)
    net = cbp.Network.mlp([3, 2], seed=0)
    X = np.random.default_rng(0).standard_normal((5, 3))
    result = net.evaluate(X, net.predict(X), sample_weight=w)
    assert result["accuracy"] == 1.0
