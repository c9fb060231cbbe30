"""Model families as the stages see them: one-example loss, batched predict, accuracy and the
parameter patterns the mask targets.

A :class:`Family` is everything the provider / client stages (:mod:`zkapex_jax.protocol.provider`,
:mod:`zkapex_jax.protocol.client`) need to know about a model, so the same stages run a ViT
classifier and an OPT causal LM::

    fam = family("vit-tiny")                    # or family("opt-tiny", vocab_size=4096)
    params = fam.init(seed=0)
    fam.loss(params, (x, y))                    # ONE example: image (H, W, C) + label ()
    fam.accuracy(params, (x, y))                # top-1 over a batch
    fam.mask_patterns                           # ("*/encoder/layer/*/intermediate/dense/kernel",)

An example is ``(x (H, W, C) float, y () int)`` for a classifier and ``tokens (T,) int`` for a
causal LM; a dataset is the same with a leading axis ``N``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import functools
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import ShapeError, ZkapexError
from . import hf

__all__ = ["Family", "family", "family_of_model"]

KINDS = ("classifier", "lm")


@dataclass(frozen=True, eq=False)
class Family:
    """A model and its pure functions.

    Attributes:
      name: the config name (``"vit-tiny"``) or ``"<model_type>:custom"`` for a loaded model.
      kind: ``"classifier"`` (examples ``(x, y)``) or ``"lm"`` (examples ``tokens (T,)``).
      model: the transformers Flax model object (call it only with explicit params).
      loss: ``loss(params, example) -> scalar`` for ONE example; vmap it for a batch.
      predict: ``predict(params, inputs (N, ...)) -> logits``; not jitted.
      mask_patterns: the kernels the paper masks for this family (fc1 of every layer).
      overrides: the config overrides the model was built with.
      init_fn: ``init_fn(seed) -> params`` for families that are not transformers models.
      pretrained_fn: ``pretrained_fn(seed) -> params``: pretrained weights (a new classifier
        drawn with ``seed``), where the family ships some.
      prepare: ``prepare(images NHWC in [0, 1]) -> inputs`` where the model's inputs are not the
        images themselves (resizing, channels, a frozen feature extractor); None: identity.
      layer_inputs: ``layer_inputs(params, inputs (N, ...), paths) -> {kernel path: (N, P, in)}``,
        the inputs each 2-D kernel sees at its P positions (tokens, pixels): what the
        ``layer_inputs`` curvature (:mod:`~zkapex_jax.core.curvature`) needs.
    """

    name: str
    kind: str
    model: Any
    loss: Callable
    predict: Callable
    mask_patterns: tuple[str, ...]
    overrides: tuple = ()
    init_fn: Callable | None = field(default=None, repr=False)
    pretrained_fn: Callable | None = field(default=None, repr=False)
    prepare: Callable | None = field(default=None, repr=False)
    layer_inputs: Callable | None = field(default=None, repr=False)
    _predict_jit: Callable = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ZkapexError(f"family kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "_predict_jit", jax.jit(self.predict))

    @property
    def config(self):
        return self.model.config

    def init(self, seed: int):
        """Fresh random parameters (``seed`` picks the initialisation)."""
        if self.init_fn is not None:
            return self.init_fn(seed)
        if self.name.endswith(":custom"):
            _, params = hf.build_model(self.model.config, seed=seed)
        else:
            _, params = hf.build_model(self.name, seed=seed, **dict(self.overrides))
        return params

    def param_shapes(self):
        """The parameter pytree as ``jax.ShapeDtypeStruct`` leaves, without allocating it."""
        if self.init_fn is not None:
            return jax.eval_shape(lambda: self.init_fn(0))
        return hf.param_shapes(self.config)

    def logits(self, params, inputs, *, batch_size: int = 256, pad_to_batch: bool = False) -> np.ndarray:
        """Logits of ``inputs`` ``(N, ...)`` in batches of ``min(batch_size, N)`` (exactly
        ``batch_size`` with ``pad_to_batch``), the last one padded, so one shape is compiled per
        call (per ``batch_size`` with ``pad_to_batch``). Returns numpy ``(N, ...)``."""
        x = np.asarray(inputs)
        n = x.shape[0]
        if n == 0:
            raise ShapeError("no examples to predict")
        bs = batch_size if pad_to_batch else min(batch_size, n)
        out = []
        for s in range(0, n, bs):
            xb = x[s:s + bs]
            m = xb.shape[0]
            if m < bs:
                xb = np.concatenate([xb, np.repeat(xb[-1:], bs - m, axis=0)])
            out.append(np.asarray(self._predict_jit(params, jnp.asarray(xb)))[:m])
        return np.concatenate(out)

    def accuracy(self, params, data, *, batch_size: int = 256) -> float:
        """Top-1 accuracy: of labels for a classifier (``data = (x (N, H, W, C), y (N,))``), of
        next tokens over all ``T - 1`` positions for an LM (``data = tokens (N, T)``)."""
        if self.kind == "lm":
            return hf.lm_token_accuracy(self.predict, params, data, batch_size=batch_size)
        x, y = data
        y = np.asarray(y)
        if y.shape[0] != np.shape(x)[0]:
            raise ShapeError(f"{np.shape(x)[0]} inputs but {y.shape[0]} labels")
        return float(np.mean(np.argmax(self.logits(params, x, batch_size=batch_size), -1) == y))


def linen_layer_inputs(predict: Callable) -> Callable:
    """``layer_inputs`` of a Flax linen model: the input of every ``nn.Dense`` call whose kernel
    path is asked for, captured with ``flax.linen.intercept_methods`` (no change to the model)."""
    import flax.linen as nn

    @functools.partial(jax.jit, static_argnames=("paths",))
    def run(params, x, paths):
        seen = {}

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and isinstance(context.module, nn.Dense):
                path = "/".join(str(p) for p in context.module.path) + "/kernel"
                if path in paths:
                    a = args[0]
                    seen[path] = a.reshape(a.shape[0], -1, a.shape[-1])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            predict(params, x)
        return seen

    def layer_inputs(params, x, paths):
        got = run(params, jnp.asarray(x), tuple(sorted(paths)))
        missing = sorted(set(paths) - set(got))
        if missing:
            raise ShapeError(f"no Dense layer with kernel {missing[0]!r} ran on these inputs")
        return {p: np.asarray(v) for p, v in got.items()}

    return layer_inputs


def _make(name: str, model, overrides: tuple) -> Family:
    mt = hf.model_type(model.config)
    if mt == "vit":
        predict = hf.make_classifier_predict(model)
        return Family(name, "classifier", model, hf.make_classifier_loss(model), predict,
                      (hf.FC1_PATTERN_VIT,), overrides, layer_inputs=linen_layer_inputs(predict))
    predict = hf.make_lm_predict(model)
    return Family(name, "lm", model, hf.make_lm_loss(model), predict, (hf.FC1_PATTERN_OPT,),
                  overrides, layer_inputs=linen_layer_inputs(predict))


def _efficientnet(name: str, overrides: tuple) -> Family:
    from types import SimpleNamespace

    from . import efficientnet as E

    cfg = E.EfficientNetConfig(**dict(overrides))
    want = E.input_shape(cfg)
    k = int(cfg.features_from)

    def predict(params, x):
        if tuple(x.shape[1:]) != want:
            raise ShapeError(f"input of shape {tuple(x.shape[1:])} does not fit the model: expected NHWC {want}")
        return E.apply(cfg, params, x, features_from=k or None)

    def loss(params, example):
        x, y = example
        logits = predict(params, jnp.asarray(x)[None])[0]
        return -jnp.take(jax.nn.log_softmax(logits), jnp.asarray(y, jnp.int32))

    def init_fn(seed):
        return E.trainable_part(E.init_params(cfg, jax.random.PRNGKey(seed)), k)

    def pretrained_fn(seed):
        return E.trainable_part(E.pretrained_lite0(num_labels=cfg.num_labels, key=jax.random.PRNGKey(seed),
                                                   padding=cfg.padding), k)

    frozen = {}
    feats = jax.jit(lambda p, x: E.features(cfg, p, x, k))

    def prepare(images, batch_size: int = 256):
        """NHWC images in [0, 1] (any size, 1 or 3 channels) -> the model's inputs: bilinear resize
        to ``image_size``, grey repeated to RGB, then the frozen pretrained stem and blocks < k."""
        x = np.asarray(images, np.float32)
        if x.ndim != 4 or x.shape[-1] not in (1, cfg.num_channels):
            raise ShapeError(f"images must be NHWC with 1 or {cfg.num_channels} channels, got shape {x.shape}")
        if k and "p" not in frozen:
            frozen["p"] = E.pretrained_lite0(padding=cfg.padding)
        out = []
        for s in range(0, x.shape[0], batch_size):
            xb = jnp.asarray(x[s:s + batch_size])
            xb = jax.image.resize(xb, (xb.shape[0], cfg.image_size, cfg.image_size, xb.shape[-1]), "bilinear")
            if xb.shape[-1] != cfg.num_channels:
                xb = jnp.repeat(xb, cfg.num_channels, axis=-1)
            out.append(np.asarray(feats(frozen["p"], xb)) if k else np.asarray(xb))
        return np.concatenate(out) if out else np.zeros((0, *want), np.float32)

    @jax.jit
    def _inputs(params, x):
        rec = {}
        E.apply(cfg, params, x, features_from=k or None, record=rec)
        return rec

    def layer_inputs(params, x, paths):
        got = _inputs(params, jnp.asarray(x))
        missing = sorted(set(paths) - set(got))
        if missing:
            raise ShapeError(f"no 1×1 convolution with kernel {missing[0]!r} in this model")
        return {p: np.asarray(got[p]).reshape(got[p].shape[0], -1, got[p].shape[-1]) for p in paths}

    return Family(name, "classifier", SimpleNamespace(config=cfg), loss, predict, (E.EXPAND_PATTERN,), overrides,
                  init_fn=init_fn, pretrained_fn=pretrained_fn, prepare=prepare, layer_inputs=layer_inputs)


#: families that are not transformers models: name -> builder(name, overrides)
_NATIVE = {"efficientnet-lite0": _efficientnet}


@lru_cache(maxsize=16)
def _family_cached(name: str, overrides: tuple) -> Family:
    if name in _NATIVE:
        try:
            return _NATIVE[name](name, overrides)
        except (TypeError, ValueError) as e:
            raise ZkapexError(f"{name}: bad config override(s) {dict(overrides)}: {e}") from None
    return _make(name, hf.build_module(name, **dict(overrides)), overrides)  # no weights drawn


def family(name: str, **overrides) -> Family:
    """The :class:`Family` of a named config (see :data:`~zkapex_jax.models.MODEL_CONFIGS`, plus
    ``"efficientnet-lite0"`` with overrides ``image_size``, ``num_labels``, ``padding``),
    built once per ``(name, overrides)``: the same function objects come back, so jitted code
    is reused."""
    return _family_cached(name, tuple(sorted(overrides.items())))


def family_of_model(model) -> Family:
    """The :class:`Family` of a model object you built or loaded (e.g. ``load_pretrained``)."""
    return _make(f"{hf.model_type(model.config)}:custom", model, ())
