"""The provider's stages: train (or ship) the global model, score its weights for a forget set,
publish the mask. Pure functions over a :class:`~zkapex_jax.models.Family`; nothing prints.

::

    theta_g, hist = train_global(fam, fam.init(seed), data, Recipe(epochs=8, lr=1e-3, batch=128), key=k)
    scores = score_weights(fam, theta_g, forget, retain, method="second_order_neg")
    mask = publish_mask(scores, 0.04, meta={"forget_classes": [5, 7, 9]})

The provider never sees θp: the mask comes from ITS global model on forget vs retain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax

from ..core.fisher import accumulate_fisher
from ..core.mask import Mask, compute_scores
from ..core.obs import forget_subspace
from ..models import train as train_mod

__all__ = ["Recipe", "train_global", "score_weights", "publish_mask", "request_scores", "publish_request", "publish_forget_subspace"]


@dataclass(frozen=True)
class Recipe:
    """An optax AdamW recipe: linear warm-up then cosine decay over ``epochs`` passes of
    ``batch`` examples; ``layer_decay`` (the paper's layer-wise lr decay) and ``grad_clip``
    optional."""

    epochs: int
    lr: float
    batch: int
    warmup: int = 3
    weight_decay: float = 0.05
    layer_decay: float | None = None
    grad_clip: float | None = None

    def __post_init__(self):
        if int(self.epochs) < 1 or int(self.batch) < 1:
            raise ValueError(f"epochs and batch must be >= 1, got {self.epochs}, {self.batch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def fit_recipe(loss_fn, params, data, recipe: Recipe, *, key):
    """Minimise the mean of the one-example ``loss_fn`` over ``data`` with ``recipe``.
    Returns ``(params, history)`` (``fit``'s history plus ``steps`` and ``final_loss``)."""
    n = train_mod._num_examples(data)
    total = recipe.epochs * train_mod.steps_per_epoch(n, recipe.batch)
    opt = train_mod.make_optimizer(params, lr=recipe.lr, total_steps=total,
                                   warmup_steps=recipe.warmup,
                                   weight_decay=recipe.weight_decay, layer_decay=recipe.layer_decay,
                                   grad_clip=recipe.grad_clip)
    # one compiled step per (loss, recipe, step count, parameter structure): a second training with
    # the same settings (the retrain baseline's personalization, another seed) does not recompile
    shapes = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree_util.tree_leaves(params))
    kind = ("fit_recipe", recipe, total, jax.tree_util.tree_structure(params), shapes)
    step = train_mod._cached_jit(kind, loss_fn, lambda f: train_mod.make_train_step(f, opt))
    params, hist = train_mod.fit(loss_fn, params, data, optimizer=opt, epochs=recipe.epochs,
                                 batch_size=recipe.batch, key=key, step=step)
    hist = dict(hist)
    hist["steps"] = total
    hist["final_loss"] = float(hist["loss"][-1]) if len(hist.get("loss", ())) else float("nan")
    return params, hist


def train_global(family, params, data, recipe: Recipe, *, key):
    """[provider] Train ``params`` (e.g. ``family.init(seed)``) on ``data`` (all of the
    provider's classes / languages). The retrain gold standard is the same call on the retain
    data. Returns ``(theta_global, history)``."""
    return fit_recipe(family.loss, params, data, recipe, key=key)


def score_weights(family, theta_global, forget, retain, *, patterns: str | Sequence[str] | None = None,
                  method: str = "second_order_neg", h: float = 0.4485, r: float = 2.0, damping: float = 1e-8,
                  chunk_size: int = 32) -> dict:
    """[provider] Per-weight saliency ``{path: kernel-shaped scores}`` of the global model's
    ``patterns`` (default ``family.mask_patterns``) on ``forget`` vs ``retain`` data
    (:func:`~zkapex_jax.core.mask.compute_scores`)."""
    wrt = list(family.mask_patterns if patterns is None else ([patterns] if isinstance(patterns, str) else patterns))
    return compute_scores(family.loss, theta_global, forget, retain, wrt=wrt, method=method, h=h, r=r,
                          damping=damping, chunk_size=chunk_size)


def publish_mask(scores: Mapping, fraction: float, *, scope: str = "global", method: str = "second_order_neg",
                 meta: Mapping | None = None) -> Mask:
    """[provider] The top ``fraction`` of ``scores`` as the public :class:`Mask`."""
    return Mask.from_scores(scores, fraction, scope=scope, method=method, meta=dict(meta or {}))


def request_scores(family, theta_global, forget, retain, spec, *, chunk_size: int = 32) -> dict:
    """[provider] :func:`score_weights` with the score settings of ``spec`` (a
    :class:`~zkapex_jax.protocol.config.MaskSpec`)."""
    return score_weights(family, theta_global, forget, retain, patterns=spec.patterns, method=spec.method, h=spec.h,
                         r=spec.r, damping=spec.damping, chunk_size=chunk_size)


def publish_request(scores: Mapping, spec, *, layout=None, meta: Mapping | None = None) -> Mask:
    """[provider] The deletion request of :class:`~zkapex_jax.protocol.config.MaskSpec` ``spec``
    from the global model's ``scores`` (:func:`request_scores` on forget / retain data the caller
    drew, ``spec.n_forget`` / ``spec.n_retain`` of each): the top ``spec.fraction``, and with
    ``spec.protect`` > 0 that many protected weights per masked block of the client's committed
    ``layout``. The mask records the score's settings and ``meta`` (e.g. the forget classes)."""
    info = {"h": spec.h, "r": spec.r, "damping": spec.damping, "n_forget": spec.n_forget, "n_retain": spec.n_retain,
            **dict(meta or {})}
    mask = publish_mask(scores, spec.fraction, scope=spec.scope, method=spec.method, meta=info)
    if spec.protect:
        if layout is None:
            raise ValueError("a request with protected weights needs the client's block layout")
        from ..core.mask import protect_top

        mask = protect_top(mask, scores, layout, spec.protect)
    return mask


def publish_forget_subspace(family, theta_global, forget, layout, rank: int, *, chunk_size: int = 32):
    """[provider] For the forget-aware variant: per block of ``layout``, the top-``rank``
    directions of the forget set's per-example gradients at the global model (the eigenvectors
    of its undamped block Fisher). Published with the mask; the client keeps its compensation
    orthogonal to them (:func:`zkapex_jax.core.obs.forget_aware_obs`). Returns ``(nb, B, rank)``."""
    f = accumulate_fisher(family.loss, theta_global, forget, layout, damping=0.0, chunk_size=chunk_size)
    return forget_subspace(f, rank)
