"""Models: Hugging Face transformers' Flax ViT / OPT built from config (never downloaded),
their parameter-path patterns, and per-example losses.

Named configurations (:data:`MODEL_CONFIGS`):

============  =====================================================================
``vit-test``  28×28×1 input, patch 7, hidden 16, 2 layers, 2 heads, MLP 32 (unit tests)
``vit-tiny``  28×28×1 input, patch 7, hidden 64, 4 layers, 4 heads, MLP 256 (image study)
``vit-demo``  28×28×1 input, patch 7, hidden 32, 2 layers, 2 heads, MLP 64 (proof demo:
              fc1 kernels of 32×64 = 2048 weights each)
``vit-b16``   google/vit-base-patch16-224: 224×224×3, patch 16, 768, 12 layers, 12 heads,
              3072, 1000 labels
``opt-test``  vocab 64, hidden 16, 2 layers, 2 heads, FFN 64, 64 positions (unit tests)
``opt-tiny``  vocab 4096 (set it from the tokenizer: ``vocab_size=...``), hidden 128,
              4 layers, 4 heads, FFN 512, 256 positions (code study on CPU)
``opt-125m``  facebook/opt-125m: vocab 50272, 768, 12 layers, 12 heads, FFN 3072, 2048 positions
============  =====================================================================

All dropout is off (the losses are pure functions of ``(params, example)``).

Image layout: the library's images are **NHWC** float32 in [0, 1], ``(N, 28, 28, 1)``.
``FlaxViTForImageClassification.__call__`` takes NCHW pixel values (PyTorch's layout) and
transposes them to NHWC itself; the functions here do the NCHW transpose for you, so callers
always pass NHWC.

Parameter paths (``/``-joined, see :mod:`zkapex_jax.core.params`)::

    vit/encoder/layer/<i>/intermediate/dense/kernel     (hidden, intermediate)   ViT fc1
    model/decoder/layers/<i>/fc1/kernel                  (hidden, ffn)            OPT fc1
    model/decoder/layers/<i>/fc2/kernel                  (ffn, hidden)            OPT fc2
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import ArtifactError, ShapeError, ZkapexError

__all__ = [
    "MODEL_CONFIGS",
    "FC1_PATTERN_VIT",
    "FC1_PATTERN_OPT",
    "FC2_PATTERN_OPT",
    "FC1_PATTERNS",
    "FC_PATTERNS_OPT",
    "make_config",
    "build_model",
    "param_shapes",
    "load_pretrained",
    "fc1_pattern",
    "make_classifier_loss",
    "make_classifier_predict",
    "make_lm_loss",
    "make_lm_predict",
    "lm_token_accuracy",
    "nchw",
    "model_type",
]

FC1_PATTERN_VIT = "*/encoder/layer/*/intermediate/dense/kernel"
FC1_PATTERN_OPT = "*/layers/*/fc1/kernel"
FC2_PATTERN_OPT = "*/layers/*/fc2/kernel"
#: fc1 pattern per model family ("vit", "opt").
FC1_PATTERNS = {"vit": FC1_PATTERN_VIT, "opt": FC1_PATTERN_OPT}
#: the paper's LM mask targets: fc1 and fc2 of every layer.
FC_PATTERNS_OPT = (FC1_PATTERN_OPT, FC2_PATTERN_OPT)

_NO_DROPOUT_VIT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_NO_DROPOUT_OPT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)


def _vit(**kw) -> dict:
    base = dict(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        qkv_bias=True,
        num_labels=10,
        **_NO_DROPOUT_VIT,
    )
    base.update(kw)
    return base


def _opt(**kw) -> dict:
    base = dict(
        activation_function="relu",
        do_layer_norm_before=True,
        enable_bias=True,
        layer_norm_elementwise_affine=True,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        tie_word_embeddings=True,
        **_NO_DROPOUT_OPT,
    )
    base.update(kw)
    if "word_embed_proj_dim" not in kw:
        base["word_embed_proj_dim"] = base["hidden_size"]
    return base


#: name -> (family, config kwargs). Families: "vit" (ViTConfig /
#: FlaxViTForImageClassification) and "opt" (OPTConfig / FlaxOPTForCausalLM).
MODEL_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit-test": ("vit", _vit(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)),
    "vit-tiny": ("vit", _vit(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)),
    "vit-demo": ("vit", _vit(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)),
    "vit-b16": (
        "vit",
        _vit(
            image_size=224,
            patch_size=16,
            num_channels=3,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            num_labels=1000,
        ),
    ),
    "opt-test": (
        "opt",
        _opt(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
             max_position_embeddings=64),
    ),
    "opt-tiny": (
        "opt",
        _opt(vocab_size=4096, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, ffn_dim=512,
             max_position_embeddings=256),
    ),
    "opt-125m": (
        "opt",
        _opt(vocab_size=50272, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
             max_position_embeddings=2048),
    ),
}


def model_type(config) -> str:
    """``"vit"`` or ``"opt"`` for a transformers config (``ZkapexError`` otherwise)."""
    return _family_of_config(config)


def _family_of_config(config) -> str:
    mt = getattr(config, "model_type", None)
    if mt in ("vit", "opt"):
        return mt
    raise ZkapexError(f"unsupported model type {mt!r}: zkapex-jax builds 'vit' and 'opt' models")


def _classes(family: str):
    from transformers import FlaxOPTForCausalLM, FlaxViTForImageClassification, OPTConfig, ViTConfig

    return {"vit": (ViTConfig, FlaxViTForImageClassification), "opt": (OPTConfig, FlaxOPTForCausalLM)}[family]


def make_config(name_or_config, **overrides):
    """A ``ViTConfig`` / ``OPTConfig`` for a name in :data:`MODEL_CONFIGS` (or a copy of a given
    config) with ``overrides`` applied (e.g. ``vocab_size=5000``, ``num_labels=7``).

    Raises ``ZkapexError`` for an unknown name or an override that is not a config field."""
    from transformers import PretrainedConfig

    if isinstance(name_or_config, str):
        if name_or_config not in MODEL_CONFIGS:
            raise ZkapexError(
                f"unknown model name {name_or_config!r}; known: {', '.join(sorted(MODEL_CONFIGS))}"
            )
        family, kwargs = MODEL_CONFIGS[name_or_config]
        config_cls, _ = _classes(family)
        reference = config_cls()
        bad = [k for k in overrides if not hasattr(reference, k)]
        if bad:
            raise ZkapexError(f"unknown config field(s) {bad} for {name_or_config!r}")
        return config_cls(**{**kwargs, **overrides})
    if isinstance(name_or_config, PretrainedConfig):
        family = _family_of_config(name_or_config)
        config_cls, _ = _classes(family)
        bad = [k for k in overrides if not hasattr(name_or_config, k)]
        if bad:
            raise ZkapexError(f"unknown config field(s) {bad} for a {family} config")
        d = name_or_config.to_dict()
        d.update(overrides)
        d.pop("model_type", None)
        if "num_labels" in overrides:
            d.pop("id2label", None)
            d.pop("label2id", None)
        return config_cls(**d)
    raise ZkapexError(f"expected a model name or a transformers config, got {type(name_or_config).__name__}")


def _unfreeze(tree):
    if isinstance(tree, Mapping):
        return {k: _unfreeze(v) for k, v in tree.items()}
    return tree


def build_model(name_or_config, *, seed: int = 0, **overrides):
    """Build a Flax model from a named config (or a config object) with random weights.

    Args:
      name_or_config: a key of :data:`MODEL_CONFIGS` or a ``ViTConfig`` / ``OPTConfig``.
      seed: initialisation seed (``jax.random.PRNGKey(seed)``).
      **overrides: config fields to change (``num_labels``, ``vocab_size``, ``num_hidden_layers``...).

    Returns:
      ``(model, params)``: the transformers Flax model object (use it only to call its
      ``module``/``__call__`` with explicit params) and ``params``, a plain nested dict of
      float32 arrays. Nothing is downloaded."""
    # the initialiser under one jit (eagerly it dispatches op by op: ~1.5x slower on small models);
    # the same PRNG stream, so the same weights as transformers' own ``_do_init=True``
    model = build_module(name_or_config, **overrides)
    return model, _unfreeze(_jitted_init(model)(jax.random.PRNGKey(seed), model.input_shape))


_INITS: dict = {}


def _jitted_init(model):
    """One jitted ``init_weights`` per (model class, config): every seed and every instance with
    that config reuse its compiled code (the seed is a traced argument)."""
    key = (type(model), model.config.to_json_string())
    if key not in _INITS:
        if len(_INITS) >= 16:
            _INITS.pop(next(iter(_INITS)))
        _INITS[key] = jax.jit(model.init_weights, static_argnums=1)
    return _INITS[key]


def build_module(name_or_config, **overrides):
    """The transformers Flax model object of a named config (or config object), **without**
    weights (``_do_init=False``): what the losses and predictions need, for parameters that come
    from elsewhere (a checkpoint, :func:`build_model`). No random model is drawn."""
    config = make_config(name_or_config, **overrides)
    _, model_cls = _classes(_family_of_config(config))
    return model_cls(config, _do_init=False)


def param_shapes(name_or_config, **overrides) -> dict:
    """The params pytree of a model as ``jax.ShapeDtypeStruct`` leaves, without allocating it
    (``jax.eval_shape`` of the initialiser): e.g. the ViT-B/16 fc1 shapes on a laptop."""
    model = build_module(name_or_config, **overrides)
    shapes = jax.eval_shape(lambda key: model.init_weights(key, model.input_shape), jax.random.PRNGKey(0))
    return _unfreeze(shapes)


def fc1_pattern(model_or_config) -> str:
    """The fc1 pattern for a model/config (``FC1_PATTERN_VIT`` or ``FC1_PATTERN_OPT``)."""
    config = getattr(model_or_config, "config", model_or_config)
    return FC1_PATTERNS[_family_of_config(config)]


_WEIGHT_FILES = ("flax_model.msgpack", "model.safetensors", "flax_model.msgpack.index.json")


def load_pretrained(local_dir, **overrides):
    """Load a ViT / OPT Flax model from weights on disk (``from_pretrained(local_dir,
    local_files_only=True)``): a directory holding ``config.json`` and ``flax_model.msgpack``
    or ``model.safetensors`` (Flax or PyTorch format — PyTorch safetensors are converted
    without needing torch). Never downloads.

    Returns ``(model, params)`` like :func:`build_model`. Raises ``ArtifactError`` naming the
    directory/file when the config or the weights are missing or unreadable."""
    local_dir = os.fspath(local_dir)
    if not os.path.isdir(local_dir):
        raise ArtifactError(f"pretrained model directory {local_dir!r} does not exist")
    cfg_file = os.path.join(local_dir, "config.json")
    if not os.path.isfile(cfg_file):
        raise ArtifactError(f"{cfg_file!r} is missing: a pretrained model directory needs config.json")
    from .._io import loads_strict, read_regular_file

    try:
        cfg_doc = loads_strict(read_regular_file(cfg_file, max_bytes=1 << 20, what="config"), cfg_file)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{cfg_file!r} is not a readable JSON config: {exc}") from None
    if not isinstance(cfg_doc, dict):
        raise ArtifactError(f"{cfg_file!r}: a model config must be a JSON object, got {type(cfg_doc).__name__}")
    model_type = cfg_doc.get("model_type")
    if model_type not in ("vit", "opt"):
        raise ArtifactError(f"{cfg_file!r}: model_type {model_type!r} is not supported (expected 'vit' or 'opt')")
    present = [f for f in _WEIGHT_FILES if os.path.isfile(os.path.join(local_dir, f))]
    if not present:
        raise ArtifactError(
            f"no weights in {local_dir!r}: expected one of {', '.join(_WEIGHT_FILES)} "
            "(e.g. model.safetensors as downloaded from the Hugging Face Hub)"
        )
    config_cls, model_cls = _classes(model_type)
    try:
        config = config_cls.from_pretrained(local_dir, local_files_only=True)
        if model_type == "vit":
            overrides = {**_NO_DROPOUT_VIT, **overrides}
        else:
            overrides = {**_NO_DROPOUT_OPT, **overrides}
        for k, v in overrides.items():
            setattr(config, k, v)
        # _do_init=False: the checkpoint's weights without first drawing a random model to discard
        # (op by op, that draw costs more than the loading); weights the checkpoint lacks (e.g. a
        # new head) are drawn as transformers would, from seed 0, by the jitted initialiser
        # (PyTorch-format weights convert through a model's own params: those keep the eager path)
        if _flax_weights(local_dir, present):
            model, state = model_cls.from_pretrained(local_dir, config=config, local_files_only=True, _do_init=False)
            state = _fill_missing(model, state)
        else:
            model = model_cls.from_pretrained(local_dir, config=config, local_files_only=True)
            state = model.params
    except Exception as exc:  # noqa: BLE001 — transformers / safetensors raise their own types for garbage files
        raise ArtifactError(f"could not load the pretrained model in {local_dir!r}: "
                            f"{exc.__class__.__name__}: {str(exc)[:200]}") from None
    return model, _unfreeze(state)


def _flax_weights(local_dir: str, present: list[str]) -> bool:
    """Whether transformers will read the directory's weights as Flax ones (``flax_model.msgpack``,
    or a ``model.safetensors`` whose metadata says ``format: flax``)."""
    if any(f.startswith("flax_model.msgpack") for f in present):
        return True
    from safetensors import safe_open

    with safe_open(os.path.join(local_dir, "model.safetensors"), framework="numpy") as f:
        return (f.metadata() or {}).get("format") == "flax"


def _fill_missing(model, state):
    """``state`` with the model's required parameters it lacks drawn by ``init_weights`` (seed 0)."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    flat = flatten_dict(_unfreeze(state))
    missing = model.required_params - set(flat)
    if not missing:
        return state
    fresh = flatten_dict(_unfreeze(_jitted_init(model)(jax.random.PRNGKey(0), model.input_shape)))
    flat.update({k: fresh[k] for k in missing})
    return unflatten_dict(flat)


