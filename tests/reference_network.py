"""A plain-NumPy reference of cbp's network and optimizers, written from the
formulas (API.md §2–3, the derivation, the torch.optim documentation), in
float64, sharing no code with cbp.  Used by test_network_gradients.py and
test_optimizers.py as the first oracle.

Conventions (the same as cbp's): a layer maps A (n, in) to
Z = A Wᵀ + b, A' = σ(Z); W is (out, in), b is (out,).  `params` is the
flat list ``[W1, b1, W2, b2, …]``; `activations` the per-layer names.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erfc

SQRT1_2 = np.sqrt(0.5)
INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _sigmoid(z):
    # exp of a non-positive argument only, so it never overflows.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _gelu_cdf(z):
    return 0.5 * erfc(-z * SQRT1_2)


# name → (σ, σ'); σ' at the ReLU kink is 0, leaky_relu's is 0.01 (API §8).
ACTIVATIONS = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.01 * z),
                   lambda z: np.where(z > 0, 1.0, 0.01)),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "softplus": (lambda z: np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z))), _sigmoid),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
            lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0)))),
    "gelu": (lambda z: z * _gelu_cdf(z),
             lambda z: _gelu_cdf(z) + z * INV_SQRT_2PI * np.exp(-0.5 * z * z)),
}

SMOOTH_ACTIVATIONS = ("sigmoid", "tanh", "softplus", "elu", "gelu", "identity")


# ---------------------------------------------------------------- forward
def forward(params, activations, X):
    """(Zs, As): the pre-activations and activations of every layer."""
    A = np.asarray(X, np.float64)
    Zs, As = [], []
    for l, act in enumerate(activations):
        W, b = np.asarray(params[2 * l], np.float64), np.asarray(params[2 * l + 1], np.float64)
        Z = A @ W.T + b
        A = ACTIVATIONS[act][0](Z)
        Zs.append(Z)
        As.append(A)
    return Zs, As


def output(params, activations, X):
    return forward(params, activations, X)[1][-1]


# ---------------------------------------------------------------- losses
def _targets_2d(loss, y, n, n_out):
    if loss == "softmax_cross_entropy":
        return np.asarray(y, np.int64)
    return np.asarray(y, np.float64).reshape(n, n_out)


def row_losses(loss, out, y):
    """lᵢ for every row: −log softmax(z)[y] for softmax cross-entropy;
    the mean over the row's outputs of the element loss for binary
    cross-entropy (on logits) and squared error."""
    n, n_out = out.shape
    y = _targets_2d(loss, y, n, n_out)
    if loss == "softmax_cross_entropy":
        m = out.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(out - m).sum(axis=1))
        return lse - out[np.arange(n), y]
    if loss == "binary_cross_entropy":
        # −[y log σ(z) + (1 − y) log(1 − σ(z))], written without overflow.
        elem = np.maximum(out, 0.0) - out * y + np.log1p(np.exp(-np.abs(out)))
        return elem.mean(axis=1)
    if loss == "mse":
        return ((out - y) ** 2).mean(axis=1)
    raise ValueError(loss)


def row_losses_grad(loss, out, y):
    """∂lᵢ/∂out for every row (each row's own loss, unscaled)."""
    n, n_out = out.shape
    y = _targets_2d(loss, y, n, n_out)
    if loss == "softmax_cross_entropy":
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(n), y] -= 1.0
        return p
    if loss == "binary_cross_entropy":
        return (_sigmoid(out) - y) / n_out
    if loss == "mse":
        return 2.0 * (out - y) / n_out
    raise ValueError(loss)


def row_scales(n, sample_weight):
    """The weight of each row in the batch loss: wᵢ / Σ w (1/n unweighted)."""
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(sample_weight, np.float64)
    return w / w.sum()


def loss_value(params, activations, loss, X, y, sample_weight=None):
    """Σ wᵢ lᵢ / Σ wᵢ (the mean of the lᵢ without weights)."""
    out = output(params, activations, X)
    return float(row_scales(out.shape[0], sample_weight) @ row_losses(loss, out, y))


def loss_and_gradients(params, activations, loss, X, y, sample_weight=None):
    """(loss, [dW1, db1, …]) by backpropagation:
    Δ_L = ∂loss/∂A_L ⊙ σ_L'(Z_L);  dW_l = Δ_lᵀ A_{l-1};  db_l = Σ_rows Δ_l;
    Δ_{l-1} = (Δ_l W_l) ⊙ σ'_{l-1}(Z_{l-1})."""
    X = np.asarray(X, np.float64)
    Zs, As = forward(params, activations, X)
    out = As[-1]
    scale = row_scales(X.shape[0], sample_weight)
    value = float(scale @ row_losses(loss, out, y))
    delta = row_losses_grad(loss, out, y) * scale[:, None]
    grads = [None] * len(params)
    for l in range(len(activations) - 1, -1, -1):
        delta = delta * ACTIVATIONS[activations[l]][1](Zs[l])
        inputs = X if l == 0 else As[l - 1]
        grads[2 * l] = delta.T @ inputs
        grads[2 * l + 1] = delta.sum(axis=0)
        if l:
            delta = delta @ np.asarray(params[2 * l], np.float64)
    return value, grads


def finite_difference_gradients(params, activations, loss, X, y, sample_weight=None,
                                eps=1e-5):
    """∂loss/∂θ for every parameter entry by the second-order central
    difference (L(θ + ε) − L(θ − ε)) / 2ε on :func:`loss_value`.  A
    different stencil from cbp.gradcheck's fourth-order one, on a different
    forward pass, so the two checks are independent."""
    params = [np.array(p, np.float64) for p in params]
    grads = []
    for p in params:
        g = np.empty_like(p)
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = loss_value(params, activations, loss, X, y, sample_weight)
            flat[i] = old - eps
            down = loss_value(params, activations, loss, X, y, sample_weight)
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


