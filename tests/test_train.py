"""Training: layer-wise lr factors, schedule, AdamW update scaling and weight-decay mask
(against hand-computed values), the vmapped train step, fit / accuracy / evaluate, orbax
checkpoints (round trip, corruption)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zkapex_jax import models
from zkapex_jax.models import train
from zkapex_jax._errors import ArtifactError, ShapeError, ZkapexError
from zkapex_jax.core.params import flatten_params

from conftest import build_model_cached


def _toy_params(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)  # noqa: E731
    return {
        "embeddings": {"kernel": f(3, 4)},
        "encoder": {"layer": {"0": {"kernel": f(4, 4), "bias": f(4)}, "1": {"kernel": f(4, 4), "bias": f(4)}}},
        "head": {"kernel": f(4, 2), "bias": f(2)},
    }


def _toy_loss(params, example):
    """Squared error of a 3-layer linear net for ONE example x (3,), y (2,)."""
    x, y = example
    h = x @ params["embeddings"]["kernel"]
    for i in ("0", "1"):
        h = h @ params["encoder"]["layer"][i]["kernel"] + params["encoder"]["layer"][i]["bias"]
    out = h @ params["head"]["kernel"] + params["head"]["bias"]
    return jnp.sum((out - y) ** 2)


def _toy_data(n=37, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    w = rng.standard_normal((3, 2)).astype(np.float32)
    return x, (x @ w).astype(np.float32)


def test_layer_ids_vit_and_opt():
    n = 12
    assert train.layer_id("vit/embeddings/patch_embeddings/projection/kernel", n) == 0
    assert train.layer_id("vit/embeddings/cls_token", n) == 0
    assert train.layer_id("vit/encoder/layer/0/intermediate/dense/kernel", n) == 1
    assert train.layer_id("vit/encoder/layer/11/output/dense/bias", n) == 12
    assert train.layer_id("vit/layernorm/scale", n) == 13
    assert train.layer_id("classifier/kernel", n) == 13
    assert train.layer_id("model/decoder/embed_tokens/embedding", n) == 0
    assert train.layer_id("model/decoder/embed_positions/embedding", n) == 0
    assert train.layer_id("model/decoder/layers/3/fc1/kernel", n) == 4
    assert train.layer_id("model/decoder/final_layer_norm/bias", n) == 13


def test_layer_lr_scales_vit():
    params = models.param_shapes("vit-test")
    s = train.layer_lr_scales(params, 0.8)
    assert s["classifier/kernel"] == 1.0 and s["vit/layernorm/scale"] == 1.0
    assert s["vit/encoder/layer/1/intermediate/dense/kernel"] == pytest.approx(0.8)
    assert s["vit/encoder/layer/0/attention/attention/query/kernel"] == pytest.approx(0.64)
    assert s["vit/embeddings/position_embeddings"] == pytest.approx(0.512)
    assert set(train.layer_lr_scales(params, None).values()) == {1.0}
    custom = train.layer_lr_scales(params, 0.5, layer_of=lambda p: 1 if p.startswith("classifier") else 0)
    assert custom["classifier/bias"] == 1.0 and custom["vit/layernorm/bias"] == 0.5
    with pytest.raises(ZkapexError, match="layer_decay"):
        train.layer_lr_scales(params, 1.5)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_schedule_values(decay):
    lr, total, warm = 0.1, 13, 3
    sched = train.make_schedule(lr, total, warm, decay=decay)
    for t in range(total + 2):
        if t < warm:
            want = lr * t / warm
        else:
            frac = min((t - warm) / (total - warm), 1.0)
            want = lr * (0.5 * (1 + np.cos(np.pi * frac)) if decay == "cosine" else 1 - frac)
        assert float(sched(t)) == pytest.approx(want, abs=1e-7), t
    with pytest.raises(ZkapexError):
        train.make_schedule(lr, 10, decay="step")


def test_optimizer_layerwise_update_scaling():
    """With layer decay d, each leaf's AdamW update is d**(top - id) times the undecayed one."""
    params = _toy_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3) * jnp.sign(p + 0.1), params)
    kw = dict(lr=0.01, total_steps=10, warmup_steps=0, weight_decay=0.1)
    base = train.make_optimizer(params, **kw)
    dec = train.make_optimizer(params, layer_decay=0.5, **kw)
    u0, _ = base.update(grads, base.init(params), params)
    u1, _ = dec.update(grads, dec.init(params), params)
    scales = train.layer_lr_scales(params, 0.5)
    assert scales == {"embeddings/kernel": 0.125, "encoder/layer/0/bias": 0.25, "encoder/layer/0/kernel": 0.25,
                      "encoder/layer/1/bias": 0.5, "encoder/layer/1/kernel": 0.5, "head/bias": 1.0,
                      "head/kernel": 1.0}
    f0, f1 = flatten_params(u0), flatten_params(u1)
    for p, s in scales.items():
        np.testing.assert_allclose(f1[p], s * f0[p], rtol=1e-6)


