"""zkapex-jax: verifiable personalized unlearning (ZK-APEX, arXiv 2512.09953) in JAX."""

from ._errors import (
    ArtifactError,
    DataNotFoundError,
    MaskMismatchError,
    NonFiniteError,
    ShapeError,
    SingularBlockError,
    UnknownParameterError,
    ZkapexError,
)
from .params import flatten_params, get_paths, select_paths, set_paths, unflatten_params

__version__ = "0.1.0"