# ---------------------------------------------------------------------------------------------
# losses and predictions


def nchw(x):
    """NHWC ``(N, H, W, C)`` -> NCHW ``(N, C, H, W)`` (the layout FlaxViT's ``__call__`` takes)."""
    return jnp.transpose(x, (0, 3, 1, 2))


def _check_image(x, model, batched):
    cfg = model.config
    want = (cfg.image_size, cfg.image_size, cfg.num_channels)
    shp = tuple(x.shape[1:] if batched else x.shape)
    if shp != want:
        raise ShapeError(
            f"image of shape {shp} does not fit the model: expected NHWC {want}"
            + (" after the batch axis" if batched else " for one example")
        )


def make_classifier_predict(model) -> Callable:
    """``predict(params, x) -> logits``: ``x`` NHWC ``(N, H, W, C)`` float -> ``(N, num_labels)``.
    Deterministic (no dropout); jit it where you call it."""

    def predict(params, x):
        _check_image(x, model, batched=True)
        x = jnp.asarray(x, jnp.float32)
        return model(nchw(x), params=params, train=False).logits

    return predict


def make_classifier_loss(model) -> Callable:
    """``loss(params, (x, y)) -> scalar``: softmax cross-entropy of ONE image ``x`` NHWC
    ``(H, W, C)`` with integer label ``y`` ``()``. vmap it for a batch."""
    predict = make_classifier_predict(model)

    def loss(params, example):
        x, y = example
        _check_image(x, model, batched=False)
        logits = predict(params, x[None])[0]
        logp = jax.nn.log_softmax(logits)
        return -jnp.take(logp, jnp.asarray(y, jnp.int32))

    return loss