def test_weight_decay_mask_kernels_only():
    """Zero gradients: AdamW's update is -lr * wd * w on kernels and 0 on biases."""
    params = _toy_params()
    opt = train.make_optimizer(params, lr=0.5, total_steps=5, warmup_steps=0, weight_decay=0.1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    upd, _ = opt.update(zeros, opt.init(params), params)
    fu, fp = flatten_params(upd), flatten_params(params)
    for p in fu:
        want = -0.5 * 0.1 * np.asarray(fp[p]) if p.endswith("kernel") else np.zeros_like(fp[p])
        np.testing.assert_allclose(fu[p], want, rtol=1e-6, atol=1e-8)


def test_train_step_matches_batch_gradient():
    params = _toy_params()
    x, y = _toy_data(8)
    opt = optax.sgd(0.1)
    step = jax.jit(train.make_train_step(_toy_loss, opt))
    p1, _, loss = step(params, opt.init(params), (x, y))
    per_ex = np.array([float(_toy_loss(params, (x[i], y[i]))) for i in range(8)])
    assert float(loss) == pytest.approx(per_ex.mean(), rel=1e-5)

    def batch_loss(p):
        return jnp.mean(jnp.stack([_toy_loss(p, (x[i], y[i])) for i in range(8)]))

    g = jax.grad(batch_loss)(params)
    want = jax.tree.map(lambda p, gg: p - 0.1 * gg, params, g)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # zero weights exclude padded examples exactly
    w = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)
    _, _, lw = step(params, opt.init(params), (x, y), w)
    assert float(lw) == pytest.approx(per_ex[:5].mean(), rel=1e-5)


def test_fit_reduces_loss_and_is_deterministic():
    params = _toy_params()
    data = _toy_data(37)  # 37 = 4 full batches of 8 + a padded batch of 5
    epochs, bs = 15, 8
    opt = train.make_optimizer(params, lr=0.03, total_steps=epochs * train.steps_per_epoch(37, bs),
                               warmup_steps=3, weight_decay=0.0, layer_decay=0.8)
    calls = []
    out, hist = train.fit(_toy_loss, params, data, optimizer=opt, epochs=epochs, batch_size=bs,
                          key=jax.random.PRNGKey(0), eval_fn=lambda p: calls.append(1) or len(calls))
    assert len(hist["loss"]) == epochs and len(hist["step_loss"]) == epochs * 5
    assert hist["eval"] == list(range(1, epochs + 1))
    first = train.evaluate(_toy_loss, params, data, batch_size=16)
    last = train.evaluate(_toy_loss, out, data, batch_size=16)
    assert last < 0.2 * first
    out2, hist2 = train.fit(_toy_loss, params, data, optimizer=opt, epochs=2, batch_size=bs, key=jax.random.PRNGKey(0))
    assert hist2["step_loss"] == hist["step_loss"][:10]  # same key, same shuffles
    json.dumps(hist)
    # resuming from the returned state continues the same run
    p_a, _, st = train.fit(_toy_loss, params, data, optimizer=opt, epochs=2, batch_size=bs,
                           key=jax.random.PRNGKey(0), return_state=True)
    counts = [int(leaf) for leaf in jax.tree.leaves(st) if np.ndim(leaf) == 0]
    assert counts and all(c == 10 for c in counts)  # 2 epochs x 5 steps
    np.testing.assert_array_equal(flatten_params(p_a)["head/kernel"], flatten_params(out2)["head/kernel"])
    with pytest.raises(ShapeError):
        train.fit(_toy_loss, params, (data[0], data[1][:5]), optimizer=opt, epochs=1, batch_size=4,
                  key=jax.random.PRNGKey(0))


