"""Plain NumPy transcription of every formula of the derivation: the first
oracle of the test suite.

Written from the formulas (docs/derivation.md, API.md §1–2), independently
of cbp: this module must never import cbp.  Every function computes in
float64 whatever the dtype of its inputs (a float32 array is widened
exactly), so a comparison measures cbp's rounding, not the reference's.

Shapes follow the derivation: W is (out, in); a batch has one sample per
row; the vector forms take one sample.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc

__all__ = [
    "ACTIVATIONS", "SIGMA", "SIGMA_PRIME", "sigma", "sigma_prime",
    "linear_forward", "outer", "matvec_t", "bias_grad", "linear_backward",
    "backprop_delta", "log_softmax", "softmax", "softmax_cross_entropy",
    "add_gate_backward", "mul_gate_backward", "relu_gate_backward",
    "row_losses", "mlp_forward", "mlp_backward",
]

LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------
# Activations: σ and σ', element-wise.
# Where the textbook form overflows (e^z for large z) the same function is
# written in an algebraically equal form that does not; the comment gives
# the textbook form.
# --------------------------------------------------------------------------

def identity(z):
    return _f64(z).copy()


def identity_prime(z):
    return np.ones_like(_f64(z))


def relu(z):                       # max(z, 0)
    z = _f64(z)
    return np.where(z > 0, z, 0.0)


def relu_prime(z):                 # [z > 0]; 0 at the kink
    return (_f64(z) > 0).astype(np.float64)


def leaky_relu(z):                 # z for z > 0, 0.01 z otherwise
    z = _f64(z)
    return np.where(z > 0, z, LEAKY_SLOPE * z)


def leaky_relu_prime(z):           # 1 for z > 0, 0.01 otherwise (0.01 at 0, as PyTorch)
    return np.where(_f64(z) > 0, 1.0, LEAKY_SLOPE)


def sigmoid(z):                    # 1 / (1 + e^−z)
    z = _f64(z)
    e = np.exp(-np.abs(z))         # e^−|z| never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_prime(z):              # σ (1 − σ) = e^−|z| / (1 + e^−|z|)²  (even in z)
    e = np.exp(-np.abs(_f64(z)))
    return e / (1.0 + e) ** 2


def tanh(z):
    return np.tanh(_f64(z))


def tanh_prime(z):                 # 1 − tanh² = 1 / cosh²
    z = _f64(z)
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(z) ** 2


def softplus(z):                   # log(1 + e^z) = max(z, 0) + log1p(e^−|z|)
    z = _f64(z)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def softplus_prime(z):             # e^z / (1 + e^z) = σ(z)
    return sigmoid(z)


def elu(z):                        # z for z > 0, α (e^z − 1) otherwise, α = 1
    z = _f64(z)
    return np.where(z > 0, z, ELU_ALPHA * np.expm1(np.minimum(z, 0.0)))


def elu_prime(z):                  # 1 for z > 0, α e^z otherwise
    z = _f64(z)
    return np.where(z > 0, 1.0, ELU_ALPHA * np.exp(np.minimum(z, 0.0)))


def normal_cdf(z):
    """Φ(z) = (1 + erf(z/√2)) / 2, written as erfc(−z/√2) / 2 (the same
    function; erfc keeps the left tail's relative accuracy where 1 + erf
    would cancel to 0)."""
    return 0.5 * erfc(-_f64(z) * SQRT_HALF)


def normal_cdf_erf(z):
    """Φ(z) = (1 + erf(z/√2)) / 2 with math.erf, element by element: the
    textbook form, used to cross-check normal_cdf where it does not cancel."""
    z = _f64(z)
    return np.vectorize(lambda t: 0.5 * (1.0 + math.erf(t * SQRT_HALF)),
                        otypes=[np.float64])(z) if z.size else z.copy()


def normal_pdf(z):                 # φ(z) = e^(−z²/2) / √(2π)
    z = _f64(z)
    with np.errstate(over="ignore"):
        return INV_SQRT_2PI * np.exp(-0.5 * z * z)


def gelu(z):                       # exact GELU: z Φ(z)
    z = _f64(z)
    return z * normal_cdf(z)


def gelu_prime(z):                 # Φ(z) + z φ(z)
    z = _f64(z)
    pdf = normal_pdf(z)
    # z φ(z) → 0 when φ underflows (|z| > ~38); avoid inf · 0 when z² overflows.
    return normal_cdf(z) + np.where(pdf > 0, z * pdf, 0.0)


#: name → σ, name → σ', in the order of the API's activation list.
SIGMA = {"identity": identity, "relu": relu, "leaky_relu": leaky_relu,
         "sigmoid": sigmoid, "tanh": tanh, "softplus": softplus, "elu": elu,
         "gelu": gelu}
SIGMA_PRIME = {"identity": identity_prime, "relu": relu_prime,
               "leaky_relu": leaky_relu_prime, "sigmoid": sigmoid_prime,
               "tanh": tanh_prime, "softplus": softplus_prime, "elu": elu_prime,
               "gelu": gelu_prime}
ACTIVATIONS = tuple(SIGMA)


def sigma(name, z):
    return SIGMA[name](z)


def sigma_prime(name, z):
    return SIGMA_PRIME[name](z)


# --------------------------------------------------------------------------
# The fully connected layer z = W x + b.
# --------------------------------------------------------------------------

def linear_forward(x, W, b):
    """z = W x + b (x of shape (in,)), or Z = X Wᵀ + b (X of shape (n, in))."""
    x, W, b = _f64(x), _f64(W), _f64(b)
    if x.ndim == 1:
        return W @ x + b
    return x @ W.T + b


def outer(delta, x):
    """dW = δ xᵀ (vectors), or Δᵀ X = Σ_rows δ_i x_iᵀ (batches)."""
    delta, x = _f64(delta), _f64(x)
    if delta.ndim == 1:
        return np.outer(delta, x)
    return delta.T @ x             # (out, n)(n, in); zeros when n == 0


def matvec_t(W, delta):
    """dx = Wᵀ δ (vector), or dX = Δ W (batch)."""
    W, delta = _f64(W), _f64(delta)
    if delta.ndim == 1:
        return W.T @ delta
    return delta @ W


def bias_grad(delta):
    """db = δ (vector), or Σ_rows Δ (batch)."""
    delta = _f64(delta)
    return delta.copy() if delta.ndim == 1 else delta.sum(axis=0)


def linear_backward(delta, x, W):
    """(dW, db, dx) = (δ xᵀ, δ, Wᵀ δ), batch form (Δᵀ X, Σ_rows Δ, Δ W)."""
    return outer(delta, x), bias_grad(delta), matvec_t(W, delta)


def backprop_delta(W_next, delta_next, z, activation):
    """δ = (W_nextᵀ δ_next) ⊙ σ'(z); row-wise for batches."""
    return matvec_t(W_next, delta_next) * sigma_prime(activation, z)


