"""The plain NumPy training step: the derivation, one line a formula.

An MLP with ReLU hidden layers and an identity last layer, softmax
cross-entropy averaged over the batch, plain SGD updated in place.  It is
the same step that ``cbp bench`` times, written once in ``cbp/_bench.py``
(``numpy_train_step``; it uses only NumPy, none of cbp's code).
Parameters follow cbp's (and PyTorch's) layout: ``W`` is (out, in), ``b``
is (out,).
"""
from __future__ import annotations

from cbp._bench import numpy_train_step as train_step

__all__ = ["train_step"]
