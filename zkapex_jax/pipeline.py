"""The end-to-end ViT pipeline of ZK-APEX (arXiv 2512.09953) as plain functions.

Stages (who runs them in the protocol in brackets)::

    data = load_data(cfg, seed)                                   # Fashion-MNIST splits
    theta_g = train_global(cfg, data, key=k1)                     # [provider] all classes
    theta_p = personalize(cfg, theta_g, data, key=k2)             # [client] private shifted data
    mask = provider_mask(cfg, theta_g, data)                      # [provider] global model only
    C = client_fisher(cfg, theta_p, data, layout)                 # [client] on its train set
    theta_u, info = unlearn(theta_p, C, mask, layout)             # [client] Group-OBS
    metrics = evaluate(cfg, theta_u, data)                        # accuracies + MIA

The provider scores the mask with ITS global model on forget vs. retain data (it never sees
θp); the client's Fisher is the block-wise empirical Fisher of θp on the client's
personalization training images (``accumulate_fisher``); Group-OBS removes the masked weights
and compensates the rest within each block (``group_obs`` + ``apply_delta`` through a
:class:`~zkapex_jax.blocks.BlockLayout`).

Everything is a pure function of its arguments (PRNG keys explicit); nothing prints. The
caller (``experiments/``, the CLI demo) decides about files and progress output.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import data as data_mod
from . import metrics as M
from . import models as models_mod
from . import train as train_mod
from ._errors import ZkapexError
from .blocks import BlockLayout
from .fisher import accumulate_fisher
from .mask import Mask, compute_scores
from .obs import apply_delta, factorize, group_obs
from .params import flatten_params, get_paths, set_paths

__all__ = [
    "PipelineConfig",
    "ModelFns",
    "model_fns",
    "load_data",
    "train_global",
    "init_params",
    "personalize",
    "provider_scores",
    "provider_mask",
    "mask_only",
    "block_layout",
    "client_fisher",
    "unlearn",
    "evaluate",
    "predict_logits",
]


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of the ViT pipeline. ``PipelineConfig.tiny()`` is the CI variant.

    Data (``zkapex_jax.data.make_splits``): forget classes (footwear), the client's personal
    classes (tops) with ``n_orig`` original + ``n_shift`` shifted images per class
    (``n_train_per_domain`` of each for training), the ``shift`` (a Sobel-edge "sketch", the
    ImageNet-Sketch analog), and subsampling of the global training / test sets.

    Training (``zkapex_jax.train``): AdamW with warm-up; personalization adds the paper's
    layer-wise lr decay.

    Mask (``zkapex_jax.mask``): the paper's "second-order neg" score on fc1 of every layer,
    global top ``mask_fraction``, from ``n_mask_forget`` / ``n_mask_retain`` provider images
    (paper: 480), Fisher-diagonal damping ``mask_damping`` (paper 1e-8).

    Client Fisher / Group-OBS: blocks of ``block_size`` consecutive weights in ``block_order``
    (paper: 576 of a 768-wide input, ``"out_in"``), ``damping`` on the diagonal (paper 1e-6).
    """

    model: str = "vit-tiny"
    dataset: str = "fashion_mnist"
    forget_classes: tuple[int, ...] = data_mod.DEFAULT_FORGET_CLASSES
    personal_classes: tuple[int, ...] = data_mod.DEFAULT_PERSONAL_CLASSES
    shift: str = "edges"
    n_orig: int = 25
    n_shift: int = 25
    n_train_per_domain: int = 12
    max_global_train: int | None = 12000
    max_test: int | None = None
    # global model (provider)
    global_epochs: int = 8
    global_lr: float = 1e-3
    global_batch: int = 128
    global_warmup: int = 50
    weight_decay: float = 0.05
    # personalization (client)
    pers_epochs: int = 30
    pers_lr: float = 8e-4
    pers_batch: int = 16
    pers_warmup: int = 3
    layer_decay: float = 0.8
    # provider mask
    mask_pattern: str | tuple[str, ...] = models_mod.FC1_PATTERN_VIT
    mask_method: str = "second_order_neg"
    mask_fraction: float = 0.04
    mask_scope: str = "global"
    mask_h: float = 0.4485
    mask_r: float = 2.0
    mask_damping: float = 1e-8
    n_mask_forget: int = 480
    n_mask_retain: int = 480
    # client Fisher + Group-OBS
    block_size: int = 64
    block_order: str = "out_in"
    damping: float = 1e-6
    n_fisher: int | None = None  # None: the whole personalization train set (the paper's m)
    fisher_chunk: int = 32
    # evaluation
    eval_batch: int = 500
    n_mia: int = 1000

    def replace(self, **kw) -> "PipelineConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def tiny(cls, **kw) -> "PipelineConfig":
        """The CI variant: ``vit-test`` on a few hundred images, a couple of epochs (< 1 min)."""
        base = dict(model="vit-test", max_global_train=400, max_test=400, global_epochs=2, global_batch=64,
                    global_warmup=2, pers_epochs=2, pers_batch=16, n_mask_forget=32, n_mask_retain=32,
                    block_size=16, n_mia=40, eval_batch=200, fisher_chunk=16)
        base.update(kw)
        return cls(**base)