# --------------------------------------------------------------------------
# Softmax with cross-entropy.
# --------------------------------------------------------------------------

def log_softmax(Z):
    """Row-wise log softmax with log-sum-exp: (z − m) − log Σ e^(z − m),
    m = max z.  (Not z − (m + log Σ …): for |m| ~ 1e300 the log Σ would be
    absorbed by m.)"""
    Z = _f64(Z)
    shifted = Z - Z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(Z):
    return np.exp(log_softmax(Z))


def onehot(y, n_classes):
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    out = np.zeros((y.size, n_classes))
    out[np.arange(y.size), y] = 1.0
    return out


def softmax_cross_entropy(z, y):
    """Vector form (z (C,), y an int): (−log softmax(z)[y], softmax(z) − onehot(y)).
    Batch form (Z (n, C), y (n,)): the mean loss over rows and
    dZ = (softmax(Z) − onehot(y)) / n."""
    z = _f64(z)
    if z.ndim == 1:
        loss, dz = softmax_cross_entropy(z[None, :], np.array([int(y)]))
        return loss, dz[0]            # n = 1: nothing divided
    n, c = z.shape
    if n == 0:
        raise ValueError("the loss of an empty batch is undefined")
    y = np.asarray(y, dtype=np.int64)
    logp = log_softmax(z)
    loss = -logp[np.arange(n), y].mean()
    dz = (np.exp(logp) - onehot(y, c)) / n
    return float(loss), dz


# --------------------------------------------------------------------------
# The three gates of the local view: each multiplies the upstream dz by its
# local gradient.
# --------------------------------------------------------------------------

