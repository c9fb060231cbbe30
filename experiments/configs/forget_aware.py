"""Configs of the forget-aware comparison (``experiments/forget_aware.py``): the image study's
default pipeline (20k-image global ViT, taylor_forget mask, pers lr 1e-4), the pretrained
EfficientNet-Lite0 study's pipeline (``effnet``: small mask fractions, where the one-seed sweep of
``experiments/effnet_fmnist.py`` showed ZK-APEX recovering and the mask forgetting) and a tiny CI
variant."""

from experiments.configs import effnet_fmnist
from zkapex_jax.studies.forget_aware import ForgetAwareConfig
from zkapex_jax.studies.image import PipelineConfig

DEFAULT = ForgetAwareConfig(
    name="default",
    pipeline=PipelineConfig(max_global_train=20000, max_test=3000, global_epochs=10, global_lr=2e-3, pers_lr=1e-4,
                            mask_method="taylor_forget"),
)

TINY = ForgetAwareConfig(name="tiny", pipeline=PipelineConfig.tiny(), seeds=(0, 1), fractions=(0.04, 0.2), ranks=(1, 4))

EFFNET = ForgetAwareConfig(name="effnet", pipeline=effnet_fmnist.DEFAULT.pipeline, fractions=(0.005, 0.01, 0.02, 0.04),
                           ranks=(1, 4, 16))

EFFNET_TINY = ForgetAwareConfig(name="effnet_tiny", pipeline=effnet_fmnist.TINY.pipeline, seeds=(0,), fractions=(0.04, 0.2),
                                ranks=(1,))

CONFIGS = {"default": DEFAULT, "effnet": EFFNET, "tiny": TINY, "effnet_tiny": EFFNET_TINY}


def get(name: str) -> ForgetAwareConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[name]
