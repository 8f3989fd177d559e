"""Optimizers with PyTorch's update rules (``torch.optim``, single-tensor
implementation), applied in C in one pass over the network's flat
parameter buffer.

An optimizer keeps one state (momentum buffer, or Adam's moments and step
count) per network it has updated, so the same optimizer object can drive
several networks, and keeps its state between calls on the same network.
Hyperparameters are attributes and may be changed between steps (as a
learning-rate schedule does).
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from . import _engine

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer"]


def _check_real(name, value, *, low=0.0, low_inclusive=True, high=None):
    if (isinstance(value, (bool, np.bool_, complex, np.complexfloating))
            or not isinstance(value, (int, float)) and not hasattr(value, "__float__")):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} must be finite, got an integer too large for a float "
                         "(>= 2**1024)") from None
    except (TypeError, ValueError):  # e.g. an array of several numbers
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} "
                        f"{value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if (v < low) if low_inclusive else (v <= low):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {v}")
    if high is not None and not v < high:
        raise ValueError(f"{name} must be < {high}, got {v}")
    return v


class Optimizer:
    """Base class: subclasses name their C kind and their hyperparameters.

    A copy or a pickle of an optimizer carries its hyperparameters, not its
    per-network state (momentum, moments, step count): it starts fresh,
    like a new optimizer with the same arguments."""

    kind = ""
    _hyper = ()

    def __init__(self):
        self._states = weakref.WeakKeyDictionary()
        self._last = None  # weak references to (a network, its state): see _state_for

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in self._hyper:
            object.__setattr__(self, "_last", None)  # validate and reload at the next step

    def __getstate__(self):
        # Copies and pickles carry the hyperparameters, not the per-network
        # state: that is keyed by networks, which a copy or a pickle of the
        # optimizer alone does not hold.
        state = self.__dict__.copy()
        del state["_states"], state["_last"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._states = weakref.WeakKeyDictionary()
        self._last = None

    def _validate(self):
        self.lr = _check_real("lr", self.lr, low_inclusive=False)
        self.weight_decay = _check_real("weight_decay", self.weight_decay)

    def _hyperparameters(self) -> dict:
        raise NotImplementedError

    def _state_for(self, network) -> "_engine.OptimizerState":
        """This optimizer's state for `network` (created at the first
        step), with the current hyperparameters loaded.  Hyperparameters
        are validated and loaded into C only when they changed: a step on
        the same network as the last, with no hyperparameter set since,
        pays one weak-reference call."""
        # (network, state) of the last step, both weakly held (neither may
        # outlive its network here), if no hyperparameter was set since.
        last = self._last
        if last is not None and last[0]() is network:
            state = last[1]()
            if state is not None:
                return state
        # Validate first, every time a hyperparameter was set: it also turns
        # each into a plain float (or bool), so that no value the fast path
        # trusts can change in place (an array assigned to lr, say).
        self._validate()
        key = tuple(getattr(self, k) for k in self._hyper)
        state = self._states.get(network)
        if state is not None and state.key == key:
            self._last = (weakref.ref(network), weakref.ref(state))
            return state
        if state is None:
            state = _engine.OptimizerState(self.kind, network.num_parameters, network.dtype)
            self._states[network] = state
        state.set_hyperparameters(**self._hyperparameters())
        state.key = tuple(getattr(self, k) for k in self._hyper)
        self._last = (weakref.ref(network), weakref.ref(state))
        return state

    def reset(self, network=None) -> None:
        """Forget the state (momentum, moments, step count) for `network`,
        or for every network.

        Parameters
        ----------
        network : Network, optional
            ``None`` forgets the state of every network.
        """
        if network is None:
            self._states.clear()
        else:
            self._states.pop(network, None)
        self._last = None

    def get_config(self) -> dict:
        """``{"name": …, <hyperparameter>: …}``."""
        return {"name": self.kind, **{k: getattr(self, k) for k in self._hyper}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and Nesterov
    momentum, as ``torch.optim.SGD``.  With ∇ the gradient of the loss and
    p a parameter, each step does::

        g ← ∇ + λ p
        b ← g (first step with momentum) or μ b + (1 − τ) g
        g ← g + μ b (Nesterov) or b
        p ← p − lr g

    (without momentum, ``p ← p − lr (∇ + λ p)``).

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    momentum : float, default 0.0
        μ; 0 is plain SGD.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    weight_decay : float, default 0.0
        λ, an L2 penalty added to the gradient.
    dampening : float, default 0.0
        τ.
    """

    kind = "sgd"
    _hyper = ("lr", "momentum", "dampening", "nesterov", "weight_decay")

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__()
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay, self.dampening = weight_decay, dampening
        self._validate()

    def _validate(self):
        super()._validate()
        self.momentum = _check_real("momentum", self.momentum)
        self.dampening = _check_real("dampening", self.dampening)
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be True or False, got {self.nesterov!r}")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0, "
                             f"got momentum={self.momentum}, dampening={self.dampening}")

    def _hyperparameters(self):
        return dict(lr=self.lr, momentum=self.momentum, dampening=self.dampening,
                    nesterov=self.nesterov, weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (weight decay is L2 added to the
    gradient).  At step t = 1, 2, …::

        g ← ∇ + λ p
        m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
        p ← p − lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)

    Parameters
    ----------
    lr : float, default 1e-3
        Learning rate, > 0.
    beta1, beta2 : float, default 0.9, 0.999
        Decay rates of the moment estimates, in ``[0, 1)`` (PyTorch's
        ``betas=(beta1, beta2)``).
    eps : float, default 1e-8
        ε, added to the bias-corrected ``√v``.
    weight_decay : float, default 0.0
        λ, an L2 penalty added to the gradient.
    """

    kind = "adam"
    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__()
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay = weight_decay
        self._validate()

    def _validate(self):
        super()._validate()
        self.beta1 = _check_real("beta1", self.beta1, high=1.0)
        self.beta2 = _check_real("beta2", self.beta2, high=1.0)
        self.eps = _check_real("eps", self.eps)

    def _hyperparameters(self):
        return dict(lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                    weight_decay=self.weight_decay)


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay.
    At step t = 1, 2, …::

        p ← p (1 − lr λ)
        m ← β1 m + (1 − β1) ∇,   v ← β2 v + (1 − β2) ∇²
        p ← p − lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)

    Parameters
    ----------
    lr, beta1, beta2, eps
        As :class:`Adam`.
    weight_decay : float, default 0.01
        λ, the decoupled decay rate.
    """

    kind = "adamw"

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(spec) -> Optimizer:
    """``None`` → ``Adam()``; a name (``"sgd"``, ``"adam"``, ``"adamw"``) →
    that optimizer with its defaults; an :class:`Optimizer` → itself."""
    if spec is None:
        return Adam()
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str):
        try:
            return _BY_NAME[spec.lower()]()
        except KeyError:
            raise ValueError(f"unknown optimizer {spec!r}; known: {', '.join(_BY_NAME)}") from None
    raise TypeError(f"optimizer must be None, a name ({', '.join(_BY_NAME)}) or a cbp "
                    f"Optimizer, got {type(spec).__name__}")
