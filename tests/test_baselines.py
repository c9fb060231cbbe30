"""Baselines on a tiny softmax-regression model against float64 numpy oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax import ShapeError, UnknownParameterError
from zkapex_jax.studies import baselines as B

D, K = 6, 4


def loss_fn(params, example):
    x, y = example
    logits = x @ params["dense"]["kernel"] + params["dense"]["bias"]
    return -jax.nn.log_softmax(logits)[y]


def make(seed=0, n=23):
    rng = np.random.default_rng(seed)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(D, K)) * 0.5, jnp.float32),
                        "bias": jnp.asarray(rng.normal(size=(K,)) * 0.1, jnp.float32)}}
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = rng.integers(0, K, size=n).astype(np.int32)
    return params, (x, y)


def np_per_example_grads(params, data):
    """float64 oracle: per-example gradients of the softmax CE for a linear model."""
    W = np.asarray(params["dense"]["kernel"], np.float64)
    b = np.asarray(params["dense"]["bias"], np.float64)
    x, y = data
    x = np.asarray(x, np.float64)
    z = x @ W + b
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    r = p - np.eye(K)[y]
    return np.einsum("nd,nk->ndk", x, r), r  # (N, D, K), (N, K)


def np_loss(params, data):
    W = np.asarray(params["dense"]["kernel"], np.float64); b = np.asarray(params["dense"]["bias"], np.float64)
    x, y = data
    z = np.asarray(x, np.float64) @ W + b
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float(np.mean(lse - z[np.arange(len(y)), y]))


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_mean_grad_and_diag_fisher_match_oracle(chunk):
    params, data = make()
    gw, gb = np_per_example_grads(params, data)
    with jax.numpy_dtype_promotion("strict"):
        mg = B.mean_grad(loss_fn, params, data, chunk_size=chunk)
        df = B.diag_fisher(loss_fn, params, data, chunk_size=chunk)
    np.testing.assert_allclose(mg["dense"]["kernel"], gw.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mg["dense"]["bias"], gb.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(df["dense"]["kernel"], (gw ** 2).mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(df["dense"]["bias"], (gb ** 2).mean(0), rtol=1e-4, atol=1e-7)


def _mask(seed=0):
    rng = np.random.default_rng(seed)
    return {"dense/kernel": rng.random((D, K)) < 0.3}


def test_mask_only_zeroes_exactly_and_keeps_rest():
    params, _ = make()
    m = _mask()
    out = B.mask_only(params, m)
    k = np.asarray(out["dense"]["kernel"])
    assert np.all(k[m["dense/kernel"]] == 0.0)
    np.testing.assert_array_equal(k[~m["dense/kernel"]], np.asarray(params["dense"]["kernel"])[~m["dense/kernel"]])
    np.testing.assert_array_equal(out["dense"]["bias"], params["dense"]["bias"])


def test_protocol_and_study_mask_only_are_one_operation():
    """The client's mask-only model (from a published Mask) and the studies' (from a dense mask)
    are the same arrays, and both equal the numpy oracle."""
    from zkapex_jax.core.mask import Mask
    from zkapex_jax.protocol import client

    params, _ = make()
    m = _mask(1)
    mask = Mask.from_dense(m, fraction=float(m["dense/kernel"].mean()), method="salun")
    a, b = B.mask_only(params, m), client.mask_only(params, mask)
    want = np.where(m["dense/kernel"], 0.0, np.asarray(params["dense"]["kernel"]))
    for out in (a, b):
        np.testing.assert_array_equal(np.asarray(out["dense"]["kernel"]), want)
        np.testing.assert_array_equal(np.asarray(out["dense"]["bias"]), np.asarray(params["dense"]["bias"]))


def test_mask_errors():
    params, _ = make()
    with pytest.raises(UnknownParameterError):
        B.mask_only(params, {"nope/kernel": np.zeros((D, K), bool)})
    with pytest.raises(ShapeError):
        B.mask_only(params, {"dense/kernel": np.zeros((K, D), bool)})


@pytest.mark.parametrize("wrt", [None, "dense/kernel"])
def test_finetune_after_mask_holds_mask_and_lowers_loss(wrt):
    params, data = make(n=64)
    m = _mask(1)
    # (no strict promotion here: optax's adam bias correction mixes int32 counts and floats)
    out, info = B.finetune_after_mask(loss_fn, params, m, data, steps=60, lr=5e-2, batch_size=64,
                                      key=jax.random.PRNGKey(0), wrt=wrt)
    k = np.asarray(out["dense"]["kernel"])
    assert np.all(k[m["dense/kernel"]] == 0.0)
    assert np.any(k[~m["dense/kernel"]] != np.asarray(params["dense"]["kernel"])[~m["dense/kernel"]])
    if wrt is not None:
        np.testing.assert_array_equal(out["dense"]["bias"], params["dense"]["bias"])
    assert np_loss(out, data) < np_loss(B.mask_only(params, m), data)
    assert len(info["losses"]) == 60


def test_gradient_ascent_one_step_is_sgd_on_negative_loss():
    params, data = make(n=16)
    lr = 0.3
    with jax.numpy_dtype_promotion("strict"):
        out, info = B.gradient_ascent(loss_fn, params, data, steps=1, lr=lr, batch_size=16, key=jax.random.PRNGKey(0))
    gw, gb = np_per_example_grads(params, data)
    np.testing.assert_allclose(out["dense"]["kernel"], np.asarray(params["dense"]["kernel"]) + lr * gw.mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["dense"]["bias"], np.asarray(params["dense"]["bias"]) + lr * gb.mean(0),
                               rtol=1e-5, atol=1e-6)
    assert info["losses"][0] == pytest.approx(np_loss(params, data), rel=1e-5)


def test_gradient_ascent_raises_forget_loss_and_respects_wrt_and_cap():
    params, data = make(n=32)
    out, _ = B.gradient_ascent(loss_fn, params, data, steps=20, lr=0.1, batch_size=8,
                               key=jax.random.PRNGKey(1), wrt="dense/bias")
    np.testing.assert_array_equal(out["dense"]["kernel"], params["dense"]["kernel"])
    assert np_loss(out, data) > np_loss(params, data)
    capped, _ = B.gradient_ascent(loss_fn, params, data, steps=5, lr=0.1, batch_size=32,
                                  key=jax.random.PRNGKey(1), max_loss=0.0)
    np.testing.assert_array_equal(capped["dense"]["kernel"], params["dense"]["kernel"])


@pytest.mark.parametrize("alpha,lam", [(1.0, 1.0), (2.0, 0.5), (0.5, 3.0)])
def test_ssd_matches_numpy_oracle(alpha, lam):
    params, forget = make(seed=3, n=20)
    _, retain = make(seed=4, n=30)
    with jax.numpy_dtype_promotion("strict"):
        out, info = B.ssd(loss_fn, params, forget, retain, alpha=alpha, lam=lam, chunk_size=7)
    for leaf, idx in (("kernel", 0), ("bias", 1)):
        ff = (np_per_example_grads(params, forget)[idx] ** 2).mean(0)
        fr = (np_per_example_grads(params, retain)[idx] ** 2).mean(0)
        w = np.asarray(params["dense"][leaf], np.float64)
        sel = ff > alpha * fr
        expect = np.where(sel, w * np.minimum(lam * fr / ff, 1.0), w)
        np.testing.assert_allclose(out["dense"][leaf], expect, rtol=1e-4, atol=1e-6)
    assert info["n_weights"] == D * K + K


def test_ssd_importances_computed_once_give_the_same_dampening():
    """A sweep over (α, λ) reuses one (F_f, F_r): the same weights as computing them per call;
    importances of another model (missing leaves) or α, λ ≤ 0 are refused."""
    params, forget = make(seed=3, n=20)
    _, retain = make(seed=4, n=30)
    imp = B.ssd_importances(loss_fn, params, forget, retain, chunk_size=7)
    for alpha, lam in ((1.0, 1.0), (0.5, 3.0)):
        a, ia = B.ssd(loss_fn, params, forget, retain, alpha=alpha, lam=lam, chunk_size=7)
        b, ib = B.ssd(loss_fn, params, None, None, alpha=alpha, lam=lam, importances=imp)
        assert ia == ib and ia["n_dampened"] > 0
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(a["dense"][leaf], b["dense"][leaf], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="cover"):
        B.ssd(loss_fn, params, None, None, importances=({"dense": {"kernel": imp[0]["dense"]["kernel"]}}, imp[1]))
    with pytest.raises(ValueError, match="alpha > 0"):
        B.ssd(loss_fn, params, None, None, alpha=0.0, importances=imp)


def test_random_labels_always_differ():
    y = np.arange(100) % K
    x = np.zeros((100, D), np.float32)
    _, y2 = B.random_labels(K)(( x, jnp.asarray(y, jnp.int32)), jax.random.PRNGKey(0))
    y2 = np.asarray(y2)
    assert np.all(y2 != y) and y2.min() >= 0 and y2.max() < K
    with pytest.raises(ShapeError):
        B.random_labels(1)


def test_salun_updates_only_salient_weights():
    params, forget = make(seed=5, n=24)
    _, retain = make(seed=6, n=24)
    frac = 0.25
    out, info = B.salun(loss_fn, params, forget, retain, relabel=B.random_labels(K), fraction=frac,
                        steps=10, lr=1e-2, batch_size=8, key=jax.random.PRNGKey(0), wrt="dense/kernel")
    gw, _ = np_per_example_grads(params, forget)
    sal = np.abs(gw.mean(0))
    k = int(round(frac * sal.size))
    assert info["n_salient"] == k
    top = sal >= np.sort(sal.ravel())[-k]
    changed = np.asarray(out["dense"]["kernel"]) != np.asarray(params["dense"]["kernel"])
    assert not np.any(changed & ~top) and np.any(changed)
    np.testing.assert_array_equal(out["dense"]["bias"], params["dense"]["bias"])
    with pytest.raises(ShapeError):
        B.salun(loss_fn, params, forget, retain, relabel=B.random_labels(K), fraction=0.0, steps=1,
                key=jax.random.PRNGKey(0))
