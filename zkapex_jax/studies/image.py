"""The image study of ZK-APEX (arXiv 2512.09953): its settings, splits and evaluation, and the
protocol's stages (:mod:`zkapex_jax.protocol.provider` / :mod:`~zkapex_jax.protocol.client`)
called with them. The CLI demo and ``experiments/vit_fmnist.py`` run this.

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
personalization training images; Group-OBS removes the masked weights and compensates the rest
within each block (``client.unlearn``).

Everything is a pure function of its arguments (PRNG keys explicit); nothing prints. The
caller (``experiments/``, the CLI demo) decides about files and progress output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from .._errors import ZkapexError
from ..data import images as data_mod
from . import metrics as M
from .. import models as models_mod
from ..core.blocks import BlockLayout
from ..models.family import Family, family
from ..protocol import client, provider
from ..protocol.config import CurvatureSpec, MaskSpec, StageConfig
from ..protocol.provider import Recipe

__all__ = [
    "PipelineConfig",
    "global_recipe",
    "personal_recipe",
    "model_fns",
    "load_data",
    "train_global",
    "init_params",
    "personalize",
    "provider_scores",
    "mask_examples",
    "forget_validation",
    "curvature_examples",
    "provider_mask",
    "mask_only",
    "block_layout",
    "client_fisher",
    "unlearn",
    "evaluate",
    "split_accuracy",
    "predict_logits",
]


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of the ViT pipeline. ``PipelineConfig.tiny()`` is the CI variant.

    Data (``zkapex_jax.data.make_splits``): forget classes (footwear), the client's personal
    classes (tops) with ``n_orig`` original + ``n_shift`` shifted images per class
    (``n_train_per_domain`` of each for training), the ``shift`` (a Sobel-edge "sketch", the
    ImageNet-Sketch analog), and subsampling of the global training / test sets.

    Training (``zkapex_jax.models.train``): AdamW with warm-up; personalization adds the paper's
    layer-wise lr decay.

    Mask (``zkapex_jax.core.mask``): the paper's "second-order neg" score on fc1 of every layer,
    global top ``mask_fraction``, from ``n_mask_forget`` / ``n_mask_retain`` provider images
    (paper: 480), Fisher-diagonal damping ``mask_damping`` (paper 1e-8).

    Client Fisher / Group-OBS: blocks of ``block_size`` consecutive weights in ``block_order``
    (paper: 576 of a 768-wide input, ``"out_in"``), ``damping`` on the diagonal (paper 1e-6), or,
    with ``damping_relative``, ``damping × mean diag(F)``.
    """

    model: str = "vit-tiny"
    model_overrides: tuple = ()  # ((field, value), ...) for the family, e.g. (("image_size", 64),)
    pretrained: bool = False  # start the global model from the family's pretrained weights
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
    damping_relative: bool = False  # damping as a multiple of the Fisher's mean diagonal
    curvature: str = "empirical"  # zkapex_jax.core.curvature.CURVATURES: empirical | true | exact | layer_inputs
    n_fisher: int | None = None  # None: the whole personalization train set (the paper's m)
    fisher_chunk: int = 32
    # evaluation
    eval_batch: int = 500
    n_mia: int = 1000

    def replace(self, **kw) -> "PipelineConfig":
        return dataclasses.replace(self, **kw)

    def stages(self) -> StageConfig:
        """These settings in the protocol's words (:class:`~zkapex_jax.protocol.config.StageConfig`):
        what the stage functions below read."""
        return StageConfig(
            global_recipe=global_recipe(self), personal_recipe=personal_recipe(self),
            mask=MaskSpec(patterns=self.mask_pattern, method=self.mask_method, fraction=self.mask_fraction,
                          scope=self.mask_scope, h=self.mask_h, r=self.mask_r, damping=self.mask_damping,
                          n_forget=self.n_mask_forget, n_retain=self.n_mask_retain),
            curvature=CurvatureSpec(kind=self.curvature, block_size=self.block_size, order=self.block_order,
                                    damping=self.damping, relative=self.damping_relative, n_examples=self.n_fisher,
                                    chunk=self.fisher_chunk))

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