def test_fit_recipe_compiles_one_step_per_recipe_and_reuses_it():
    """A second training with the same loss, recipe and parameter structure reuses the compiled
    step (the retrain baseline's personalization, another seed) and trains exactly as a fresh
    step does; another recipe gets its own."""
    from zkapex_jax.protocol.provider import Recipe, fit_recipe

    def loss(p, ex):  # a function of this test only: its cache entry starts empty
        return _toy_loss(p, ex)

    params, data = _toy_params(), _toy_data(16)
    r1, r2 = Recipe(epochs=2, lr=0.03, batch=8, warmup=1), Recipe(epochs=2, lr=0.01, batch=8, warmup=1)
    a, _ = fit_recipe(loss, params, data, r1, key=jax.random.PRNGKey(0))
    steps = dict(train._JIT_CACHE[loss])
    b, _ = fit_recipe(loss, params, data, r1, key=jax.random.PRNGKey(0))
    assert dict(train._JIT_CACHE[loss]) == steps and len(steps) == 1
    c, _ = fit_recipe(loss, params, data, r2, key=jax.random.PRNGKey(0))
    assert len(train._JIT_CACHE[loss]) == 2
    opt = train.make_optimizer(params, lr=0.03, total_steps=4, warmup_steps=1, weight_decay=r1.weight_decay)
    fresh, _ = train.fit(loss, params, data, optimizer=opt, epochs=2, batch_size=8, key=jax.random.PRNGKey(0))
    for p in flatten_params(a):
        np.testing.assert_allclose(flatten_params(b)[p], flatten_params(a)[p], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(flatten_params(fresh)[p], flatten_params(a)[p], rtol=1e-6, atol=1e-7)
    assert not np.allclose(flatten_params(c)["head/kernel"], flatten_params(a)["head/kernel"])


def test_evaluate_and_accuracy_oracles():
    params = _toy_params()
    x, y = _toy_data(23)
    want = np.mean([float(_toy_loss(params, (x[i], y[i]))) for i in range(23)])
    assert train.evaluate(_toy_loss, params, (x, y), batch_size=5) == pytest.approx(want, rel=1e-5)

    rng = np.random.default_rng(0)
    xs = rng.standard_normal((23, 4)).astype(np.float32)
    ys = rng.integers(0, 3, 23)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    predict = lambda p, xb: xb @ p  # noqa: E731
    oracle = float(np.mean(np.argmax(xs.astype(np.float64) @ w, 1) == ys))
    for bs in (1, 5, 23, 100):
        assert train.accuracy(predict, w, xs, ys, batch_size=bs) == pytest.approx(oracle)
    with pytest.raises(ShapeError):
        train.accuracy(predict, w, xs, ys[:3])


def test_vit_few_steps_reduce_loss():
    model, params = build_model_cached("vit-test", seed=0)
    rng = np.random.default_rng(0)
    y = np.arange(16) % 4
    x = (rng.random((16, 28, 28, 1)) * 0.2).astype(np.float32)
    for i, c in enumerate(y):  # class c lights up quadrant c
        x[i, 14 * (c // 2) : 14 * (c // 2) + 14, 14 * (c % 2) : 14 * (c % 2) + 14] += 0.7
    loss = models.make_classifier_loss(model)
    opt = train.make_optimizer(params, lr=1e-2, total_steps=40, warmup_steps=3, layer_decay=0.8)
    before = train.evaluate(loss, params, (x, y))
    out, hist = train.fit(loss, params, (x, y), optimizer=opt, epochs=10, batch_size=4, key=jax.random.PRNGKey(1))
    after = train.evaluate(loss, out, (x, y))
    assert after < 0.75 * before  # measured: 2.31 -> 1.41 (ln 4 = 1.39: the 4 used classes found)
    assert hist["loss"][-1] < hist["loss"][0]


def test_checkpoint_roundtrip_and_overwrite(tmp_path):
    _, params = build_model_cached("vit-test")
    path = tmp_path / "ckpt"
    train.save_checkpoint(path, params, {"epochs": 3, "name": "vit-test"})
    p2, meta = train.load_checkpoint(path)
    assert meta == {"epochs": 3, "name": "vit-test"}
    f1, f2 = flatten_params(params), flatten_params(p2)
    assert list(f1) == list(f2)
    for k in f1:
        np.testing.assert_array_equal(np.asarray(f1[k]), f2[k])
    on_disk = json.loads((path / "meta.json").read_text())
    assert on_disk["format"] == train.CHECKPOINT_FORMAT and on_disk["version"] == train.CHECKPOINT_VERSION
    assert on_disk["sha256"] == train.params_sha256(params)
    # overwrite with different params; nothing temporary left behind
    p3 = jax.tree.map(lambda a: a + 1, params)
    train.save_checkpoint(path, p3, {"epochs": 4})
    p4, meta4 = train.load_checkpoint(path)
    assert meta4 == {"epochs": 4}
    assert train.params_sha256(p4) == train.params_sha256(p3) != train.params_sha256(params)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    with pytest.raises(ZkapexError, match="JSON"):
        train.save_checkpoint(tmp_path / "bad", params, {"x": object()})
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def _edit_meta(path, fn):
    rec = json.loads((path / "meta.json").read_text())
    fn(rec)
    (path / "meta.json").write_text(json.dumps(rec))


@pytest.mark.parametrize(
    "corrupt, msg",
    [
        ("sha", "sha256"),
        ("format", "format"),
        ("version", "version"),
        ("shape", "params|restored|sha256"),
        ("nometa", "meta.json"),
        ("badjson", "not valid JSON"),
        ("noparams", "parameter directory"),
        ("missing", "does not exist"),
    ],
)
def test_checkpoint_corruption_raises(tmp_path, corrupt, msg):
    import shutil

    params = {"a": {"kernel": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)}, "b": jnp.ones(4, jnp.float32)}
    path = tmp_path / "ck"
    train.save_checkpoint(path, params)
    if corrupt == "sha":
        _edit_meta(path, lambda r: r.__setitem__("sha256", "0" * 64))
    elif corrupt == "format":
        _edit_meta(path, lambda r: r.__setitem__("format", "something.else"))
    elif corrupt == "version":
        _edit_meta(path, lambda r: r.__setitem__("version", 99))
    elif corrupt == "shape":
        _edit_meta(path, lambda r: r["tree"]["a/kernel"].__setitem__("shape", [3, 3]))
    elif corrupt == "nometa":
        os.remove(path / "meta.json")
    elif corrupt == "badjson":
        (path / "meta.json").write_text("{oops")
    elif corrupt == "noparams":
        shutil.rmtree(path / "params")
    elif corrupt == "missing":
        path = tmp_path / "nowhere"
    with pytest.raises(ArtifactError, match=msg) as ei:
        train.load_checkpoint(path)
    assert str(path) in str(ei.value) or "meta.json" in str(ei.value)


def test_load_or_train_trains_once_then_loads(tmp_path):
    """The studies' model cache: a path keyed by the settings; the first call trains and saves
    (with its time), the second loads the same parameters and meta without training."""
    from zkapex_jax.models.train import cache_path, load_or_train

    assert cache_path(None, "global-s0", {"a": 1}) is None
    p1 = cache_path(tmp_path, "global-s0", {"a": 1, "b": (2, 3)})
    assert p1 == cache_path(tmp_path, "global-s0", {"b": [2, 3], "a": 1})  # key order and tuples do not matter
    assert p1 != cache_path(tmp_path, "global-s0", {"a": 2, "b": (2, 3)})
    calls = []

    def train():
        calls.append(1)
        return {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"history": {"steps": 7}}

    params, meta, cached = load_or_train(p1, train, {"seed": 0})
    assert not cached and calls == [1] and meta["history"] == {"steps": 7} and meta["seed"] == 0
    assert meta["seconds"] >= 0
    again, meta2, cached2 = load_or_train(p1, train, {"seed": 0})
    assert cached2 and calls == [1] and meta2 == meta
    np.testing.assert_array_equal(np.asarray(again["w"]), params["w"])
    _, _, cached3 = load_or_train(None, train)
    assert not cached3 and calls == [1, 1]
