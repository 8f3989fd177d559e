"""cbp — backpropagation for fully connected networks, as a C extension.

The kernels of the derivation live in :mod:`cbp.ops`.
"""
from ._version import __version__
from . import ops

__all__ = ["__version__", "ops"]
