"""One nested configuration of the protocol's stages, in the protocol's words, whatever study or
command fills it in::

    StageConfig(global_recipe=Recipe(...), personal_recipe=Recipe(...),
                mask=MaskSpec(method="second_order_neg", fraction=0.04, n_forget=480, n_retain=480),
                curvature=CurvatureSpec(kind="layer_inputs", block_size=64, damping=1e-3, relative=True))

The image study (:meth:`zkapex_jax.studies.image.PipelineConfig.stages`), the code study
(:meth:`zkapex_jax.studies.opt_code.OptCodeConfig.stages`) and the CLI each map their own
settings onto it once; the stages that take a spec (:func:`~zkapex_jax.protocol.provider.publish_request`,
:func:`~zkapex_jax.protocol.client.curvature`, :meth:`StageConfig.layout`) read nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core.blocks import BlockLayout
from ..core.curvature import CURVATURES
from ..core.mask import METHODS
from .provider import Recipe

__all__ = ["MaskSpec", "CurvatureSpec", "StageConfig", "statement_layout"]


@dataclass(frozen=True)
class MaskSpec:
    """The provider's request: ``method`` scores (:data:`~zkapex_jax.core.mask.METHODS`, with
    parameters ``h``, ``r`` and the Fisher-diagonal ``damping``) of the kernels matching
    ``patterns`` (None: the family's mask patterns) on ``n_forget`` forget vs ``n_retain`` retain
    examples (None: all given), the top ``fraction`` over all kernels (``scope="global"``) or per
    kernel (``"per_param"``); ``protect`` > 0: the certified forget-aware request, that many
    protected weights per masked block."""

    patterns: tuple[str, ...] | None = None
    method: str = "second_order_neg"
    fraction: float = 0.04
    scope: str = "global"
    h: float = 0.4485
    r: float = 2.0
    damping: float = 1e-8
    n_forget: int | None = 480
    n_retain: int | None = 480
    protect: int = 0

    def __post_init__(self):
        if isinstance(self.patterns, str):
            object.__setattr__(self, "patterns", (self.patterns,))
        elif self.patterns is not None:
            object.__setattr__(self, "patterns", tuple(self.patterns))
        if self.method not in METHODS:
            raise ValueError(f"mask method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < float(self.fraction) <= 1.0:
            raise ValueError(f"mask fraction must be in (0, 1], got {self.fraction}")
        if self.scope not in ("global", "per_param"):
            raise ValueError(f"mask scope must be 'global' or 'per_param', got {self.scope!r}")
        if int(self.protect) < 0:
            raise ValueError(f"protect must be >= 0, got {self.protect}")

    def replace(self, **kw) -> "MaskSpec":
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class CurvatureSpec:
    """The client's curvature: ``kind`` (:data:`~zkapex_jax.core.curvature.CURVATURES`) over blocks
    of ``block_size`` consecutive weights in ``order``, ``damping`` added on the diagonal (with
    ``relative``: a multiple of each block's mean diagonal), from ``n_examples`` of the client's
    examples (None: all), ``chunk`` examples per vmapped gradient batch."""

    kind: str = "empirical"
    block_size: int = 64
    order: str = "out_in"
    damping: float = 1e-6
    relative: bool = False
    n_examples: int | None = None
    chunk: int = 32

    def __post_init__(self):
        if self.kind not in CURVATURES:
            raise ValueError(f"curvature must be one of {CURVATURES}, got {self.kind!r}")
        if int(self.block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if not float(self.damping) >= 0.0:
            raise ValueError(f"damping must be >= 0, got {self.damping}")

    def replace(self, **kw) -> "CurvatureSpec":
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class StageConfig:
    """Every setting the protocol's stages read: the provider's and the client's training
    recipes, the mask request and the client's curvature."""

    global_recipe: Recipe
    personal_recipe: Recipe
    mask: MaskSpec
    curvature: CurvatureSpec

    def replace(self, **kw) -> "StageConfig":
        """A copy with fields replaced; nested fields by ``section__field`` (e.g.
        ``mask__fraction=0.01``, ``curvature__kind="layer_inputs"``)."""
        nested: dict[str, dict] = {}
        flat = {}
        for k, v in kw.items():
            if "__" in k:
                sec, f = k.split("__", 1)
                nested.setdefault(sec, {})[f] = v
            else:
                flat[k] = v
        for sec, fields in nested.items():
            if sec not in ("global_recipe", "personal_recipe", "mask", "curvature"):
                raise ValueError(f"StageConfig has no section {sec!r}")
            flat[sec] = dataclasses.replace(flat.get(sec, getattr(self, sec)), **fields)
        return dataclasses.replace(self, **flat)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def layout(self, family, params) -> BlockLayout:
        """:func:`statement_layout` of this configuration."""
        return statement_layout(family, params, self.mask, self.curvature)


def statement_layout(family, params, mask: MaskSpec, curvature: CurvatureSpec) -> BlockLayout:
    """The statement's :class:`BlockLayout` over ``params``: the kernels of ``mask.patterns`` (the
    family's mask patterns when the spec names none) in blocks of ``curvature.block_size`` in
    ``curvature.order``."""
    patterns = mask.patterns if mask.patterns is not None else tuple(family.mask_patterns)
    return BlockLayout.from_params(params, patterns, curvature.block_size, curvature.order)