def model_fns(cfg_or_name) -> Family:
    """The :class:`~zkapex_jax.models.Family` of a config (``model`` + ``model_overrides``) or a
    model name (built once; jitted code is reused)."""
    if isinstance(cfg_or_name, str):
        return family(cfg_or_name)
    return family(cfg_or_name.model, **dict(cfg_or_name.model_overrides))


def init_params(cfg: PipelineConfig, *, seed: int):
    """The global model's starting point: the family's pretrained weights with a new classifier
    when ``cfg.pretrained`` (drawn with ``seed``), else a random initialisation from ``seed``."""
    fam = model_fns(cfg)
    if cfg.pretrained:
        if fam.pretrained_fn is None:
            raise ZkapexError(f"model {cfg.model!r} ships no pretrained weights")
        return fam.pretrained_fn(seed)
    return fam.init(seed)


def global_recipe(cfg: PipelineConfig) -> Recipe:
    """The provider's recipe: AdamW, warm-up, cosine decay, no layer decay."""
    return Recipe(epochs=cfg.global_epochs, lr=cfg.global_lr, batch=cfg.global_batch, warmup=cfg.global_warmup,
                  weight_decay=cfg.weight_decay)


def personal_recipe(cfg: PipelineConfig) -> Recipe:
    """The client's recipe (the paper's): AdamW, warm-up, layer-wise lr decay."""
    return Recipe(epochs=cfg.pers_epochs, lr=cfg.pers_lr, batch=cfg.pers_batch, warmup=cfg.pers_warmup,
                  weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)


# ----------------------------------------------------------------------------- data

def load_data(cfg: PipelineConfig, seed: int) -> data_mod.Splits:
    """The provider / client / forget splits for ``seed`` (``zkapex_jax.data.make_splits``).
    Falls back to scikit-learn's digits (with a warning) when Fashion-MNIST is not installed
    and ``cfg.dataset == "fashion_mnist"``."""
    xtr, ytr, xte, yte, name = data_mod.load_image_dataset(cfg.dataset)
    splits = data_mod.make_splits(
        xtr, ytr, xte, yte, seed=seed, forget_classes=cfg.forget_classes,
        personal_classes=cfg.personal_classes, n_orig=cfg.n_orig, n_shift=cfg.n_shift,
        n_train_per_domain=cfg.n_train_per_domain, shift=cfg.shift,
        max_global_train=cfg.max_global_train, max_test=cfg.max_test, name=name)
    fam = model_fns(cfg)
    if fam.prepare is None:
        return splits
    # the family's inputs (e.g. 64 px RGB through a frozen pretrained stem), computed once
    fields = {k: getattr(splits, k) for k in splits.__dataclass_fields__ if k != "info"}
    done = {}
    for k, sp in fields.items():
        key = id(sp.x)
        if key not in done:
            done[key] = fam.prepare(sp.x)
        fields[k] = data_mod.Split(done[key], sp.y)
    return dataclasses.replace(splits, **fields)


def _subsample_idx(total: int, n: int | None, seed: int) -> np.ndarray:
    if n is None or n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def _subsample(split, n: int | None, seed: int):
    if n is None or n >= split.n:
        return split
    idx = _subsample_idx(split.n, n, seed)
    return type(split)(split.x[idx], split.y[idx])


# ----------------------------------------------------------------------------- training

def train_global(cfg: PipelineConfig, data: data_mod.Splits, *, key, exclude_forget: bool = False,
                 init_seed: int | None = None):
    """[provider] Train the global ViT from scratch on ``data.global_train`` (all classes), or,
    with ``exclude_forget=True``, on ``data.retain_train`` (the retrain gold standard: the same
    recipe without the forget classes). Returns ``(params, history)``
    (:func:`zkapex_jax.protocol.provider.train_global` with :func:`global_recipe`)."""
    k_init, k_fit = jax.random.split(key)
    seed = int(jax.random.randint(k_init, (), 0, 2**31 - 1)) if init_seed is None else init_seed
    split = data.retain_train if exclude_forget else data.global_train
    return provider.train_global(model_fns(cfg), init_params(cfg, seed=seed), (split.x, split.y), global_recipe(cfg),
                                 key=k_fit)


def personalize(cfg: PipelineConfig, theta_global, data: data_mod.Splits, *, key):
    """[client] Fine-tune the global model on the client's private training images
    (``data.personal_train``: original + shifted, all layers) with :func:`personal_recipe`.
    Returns ``(theta_p, history)``."""
    return personalize_on(cfg, theta_global, data.personal_train, key=key)


