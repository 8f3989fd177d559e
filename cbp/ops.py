"""Low-level kernels: each function is the code form of one formula of the
backpropagation derivation (docs/derivation.md).

Every function accepts float32 or float64 NumPy arrays in any memory
layout (all arrays of one call share one dtype, else ``TypeError``),
validates shapes before any C code runs (``ValueError`` naming the expected
and the actual shape), and returns new arrays unless ``out=`` is given.
The work runs in C with the GIL released; matrix products go to SciPy's
BLAS.  A weight matrix ``W`` is ``(out_features, in_features)``; a batch
has one sample per row.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _ops
from ._checks import output, finish, real_arrays, require_ndim, require_shape, shape_str

__all__ = [
    "ACTIVATIONS",
    "linear_forward",
    "outer",
    "matvec_t",
    "linear_backward",
    "backprop_delta",
    "activation_forward",
    "activation_derivative",
    "softmax_cross_entropy",
    "add_gate_backward",
    "mul_gate_backward",
    "relu_gate_backward",
]

#: Known activation names, in the order of the C enum ``cbp_activation``.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "softplus", "elu",
               "gelu")
_ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}


def activation_code(name) -> int:
    """The C enum code of an activation name; ``ValueError`` lists the known
    names for an unknown one."""
    if not isinstance(name, str):
        raise TypeError(f"activation must be a string, one of {', '.join(ACTIVATIONS)}; "
                        f"got {type(name).__name__}")
    try:
        return _ACTIVATION_CODES[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known activations: "
                         f"{', '.join(ACTIVATIONS)}") from None


def linear_forward(x, W, b, *, out=None) -> np.ndarray:
    """Affine map of a fully connected layer.

    Vector form ``z = W x + b`` (``x`` of shape ``(in,)``, BLAS ``gemv``);
    batch form ``Z = X Wᵀ + b`` (``X`` of shape ``(n, in)``, ``gemm``).

    Parameters
    ----------
    x : ndarray, shape (in,) or (n, in)
    W : ndarray, shape (out, in)
    b : ndarray, shape (out,)
    out : ndarray, optional
        C-contiguous array of the result's shape and dtype to write into.

    Returns
    -------
    ndarray, shape (out,) or (n, out)
    """
    fn = "linear_forward"
    x, W, b = real_arrays(fn, x=x, W=W, b=b)
    require_ndim(fn, "W", W, (2,), "(out_features, in_features)")
    require_ndim(fn, "x", x, (1, 2), "one sample (in,) or a batch (n, in)")
    n_out, n_in = W.shape
    require_shape(fn, "b", b, (n_out,), f"to match W {shape_str(W.shape)}")
    require_shape(fn, "x", x, x.shape[:-1] + (n_in,), f"to match W {shape_str(W.shape)}")
    target, out = output(fn, out, x.shape[:-1] + (n_out,), W.dtype, (x, W, b))
    if x.ndim == 1:
        _ops.linear_forward_vec(W, b, x, target)
    else:
        _ops.linear_forward(W, b, x, target)
    return finish(target, out)


def outer(delta, x, *, out=None) -> np.ndarray:
    """Weight gradient of a fully connected layer.

    Vector form ``dW = δ xᵀ`` (the outer product, BLAS ``ger``); batch form
    ``dW = Δᵀ X``, the outer products summed over the rows (``gemm``).

    Parameters
    ----------
    delta : ndarray, shape (out,) or (n, out)
    x : ndarray, shape (in,) or (n, in)
    out : ndarray, optional

    Returns
    -------
    ndarray, shape (out, in)
    """
    fn = "outer"
    delta, x = real_arrays(fn, delta=delta, x=x)
    require_ndim(fn, "delta", delta, (1, 2))
    require_ndim(fn, "x", x, (delta.ndim,), "the same rank as delta")
    if delta.ndim == 2:
        require_shape(fn, "x", x, (delta.shape[0], x.shape[1]),
                      f"(one row per row of delta {shape_str(delta.shape)})")
    target, out = output(fn, out, (delta.shape[-1], x.shape[-1]), x.dtype, (delta, x))
    if delta.ndim == 1:
        _ops.outer_vec(delta, x, target)
    else:
        _ops.outer(delta, x, target)
    return finish(target, out)


def matvec_t(W, delta, *, out=None) -> np.ndarray:
    """Input gradient of a fully connected layer.

    Vector form ``dx = Wᵀ δ`` (BLAS ``gemv`` with the transpose); batch form
    ``dX = Δ W`` (``gemm``).

    Parameters
    ----------
    W : ndarray, shape (out, in)
    delta : ndarray, shape (out,) or (n, out)
    out : ndarray, optional

    Returns
    -------
    ndarray, shape (in,) or (n, in)
    """
    fn = "matvec_t"
    W, delta = real_arrays(fn, W=W, delta=delta)
    require_ndim(fn, "W", W, (2,), "(out_features, in_features)")
    require_ndim(fn, "delta", delta, (1, 2))
    require_shape(fn, "delta", delta, delta.shape[:-1] + (W.shape[0],),
                  f"to match W {shape_str(W.shape)}")
    target, out = output(fn, out, delta.shape[:-1] + (W.shape[1],), W.dtype, (W, delta))
    if delta.ndim == 1:
        _ops.matvec_t_vec(W, delta, target)
    else:
        _ops.matvec_t(W, delta, target)
    return finish(target, out)


def linear_backward(delta, x, W) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All three gradients of a fully connected layer ``z = W x + b``.

    Vector form ``(dW, db, dx) = (δ xᵀ, δ, Wᵀ δ)``; batch form
    ``(Δᵀ X, Σ_rows Δ, Δ W)``.

    Parameters
    ----------
    delta : ndarray, shape (out,) or (n, out)
        ∂L/∂z, the upstream gradient.
    x : ndarray, shape (in,) or (n, in)
        The layer's input.
    W : ndarray, shape (out, in)

    Returns
    -------
    dW : ndarray, shape (out, in)
    db : ndarray, shape (out,)
    dx : ndarray, shape (in,) or (n, in)
    """
    fn = "linear_backward"
    delta, x, W = real_arrays(fn, delta=delta, x=x, W=W)
    require_ndim(fn, "W", W, (2,), "(out_features, in_features)")
    require_ndim(fn, "delta", delta, (1, 2))
    require_ndim(fn, "x", x, (delta.ndim,), "the same rank as delta")
    n_out, n_in = W.shape
    batch = delta.shape[:-1]
    require_shape(fn, "delta", delta, batch + (n_out,), f"to match W {shape_str(W.shape)}")
    require_shape(fn, "x", x, batch + (n_in,), f"to match W {shape_str(W.shape)}")
    dW = np.empty((n_out, n_in), dtype=W.dtype)
    dx = np.empty(batch + (n_in,), dtype=W.dtype)
    if delta.ndim == 1:
        _ops.outer_vec(delta, x, dW)
        db = delta.copy()
        _ops.matvec_t_vec(W, delta, dx)
    else:
        _ops.outer(delta, x, dW)
        db = np.empty(n_out, dtype=W.dtype)
        _ops.bias_grad(delta, db)
        _ops.matvec_t(W, delta, dx)
    return dW, db, dx