# ----------------------------------------------------------------------------- model functions

@dataclass(frozen=True)
class ModelFns:
    """The model object and its pure functions (built once per model name)."""

    model: Any
    loss: Any      # loss(params, (x (28,28,1), y ())) -> scalar, ONE example
    predict: Any   # predict(params, x (N,28,28,1)) -> logits (N, K)  (not jitted)
    predict_jit: Any


@lru_cache(maxsize=8)
def model_fns(name: str) -> ModelFns:
    """Build (and cache) the Flax model of ``name`` and its loss / predict functions.
    The same function objects are returned for the same name, so jitted code is reused."""
    model, _ = models_mod.build_model(name, seed=0)
    predict = models_mod.make_classifier_predict(model)
    return ModelFns(model, models_mod.make_classifier_loss(model), predict, jax.jit(predict))


def init_params(cfg: PipelineConfig, *, seed: int):
    """Fresh random parameters of ``cfg.model`` (``seed`` picks the initialisation)."""
    _, params = models_mod.build_model(cfg.model, seed=seed)
    return params


# ----------------------------------------------------------------------------- data

def load_data(cfg: PipelineConfig, seed: int) -> data_mod.Splits:
    """The provider / client / forget splits for ``seed`` (``zkapex_jax.data.make_splits``).
    Falls back to scikit-learn's digits (with a warning) when Fashion-MNIST is not installed
    and ``cfg.dataset == "fashion_mnist"``."""
    xtr, ytr, xte, yte, name = data_mod.load_image_dataset(cfg.dataset)
    return data_mod.make_splits(
        xtr, ytr, xte, yte, seed=seed, forget_classes=cfg.forget_classes,
        personal_classes=cfg.personal_classes, n_orig=cfg.n_orig, n_shift=cfg.n_shift,
        n_train_per_domain=cfg.n_train_per_domain, shift=cfg.shift,
        max_global_train=cfg.max_global_train, max_test=cfg.max_test, name=name)


def _subsample(split, n: int | None, seed: int):
    if n is None or n >= split.n:
        return split
    idx = np.sort(np.random.default_rng(seed).choice(split.n, size=n, replace=False))
    return type(split)(split.x[idx], split.y[idx])


# ----------------------------------------------------------------------------- training

