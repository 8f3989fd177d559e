"""cbp — backpropagation for fully connected networks, as a C extension.

Build, train, predict, save and check networks with :class:`Network`; the
kernels of the derivation are in :mod:`cbp.ops`.

>>> import cbp
>>> X, y = cbp.datasets.load_digits()
>>> net = cbp.Network.mlp([64, 32, 10], seed=0)
>>> history = net.fit(X, y, epochs=2, progress=False)
>>> len(history.history["loss"])
2
"""
from ._version import __version__
from . import datasets, ops
from .callbacks import EarlyStopping, History
from .errors import CBPError, DivergenceError, ModelFormatError
from .gradcheck import GradcheckResult, gradcheck
from .io import load, save
from .layers import Dense
from .network import Network
from .optim import SGD, Adam, AdamW, Optimizer

__all__ = [
    "__version__", "ops", "datasets",
    "Network", "Dense",
    "SGD", "Adam", "AdamW", "Optimizer",
    "EarlyStopping", "History",
    "gradcheck", "GradcheckResult",
    "save", "load",
    "CBPError", "ModelFormatError", "DivergenceError",
]
