"""Gradient checking: the engine's backpropagated gradients against central
finite differences, both in float64."""
from __future__ import annotations

import numbers

import numpy as np

from ._data import check_inputs, check_nonempty, check_sample_weight, check_targets

__all__ = ["gradcheck", "GradcheckResult"]


class GradcheckResult:
    """Outcome of :func:`gradcheck` (made by it, not by the user).

    Parameters
    ----------
    errors, analytic, numeric : dict
        As the attributes of the same names.
    eps : float
        The finite-difference step.

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
    eps : float
        The finite-difference step used.
    """

    def __init__(self, errors, analytic, numeric, eps):
        self.errors = errors
        self.analytic = analytic
        self.numeric = numeric
        self.eps = eps
        # np.max, not max(): a NaN error (from a loss that overflowed) must make
        # the result NaN, whatever its position.
        self.max_rel_error = float(np.max(list(errors.values()))) if errors else 0.0

    def passed(self, tol=1e-6) -> bool:
        """Whether ``max_rel_error <= tol``.

        Parameters
        ----------
        tol : float, default 1e-6

        Returns
        -------
        bool
        """
        return self.max_rel_error <= tol

    def __repr__(self) -> str:
        per = ", ".join(f"{k}={v:.2e}" for k, v in self.errors.items())
        return f"GradcheckResult(max_rel_error={self.max_rel_error:.3e}; {per})"


def gradcheck(net, X, y, eps=None, sample_weight=None) -> GradcheckResult:
    """Compare ``net.backward`` with central finite differences.

    Both run on a float64 copy of `net` (the network itself is untouched),
    so the check measures the backpropagation, not float32 rounding.  Each
    parameter θ is perturbed in turn and the derivative taken by the
    fourth-order central difference
    ``n = (L(θ − 2ε) − 8 L(θ − ε) + 8 L(θ + ε) − L(θ + 2ε)) / 12ε``,
    whose truncation error (O(ε⁴)) stays below the rounding error
    (≈ 1e-16 |L| / ε) at the default ε, so relative errors near 1e-10 are
    typical for smooth networks.  Keep `X` small: the cost is four forward
    passes per parameter.  Near a ReLU kink a finite difference is not the
    derivative; prefer smooth activations (or a smaller `eps`) there.

    Parameters
    ----------
    net : Network
    X, y : array-like
        A batch and its targets, as for ``net.backward``.
    eps : float, optional
        The step; default ``1e-4``.
    sample_weight : array-like, optional

    Returns
    -------
    GradcheckResult

    Examples
    --------
    >>> import numpy as np, cbp
    >>> rng = np.random.default_rng(0)
    >>> net = cbp.Network.mlp([5, 4, 3], activation="tanh", dtype="float64", seed=0)
    >>> result = cbp.gradcheck(net, rng.standard_normal((6, 5)), rng.integers(0, 3, 6))
    >>> result.max_rel_error < 1e-6, sorted(result.errors)
    (True, ['W1', 'W2', 'b1', 'b2'])
    """
    from .network import Network

    if not isinstance(net, Network):
        raise TypeError(f"gradcheck needs a cbp.Network, got {type(net).__name__}")
    if eps is None:
        eps = 1e-4
    elif isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a positive finite number, got {type(eps).__name__} "
                        f"{eps!r}")
    eps = float(eps)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    config = dict(net.get_config(), dtype="float64")
    net64 = Network.from_config(config)
    with net._lock:  # a consistent snapshot, should another thread be training it
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
            values = []
            for step in (-2, -1, 1, 2):
                flat[i] = old + step * eps
                values.append(net64._engine.loss(X, y, w, False)[0])
            flat[i] = old
            # Differences first: when a parameter cannot change the loss
            # (a weight on an input that is always 0, or out of a dead
            # unit), all four values are equal and the derivative is
            # exactly 0; L₋₂ − 8L₋₁ + 8L₁ − L₂ left to right kept a
            # rounding residue (3.7e-13, a relative error of 3.7e-5 against
            # an analytic 0 and the 1e-8 floor, and a failed check).
            num[i] = (8 * (values[2] - values[1]) - (values[3] - values[0])) / (12 * eps)
        numeric[name] = num.reshape(p.shape)
        a = analytic[name]
        denom = np.maximum(np.maximum(np.abs(a), np.abs(numeric[name])), 1e-8)
        errors[name] = float(np.max(np.abs(a - numeric[name]) / denom)) if a.size else 0.0
    return GradcheckResult(errors, analytic, numeric, eps)
