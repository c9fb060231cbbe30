"""Model families and their training.

- :mod:`.hf` — transformers' Flax ViT / OPT built from named configs or local weights (never
  downloaded), one-example losses and batched predictions, the fc1 patterns;
- :mod:`.family` — :class:`Family`: what the provider / client stages need of a model
  (one-example loss, predict, accuracy, mask patterns), one object per family;
- :mod:`.lora` — low-rank adapters for personalization;
- :mod:`.train` — optax AdamW with warm-up and layer-wise lr decay, ``fit``, orbax checkpoints.
"""

from .family import Family, family, family_of_model
from .hf import (
    FC1_PATTERN_OPT,
    FC1_PATTERN_VIT,
    FC1_PATTERNS,
    FC2_PATTERN_OPT,
    FC_PATTERNS_OPT,
    MODEL_CONFIGS,
    build_model,
    fc1_pattern,
    load_pretrained,
    lm_token_accuracy,
    make_classifier_loss,
    make_classifier_predict,
    make_config,
    make_lm_loss,
    make_lm_predict,
    model_type,
    nchw,
    param_shapes,
)
from .lora import LoRAConfig, init_lora, lora_loss, merge_lora

__all__ = [
    "Family", "family", "family_of_model", "FC1_PATTERN_OPT", "FC1_PATTERN_VIT", "FC1_PATTERNS",
    "FC2_PATTERN_OPT", "FC_PATTERNS_OPT", "MODEL_CONFIGS", "build_model", "fc1_pattern", "load_pretrained",
    "lm_token_accuracy", "make_classifier_loss", "make_classifier_predict", "make_config", "make_lm_loss",
    "make_lm_predict", "model_type", "nchw", "param_shapes", "LoRAConfig", "init_lora", "lora_loss", "merge_lora",
]