def personalize_on(cfg: PipelineConfig, theta_global, split: data_mod.Split, *, key):
    """:func:`personalize` on any labelled ``split`` (e.g. the client's own images)."""
    return client.personalize(model_fns(cfg), theta_global, (split.x, split.y), personal_recipe(cfg), key=key)


# ----------------------------------------------------------------------------- provider mask

def provider_mask(cfg: PipelineConfig, theta_global, data: data_mod.Splits, *, seed: int = 0,
                  fraction: float | None = None, scores: Mapping[str, Any] | None = None,
                  meta: Mapping[str, Any] | None = None):
    """[provider] Score every fc1 weight of the provider's GLOBAL model on forget
    (``n_mask_forget`` images of ``data.forget_train``) vs. retain data (``n_mask_retain`` of
    ``data.retain_train``) and keep the global top ``fraction`` (default ``cfg.mask_fraction``).
    The provider never sees θp. Passing ``scores`` (from :func:`provider_scores`) skips the
    gradient passes, e.g. for a fraction sweep; ``meta`` overrides what the mask records about
    its forget set (e.g. the classes a user named, or the files).
    Returns a :class:`~zkapex_jax.core.mask.Mask`."""
    spec = cfg.stages().mask
    if fraction is not None:
        spec = spec.replace(fraction=fraction)
    if scores is None:
        scores = provider_scores(cfg, theta_global, data, seed=seed)
    return provider.publish_request(scores, spec, meta={"forget_classes": list(cfg.forget_classes), **dict(meta or {})})


def provider_scores(cfg: PipelineConfig, theta_global, data: data_mod.Splits, *, seed: int = 0) -> dict:
    """The provider's per-weight scores ``{path: (in, out)}`` (see :func:`provider_mask`)."""
    return provider_scores_on(cfg, theta_global, data.forget_train, data.retain_train, seed=seed)


def mask_examples(cfg: PipelineConfig, forget: data_mod.Split, retain: data_mod.Split, *, seed: int = 0):
    """The provider's ``n_mask_forget`` / ``n_mask_retain`` examples of ``forget`` / ``retain``,
    drawn with ``seed`` / ``seed + 1``: ``((x, y), (x, y))``."""
    spec = cfg.stages().mask
    forget = _subsample(forget, spec.n_forget, seed)
    retain = _subsample(retain, spec.n_retain, seed + 1)
    return (forget.x, forget.y), (retain.x, retain.y)


def forget_validation(cfg: PipelineConfig, forget: data_mod.Split, n: int, *, seed: int = 0) -> data_mod.Split:
    """Up to ``n`` images of ``forget`` that :func:`mask_examples` (same ``seed``) does not draw:
    a validation split of the forget classes that no provider-side method (mask scores, gradient
    ascent, SSD, SalUn) sees, for choosing their settings without the test split. Empty when the
    provider's examples use all of ``forget``."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    used = _subsample_idx(forget.n, cfg.stages().mask.n_forget, seed)
    rest = np.setdiff1d(np.arange(forget.n), used)
    rest = rest[_subsample_idx(rest.size, n, seed + 11)]
    return type(forget)(forget.x[rest], forget.y[rest])


def provider_scores_on(cfg: PipelineConfig, theta_global, forget: data_mod.Split, retain: data_mod.Split, *,
                       seed: int = 0) -> dict:
    """:func:`provider_scores` on any forget / retain splits (e.g. the provider's own files), on
    their :func:`mask_examples`."""
    f, r = mask_examples(cfg, forget, retain, seed=seed)
    return provider.request_scores(model_fns(cfg), theta_global, f, r, cfg.stages().mask, chunk_size=cfg.fisher_chunk)


# ----------------------------------------------------------------------------- client Fisher

def block_layout(cfg: PipelineConfig, params, block_size: int | None = None) -> BlockLayout:
    """The :class:`BlockLayout` of the masked kernels (``cfg.mask_pattern``)."""
    st = cfg.stages()
    if block_size is not None:
        st = st.replace(curvature__block_size=block_size)
    return st.layout(model_fns(cfg), params)


def client_fisher(cfg: PipelineConfig, theta_p, data: data_mod.Splits, layout: BlockLayout, *,
                  damping: float | None = None, n_samples: int | None = None, seed: int = 0, augment: int = 0):
    """[client] Block-wise empirical Fisher of θp on the client's personalization training set,
    ``C_b = damping·I + (1/m) Σ g gᵀ`` over ``layout``'s blocks (``accumulate_fisher``).
    ``n_samples`` (default ``cfg.n_fisher``, None = all m images) subsamples the set; ``augment``
    > 0 uses that many augmented copies of each instead (:func:`~zkapex_jax.data.images.augment`).
    Returns ``(nb, B, B)``."""
    return client_fisher_on(cfg, theta_p, data.personal_train, layout, damping=damping, n_samples=n_samples,
                            seed=seed, augment=augment)


def curvature_examples(cfg: PipelineConfig, split: data_mod.Split, *, n_samples: int | None = None, seed: int = 0,
                       augment: int = 0):
    """The client's curvature examples of ``split`` (``n_samples``, default ``cfg.n_fisher``, drawn
    with ``seed``; with ``augment`` > 0, that many augmented copies of each, drawn with ``seed``) and
    the PRNG key of the ``true`` Fisher's label draws: ``((x, y), key)``."""
    import jax

    split = _subsample(split, cfg.stages().curvature.n_examples if n_samples is None else n_samples, seed)
    x, y = (split.x, split.y) if not augment else data_mod.augment(split.x, split.y, copies=augment, seed=seed)
    return (x, y), jax.random.PRNGKey(10_000 + seed)


