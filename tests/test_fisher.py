"""Per-example gradients and the block-wise Fisher against exact oracles (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax._errors import NonFiniteError, ShapeError, UnknownParameterError
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.fisher import (
    accumulate_fisher,
    batch_size,
    blockwise_fisher,
    fisher_diagonal,
    grad_moments,
    per_example_grads,
)

N, DIN, DH, DOUT = 5, 4, 6, 3


def mlp_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense1": {"kernel": jnp.asarray(rng.normal(size=(DIN, DH)), dtype), "bias": jnp.asarray(rng.normal(size=DH), dtype)},
        "dense2": {"kernel": jnp.asarray(rng.normal(size=(DH, DOUT)), dtype), "bias": jnp.asarray(rng.normal(size=DOUT), dtype)},
    }


def mlp_loss(params, example):
    """Softmax cross-entropy of ONE example (x (DIN,), y int)."""
    x, y = example
    h = jnp.tanh(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
    logits = h @ params["dense2"]["kernel"] + params["dense2"]["bias"]
    return jax.nn.logsumexp(logits) - logits[y]


def make_batch(dtype, n=N, seed=1):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, DIN)), dtype), jnp.asarray(rng.integers(0, DOUT, size=n), jnp.int32)


def loop_grads(params, batch):
    """The oracle: a Python loop of jax.grad, one example at a time."""
    x, y = batch
    grad = jax.jit(jax.grad(mlp_loss))  # one compile, then one call per example
    return [grad(params, (x[i], y[i])) for i in range(x.shape[0])]


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3, 5, 7])
def test_per_example_equals_loop_and_mean_equals_batch_grad(x64, chunk_size):
    params, batch = mlp_params(jnp.float64), make_batch(jnp.float64)
    g = per_example_grads(mlp_loss, params, batch, chunk_size=chunk_size)
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(params)
    ref = loop_grads(params, batch)
    for i in range(N):
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref[i])):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-12, atol=1e-14)

    def batch_loss(p):
        return jnp.mean(jax.vmap(mlp_loss, in_axes=(None, 0))(p, batch))

    gb = jax.grad(batch_loss)(params)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(np.asarray(a).mean(0), np.asarray(b), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_wrt_selects_leaves_only(strict, chunk_size):
    params = mlp_params(jnp.float32)
    params["step"] = jnp.asarray(3, jnp.int32)  # not differentiable: must not be touched
    batch = make_batch(jnp.float32)
    g = per_example_grads(mlp_loss, params, batch, wrt="dense*/kernel", chunk_size=chunk_size)
    assert list(g) == ["dense1/kernel", "dense2/kernel"]
    ref = loop_grads({k: v for k, v in params.items() if k != "step"}, batch)
    for i in range(N):
        np.testing.assert_allclose(np.asarray(g["dense1/kernel"][i]), np.asarray(ref[i]["dense1"]["kernel"]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(g["dense2/kernel"][i]), np.asarray(ref[i]["dense2"]["kernel"]), rtol=1e-5, atol=1e-6)
    g2 = per_example_grads(mlp_loss, params, batch, wrt=["dense2/bias", "dense1/kernel"])
    assert list(g2) == ["dense1/kernel", "dense2/bias"] and g2["dense2/bias"].shape == (N, DOUT)


def test_per_example_is_jittable(strict):
    params, batch = mlp_params(jnp.float32), make_batch(jnp.float32)
    f = jax.jit(lambda p, b: per_example_grads(mlp_loss, p, b, wrt="dense1/*", chunk_size=2))
    g = f(params, batch)
    g0 = per_example_grads(mlp_loss, params, batch, wrt="dense1/*")
    for k in g0:
        np.testing.assert_allclose(np.asarray(g[k]), np.asarray(g0[k]), rtol=1e-5, atol=1e-5)


def test_per_example_errors(strict):
    params, (x, y) = mlp_params(jnp.float32), make_batch(jnp.float32)
    with pytest.raises(UnknownParameterError, match="nothing|no parameter"):
        per_example_grads(mlp_loss, params, (x, y), wrt="encoder/*")
    with pytest.raises(ShapeError, match="disagree"):
        per_example_grads(mlp_loss, params, (x, y[:3]))
    with pytest.raises(ShapeError, match="scalar"):
        per_example_grads(mlp_loss, params, (x, jnp.asarray(1)))
    with pytest.raises(ShapeError, match="N = 0"):
        batch_size((x[:0], y[:0]))
    with pytest.raises(ShapeError, match="chunk_size"):
        per_example_grads(mlp_loss, params, (x, y), chunk_size=0)


def _dense_fisher_oracle(params, batch, layout, damping):
    """Exact empirical Fisher in float64 numpy: damping I + (1/N) G^T G over the layout's weights."""
    rows = []
    for gi in loop_grads(params, batch):
        flat = {"dense1/kernel": gi["dense1"]["kernel"], "dense1/bias": gi["dense1"]["bias"],
                "dense2/kernel": gi["dense2"]["kernel"], "dense2/bias": gi["dense2"]["bias"]}
        rows.append(np.asarray(layout.to_vector(flat), np.float64))
    g = np.stack(rows)
    return damping * np.eye(g.shape[1]) + g.T @ g / g.shape[0], g


