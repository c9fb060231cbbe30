"""Low-rank adapters (LoRA) for personalization: θ + (α/r)·A B on selected kernels.

``init_lora`` gives ``{path: {"a": (in, r), "b": (r, out)}}`` with ``a ~ N(0, 1/in)`` and
``b = 0`` (the merged model starts equal to the base); ``merge_lora`` returns the merged
params; ``lora_loss`` turns a one-example loss of the full params into one of the adapters.
Keys of the adapter dict are parameter paths with ``|`` for ``/`` (so they stay one level deep
as optax pytrees).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from .._errors import ShapeError
from ..core.params import flatten_params, select_paths, set_paths

__all__ = ["LoRAConfig", "init_lora", "merge_lora", "lora_loss"]


class LoRAConfig:
    """``rank`` r, ``alpha`` (scale α/r) and the kernel ``targets`` (patterns)."""

    __slots__ = ("rank", "alpha", "targets")

    def __init__(self, rank: int, alpha: float, targets: str | Sequence[str]):
        if int(rank) < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.targets = (targets,) if isinstance(targets, str) else tuple(targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def __repr__(self) -> str:
        return f"LoRAConfig(rank={self.rank}, alpha={self.alpha}, targets={self.targets})"


def init_lora(params, targets: str | Sequence[str], rank: int, key) -> dict:
    """Adapters for every 2-D kernel matching ``targets``: ``a (in, rank) ~ N(0, 1/in)``,
    ``b (rank, out) = 0``."""
    flat = flatten_params(params)
    paths = select_paths(params, targets)
    keys = jax.random.split(key, len(paths))
    lora = {}
    for k, p in zip(keys, paths):
        if flat[p].ndim != 2:
            raise ShapeError(f"LoRA target {p!r} has shape {tuple(flat[p].shape)}, expected a 2-D kernel")
        d_in, d_out = flat[p].shape
        lora[p.replace("/", "|")] = {
            "a": jax.random.normal(k, (d_in, rank), jnp.float32) / math.sqrt(d_in),
            "b": jnp.zeros((rank, d_out), jnp.float32),
        }
    return lora


def merge_lora(params, lora: Mapping, scale: float):
    """θ + scale · A B on every adapted kernel (the merged personalized model)."""
    flat = flatten_params(params)
    upd = {}
    for k, ab in lora.items():
        p = k.replace("|", "/")
        upd[p] = flat[p] + scale * (ab["a"] @ ab["b"])
    return set_paths(params, upd)


def lora_loss(loss_fn: Callable, base, scale: float) -> Callable:
    """``loss(lora, example) = loss_fn(merge_lora(base, lora, scale), example)``."""

    def loss(lora, example):
        return loss_fn(merge_lora(base, lora, scale), example)

    return loss