def add_gate_backward(dz):
    """z = x + y: ∂z/∂x = ∂z/∂y = 1, the distributor."""
    dz = _f64(dz)
    return dz.copy(), dz.copy()


def mul_gate_backward(dz, x, y):
    """z = x y: ∂z/∂x = y, ∂z/∂y = x, the switcher."""
    dz, x, y = _f64(dz), _f64(x), _f64(y)
    return dz * y, dz * x


def relu_gate_backward(dz, x):
    """z = max(x, 0): ∂z/∂x = [x > 0], the filter (0 at x = 0)."""
    dz, x = _f64(dz), _f64(x)
    return np.where(x > 0, dz, 0.0)


# --------------------------------------------------------------------------
# A whole MLP: forward, losses, backward (for the Network tests).
# --------------------------------------------------------------------------

LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "mse")


def _targets(loss, y, n, n_out):
    if loss == "softmax_cross_entropy":
        return np.asarray(y, dtype=np.int64).reshape(n)
    return _f64(y).reshape(n, n_out)   # (n,) is accepted when out == 1


def row_losses(loss, Z, y):
    """Per-row loss l_i and its gradient ∂l_i/∂z_i, both unweighted.

    softmax_cross_entropy: l_i = −log softmax(z_i)[y_i],
        ∂l_i/∂z_i = softmax(z_i) − onehot(y_i).
    binary_cross_entropy (sigmoid fused, as BCEWithLogitsLoss):
        l_i = mean_j [max(z, 0) − z y + log1p(e^−|z|)],
        ∂l_i/∂z_ij = (σ(z_ij) − y_ij) / out.
    mse: l_i = mean_j (z − y)²,  ∂l_i/∂z_ij = 2 (z_ij − y_ij) / out.
    """
    Z = _f64(Z)
    n, n_out = Z.shape
    y = _targets(loss, y, n, n_out)
    if loss == "softmax_cross_entropy":
        logp = log_softmax(Z)
        return -logp[np.arange(n), y], np.exp(logp) - onehot(y, n_out)
    if loss == "binary_cross_entropy":
        elem = np.maximum(Z, 0.0) - Z * y + np.log1p(np.exp(-np.abs(Z)))
        return elem.mean(axis=1), (sigmoid(Z) - y) / n_out
    if loss == "mse":
        r = Z - y
        return (r * r).mean(axis=1), 2.0 * r / n_out
    raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")


def loss_and_grad(loss, Z, y, sample_weight=None):
    """L = Σ w_i l_i / Σ w_i (w = 1: the mean over rows, which for BCE and MSE
    is the mean over all n·out elements) and dL/dZ."""
    l, dl = row_losses(loss, Z, y)
    n = l.shape[0]
    if n == 0:
        raise ValueError("the loss of an empty batch is undefined")
    w = np.ones(n) if sample_weight is None else _f64(sample_weight).reshape(n)
    total = w.sum()
    if total == 0:
        return 0.0, np.zeros_like(dl)
    return float((w * l).sum() / total), dl * (w / total)[:, None]


def mlp_forward(layers, X):
    """layers: list of (W, b, activation).  Returns (output, cache) with
    cache = [(input a_{l−1}, pre-activation z_l), ...]."""
    a = _f64(X)
    cache = []
    for W, b, act in layers:
        z = linear_forward(a, W, b)
        cache.append((a, z))
        a = sigma(act, z)
    return a, cache


def mlp_backward(layers, X, y, loss, sample_weight=None):
    """Loss and per-layer (dW, db) of a whole MLP by the delta recurrence.

    The last layer's output (after its own activation) feeds the loss;
    δ_L = dL/da_L ⊙ σ'_L(z_L), then δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ σ'_l(z_l),
    dW_l = Σ_rows δ_l a_{l−1}ᵀ, db_l = Σ_rows δ_l.
    """
    out, cache = mlp_forward(layers, X)
    value, d_out = loss_and_grad(loss, out, y, sample_weight)
    grads = [None] * len(layers)
    delta = d_out * sigma_prime(layers[-1][2], cache[-1][1])
    for i in range(len(layers) - 1, -1, -1):
        a_prev, _ = cache[i]
        grads[i] = (outer(delta, a_prev), bias_grad(delta))
        if i > 0:
            W = _f64(layers[i][0])
            delta = backprop_delta(W, delta, cache[i - 1][1], layers[i - 1][2])
    return value, grads