def _steps(n: int, batch: int, epochs: int) -> int:
    return max(1, -(-n // min(batch, n))) * epochs


def train_global(cfg: PipelineConfig, data: data_mod.Splits, *, key, exclude_forget: bool = False,
                 init_seed: int | None = None):
    """[provider] Train the global ViT from scratch on ``data.global_train`` (all classes), or,
    with ``exclude_forget=True``, on ``data.retain_train`` (the retrain gold standard: the same
    recipe without the forget classes). AdamW with linear warm-up and cosine decay, no layer
    decay. Returns ``(params, history)``."""
    fns = model_fns(cfg.model)
    k_init, k_fit = jax.random.split(key)
    seed = int(jax.random.randint(k_init, (), 0, 2**31 - 1)) if init_seed is None else init_seed
    params = init_params(cfg, seed=seed)
    split = data.retain_train if exclude_forget else data.global_train
    total = _steps(split.n, cfg.global_batch, cfg.global_epochs)
    opt = train_mod.make_optimizer(params, lr=cfg.global_lr, total_steps=total,
                                   warmup_steps=cfg.global_warmup, weight_decay=cfg.weight_decay)
    return train_mod.fit(fns.loss, params, (split.x, split.y), optimizer=opt, epochs=cfg.global_epochs,
                         batch_size=cfg.global_batch, key=k_fit)


def personalize(cfg: PipelineConfig, theta_global, data: data_mod.Splits, *, key):
    """[client] Fine-tune the global model on the client's private training images
    (``data.personal_train``: original + shifted, all layers) with AdamW, warm-up and the
    paper's layer-wise lr decay (``cfg.layer_decay``). Returns ``(theta_p, history)``."""
    return personalize_on(cfg, theta_global, data.personal_train, key=key)


def personalize_on(cfg: PipelineConfig, theta_global, split: data_mod.Split, *, key):
    """:func:`personalize` on any labelled ``split`` (e.g. the client's own images)."""
    fns = model_fns(cfg.model)
    total = _steps(split.n, cfg.pers_batch, cfg.pers_epochs)
    opt = train_mod.make_optimizer(theta_global, lr=cfg.pers_lr, total_steps=total,
                                   warmup_steps=cfg.pers_warmup, weight_decay=cfg.weight_decay,
                                   layer_decay=cfg.layer_decay)
    return train_mod.fit(fns.loss, theta_global, (split.x, split.y), optimizer=opt, epochs=cfg.pers_epochs,
                         batch_size=cfg.pers_batch, key=key)


# ----------------------------------------------------------------------------- provider mask

def provider_mask(cfg: PipelineConfig, theta_global, data: data_mod.Splits, *, seed: int = 0,
                  fraction: float | None = None, scores: Mapping[str, Any] | None = None):
    """[provider] Score every fc1 weight of the provider's GLOBAL model on forget
    (``n_mask_forget`` images of ``data.forget_train``) vs. retain data (``n_mask_retain`` of
    ``data.retain_train``) and keep the global top ``fraction`` (default ``cfg.mask_fraction``).
    The provider never sees θp. Passing ``scores`` (from :func:`provider_scores`) skips the
    gradient passes, e.g. for a fraction sweep.
    Returns a :class:`~zkapex_jax.mask.Mask`."""
    if scores is None:
        scores = provider_scores(cfg, theta_global, data, seed=seed)
    frac = cfg.mask_fraction if fraction is None else fraction
    meta = {"h": cfg.mask_h, "r": cfg.mask_r, "damping": cfg.mask_damping, "n_forget": cfg.n_mask_forget,
            "n_retain": cfg.n_mask_retain, "forget_classes": list(cfg.forget_classes)}
    return Mask.from_scores(scores, frac, scope=cfg.mask_scope, method=cfg.mask_method, meta=meta)


def provider_scores(cfg: PipelineConfig, theta_global, data: data_mod.Splits, *, seed: int = 0) -> dict:
    """The provider's per-weight scores ``{path: (in, out)}`` (see :func:`provider_mask`)."""
    return provider_scores_on(cfg, theta_global, data.forget_train, data.retain_train, seed=seed)


def provider_scores_on(cfg: PipelineConfig, theta_global, forget: data_mod.Split, retain: data_mod.Split, *,
                       seed: int = 0) -> dict:
    """:func:`provider_scores` on any forget / retain splits (e.g. the provider's own files);
    ``n_mask_forget`` / ``n_mask_retain`` examples of each are drawn with ``seed``."""
    fns = model_fns(cfg.model)
    forget = _subsample(forget, cfg.n_mask_forget, seed)
    retain = _subsample(retain, cfg.n_mask_retain, seed + 1)
    return compute_scores(fns.loss, theta_global, (forget.x, forget.y), (retain.x, retain.y),
                          wrt=cfg.mask_pattern, method=cfg.mask_method, h=cfg.mask_h, r=cfg.mask_r,
                          damping=cfg.mask_damping, chunk_size=cfg.fisher_chunk)


# ----------------------------------------------------------------------------- client Fisher

def block_layout(cfg: PipelineConfig, params, block_size: int | None = None) -> BlockLayout:
    """The :class:`BlockLayout` of the masked kernels (``cfg.mask_pattern``)."""
    return BlockLayout.from_params(params, cfg.mask_pattern, cfg.block_size if block_size is None else block_size,
                                   cfg.block_order)


def client_fisher(cfg: PipelineConfig, theta_p, data: data_mod.Splits, layout: BlockLayout, *,
                  damping: float | None = None, n_samples: int | None = None, seed: int = 0):
    """[client] Block-wise empirical Fisher of θp on the client's personalization training set,
    ``C_b = damping·I + (1/m) Σ g gᵀ`` over ``layout``'s blocks (``accumulate_fisher``).
    ``n_samples`` (default ``cfg.n_fisher``, None = all m images) subsamples the set.
    Returns ``(nb, B, B)``."""
    return client_fisher_on(cfg, theta_p, data.personal_train, layout, damping=damping, n_samples=n_samples,
                            seed=seed)


def client_fisher_on(cfg: PipelineConfig, theta_p, split: data_mod.Split, layout: BlockLayout, *,
                     damping: float | None = None, n_samples: int | None = None, seed: int = 0):
    """:func:`client_fisher` on any labelled ``split`` (e.g. the client's own images)."""
    fns = model_fns(cfg.model)
    split = _subsample(split, cfg.n_fisher if n_samples is None else n_samples, seed)
    return accumulate_fisher(fns.loss, theta_p, (split.x, split.y), layout,
                             damping=cfg.damping if damping is None else damping,
                             chunk_size=cfg.fisher_chunk)


# ----------------------------------------------------------------------------- unlearning

def unlearn(theta_p, fisher, mask: Mask, layout: BlockLayout):
    """[client] Group-OBS: per block δ = −C⁻¹E(EᵀC⁻¹E)⁻¹θ_M, θu = θp + δ with θu[M] = 0 exactly.

    ``fisher``: ``(nb, B, B)`` or a ``FisherFactor`` (reuse across masks). Returns
    ``(theta_u, info)`` with ``info = {"result": GroupOBSResult, "max_residual": float,
    "num_masked": int, "seconds": float}``."""
    mask.check_matches(theta_p)
    t0 = time.perf_counter()
    flat = get_paths(theta_p, layout.paths)
    theta_b = layout.to_blocks(flat)
    mask_b = mask.to_blocks(layout)
    res = group_obs(theta_b, fisher, mask_b)
    theta_u_b = apply_delta(theta_b, res.delta, mask_b)
    theta_u = set_paths(theta_p, layout.from_blocks(theta_u_b))
    jax.block_until_ready(theta_u_b)
    return theta_u, {"result": res, "max_residual": float(jnp.max(res.residual)),
                     "num_masked": int(mask.num_masked), "seconds": time.perf_counter() - t0}


def mask_only(theta_p, mask: Mask):
    """θp with the masked weights set to 0 and nothing compensated."""
    mask.check_matches(theta_p)
    flat = flatten_params(theta_p)
    upd = {p: jnp.where(jnp.asarray(m), jnp.zeros((), flat[p].dtype), flat[p]) for p, m in mask.dense().items()}
    return set_paths(theta_p, upd)


# ----------------------------------------------------------------------------- evaluation

def predict_logits(cfg: PipelineConfig, params, x, *, batch_size: int | None = None) -> np.ndarray:
    """Logits ``(N, K)`` of ``x`` ``(N, 28, 28, 1)``, in batches of exactly ``batch_size``
    (default ``cfg.eval_batch``; the last one padded), so one shape is compiled for all splits."""
    fns = model_fns(cfg.model)
    bs = batch_size or cfg.eval_batch
    x = np.asarray(x)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, fns.model.config.num_labels), np.float32)
    out = []  # every batch padded to ``bs``: one compiled shape whatever the split sizes
    for s in range(0, n, bs):
        xb = x[s:s + bs]
        m = xb.shape[0]
        if m < bs:
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - m, axis=0)])
        out.append(np.asarray(fns.predict_jit(params, jnp.asarray(xb)))[:m])
    return np.concatenate(out)


