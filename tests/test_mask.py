"""Mask scores (vs hand-computed values), top-k counts and ties, the Mask artifact."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax._errors import ArtifactError, MaskMismatchError, NonFiniteError
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.mask import (
    METHODS,
    Mask,
    compute_scores,
    score_salun,
    score_second_order_neg,
    score_ssd,
    score_taylor_forget,
    top_k_count,
    top_k_mask,
)


# ---------------------------------------------------------------- scores on a toy linear model
def toy(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {"lin": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), dtype)}, "b": jnp.asarray(rng.normal(size=2), dtype)}
    forget = (jnp.asarray(rng.normal(size=(4, 3)), dtype), jnp.asarray(rng.normal(size=(4, 2)), dtype))
    retain = (jnp.asarray(rng.normal(size=(5, 3)), dtype), jnp.asarray(rng.normal(size=(5, 2)), dtype))
    return params, forget, retain


def toy_loss(params, ex):
    x, y = ex
    r = x @ params["lin"]["kernel"] + params["b"] - y
    return 0.5 * jnp.sum(r * r)


def hand_moments(params, batch):
    """Per-example gradient of 0.5||xK + b - y||^2 w.r.t. K is the outer product x (xK + b - y)^T."""
    k, b = np.asarray(params["lin"]["kernel"]), np.asarray(params["b"])
    x, y = np.asarray(batch[0]), np.asarray(batch[1])
    g = np.stack([np.outer(x[i], x[i] @ k + b - y[i]) for i in range(len(x))])
    return g.mean(0), (g**2).mean(0)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_scores_match_hand_computed(x64, chunk_size):
    params, forget, retain = toy(jnp.float64)
    w = np.asarray(params["lin"]["kernel"])
    gf, sqf = hand_moments(params, forget)
    gr, sqr = hand_moments(params, retain)
    h, r, damp = 0.4485, 2.0, 1e-8
    sf = gf * w - h * (sqf + damp) * w**2
    sr = gr * w - h * (sqr + damp) * w**2
    ref = {
        "second_order_neg": sf / (r * sr + 1e-12),
        "salun": np.abs(gf),
        "ssd": (sqf + damp) / (sqr + damp + 1e-12),
    }
    for method, want in ref.items():
        got = compute_scores(toy_loss, params, forget, retain, wrt="lin/kernel", method=method, chunk_size=chunk_size)
        assert list(got) == ["lin/kernel"]
        np.testing.assert_allclose(np.asarray(got["lin/kernel"]), want, rtol=1e-10)
    # other constants
    got = compute_scores(toy_loss, params, forget, retain, wrt="lin/*", h=0.5, r=1.5, damping=1e-3)
    sf = gf * w - 0.5 * (sqf + 1e-3) * w**2
    sr = gr * w - 0.5 * (sqr + 1e-3) * w**2
    np.testing.assert_allclose(np.asarray(got["lin/kernel"]), sf / (1.5 * sr + 1e-12), rtol=1e-10)


def test_score_functions_elementwise(strict):
    w, gf, ff, gr, fr = (jnp.asarray(v, jnp.float32) for v in ([2.0], [0.5], [0.25], [1.0], [0.1]))
    # s_f = 0.5*2 - h*0.25*4 = 1 - h ; s_r = 1*2 - h*0.1*4 = 2 - 0.4h
    h, r = 0.4485, 2.0
    np.testing.assert_allclose(np.asarray(score_second_order_neg(w, gf, ff, gr, fr)), [(1 - h) / (r * (2 - 0.4 * h) + 1e-12)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(score_salun(jnp.asarray([-3.0, 2.0]))), [3.0, 2.0])
    np.testing.assert_allclose(np.asarray(score_ssd(jnp.asarray([1.0]), jnp.asarray([4.0]))), [0.25], rtol=1e-6)


def test_compute_scores_errors(strict):
    params, forget, retain = toy(jnp.float32)
    with pytest.raises(ValueError, match="unknown score method"):
        compute_scores(toy_loss, params, forget, retain, wrt="lin/kernel", method="magnitude")
    with pytest.raises(ValueError, match="retain"):
        compute_scores(toy_loss, params, forget, None, wrt="lin/kernel", method="ssd")
    out = compute_scores(toy_loss, params, forget, None, wrt="lin/kernel", method="salun")
    assert out["lin/kernel"].shape == (3, 2)


# ---------------------------------------------------------------- top-k
def test_top_k_count_rounding():
    assert top_k_count(0.04, 2_359_296) == 94_372  # 94371.84
    assert top_k_count(0.5, 5) == 3  # 2.5 rounds half up
    assert top_k_count(0.25, 6) == 2  # 1.5 -> 2
    assert top_k_count(0.1, 3) == 0 and top_k_count(1.0, 7) == 7 and top_k_count(0.0, 7) == 0
    with pytest.raises(ValueError):
        top_k_count(1.5, 3)
    with pytest.raises(ValueError):
        top_k_count(float("nan"), 3)


@pytest.mark.parametrize("fraction", [0.0, 0.04, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("scope", ["global", "per_param"])
def test_top_k_counts_and_order(fraction, scope):
    rng = np.random.default_rng(3)
    scores = {"b/k": rng.normal(size=(7, 5)), "a/k": rng.normal(size=(4, 6)), "c": rng.normal(size=(11,))}
    m = top_k_mask(scores, fraction, scope=scope)
    assert list(m) == ["a/k", "b/k", "c"]
    for p in scores:
        assert m[p].shape == scores[p].shape and m[p].dtype == jnp.bool_
    if scope == "global":
        total = sum(v.size for v in scores.values())
        assert sum(int(m[p].sum()) for p in m) == top_k_count(fraction, total)
        sel = np.concatenate([np.asarray(scores[p])[np.asarray(m[p])] for p in m])
        rest = np.concatenate([np.asarray(scores[p])[~np.asarray(m[p])] for p in m])
        if sel.size and rest.size:
            assert sel.min() > rest.max()
    else:
        for p in scores:
            assert int(m[p].sum()) == top_k_count(fraction, scores[p].size)
            s, mm = np.asarray(scores[p]), np.asarray(m[p])
            if mm.any() and (~mm).any():
                assert s[mm].min() > s[~mm].max()


def test_top_k_ties_are_deterministic_lowest_index():
    scores = {"a": np.ones((2, 3)), "b": np.ones(4)}
    m = top_k_mask(scores, 0.5, scope="global")  # k = 5 of 10, all tied
    flat = np.concatenate([np.asarray(m["a"]).reshape(-1), np.asarray(m["b"])])
    assert flat.tolist() == [True] * 5 + [False] * 5
    s = {"a": np.array([3.0, 1.0, 2.0, 2.0, 2.0, 0.0])}
    m = top_k_mask(s, 0.5)  # k = 3: the 3.0 and the first two 2.0
    assert np.asarray(m["a"]).tolist() == [True, False, True, True, False, False]


def test_top_k_errors():
    with pytest.raises(NonFiniteError, match="'a'"):
        top_k_mask({"a": np.array([1.0, np.nan])}, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        top_k_mask({"a": np.ones(3)}, -0.1)
    with pytest.raises(ValueError, match="scope"):
        top_k_mask({"a": np.ones(3)}, 0.1, scope="layer")
    with pytest.raises(ValueError, match="no scores"):
        top_k_mask({}, 0.1)


# ---------------------------------------------------------------- artifact
def _mask():
    rng = np.random.default_rng(5)
    scores = {"enc/l0/fc1/kernel": rng.normal(size=(4, 6)), "enc/l1/fc1/kernel": rng.normal(size=(4, 6))}
    return Mask.from_scores(scores, 0.25, method="second_order_neg", meta={"h": 0.4485, "r": 2.0})


def test_mask_from_scores_fields():
    m = _mask()
    assert m.paths == ("enc/l0/fc1/kernel", "enc/l1/fc1/kernel")
    assert m.shapes == ((4, 6), (4, 6)) and m.fraction == 0.25 and m.method == "second_order_neg"
    assert m.num_masked == 12 and m.size == 48 and m.meta["scope"] == "global"
    for p in m.paths:
        idx = m.indices[p]
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
        np.testing.assert_array_equal(np.flatnonzero(m.dense()[p].reshape(-1)), idx)


def test_save_load_round_trip(tmp_path):
    m = _mask()
    f = tmp_path / "mask.json"
    digest = m.save(f)
    assert sorted(os.listdir(tmp_path)) == ["mask.json"]  # no temp file left behind
    doc = json.loads(f.read_text())
    assert doc["format"] == "zkapex.mask" and doc["version"] == 1 and doc["sha256"] == digest == m.content_hash()
    assert doc["indices"]["enc/l0/fc1/kernel"] == m.indices["enc/l0/fc1/kernel"].tolist()
    m2 = Mask.load(f)
    assert m2 == m and m2.meta == m.meta
    for p in m.paths:
        np.testing.assert_array_equal(m2.indices[p], m.indices[p])


def _rewrite(f, mutate, rehash=False):
    import hashlib

    doc = json.loads(f.read_text())
    mutate(doc)
    if rehash:
        content = {k: v for k, v in doc.items() if k != "sha256"}
        doc["sha256"] = hashlib.sha256(
            json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        ).hexdigest()
    f.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "mutate,rehash,match",
    [
        (lambda d: d["indices"]["enc/l0/fc1/kernel"].__setitem__(0, 1), False, "sha256 mismatch"),
        (lambda d: d.__setitem__("fraction", 0.5), False, "sha256 mismatch"),
        (lambda d: d.__setitem__("format", "other"), True, "format"),
        (lambda d: d.__setitem__("version", 2), True, "version"),
        (lambda d: d.pop("meta"), True, "missing"),
        (lambda d: d.__setitem__("extra", 1), True, "unexpected"),
        (lambda d: d["indices"]["enc/l0/fc1/kernel"].append(99), True, "sorted, unique and in"),
        (lambda d: d["indices"]["enc/l0/fc1/kernel"].insert(0, 23), True, "sorted, unique and in"),
        (lambda d: d["shapes"].__setitem__(0, [4, -6]), True, "shape"),
        (lambda d: d.__setitem__("fraction", "a lot"), True, "fraction"),
        (lambda d: d["indices"].pop("enc/l1/fc1/kernel"), True, "indices cover"),
    ],
)
def test_tampered_or_malformed_file_rejected(tmp_path, mutate, rehash, match):
    f = tmp_path / "mask.json"
    _mask().save(f)
    _rewrite(f, mutate, rehash)
    with pytest.raises(ArtifactError, match=match) as e:
        Mask.load(f)
    assert str(f) in str(e.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        Mask.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON") as e:
        Mask.load(bad)
    assert "bad.json" in str(e.value)


def test_check_matches_and_to_blocks(strict):
    m = _mask()
    params = {"enc": {"l0": {"fc1": {"kernel": jnp.zeros((4, 6))}}, "l1": {"fc1": {"kernel": jnp.zeros((4, 6))}}}}
    m.check_matches(params)
    with pytest.raises(MaskMismatchError, match="not a parameter"):
        m.check_matches({"enc": {"l0": {"fc1": {"kernel": jnp.zeros((4, 6))}}}})
    params_bad = {"enc": {"l0": {"fc1": {"kernel": jnp.zeros((6, 4))}}, "l1": {"fc1": {"kernel": jnp.zeros((4, 6))}}}}
    with pytest.raises(MaskMismatchError, match="shape"):
        m.check_matches(params_bad)
    for order in ("out_in", "in_out"):
        lay = BlockLayout.from_params(params, "enc/*/fc1/kernel", 4, order)
        blocks = m.to_blocks(lay)
        assert blocks.shape == (12, 4) and blocks.dtype == jnp.bool_
        np.testing.assert_array_equal(np.asarray(blocks), np.asarray(lay.to_blocks({p: jnp.asarray(v) for p, v in m.dense().items()})))
        assert int(blocks.sum()) == m.num_masked
    with pytest.raises(MaskMismatchError, match="differ"):
        m.to_blocks(BlockLayout.from_params(params, "enc/l0/fc1/kernel", 4))
    with pytest.raises(MaskMismatchError, match="shape"):
        m.to_blocks(BlockLayout(m.paths, ((6, 4), (4, 6)), 4))


# ---------------------------------------------------------------- the taylor_forget score

def test_method_registered():
    assert "taylor_forget" in METHODS and "second_order_neg" in METHODS


def test_score_taylor_forget_elementwise(strict):
    # w = 2, g = 0.5, F = 0.25: -0.5*2 + 0.5*0.25*4 = -1 + 0.5 = -0.5
    # w = -1, g = 0.3, F = 1.0: 0.3 + 0.5 = 0.8 ; w = 0: 0
    w, g, f = (jnp.asarray(v, jnp.float32) for v in ([2.0, -1.0, 0.0], [0.5, 0.3, 7.0], [0.25, 1.0, 3.0]))
    np.testing.assert_allclose(np.asarray(score_taylor_forget(w, g, f)), [-0.5, 0.8, 0.0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("damping", [1e-8, 1e-3])
def test_compute_scores_taylor_forget_matches_hand(x64, chunk_size, damping):
    params, forget, _ = toy(jnp.float64)
    w = np.asarray(params["lin"]["kernel"])
    g, sq = hand_moments(params, forget)
    want = -g * w + 0.5 * (sq + damping) * w**2
    # no retain batch needed
    got = compute_scores(toy_loss, params, forget, None, wrt="lin/kernel", method="taylor_forget",
                         damping=damping, chunk_size=chunk_size)
    assert list(got) == ["lin/kernel"]
    np.testing.assert_allclose(np.asarray(got["lin/kernel"]), want, rtol=1e-10, atol=1e-14)


def test_taylor_forget_is_first_order_exact_change(x64):
    """With tiny weights the quadratic term vanishes: the score -> -g w, the first-order change of
    the mean forget loss when a weight is zeroed (checked against the true change)."""
    params, forget, _ = toy(jnp.float64, seed=3)
    params = jax.tree.map(lambda a: 1e-4 * a, params)
    w = np.asarray(params["lin"]["kernel"])
    s = np.asarray(compute_scores(toy_loss, params, forget, None, wrt="lin/kernel", method="taylor_forget",
                                  damping=0.0)["lin/kernel"])
    mean_loss = lambda p: float(np.mean([toy_loss(p, (forget[0][i], forget[1][i])) for i in range(4)]))
    base = mean_loss(params)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            k = w.copy()
            k[i, j] = 0.0
            true = mean_loss({"lin": {"kernel": jnp.asarray(k)}, "b": params["b"]}) - base
            np.testing.assert_allclose(s[i, j], true, rtol=1e-3)


def test_taylor_forget_differs_from_second_order_neg(strict):
    # second_order_neg is kept as stated; the two scores are different functions
    w, gf, ff, gr, fr = (jnp.asarray(v, jnp.float32) for v in ([2.0], [0.5], [0.25], [1.0], [0.1]))
    assert not np.allclose(np.asarray(score_taylor_forget(w, gf, ff)), np.asarray(score_second_order_neg(w, gf, ff, gr, fr)))


def test_mask_from_taylor_scores_selects_largest_increase():
    scores = {"a/kernel": jnp.asarray([[0.1, -2.0], [3.0, 0.5]], jnp.float32)}
    m = Mask.from_scores(scores, 0.5, method="taylor_forget")
    assert m.method == "taylor_forget"
    np.testing.assert_array_equal(m.dense()["a/kernel"], [[False, False], [True, True]])