def make_lm_predict(model) -> Callable:
    """``predict(params, tokens) -> logits``: tokens ``(N, T)`` int -> ``(N, T, vocab)``."""

    def predict(params, tokens):
        tokens = jnp.asarray(tokens, jnp.int32)
        if tokens.ndim != 2:
            raise ShapeError(f"tokens must be (N, T), got shape {tokens.shape}")
        if tokens.shape[1] > model.config.max_position_embeddings:
            raise ShapeError(
                f"sequence length {tokens.shape[1]} exceeds max_position_embeddings "
                f"{model.config.max_position_embeddings}"
            )
        return model(tokens, params=params, deterministic=True).logits

    return predict


def make_lm_loss(model, *, pad_id: int | None = None) -> Callable:
    """``loss(params, tokens) -> scalar``: mean next-token cross-entropy of ONE sequence
    ``tokens`` ``(T,)`` int (``T - 1`` predictions: token t+1 from tokens ≤ t). Targets equal
    to ``pad_id`` (if given) are left out of the mean. vmap it for a batch."""
    predict = make_lm_predict(model)

    def loss(params, tokens):
        tokens = jnp.asarray(tokens, jnp.int32)
        if tokens.ndim != 1 or tokens.shape[0] < 2:
            raise ShapeError(f"one example is a token sequence (T,) with T >= 2, got shape {tokens.shape}")
        logits = predict(params, tokens[None])[0, :-1]  # (T-1, V)
        targets = tokens[1:]
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], axis=-1)[:, 0]
        if pad_id is None:
            return jnp.mean(nll)
        w = (targets != pad_id).astype(nll.dtype)
        return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), jnp.asarray(1.0, nll.dtype))

    return loss