def backprop_delta(W_next, delta_next, z, activation, *, out=None) -> np.ndarray:
    """One step of the error recurrence, fused:
    ``δ = (W_nextᵀ δ_next) ⊙ σ'(z)``.

    BLAS writes ``W_nextᵀ δ_next`` into the result and one pass multiplies
    it by ``σ'(z)`` while it is in cache; no temporary array.

    Parameters
    ----------
    W_next : ndarray, shape (n_next, hidden)
        Weights of the next layer.
    delta_next : ndarray, shape (n_next,) or (n, n_next)
        The next layer's delta.
    z : ndarray, shape (hidden,) or (n, hidden)
        This layer's pre-activation.
    activation : str
        One of :data:`ACTIVATIONS`.
    out : ndarray, optional

    Returns
    -------
    ndarray, the shape of ``z``
    """
    fn = "backprop_delta"
    act = activation_code(activation)
    W_next, delta_next, z = real_arrays(fn, W_next=W_next, delta_next=delta_next, z=z)
    require_ndim(fn, "W_next", W_next, (2,), "(n_next, hidden)")
    require_ndim(fn, "delta_next", delta_next, (1, 2))
    require_ndim(fn, "z", z, (delta_next.ndim,), "the same rank as delta_next")
    n_next, hidden = W_next.shape
    batch = delta_next.shape[:-1]
    require_shape(fn, "delta_next", delta_next, batch + (n_next,),
                  f"to match W_next {shape_str(W_next.shape)}")
    require_shape(fn, "z", z, batch + (hidden,),
                  f"to match W_next {shape_str(W_next.shape)} and delta_next "
                  f"{shape_str(delta_next.shape)}")
    target, out = output(fn, out, z.shape, z.dtype, (W_next, delta_next, z))
    if z.ndim == 1:
        _ops.backprop_delta_vec(act, W_next, delta_next, z, target)
    else:
        _ops.backprop_delta(act, W_next, delta_next, z, target)
    return finish(target, out)


