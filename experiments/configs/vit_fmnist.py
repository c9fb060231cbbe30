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

from zkapex_jax.studies.image import PipelineConfig
from zkapex_jax.studies.vit_fmnist import FC1, HEAD, StudyConfig

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
