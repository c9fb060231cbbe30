"""Pipeline stages on the `vit-test` model with tiny shapes, against float64 numpy oracles."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax.studies import image as P
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.data import Split
from zkapex_jax.core.fisher import blockwise_fisher

from conftest import jit_per_example_grads
from zkapex_jax.core.mask import Mask
from zkapex_jax.core.params import flatten_params

CFG = P.PipelineConfig.tiny(block_size=16)


@pytest.fixture(scope="module")
def params():
    return P.init_params(CFG, seed=0)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return Split(rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32))


def _random_mask(params, frac, seed=0):
    rng = np.random.default_rng(seed)
    flat = flatten_params(params)
    dense = {p: rng.random(flat[p].shape) < frac for p in P.block_layout(CFG, params).paths}
    return Mask.from_dense(dense, fraction=frac, method="random")


def _spd_fisher(layout, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(layout.num_blocks, 3 * layout.block_size, layout.block_size))
    f = np.einsum("bni,bnj->bij", g, g) / g.shape[1] + 1e-2 * np.eye(layout.block_size)
    return f


def test_config_tiny_and_replace():
    c = P.PipelineConfig.tiny()
    assert c.model == "vit-test" and c.mask_fraction == 0.04
    assert c.replace(block_size=8).block_size == 8 and c.block_size == 16
    assert P.PipelineConfig().to_dict()["mask_pattern"].endswith("intermediate/dense/kernel")


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.5])
def test_unlearn_matches_dense_float64_solve(params, frac):
    layout = P.block_layout(CFG, params)
    mask = _random_mask(params, frac, seed=1)
    fisher = _spd_fisher(layout)
    theta_u, info = P.unlearn(params, jnp.asarray(fisher, jnp.float32), mask, layout)
    theta = np.asarray(layout.to_blocks(flatten_params(params)), np.float64)
    mb = np.asarray(mask.to_blocks(layout))
    expect = theta.copy()
    for b in range(layout.num_blocks):
        m = np.flatnonzero(mb[b])
        if m.size == 0:
            continue
        cinv = np.linalg.inv(fisher[b])
        lam = np.linalg.solve(cinv[np.ix_(m, m)], theta[b, m])
        expect[b] = theta[b] - cinv[:, m] @ lam
        expect[b, m] = 0.0
    got_flat = flatten_params(theta_u)
    got = np.asarray(layout.to_blocks(got_flat))
    np.testing.assert_allclose(got, expect, rtol=2e-3, atol=2e-5)
    assert np.all(got[mb] == 0.0)
    # leaves outside the layout are untouched
    for p, v in flatten_params(params).items():
        if p not in layout.paths:
            np.testing.assert_array_equal(got_flat[p], v)
    assert info["num_masked"] == mask.num_masked and info["max_residual"] < 1e-3


def test_mask_only_zeroes_exactly(params):
    mask = _random_mask(params, 0.3, seed=2)
    out = flatten_params(P.mask_only(params, mask))
    src = flatten_params(params)
    for p, m in mask.dense().items():
        m = np.asarray(m)
        assert np.all(np.asarray(out[p])[m] == 0.0)
        np.testing.assert_array_equal(np.asarray(out[p])[~m], np.asarray(src[p])[~m])


def test_predict_logits_batches_like_one_call(params):
    x = _images(13).x
    fns = P.model_fns(CFG.model)
    got = P.predict_logits(CFG, params, x, batch_size=5)
    np.testing.assert_allclose(got, np.asarray(fns.predict(params, x)), rtol=1e-5, atol=1e-5)


def test_client_fisher_matches_blockwise_oracle(params):
    data = types.SimpleNamespace(personal_train=_images(10, seed=3))
    layout = P.block_layout(CFG, params)
    got = P.client_fisher(CFG.replace(fisher_chunk=4, damping=1e-4), params, data, layout)
    fns = P.model_fns(CFG.model)
    g = jit_per_example_grads(fns.loss, params, tuple(data.personal_train), wrt=CFG.mask_pattern)
    gb = np.asarray(layout.to_blocks_batched(g), np.float64).reshape(10, -1)
    ref = np.asarray(blockwise_fisher(jnp.asarray(gb, jnp.float32), layout.block_size, damping=1e-4))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("frac", [0.04, 0.25])
def test_provider_mask_size_and_reuse_of_scores(params, frac):
    split = _images(12, seed=4)
    half = Split(split.x[:6], np.full(6, 5, np.int32))
    rest = Split(split.x[6:], np.full(6, 1, np.int32))
    data = types.SimpleNamespace(forget_train=half, retain_train=rest)
    cfg = CFG.replace(n_mask_forget=6, n_mask_retain=6, fisher_chunk=3)
    scores = P.provider_scores(cfg, params, data)
    mask = P.provider_mask(cfg, params, data, scores=scores, fraction=frac)
    layout = P.block_layout(cfg, params)
    assert mask.num_masked == int(np.floor(frac * layout.size + 0.5))
    again = P.provider_mask(cfg, params, data, fraction=frac)
    assert again == mask


def test_subsample_is_seeded_subset():
    split = _images(20, seed=5)
    a = P._subsample(split, 7, seed=1)
    b = P._subsample(split, 7, seed=1)
    assert a.n == 7 and np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert P._subsample(split, None, seed=1) is split and P._subsample(split, 50, seed=1) is split


def test_block_layout_override(params):
    lay = P.block_layout(CFG, params, block_size=8)
    assert isinstance(lay, BlockLayout) and lay.block_size == 8 and lay.order == "out_in"
