"""Study 1 (image classification) configurations: ``default`` (the study) and ``tiny`` (CI).

Scaling from the paper (ViT-B/16 on ImageNet, see PAPER.md) to ``vit-tiny`` on Fashion-MNIST
(hidden 64, 4 layers, fc1 64 -> 256, 16,384 weights per layer, 65,536 masked-candidate weights):

==========================  ====================================  ==============================
setting                     paper                                 here (default)
==========================  ====================================  ==============================
masked matrices             fc1 of all 12 layers                  fc1 of all 4 layers
mask score / fraction       second-order neg, global top 4%      taylor_forget, top 4% (+ paper's)
mask Fisher                 block 64 -> diagonal, 480 grads       diagonal, 480 forget + 480 retain
client Fisher block         576 of a 768-wide input (0.75 row)    64 = one full 64-wide input row
client Fisher damping       1e-6 (≈1e-5 with their normaliser)    1e-6
client Fisher samples       480 (20 classes × 24)                 96 (4 classes × 24)
personalization             AdamW 30 ep, lr 8e-4, ld 0.8, wu 3    same but lr 1e-4 (see DEFAULT)
forget / personal classes   56 birds / 20 fish+marine+food        footwear (5,7,9) / tops (0,2,4,6)
domain shift                ImageNet-Sketch                       Sobel-edge "sketch" (1 - edges)
global model                pretrained ViT-B/16 (ImageNet)        trained here: 20,000 images, 10 ep
retrain baseline            ImageNet w/o birds, 20k SGD steps     same recipe as global, w/o 5,7,9
==========================  ====================================  ==============================

Why the edge "sketch": ImageNet-Sketch keeps object outlines and drops texture, colour and fill;
the Sobel-magnitude rendering (dark strokes on white) does the same to a Fashion-MNIST image,
is deterministic, and is a large shift for a model trained on filled bright-on-dark garments
(the global model is at chance on it before personalization), as Sketch is for ImageNet models.
Inversion keeps all texture (too easy a shift to learn); rotation changes geometry, not style.

The ``default`` size is set by the CPU budget (2 shared cores): one seed trains two global
models (all classes, and without the forget classes) plus two personalizations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from zkapex_jax.models import FC1_PATTERN_VIT as FC1
from zkapex_jax.pipeline import PipelineConfig

FC2 = "*/encoder/layer/*/output/dense/kernel"
ATT_Q = "*/encoder/layer/*/attention/attention/query/kernel"
ATT_K = "*/encoder/layer/*/attention/attention/key/kernel"
ATT_V = "*/encoder/layer/*/attention/attention/value/kernel"
ATT_O = "*/encoder/layer/*/attention/output/dense/kernel"
HEAD = "classifier/kernel"


@dataclass(frozen=True)
class StudyConfig:
    """The study: a pipeline config, seeds, baseline settings and sweep grids.

    Baselines (``zkapex_jax.baselines``) run on the personalized model θp:
    fine-tune-after-mask on the client's personalization training set; gradient ascent on the
    provider's forget images (``n_mask_forget`` of them); SSD with forget = those images and
    retain = the client's training set; SalUn with saliency from the forget images, random-label
    fine-tuning on them plus the client's training set.
    """

    name: str
    pipeline: PipelineConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    # recovery is reported only where masking cost at least this much personal accuracy
    # (about one standard error of the personal-accuracy estimate on ~2,400 test images)
    recovery_min_drop: float = 0.01
    # fine-tune after mask (unmasked weights, mask held at 0)
    ft_steps: int = 60
    ft_lr: float = 1e-4
    ft_batch: int = 16
    # gradient ascent (all weights, SGD, step budget)
    ga_steps: int = 30
    ga_lr: float = 5e-3
    ga_batch: int = 32
    # SSD
    ssd_alpha: float = 10.0
    ssd_lambda: float = 1.0
    # SalUn
    salun_fraction: float = 0.5
    salun_steps: int = 40
    salun_lr: float = 1e-4
    salun_batch: int = 16
    # also report mask-only / ZK-APEX with these provider scores (rows "mask_only__<m>", "zkapex__<m>")
    extra_mask_methods: tuple[str, ...] = ()
    # sweeps (each over every seed in sweep_seeds; models are reused from the main run)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)
    sweep_fractions: tuple[float, ...] = (0.01, 0.04, 0.1, 0.2, 0.35, 0.5)
    sweep_block_sizes: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    sweep_dampings: tuple[float, ...] = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    sweep_n_fisher: tuple[int, ...] = (8, 16, 32, 64, 96)
    # ablation beyond the paper: which matrices the provider may mask (same 4% fraction)
    sweep_patterns: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("fc1", (FC1,)),
        ("fc1+fc2", (FC1, FC2)),
        ("all_encoder_dense", (FC1, FC2, ATT_Q, ATT_K, ATT_V, ATT_O)),
        ("fc1+head", (FC1, HEAD)),
    )

    def replace(self, **kw) -> "StudyConfig":
        return dataclasses.replace(self, **kw)


DEFAULT = StudyConfig(
    name="default",
    # Changes after the seed-0 diagnosis (docs/RESULTS.md, experiments/vit_fmnist_diag.py):
    # - pers_lr 1e-4 (paper: 8e-4): with 8e-4 our 96-image personalization wipes out the global
    #   classes (seed 0, 8k global model: forget acc 0.77 -> 0.57, other 0.85 -> 0.03); 1e-4 keeps
    #   them, the paper's regime (its θp still knows birds, 0.92). Measured afterwards: on the 20k
    #   model 8e-4 keeps forget at 0.80 with higher personal accuracy (RESULTS.md, "Caveat");
    # - a stronger global model, 20,000 images x 10 epochs (was 8,000 x 8);
    # - mask score "taylor_forget" (the second-order Taylor increase of the forget loss): the
    #   paper's second-order-neg score as stated does not make the mask forget on this model
    #   (reported alongside as the "__second_order_neg" rows).
    pipeline=PipelineConfig(max_global_train=20000, max_test=3000, global_epochs=10, global_lr=2e-3, pers_lr=1e-4,
                            mask_method="taylor_forget"),
    extra_mask_methods=("second_order_neg",),
    sweep_fractions=(0.01, 0.04, 0.1, 0.2, 0.35, 0.5, 0.7),
)

TINY = StudyConfig(
    name="tiny",
    pipeline=PipelineConfig.tiny(),
    seeds=(0, 1),
    ft_steps=4, ga_steps=3, salun_steps=3,
    sweep_seeds=(0,),
    sweep_fractions=(0.02, 0.08),
    sweep_block_sizes=(8, 16),
    sweep_dampings=(1e-6, 1e-3),
    sweep_n_fisher=(16, 48),
    sweep_patterns=(("fc1", (FC1,)), ("fc1+head", (FC1, HEAD))),
)

CONFIGS = {"default": DEFAULT, "tiny": TINY}


def get(name: str) -> StudyConfig:
    """The named study config (``default`` or ``tiny``)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[name]
