"""zkapex-jax: verifiable personalized unlearning (ZK-APEX, arXiv 2512.09953) in JAX.

The public API is re-exported here; implementations live in the submodules. Everything is a pure
function over arrays/pytrees, and the caller decides where to jit (``group_obs`` is one jit over
all blocks). Nothing here imports ``transformers`` until a model is built.
"""

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
from .core.blocks import BlockLayout
from .data import (
    Split,
    Splits,
    domain_shift,
    load_fashion_mnist,
    load_image_dataset,
    make_splits,
)
from .core.fisher import (
    accumulate_fisher,
    blockwise_fisher,
    data_mesh,
    fisher_diagonal,
    grad_moments,
    per_example_grads,
)
from .core.mask import (
    Mask,
    compute_scores,
    score_salun,
    score_second_order_neg,
    score_ssd,
    score_taylor_forget,
    top_k_count,
    top_k_mask,
)
from .models import (
    FC1_PATTERN_OPT,
    FC1_PATTERN_VIT,
    Family,
    LoRAConfig,
    FC2_PATTERN_OPT,
    MODEL_CONFIGS,
    build_model,
    family,
    family_of_model,
    load_pretrained,
    lm_token_accuracy,
    make_classifier_loss,
    make_classifier_predict,
    make_lm_loss,
    make_lm_predict,
    param_shapes,
)
from .core.obs import (
    FisherFactor,
    GroupOBSResult,
    apply_delta,
    block_batch_for,
    constraint_residual,
    factorize,
    fisher_group_obs,
    forget_aware_obs,
    forget_subspace,
    group_obs,
    kkt_residual,
)
from .core.params import flatten_params, get_paths, select_paths, set_paths, unflatten_params
from .models.train import (
    accuracy,
    evaluate,
    fit,
    load_checkpoint,
    make_optimizer,
    make_train_step,
    params_sha256,
    save_checkpoint,
)

__version__ = "0.1.0"

# Heavier parts load on first use: ``zkapex_jax.protocol`` (ezkl) and ``zkapex_jax.studies``.
_LAZY_SUBMODULES = ("protocol", "studies")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