_LM_COUNTS: dict = {}
_PREDICT_OF_MODEL: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _lm_counts(predict, pad_id):
    """Jitted ``counts(params, tokens, valid)``, cached per (predict function, pad_id)."""
    key = (predict, pad_id)
    if key not in _LM_COUNTS:

        def counts(params, tok, valid):
            pred = jnp.argmax(predict(params, tok)[:, :-1], axis=-1)
            tgt = tok[:, 1:]
            ok = valid[:, None] & (jnp.ones_like(tgt, bool) if pad_id is None else tgt != pad_id)
            return jnp.sum((pred == tgt) & ok), jnp.sum(ok)

        if len(_LM_COUNTS) > 32:
            _LM_COUNTS.clear()
        _LM_COUNTS[key] = jax.jit(counts)
    return _LM_COUNTS[key]


def lm_token_accuracy(model_or_predict, params, tokens, *, batch_size: int = 64, pad_id: int | None = None) -> float:
    """Next-token top-1 accuracy over all ``T - 1`` positions of ``tokens`` ``(N, T)``
    (targets equal to ``pad_id`` excluded), computed in batches of ``batch_size`` (the last
    batch padded, one compiled shape). ``model_or_predict``: a FlaxOPT model or a
    ``predict(params, tokens) -> logits`` function."""
    if hasattr(model_or_predict, "config"):
        predict = _PREDICT_OF_MODEL.get(model_or_predict)
        if predict is None:
            predict = _PREDICT_OF_MODEL[model_or_predict] = make_lm_predict(model_or_predict)
    else:
        predict = model_or_predict
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ShapeError(f"tokens must be (N, T) with T >= 2, got shape {tokens.shape}")
    n = tokens.shape[0]
    if n == 0:
        raise ShapeError("no sequences to evaluate")

    counts = _lm_counts(predict, pad_id)

    bs = min(batch_size, n)
    correct = total = 0
    for s in range(0, n, bs):
        tok = tokens[s : s + bs]
        m = tok.shape[0]
        valid = np.arange(bs) < m
        if m < bs:
            tok = np.concatenate([tok, np.repeat(tok[-1:], bs - m, axis=0)])
        c, t = counts(params, tok, valid)
        correct += int(c)
        total += int(t)
    if total == 0:
        raise ShapeError("every target token is padding")
    return correct / total
