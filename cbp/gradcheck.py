"""Gradient checking: the engine's backpropagated gradients against central
finite differences, both in float64."""
from __future__ import annotations

import numpy as np

from ._data import check_inputs, check_nonempty, check_sample_weight, check_targets

__all__ = ["gradcheck", "GradcheckResult"]


class GradcheckResult:
    """Outcome of :func:`gradcheck`.

    Attributes
    ----------
    max_rel_error : float
        The largest relative error over every parameter.
    errors : dict
        ``"W1"``, ``"b1"``, … → that parameter's largest relative error
        ``|a − n| / max(|a|, |n|, 1e-8)`` (a: backpropagation, n: finite
        differences).
    analytic, numeric : dict
        The two gradients, by the same names.
    """

    def __init__(self, errors, analytic, numeric, eps):
        self.errors = errors
        self.analytic = analytic
        self.numeric = numeric
        self.eps = eps
        self.max_rel_error = max(errors.values()) if errors else 0.0

    def passed(self, tol=1e-6) -> bool:
        return self.max_rel_error <= tol

    def __repr__(self) -> str:
        per = ", ".join(f"{k}={v:.2e}" for k, v in self.errors.items())
        return f"GradcheckResult(max_rel_error={self.max_rel_error:.3e}; {per})"


def gradcheck(net, X, y, eps=None, sample_weight=None) -> GradcheckResult:
    """Compare ``net.backward`` with central finite differences.

    Both run on a float64 copy of `net` (the network itself is untouched),
    so the check measures the backpropagation, not float32 rounding.  Each
    parameter θ is perturbed in turn:
    ``n = (L(θ + ε) − L(θ − ε)) / 2ε``.  Keep `X` small: the cost is two
    forward passes per parameter.  Near a ReLU kink finite differences
    are not the derivative; prefer smooth activations for tight checks.

    Parameters
    ----------
    net : Network
    X, y : array-like
        A batch and its targets, as for ``net.backward``.
    eps : float, optional
        The step; default ``1e-6``.
    sample_weight : array-like, optional

    Returns
    -------
    GradcheckResult
    """
    from .network import Network

    if not isinstance(net, Network):
        raise TypeError(f"gradcheck needs a cbp.Network, got {type(net).__name__}")
    eps = 1e-6 if eps is None else float(eps)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    config = dict(net.get_config(), dtype="float64")
    net64 = Network.from_config(config)
    net64._params[...] = net._params
    X = check_inputs(X, net64.in_features, net64.dtype)
    check_nonempty(X.shape[0])
    y = check_targets(y, net64.loss, X.shape[0], net64.out_features, net64.dtype)
    w = check_sample_weight(sample_weight, X.shape[0], net64.dtype)
    net64._reserve(X.shape[0])

    net64._engine.loss(X, y, w, True)
    names = [f"{kind}{i + 1}" for i in range(len(net64.layers)) for kind in ("W", "b")]
    analytic = {name: g.copy() for name, g in zip(names, net64.gradients())}
    numeric, errors = {}, {}
    for name, p in zip(names, net64.parameters()):
        flat = p.reshape(-1)  # a view: perturbing it perturbs the network
        num = np.empty_like(flat)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus, _ = net64._engine.loss(X, y, w, False)
            flat[i] = old - eps
            minus, _ = net64._engine.loss(X, y, w, False)
            flat[i] = old
            num[i] = (plus - minus) / (2 * eps)
        numeric[name] = num.reshape(p.shape)
        a = analytic[name]
        denom = np.maximum(np.maximum(np.abs(a), np.abs(numeric[name])), 1e-8)
        errors[name] = float(np.max(np.abs(a - numeric[name]) / denom)) if a.size else 0.0
    return GradcheckResult(errors, analytic, numeric, eps)