# ---------------------------------------------------------------- optimizers
# Transcriptions of the pseudo-code in the torch.optim documentation
# (https://pytorch.org/docs/stable/generated/torch.optim.SGD.html, .Adam.html,
# .AdamW.html), maximize=False, amsgrad=False.  Each `step(params, grads)`
# updates the arrays of `params` in place; t counts from 1.
class SGD:
    """g ← g + λθ;  b ← g (t = 1) else μ b + (1 − τ) g;
    g ← g + μ b (Nesterov) else b (when μ ≠ 0);  θ ← θ − γ g."""

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay
        self.buffers = None
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        if self.buffers is None:
            self.buffers = [None] * len(params)
        for k, (p, g) in enumerate(zip(params, grads)):
            g = np.array(g, np.float64)
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            if self.momentum != 0:
                if self.t > 1:
                    b = self.momentum * self.buffers[k] + (1 - self.dampening) * g
                else:
                    b = g.copy()
                self.buffers[k] = b
                g = g + self.momentum * b if self.nesterov else b
            p -= self.lr * g


class Adam:
    """g ← g + λθ;  m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;
    m̂ = m / (1 − β1ᵗ);  v̂ = v / (1 − β2ᵗ);  θ ← θ − γ m̂ / (√v̂ + ε).
    AdamW (decoupled=True) replaces the first line by θ ← θ − γλθ."""

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = self.v = None
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        b1, b2 = self.betas
        if self.m is None:
            self.m = [np.zeros_like(p, dtype=np.float64) for p in params]
            self.v = [np.zeros_like(p, dtype=np.float64) for p in params]
        for k, (p, g) in enumerate(zip(params, grads)):
            g = np.array(g, np.float64)
            if self.decoupled:
                p -= self.lr * self.weight_decay * p
            elif self.weight_decay != 0:
                g = g + self.weight_decay * p
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1 ** self.t)
            v_hat = self.v[k] / (1 - b2 ** self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def train(params, activations, loss, batches, optimizer, sample_weights=None):
    """Run `optimizer` over `batches` [(X, y), …] from a copy of `params`.
    Returns (final params, the loss of each batch before its update)."""
    params = [np.array(p, np.float64) for p in params]
    losses = []
    for k, (X, y) in enumerate(batches):
        w = None if sample_weights is None else sample_weights[k]
        value, grads = loss_and_gradients(params, activations, loss, X, y, w)
        losses.append(value)
        optimizer.step(params, grads)
    return params, losses


def max_norm_rel_error(actual, expected):
    """max |a − e| / max |e| over one array: the error measured against the
    array's largest entry, so entries that happen to be near zero (where an
    element-wise relative error means nothing) do not dominate."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    if scale == 0:
        return float(np.max(np.abs(actual))) if actual.size else 0.0
    return float(np.max(np.abs(actual - expected)) / scale)


# ---------------------------------------------------------------- PyTorch
# The same network in PyTorch (the third oracle).  torch is imported only
# when these are called, so this module stays importable without it.
def torch_activation(name):
    import torch.nn as nn

    return {"identity": nn.Identity, "relu": nn.ReLU,
            "leaky_relu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid,
            "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": lambda: nn.ELU(alpha=1.0),
            "gelu": lambda: nn.GELU(approximate="none")}[name]()


def torch_model(params, activations):
    """nn.Sequential(Linear, σ, …) in float64 holding a copy of `params`
    (nn.Linear's weight is (out, in), as cbp's W)."""
    import torch
    import torch.nn as nn

    modules = []
    for l, act in enumerate(activations):
        W = np.asarray(params[2 * l], np.float64)
        linear = nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.copy()))
            linear.bias.copy_(torch.from_numpy(np.array(params[2 * l + 1], np.float64)))
        modules += [linear, torch_activation(act)]
    return nn.Sequential(*modules)


def torch_loss(model, loss, X, y, sample_weight=None):
    """The batch loss as a torch scalar: the per-row losses from
    CrossEntropyLoss / BCEWithLogitsLoss / MSELoss with reduction='none'
    (BCE and MSE averaged over each row's outputs), then Σ wᵢ lᵢ / Σ wᵢ."""
    import torch
    import torch.nn.functional as F

    out = model(torch.from_numpy(np.asarray(X, np.float64)))
    n, n_out = out.shape
    if loss == "softmax_cross_entropy":
        rows = F.cross_entropy(out, torch.from_numpy(np.asarray(y, np.int64)), reduction="none")
    else:
        t = torch.from_numpy(np.asarray(y, np.float64).reshape(n, n_out))
        if loss == "binary_cross_entropy":
            rows = F.binary_cross_entropy_with_logits(out, t, reduction="none").mean(dim=1)
        else:
            rows = F.mse_loss(out, t, reduction="none").mean(dim=1)
    if sample_weight is None:
        return rows.mean()
    w = torch.from_numpy(np.asarray(sample_weight, np.float64))
    return (w * rows).sum() / w.sum()


def torch_loss_and_gradients(params, activations, loss, X, y, sample_weight=None):
    model = torch_model(params, activations)
    value = torch_loss(model, loss, X, y, sample_weight)
    value.backward()
    grads = []
    for module in model:
        if hasattr(module, "weight"):
            grads += [module.weight.grad.numpy().copy(), module.bias.grad.numpy().copy()]
    return float(value.detach()), grads


def torch_parameters(model):
    return [p.detach().numpy().copy() for p in model.parameters()]
