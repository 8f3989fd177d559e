"""The plain NumPy training step: the derivation, one line a formula.

An MLP with ReLU hidden layers and an identity last layer, softmax
cross-entropy averaged over the batch, plain SGD updated in place.
Parameters follow cbp's (and PyTorch's) layout: ``W`` is (out, in), ``b``
is (out,).  Every array keeps the parameters' dtype (NumPy 2 treats the
Python float ``lr`` as weak, so float32 stays float32).
"""
from __future__ import annotations

import numpy as np


def train_step(params, X, y, lr):
    """One SGD step on the batch ``X`` (n, in), labels ``y`` (n,); updates
    ``params = [(W, b), …]`` in place and returns the loss before it."""
    n = X.shape[0]
    last = len(params) - 1

    # forward: z = a Wᵀ + b, a = relu(z) (identity on the last layer)
    activations = [X]
    a = X
    for l, (W, b) in enumerate(params):
        z = a @ W.T
        z += b
        a = np.maximum(z, 0, out=z) if l < last else z
        activations.append(a)

    # stable softmax cross-entropy: subtract the row max before exp
    logits = activations.pop()
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, y]))

    # ∂loss/∂logits = (softmax − onehot) / n
    delta = exp / total
    delta[rows, y] -= 1
    delta /= n

    # backward, updating each layer once its delta has passed through it
    for l in range(last, -1, -1):
        W, b = params[l]
        a_prev = activations[l]
        dW = delta.T @ a_prev          # (out, in)
        db = delta.sum(axis=0)         # (out,)
        if l > 0:
            delta = delta @ W           # uses W before its update
            delta *= a_prev > 0         # relu'(z) = [a > 0]
        W -= lr * dW
        b -= lr * db
    return loss