def _elementwise(fn, kernel, act, z, out):
    (z,) = real_arrays(fn, z=z)
    target, out = output(fn, out, z.shape, z.dtype, (z,), elementwise=True)
    kernel(act, z.reshape(-1), target.reshape(-1))
    return finish(target, out)


def activation_forward(name, z, *, out=None) -> np.ndarray:
    """``σ(z)`` element-wise, for any shape.

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.
    z : ndarray
    out : ndarray, optional (may be ``z`` itself)

    Returns
    -------
    ndarray, the shape of ``z``
    """
    return _elementwise("activation_forward", _ops.activation_forward,
                        activation_code(name), z, out)


def activation_derivative(name, z, *, out=None) -> np.ndarray:
    """``σ'(z)`` element-wise, for any shape.  ``relu``'s derivative is 0
    at ``z = 0``; ``leaky_relu``'s is 0.01 there.

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.
    z : ndarray
    out : ndarray, optional (may be ``z`` itself)

    Returns
    -------
    ndarray, the shape of ``z``
    """
    return _elementwise("activation_derivative", _ops.activation_derivative,
                        activation_code(name), z, out)


def _labels(fn, y, n, n_classes, vector):
    """Integer class labels as a contiguous int64 array of length n."""
    if vector:
        if isinstance(y, (bool, np.bool_)) or not isinstance(y, (numbers.Integral, np.ndarray)):
            raise TypeError(f"{fn}: for a 1-D z, y must be one integer class label, "
                            f"got {type(y).__name__}")
        y = np.asarray(y)
        if y.ndim != 0:
            raise ValueError(f"{fn}: for a 1-D z, y must be a single label, "
                             f"got an array of shape {shape_str(y.shape)}")
        y = y.reshape(1)
    else:
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{fn}: y must be a numpy.ndarray of integer labels, "
                            f"got {type(y).__name__}")
        require_shape(fn, "y", y, (n,), "(one label per row of z)")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{fn}: y must hold integer class labels, got dtype {y.dtype}")
    # A copy, checked and then read by C: C uses each label as an index,
    # and the caller's array could change after the check (another thread).
    y = np.array(y, order="C", copy=True)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = int(y[(y < 0) | (y >= n_classes)][0])
        raise ValueError(f"{fn}: labels must lie in [0, {n_classes}); got {bad}")
    # Aligned as well as contiguous: C reads the labels as int64_t.
    return np.require(y, dtype=np.int64, requirements=["C", "A"])


