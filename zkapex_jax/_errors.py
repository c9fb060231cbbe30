"""Exceptions raised by zkapex-jax. All derive from ``ValueError`` so callers that only
know the standard library still catch bad input."""


class ZkapexError(ValueError):
    """Base class of every error zkapex-jax raises for bad input."""


class ShapeError(ZkapexError):
    """An array has the wrong shape, rank or dtype."""


class UnknownParameterError(ZkapexError, KeyError):
    """A parameter path or pattern matches nothing in the model."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NonFiniteError(ZkapexError):
    """An input holds NaN or infinite values."""


class SingularBlockError(ZkapexError):
    """A Fisher block, or its masked sub-system, is not (numerically) positive definite."""


class MaskMismatchError(ZkapexError):
    """A mask does not match the model (paths, shapes or block layout)."""


class ArtifactError(ZkapexError):
    """A file on disk is missing, malformed, of the wrong format/version or fails its hash."""


class DataNotFoundError(ZkapexError, FileNotFoundError):
    """A data set is not installed; the message says how to install it."""
