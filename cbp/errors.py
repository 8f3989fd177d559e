"""The library's own exceptions."""


class CBPError(Exception):
    """Base of cbp's own errors."""


class ModelFormatError(CBPError, ValueError):
    """A model file is truncated, altered, or not a cbp model."""


class DivergenceError(CBPError, FloatingPointError):
    """Training produced a non-finite loss or gradient.  The network keeps
    the parameters of its last finite step."""