def evaluate(cfg: PipelineConfig, params, data: data_mod.Splits, *, mia: bool = True, seed: int = 0) -> dict:
    """Accuracies (and the entropy MIA) of ``params``:

    - ``personal_acc_orig`` / ``personal_acc_shift``: test images of the personal classes,
      original / shifted (the client's two domains); ``personal_acc`` their mean;
    - ``personal_val_orig`` / ``personal_val_shift``: the client's small validation split;
    - ``forget_acc``: test images of the forget classes; ``other_acc``: test images of the
      remaining global classes; ``global_acc``: the whole test set;
    - ``mia_acc`` / ``mia_auc``: entropy attack, forget-train members vs. forget-test
      non-members (``zkapex_jax.metrics.mia_entropy``).
    """
    def acc(split):
        if split.n == 0:
            return float("nan")
        return M.accuracy_from_logits(predict_logits(cfg, params, split.x), split.y)

    out = {
        "personal_acc_orig": acc(data.personal_test_orig),
        "personal_acc_shift": acc(data.personal_test_shift),
        "personal_val_orig": acc(data.personal_val_orig),
        "personal_val_shift": acc(data.personal_val_shift),
        "forget_acc": acc(data.forget_test),
        "other_acc": acc(data.other_test),
        "global_acc": acc(data.global_test),
    }
    out["personal_acc"] = 0.5 * (out["personal_acc_orig"] + out["personal_acc_shift"])
    if mia:
        n = min(cfg.n_mia, data.forget_train.n, data.forget_test.n)
        mem = _subsample(data.forget_train, n, seed + 7)
        non = _subsample(data.forget_test, n, seed + 8)
        r = M.mia_entropy(predict_logits(cfg, params, mem.x), predict_logits(cfg, params, non.x), seed=seed)
        out["mia_acc"], out["mia_auc"] = r["acc"], r["auc"]
    return out