def client_fisher_on(cfg: PipelineConfig, theta_p, split: data_mod.Split, layout: BlockLayout, *,
                     damping: float | None = None, n_samples: int | None = None, seed: int = 0, augment: int = 0):
    """:func:`client_fisher` on any labelled ``split`` (e.g. the client's own images), with the
    config's curvature family (``cfg.curvature``) on its :func:`curvature_examples`."""
    spec = cfg.stages().curvature
    examples, key = curvature_examples(cfg, split, n_samples=n_samples, seed=seed, augment=augment)
    return client.client_curvature(model_fns(cfg), theta_p, examples, layout, kind=spec.kind,
                                   damping=spec.damping if damping is None else damping, chunk_size=spec.chunk,
                                   relative=spec.relative, key=key)


# ----------------------------------------------------------------------------- unlearning

unlearn = client.unlearn
mask_only = client.mask_only


# ----------------------------------------------------------------------------- evaluation

def predict_logits(cfg: PipelineConfig, params, x, *, batch_size: int | None = None) -> np.ndarray:
    """Logits ``(N, K)`` of ``x`` ``(N, 28, 28, 1)``, in batches of exactly ``batch_size``
    (default ``cfg.eval_batch``; the last one padded), so one shape is compiled for all splits."""
    fam = model_fns(cfg)
    x = np.asarray(x)
    if x.shape[0] == 0:
        return np.zeros((0, fam.config.num_labels), np.float32)
    # every batch padded to exactly ``eval_batch``: one compiled shape whatever the split sizes
    return fam.logits(params, x, batch_size=batch_size or cfg.eval_batch, pad_to_batch=True)


def split_accuracy(cfg: PipelineConfig, params, split: data_mod.Split) -> float:
    """Top-1 accuracy of ``params`` on one split (``nan`` if it is empty)."""
    if split.n == 0:
        return float("nan")
    return M.accuracy_from_logits(predict_logits(cfg, params, split.x), split.y)


def evaluate(cfg: PipelineConfig, params, data: data_mod.Splits, *, mia: bool = True, seed: int = 0) -> dict:
    """Accuracies (and the entropy MIA) of ``params``:

    - ``personal_acc_orig`` / ``personal_acc_shift``: test images of the personal classes,
      original / shifted (the client's two domains); ``personal_acc`` their mean;
    - ``personal_val_orig`` / ``personal_val_shift``: the client's small validation split;
    - ``forget_acc``: test images of the forget classes; ``other_acc``: test images of the
      remaining global classes; ``global_acc``: the whole test set;
    - ``mia_acc`` / ``mia_auc``: entropy attack, forget-train members vs. forget-test
      non-members (``zkapex_jax.studies.metrics.mia_entropy``).
    """
    def acc(split):
        return split_accuracy(cfg, params, split)

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
