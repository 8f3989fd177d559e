"""Layers.  A layer describes its shape and activation; once a
:class:`~cbp.Network` is built from it, its parameters and gradients are
NumPy views into the network's flat buffers."""
from __future__ import annotations

import operator

import numpy as np

from .ops import ACTIVATIONS, activation_code

__all__ = ["Dense"]

# He normal for the ReLU family, Glorot uniform for the others.
HE_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "gelu"})


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer, got "
                        f"{type(value).__name__} {value!r}") from None
    if v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v}")
    if v > 2**31 - 1:
        raise ValueError(f"{name} must be at most 2**31 - 1 (the BLAS integer limit), got {v}")
    return v


class Dense:
    """A fully connected layer ``a = σ(W x + b)``.

    Parameters
    ----------
    in_features : int
        Size of each input sample.
    out_features : int
        Size of each output sample.
    activation : str, default "identity"
        One of ``cbp.ops.ACTIVATIONS``.

    Attributes
    ----------
    W : ndarray, shape (out_features, in_features)
        Writable view of the network's parameters (after the network is built).
    b : ndarray, shape (out_features,)
    dW, db : ndarray
        Gradients of the mean loss after ``Network.backward``.

    Examples
    --------
    >>> import cbp
    >>> layer = cbp.Dense(4, 3, activation="tanh")
    >>> net = cbp.Network([layer], loss="mse", seed=0)
    >>> layer.W.shape, layer.b.shape
    ((3, 4), (3,))
    >>> layer.b = 1.0                       # writes into the network
    >>> net.parameters()[1]
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, in_features, out_features, activation="identity"):
        self._in = _positive_int("in_features", in_features)
        self._out = _positive_int("out_features", out_features)
        activation_code(activation)  # validates the name
        self._activation = activation
        self._views = None  # (W, b, dW, db) once bound to a network

    # Fixed when the layer is made: a Network compiles its layers' shapes
    # and activations into its plan, and a changed one would be saved,
    # copied and summarised while the plan still computed the old one.
    @property
    def in_features(self) -> int:
        """Size of each input sample (fixed)."""
        return self._in

    @property
    def out_features(self) -> int:
        """Size of each output sample (fixed)."""
        return self._out

    @property
    def activation(self) -> str:
        """The activation's name (fixed: make a new layer, or a network
        with ``Network.mlp``/``from_config``, for another)."""
        return self._activation

    @property
    def num_parameters(self) -> int:
        """``out_features * (in_features + 1)``: the weights and the biases."""
        return self.out_features * (self.in_features + 1)

    def _bind(self, params: np.ndarray, grads: np.ndarray, offset: int) -> int:
        """Point W, b, dW, db at the flat buffers from `offset`; return the
        offset after this layer."""
        n_w = self.out_features * self.in_features
        shape = (self.out_features, self.in_features)
        end = offset + n_w + self.out_features
        self._views = (params[offset:offset + n_w].reshape(shape),
                       params[offset + n_w:end],
                       grads[offset:offset + n_w].reshape(shape),
                       grads[offset + n_w:end])
        return end

    def _view(self, k, name):
        if self._views is None:
            raise AttributeError(f"Dense.{name} exists once the layer is part of a Network")
        return self._views[k]

    @property
    def W(self) -> np.ndarray:
        """Weights, shape ``(out_features, in_features)``: a writable view
        into the network's parameters; assigning to it copies into them."""
        return self._view(0, "W")

    @W.setter
    def W(self, value):
        self.W[...] = value

    @property
    def b(self) -> np.ndarray:
        """Biases, shape ``(out_features,)``: a writable view, as ``W``."""
        return self._view(1, "b")

    @b.setter
    def b(self, value):
        self.b[...] = value

    @property
    def dW(self) -> np.ndarray:
        """Gradient of the loss with respect to ``W``, filled by
        ``Network.backward`` and by training steps with an optimizer that
        stores it: not plain SGD (no momentum, no weight decay), whose
        update is folded into the products, so ``dW`` keeps what was
        written before."""
        return self._view(2, "dW")

    @property
    def db(self) -> np.ndarray:
        """Gradient of the loss with respect to ``b``."""
        return self._view(3, "db")

    def _init_parameters(self, rng: np.random.Generator) -> None:
        """He normal (std √(2/fan_in)) for ReLU-family activations, Glorot
        uniform (±√(6/(fan_in + fan_out))) otherwise; biases zero."""
        W, b = self.W, self.b
        fan_in, fan_out = self.in_features, self.out_features
        if self.activation in HE_ACTIVATIONS:
            W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / fan_in)
        else:
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            W[...] = rng.uniform(-limit, limit, W.shape)
        b[...] = 0

    def get_config(self) -> dict:
        """The layer as JSON-compatible data (type, sizes, activation)."""
        return {"type": "Dense", "in_features": self.in_features,
                "out_features": self.out_features, "activation": self.activation}

    def __repr__(self) -> str:
        act = "" if self.activation == "identity" else f", activation={self.activation!r}"
        return f"Dense({self.in_features}, {self.out_features}{act})"


assert set(HE_ACTIVATIONS) <= set(ACTIVATIONS)