def softmax_cross_entropy(z, y) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy with its gradient, in one pass (log-sum-exp).

    Vector form: ``loss = −log softmax(z)[y]``, ``dz = softmax(z) − onehot(y)``.
    Batch form: the mean loss over the rows, ``dz = (softmax(Z) − onehot(y)) / n``.

    Parameters
    ----------
    z : ndarray, shape (C,) or (n, C)
        Logits.
    y : int or ndarray of int, shape (n,)
        Class labels in ``[0, C)``.

    Returns
    -------
    loss : float
    dz : ndarray, the shape of ``z``

    Raises
    ------
    ValueError
        On zero rows or zero classes, or a label outside ``[0, C)``.
    """
    fn = "softmax_cross_entropy"
    (z,) = real_arrays(fn, z=z)
    require_ndim(fn, "z", z, (1, 2), "logits (C,) or (n, C)")
    vector = z.ndim == 1
    Z = z.reshape(1, -1) if vector else z
    n, n_classes = Z.shape
    if n == 0:
        raise ValueError(f"{fn}: the loss of an empty batch is undefined; z has shape "
                         f"{shape_str(z.shape)}")
    if n_classes == 0:
        raise ValueError(f"{fn}: z must have at least one class, got shape "
                         f"{shape_str(z.shape)}")
    labels = _labels(fn, y, n, n_classes, vector)
    dZ = np.empty_like(Z)
    loss = _ops.softmax_cross_entropy(Z, labels, dZ)
    return float(loss), dZ.reshape(z.shape)


def _same_shape(fn, first_name, arrays):
    first = arrays[first_name]
    for name, a in arrays.items():
        require_shape(fn, name, a, first.shape, f"(the shape of {first_name})")


def add_gate_backward(dz) -> tuple[np.ndarray, np.ndarray]:
    """Backward of the add gate ``z = x + y``: the distributor,
    ``(dx, dy) = (dz, dz)``.

    Parameters
    ----------
    dz : ndarray
        The upstream gradient ∂L/∂z, any shape.

    Returns
    -------
    dx, dy : ndarray
        Two new arrays equal to ``dz``.
    """
    fn = "add_gate_backward"
    (dz,) = real_arrays(fn, dz=dz)
    dx, dy = np.empty_like(dz), np.empty_like(dz)
    _ops.add_gate_backward(dz.reshape(-1), dx.reshape(-1), dy.reshape(-1))
    return dx, dy


def mul_gate_backward(dz, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Backward of the mul gate ``z = x · y``: the switcher,
    ``(dx, dy) = (dz · y, dz · x)`` element-wise.

    Parameters
    ----------
    dz : ndarray
        The upstream gradient ∂L/∂z.
    x, y : ndarray
        The gate's inputs, the shape of ``dz``.

    Returns
    -------
    dx, dy : ndarray
        ``dz · y`` and ``dz · x``.
    """
    fn = "mul_gate_backward"
    dz, x, y = real_arrays(fn, dz=dz, x=x, y=y)
    _same_shape(fn, "dz", {"dz": dz, "x": x, "y": y})
    dx, dy = np.empty_like(dz), np.empty_like(dz)
    _ops.mul_gate_backward(dz.reshape(-1), x.reshape(-1), y.reshape(-1),
                           dx.reshape(-1), dy.reshape(-1))
    return dx, dy


def relu_gate_backward(dz, x, *, out=None) -> np.ndarray:
    """Backward of the ReLU gate ``z = max(x, 0)``: the filter,
    ``dx = dz ⊙ [x > 0]`` (0 at ``x = 0``).

    Parameters
    ----------
    dz : ndarray
        The upstream gradient ∂L/∂z.
    x : ndarray
        The gate's input, the shape of ``dz``.
    out : ndarray, optional

    Returns
    -------
    ndarray, the shape of ``dz``
    """
    fn = "relu_gate_backward"
    dz, x = real_arrays(fn, dz=dz, x=x)
    _same_shape(fn, "dz", {"dz": dz, "x": x})
    target, out = output(fn, out, dz.shape, dz.dtype, (dz, x), elementwise=True)
    _ops.relu_gate_backward(dz.reshape(-1), x.reshape(-1), target.reshape(-1))
    return finish(target, out)
