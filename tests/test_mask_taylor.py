"""The ``taylor_forget`` mask score (zkapex_jax.mask): hand-computed values, float64 oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax.mask import METHODS, Mask, compute_scores, score_second_order_neg, score_taylor_forget


def toy(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {"lin": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), dtype)}, "b": jnp.asarray(rng.normal(size=2), dtype)}
    forget = (jnp.asarray(rng.normal(size=(4, 3)), dtype), jnp.asarray(rng.normal(size=(4, 2)), dtype))
    return params, forget


def toy_loss(params, ex):
    x, y = ex
    r = x @ params["lin"]["kernel"] + params["b"] - y
    return 0.5 * jnp.sum(r * r)


def hand_moments(params, batch):
    """Per-example gradient of 0.5||xK + b - y||^2 w.r.t. K: the outer product x (xK + b - y)^T."""
    k, b = np.asarray(params["lin"]["kernel"]), np.asarray(params["b"])
    x, y = np.asarray(batch[0]), np.asarray(batch[1])
    g = np.stack([np.outer(x[i], x[i] @ k + b - y[i]) for i in range(len(x))])
    return g.mean(0), (g**2).mean(0)


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
    params, forget = toy(jnp.float64)
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
    params, forget = toy(jnp.float64, seed=3)
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
