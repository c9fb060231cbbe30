"""Models: named configs build, parameter paths match the fc patterns, per-example losses equal
the batched model's (float64 numpy oracle), pretrained loading from local files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax import models
from zkapex_jax._errors import ArtifactError, ShapeError, UnknownParameterError, ZkapexError
from zkapex_jax.core.params import flatten_params, select_paths


@pytest.fixture(scope="module")
def vit():
    return models.build_model("vit-test", seed=0)


@pytest.fixture(scope="module")
def opt():
    return models.build_model("opt-test", seed=0)


def _log_softmax64(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_vit_paths_and_patterns(vit):
    model, params = vit
    assert isinstance(params, dict)
    fc1 = select_paths(params, models.FC1_PATTERN_VIT)
    assert fc1 == [f"vit/encoder/layer/{i}/intermediate/dense/kernel" for i in range(2)]
    assert params["vit"]["encoder"]["layer"]["0"]["intermediate"]["dense"]["kernel"].shape == (16, 32)
    assert models.fc1_pattern(model) == models.FC1_PATTERN_VIT
    with pytest.raises(UnknownParameterError, match="matches no parameter"):
        select_paths(params, models.FC1_PATTERN_OPT)


def test_opt_paths_and_patterns(opt):
    model, params = opt
    fc1 = select_paths(params, models.FC1_PATTERN_OPT)
    fc2 = select_paths(params, models.FC2_PATTERN_OPT)
    assert fc1 == [f"model/decoder/layers/{i}/fc1/kernel" for i in range(2)]
    assert fc2 == [f"model/decoder/layers/{i}/fc2/kernel" for i in range(2)]
    assert params["model"]["decoder"]["layers"]["0"]["fc1"]["kernel"].shape == (16, 64)
    assert params["model"]["decoder"]["layers"]["1"]["fc2"]["kernel"].shape == (64, 16)
    assert select_paths(params, models.FC_PATTERNS_OPT) == sorted(fc1 + fc2)
    assert models.fc1_pattern(model.config) == models.FC1_PATTERN_OPT


@pytest.mark.parametrize(
    "name, fc1_shape, n_layers",
    [("vit-tiny", (64, 256), 4), ("vit-demo", (32, 64), 2), ("vit-b16", (768, 3072), 12)],
)
def test_vit_named_config_shapes(name, fc1_shape, n_layers):
    shapes = models.param_shapes(name)
    paths = select_paths(shapes, models.FC1_PATTERN_VIT)
    assert len(paths) == n_layers
    flat = flatten_params(shapes)
    assert all(flat[p].shape == fc1_shape for p in paths)


def test_vit_b16_matches_google_config():
    c = models.make_config("vit-b16")
    assert (c.image_size, c.patch_size, c.num_channels, c.hidden_size, c.num_hidden_layers,
            c.num_attention_heads, c.intermediate_size, c.num_labels) == (224, 16, 3, 768, 12, 12, 3072, 1000)
    flat = flatten_params(models.param_shapes("vit-b16"))
    assert sum(int(np.prod(v.shape)) for v in flat.values()) == 86_567_656  # google/vit-base-patch16-224


@pytest.mark.parametrize("name, fc1_shape, n_layers", [("opt-tiny", (128, 512), 4), ("opt-125m", (768, 3072), 12)])
def test_opt_named_config_shapes(name, fc1_shape, n_layers):
    shapes = models.param_shapes(name)
    flat = flatten_params(shapes)
    fc1 = select_paths(shapes, models.FC1_PATTERN_OPT)
    fc2 = select_paths(shapes, models.FC2_PATTERN_OPT)
    assert len(fc1) == len(fc2) == n_layers
    assert all(flat[p].shape == fc1_shape for p in fc1)
    assert all(flat[p].shape == fc1_shape[::-1] for p in fc2)


def test_opt_125m_param_count():
    flat = flatten_params(models.param_shapes("opt-125m"))
    # facebook/opt-125m: 125,239,296 parameters (tied LM head)
    assert sum(int(np.prod(v.shape)) for v in flat.values()) == 125_239_296


def test_overrides_and_errors():
    c = models.make_config("opt-tiny", vocab_size=321, num_hidden_layers=2)
    assert c.vocab_size == 321 and c.num_hidden_layers == 2
    c2 = models.make_config("vit-test", num_labels=7)
    assert c2.num_labels == 7
    with pytest.raises(ZkapexError, match="unknown model name"):
        models.make_config("vit-huge-typo")
    with pytest.raises(ZkapexError, match="unknown config field"):
        models.make_config("vit-test", hiddn_size=8)
    c3 = models.make_config(c2, num_labels=3)
    assert c3.num_labels == 3 and c3.hidden_size == 16
    assert all(getattr(models.make_config(n), a, 0.0) == 0.0 for n in models.MODEL_CONFIGS
               for a in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"))


def test_build_is_deterministic_in_seed():
    _, p0 = models.build_model("vit-test", seed=3, num_hidden_layers=1)
    _, p1 = models.build_model("vit-test", seed=3, num_hidden_layers=1)
    _, p2 = models.build_model("vit-test", seed=4, num_hidden_layers=1)
    k = "vit/encoder/layer/0/intermediate/dense/kernel"
    f0, f1, f2 = (flatten_params(p)[k] for p in (p0, p1, p2))
    np.testing.assert_allclose(f0, f1, rtol=0, atol=1e-7)
    assert np.abs(f0 - f2).max() > 1e-3


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) for n in ("vit-test", "opt-test")])
def test_jitted_initialiser_draws_the_transformers_weights(name):
    """build_model's one-jit initialiser gives the weights of transformers' eager ``_do_init=True``."""
    from zkapex_jax.models import hf

    overrides = {"num_hidden_layers": 1}
    config = models.make_config(name, **overrides)
    _, cls = hf._classes(hf._family_of_config(config))
    want = flatten_params(hf._unfreeze(cls(config, seed=5, _do_init=True).params))
    got = flatten_params(models.build_model(name, seed=5, **overrides)[1])
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, k
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_classifier_loss_one_example_equals_batched(vit):
    model, params = vit
    rng = np.random.default_rng(0)
    x = rng.random((6, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 6).astype(np.int32)
    loss = models.make_classifier_loss(model)
    predict = models.make_classifier_predict(model)
    loss_j = jax.jit(loss)
    per_ex = np.array([loss_j(params, (x[i], y[i])) for i in range(6)])
    vmapped = np.asarray(jax.jit(jax.vmap(loss, in_axes=(None, 0)))(params, (x, y)))
    # oracle: the model's own batched forward (HF __call__ with NCHW input), float64 CE in numpy
    hf_forward = jax.jit(lambda p, xx: model(xx, params=p, train=False).logits)
    logits = hf_forward(params, np.transpose(x, (0, 3, 1, 2)))
    np.testing.assert_allclose(np.asarray(predict(params, x)), np.asarray(logits), rtol=1e-5, atol=1e-6)
    oracle = -_log_softmax64(logits)[np.arange(6), y]
    np.testing.assert_allclose(per_ex, oracle, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vmapped, oracle, rtol=1e-5, atol=1e-6)


def test_classifier_shape_errors(vit):
    model, params = vit
    loss = models.make_classifier_loss(model)
    with pytest.raises(ShapeError, match="NHWC"):
        loss(params, (np.zeros((1, 28, 28), np.float32), 0))  # NCHW single image
    with pytest.raises(ShapeError):
        models.make_classifier_predict(model)(params, np.zeros((2, 28, 28), np.float32))


def test_lm_loss_one_example_equals_batched(opt):
    model, params = opt
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 64, (3, 9)).astype(np.int32)
    loss = models.make_lm_loss(model)
    logits = np.asarray(jax.jit(models.make_lm_predict(model))(params, tokens))
    lp = _log_softmax64(logits[:, :-1])
    oracle = -np.take_along_axis(lp, tokens[:, 1:, None], axis=-1)[..., 0].mean(axis=1)
    got = np.asarray(jax.jit(jax.vmap(loss, in_axes=(None, 0)))(params, tokens))
    np.testing.assert_allclose(got, oracle, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(jax.jit(loss)(params, tokens[0])), oracle[0], rtol=1e-5)


def test_lm_loss_pad_and_accuracy(opt):
    model, params = opt
    tokens = np.array([[5, 7, 9, 1, 1], [3, 4, 5, 6, 7]], np.int32)
    loss_pad = jax.jit(models.make_lm_loss(model, pad_id=1))
    logits = np.asarray(jax.jit(models.make_lm_predict(model))(params, tokens))
    lp = _log_softmax64(logits[0, :2])
    np.testing.assert_allclose(float(loss_pad(params, tokens[0])), -(lp[0, 7] + lp[1, 9]) / 2, rtol=1e-5)
    pred = logits[:, :-1].argmax(-1)
    want = (pred == tokens[:, 1:]).mean()
    assert models.lm_token_accuracy(model, params, tokens, batch_size=3) == pytest.approx(want)
    ok = (pred == tokens[:, 1:]) & (tokens[:, 1:] != 1)
    got = models.lm_token_accuracy(models.make_lm_predict(model), params, tokens, batch_size=1, pad_id=1)
    assert got == pytest.approx(ok.sum() / (tokens[:, 1:] != 1).sum())
    with pytest.raises(ShapeError):
        models.make_lm_loss(model)(params, tokens)  # a batch, not one sequence


def test_losses_are_differentiable_pure(vit):
    model, params = vit
    loss = jax.jit(models.make_classifier_loss(model))
    x = jnp.ones((28, 28, 1), jnp.float32) * 0.5
    g1 = jax.grad(loss)(params, (x, 3))
    g2 = jax.grad(loss)(params, (x, 3))
    k = "vit/encoder/layer/1/intermediate/dense/kernel"
    np.testing.assert_array_equal(flatten_params(g1)[k], flatten_params(g2)[k])
    assert np.any(flatten_params(g1)[k] != 0)


def _pt_name(path):
    """Flax path -> the PyTorch state-dict name and the array transform (as the Hub stores it)."""
    parts = path.split("/")
    leaf = parts[-1]
    stem = ".".join(parts[:-1])
    if leaf == "kernel":
        return stem + ".weight", (lambda a: np.transpose(a, (3, 2, 0, 1)) if a.ndim == 4 else a.T)
    if leaf == "scale":
        return stem + ".weight", (lambda a: a)
    if leaf == "embedding":
        return stem + ".weight", (lambda a: a)
    return ".".join(parts), (lambda a: a)


def test_load_pretrained_from_pytorch_safetensors(tmp_path, vit):
    """A directory laid out like a Hub download (config.json + PyTorch-format model.safetensors)
    loads without torch and without network, to the same weights."""
    from safetensors.numpy import save_file

    model, params = vit
    model.config.save_pretrained(tmp_path)
    tensors = {}
    for path, leaf in flatten_params(params).items():
        name, fn = _pt_name(path)
        tensors[name] = np.ascontiguousarray(fn(np.asarray(leaf)))
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    m2, p2 = models.load_pretrained(tmp_path)
    f1, f2 = flatten_params(params), flatten_params(p2)
    assert set(f1) == set(f2)
    for k in f1:
        np.testing.assert_array_equal(np.asarray(f1[k]), np.asarray(f2[k]), err_msg=k)
    assert m2.config.hidden_dropout_prob == 0.0


@pytest.mark.parametrize("safe", [False, True], ids=["msgpack", "flax-safetensors"])
def test_load_pretrained_flax_roundtrip(tmp_path, opt, safe):
    model, params = opt
    model.save_pretrained(tmp_path, params=params, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "flax_model.msgpack")).is_file()
    _, p2 = models.load_pretrained(tmp_path)
    k = "model/decoder/layers/1/fc1/kernel"
    np.testing.assert_array_equal(np.asarray(flatten_params(params)[k]), np.asarray(flatten_params(p2)[k]))


def test_load_pretrained_draws_the_weights_a_checkpoint_lacks(tmp_path, vit):
    """A backbone without its classifier head: the head is drawn as transformers draws it (seed 0,
    the jitted initialiser, tested equal to transformers' eager one above); the rest is the file's."""
    model, params = vit
    backbone = {k: v for k, v in params.items() if k != "classifier"}
    model.save_pretrained(tmp_path, params=backbone)
    _, p2 = models.load_pretrained(tmp_path)
    f1, f2 = flatten_params(params), flatten_params(p2)
    assert set(f2) == set(f1)
    for k in f1:
        if not k.startswith("classifier/"):
            np.testing.assert_array_equal(np.asarray(f1[k]), np.asarray(f2[k]), err_msg=k)
    fresh = flatten_params(models.build_model(model.config, seed=0)[1])
    for k in ("classifier/kernel", "classifier/bias"):
        assert f2[k].shape == f1[k].shape
        np.testing.assert_allclose(np.asarray(f2[k]), np.asarray(fresh[k]), rtol=1e-6, atol=1e-7)


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        models.load_pretrained(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="config.json"):
        models.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ArtifactError, match="no weights"):
        models.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ArtifactError, match="not supported"):
        models.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        models.load_pretrained(tmp_path)


def test_vit_loss_under_strict_promotion(vit):
    """The ViT per-example loss and its gradient trace under strict dtype promotion (HF's Flax
    OPT does not: its attention-mask code mixes bool and int32 upstream)."""
    model, params = vit
    loss = models.make_classifier_loss(model)
    x = np.zeros((2, 28, 28, 1), np.float32)
    y = np.array([1, 2], np.int32)
    with jax.numpy_dtype_promotion("strict"):
        vals = jax.jit(jax.vmap(loss, in_axes=(None, 0)))(params, (x, y))
        g = jax.jit(jax.grad(lambda p: jnp.mean(jax.vmap(loss, in_axes=(None, 0))(p, (x, y)))))(params)
    assert vals.shape == (2,) and vals.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g))


def test_family_of_a_named_config_draws_no_weights(monkeypatch):
    """A Family is functions of the config: building one draws no random model (its weights come
    from a checkpoint or from Family.init)."""
    from zkapex_jax import family
    from zkapex_jax.models import hf

    def boom(*a, **k):
        raise AssertionError("drew a random model")

    monkeypatch.setattr(hf, "build_model", boom)
    fam = family("opt-test", num_hidden_layers=1, vocab_size=48)  # overrides of its own: not a cached family
    assert fam.kind == "lm" and hf.model_type(fam.model.config) == "opt"
    shapes = flatten_params(fam.param_shapes())
    assert shapes["model/decoder/embed_tokens/embedding"].shape[0] == 48
    with pytest.raises(AssertionError, match="drew a random model"):
        fam.init(0)