@pytest.mark.parametrize("order", ["out_in", "in_out"])
@pytest.mark.parametrize("block_size", [1, 3, 6])
@pytest.mark.parametrize("damping", [0.0, 1e-3])
def test_blockwise_fisher_equals_dense_diagonal_blocks(x64, order, block_size, damping):
    params, batch = mlp_params(jnp.float64), make_batch(jnp.float64)
    layout = BlockLayout.from_params(params, ["dense1/kernel", "dense2/kernel"], block_size, order)
    dense, _ = _dense_fisher_oracle(params, batch, layout, damping)
    g = per_example_grads(mlp_loss, params, batch, wrt=layout.paths)
    gmat = layout.to_blocks_batched(g).reshape(N, -1)
    f = blockwise_fisher(gmat, block_size, damping=damping)
    assert f.shape == (layout.num_blocks, block_size, block_size) and f.dtype == jnp.float64
    for b in range(layout.num_blocks):
        sl = slice(b * block_size, (b + 1) * block_size)
        np.testing.assert_allclose(np.asarray(f[b]), dense[sl, sl], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(fisher_diagonal(gmat, damping=damping)), np.diag(dense), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("order", ["out_in", "in_out"])
def test_accumulate_fisher_equals_dense_oracle(x64, chunk_size, order):
    params, batch = mlp_params(jnp.float64), make_batch(jnp.float64)
    layout = BlockLayout.from_params(params, ["dense1/*", "dense2/kernel"], 3, order)
    dense, _ = _dense_fisher_oracle(params, batch, layout, 1e-4)
    f = accumulate_fisher(mlp_loss, params, batch, layout, damping=1e-4, chunk_size=chunk_size)
    assert f.shape == (layout.num_blocks, 3, 3) and f.dtype == jnp.float64
    for b in range(layout.num_blocks):
        np.testing.assert_allclose(np.asarray(f[b]), dense[3 * b : 3 * b + 3, 3 * b : 3 * b + 3], rtol=1e-12, atol=1e-14)


def test_accumulate_fisher_float32(strict):
    params, batch = mlp_params(jnp.float32), make_batch(jnp.float32, n=7)
    layout = BlockLayout.from_params(params, "dense1/kernel", 4)
    f = accumulate_fisher(mlp_loss, params, batch, layout, damping=1e-6, chunk_size=3)
    g = layout.to_blocks_batched(per_example_grads(mlp_loss, params, batch, wrt="dense1/kernel")).reshape(7, -1)
    np.testing.assert_allclose(np.asarray(f), np.asarray(blockwise_fisher(g, 4, damping=1e-6)), rtol=1e-5, atol=1e-6)
    assert f.dtype == jnp.float32


def test_grad_moments(x64):
    params, batch = mlp_params(jnp.float64), make_batch(jnp.float64, n=7)
    g = per_example_grads(mlp_loss, params, batch, wrt="dense*/kernel")
    for cs in (None, 2, 3):
        m1, m2 = grad_moments(mlp_loss, params, batch, wrt="dense*/kernel", chunk_size=cs)
        for p in g:
            np.testing.assert_allclose(np.asarray(m1[p]), np.asarray(g[p]).mean(0), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(np.asarray(m2[p]), (np.asarray(g[p]) ** 2).mean(0), rtol=1e-12, atol=1e-14)


def test_fisher_errors(strict):
    g = jnp.ones((4, 6), jnp.float32)
    with pytest.raises(ShapeError, match="not divisible"):
        blockwise_fisher(g, 4, damping=0.0)
    with pytest.raises(ShapeError, match=r"\(N, D\)"):
        blockwise_fisher(g[0], 2, damping=0.0)
    with pytest.raises(ShapeError, match="floating"):
        blockwise_fisher(jnp.ones((4, 6), jnp.int32), 2, damping=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        blockwise_fisher(g, 2, damping=-1.0)
    with pytest.raises(NonFiniteError, match="finite"):
        blockwise_fisher(g, 2, damping=float("nan"))
    params, batch = mlp_params(jnp.float32), make_batch(jnp.float32)
    bad = BlockLayout(("dense1/kernel",), ((6, 4),), 4)
    with pytest.raises(ShapeError, match="layout says"):
        accumulate_fisher(mlp_loss, params, batch, bad, damping=0.0)
    missing = BlockLayout(("enc/kernel",), ((4, 6),), 4)
    with pytest.raises(UnknownParameterError, match="enc/kernel"):
        accumulate_fisher(mlp_loss, params, batch, missing, damping=0.0)


@pytest.mark.parametrize("branch", ["batched", "per_block", "sym_per_block"])
@pytest.mark.parametrize("n,nb,b", [(5, 3, 6), (7, 2, 8), (3, 4, 2)])
def test_every_gram_branch_equals_float64_oracle(x64, branch, n, nb, b):
    """block_gram lowers to one of these per platform; each is forced here (the suite runs on CPU,
    where the batched accelerator branch would otherwise never run), against a dense float64 sum."""
    from zkapex_jax.core.fisher import GRAM_BRANCHES

    rng = np.random.default_rng(n * 100 + b)
    x = rng.normal(size=(n, nb, b))
    ref = np.stack([sum(np.outer(x[i, k], x[i, k]) for i in range(n)) for k in range(nb)])
    got = np.asarray(jax.jit(GRAM_BRANCHES[branch])(jnp.asarray(x)))
    assert got.shape == (nb, b, b)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("branch", ["batched", "per_block", "sym_per_block"])
def test_blockwise_fisher_through_each_gram_branch(x64, monkeypatch, branch):
    """The whole Fisher (1/N scaling and damping included) with block_gram forced to each branch:
    a branch that scaled by 1/N itself (or forgot the damping) fails here."""
    import zkapex_jax.core.fisher as F

    monkeypatch.setattr(F, "block_gram", F.GRAM_BRANCHES[branch])
    rng = np.random.default_rng(3)
    n, nb, b, damping = 9, 3, 4, 0.25
    g = rng.normal(size=(n, nb * b))
    f = np.asarray(F._blockwise_fisher_core.__wrapped__(jnp.asarray(g), jnp.asarray(damping), block_size=b))
    for k in range(nb):
        gb = g[:, k * b:(k + 1) * b]
        np.testing.assert_allclose(f[k], damping * np.eye(b) + gb.T @ gb / n, rtol=1e-12, atol=1e-12)
