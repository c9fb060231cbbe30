"""Group-OBS against a float64 numpy dense solve; exact masking; KKT residuals; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax._errors import NonFiniteError, ShapeError, SingularBlockError
from zkapex_jax.core.obs import (
    FisherFactor,
    GroupOBSResult,
    apply_delta,
    constraint_residual,
    factorize,
    group_obs,
    kkt_residual,
)


def make_problem(nb, b, n, seed, damping=1e-3, p_mask=0.4):
    """Random empirical-Fisher-like blocks (rank n + damping), weights and a mask with block 0
    unmasked and block 1 fully masked."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(nb, n, b))
    fisher = np.einsum("kni,knj->kij", g, g) / n + damping * np.eye(b)
    theta = rng.normal(size=(nb, b))
    mask = rng.random((nb, b)) < p_mask
    mask[0] = False
    if nb > 1:
        mask[1] = True
    return theta, fisher, mask


def oracle(theta, fisher, mask):
    """delta = -C^-1 E (E^T C^-1 E)^-1 theta_M and lam_M = (E^T C^-1 E)^-1 theta_M, dense float64."""
    nb, b = theta.shape
    delta, lam = np.zeros((nb, b)), np.zeros((nb, b))
    for k in range(nb):
        m = np.flatnonzero(mask[k])
        if m.size == 0:
            continue
        cinv = np.linalg.inv(fisher[k])
        e = np.eye(b)[:, m]
        lam_m = np.linalg.solve(e.T @ cinv @ e, theta[k, m])
        delta[k] = -cinv @ e @ lam_m
        lam[k, m] = lam_m
    return delta, lam


@pytest.mark.parametrize("nb,b,n", [(4, 1, 3), (6, 5, 3), (5, 8, 20), (3, 16, 4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_group_obs_equals_dense_solve_float64(x64, nb, b, n, seed):
    theta, fisher, mask = make_problem(nb, b, n, seed)
    res = group_obs(jnp.asarray(theta), jnp.asarray(fisher), jnp.asarray(mask))
    assert isinstance(res, GroupOBSResult)
    assert res.delta.shape == (nb, b) and res.lam.shape == (nb, b) and res.residual.shape == (nb,)
    assert res.delta.dtype == jnp.float64
    d_ref, l_ref = oracle(theta, fisher, mask)
    np.testing.assert_allclose(np.asarray(res.delta), d_ref, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.lam), l_ref, rtol=1e-8, atol=1e-9)
    lam = np.asarray(res.lam)
    assert np.all(lam[~mask] == 0.0)  # exactly zero off the mask
    assert np.all(np.asarray(res.delta)[0] == 0.0)  # block with nothing masked
    # C delta + E lam = 0
    kkt = np.einsum("kij,kj->ki", fisher, np.asarray(res.delta)) + lam
    scale = np.abs(lam).max() + 1.0
    assert np.abs(kkt).max() < 1e-9 * scale
    np.testing.assert_allclose(np.asarray(res.residual), np.abs(kkt).max(1), atol=1e-9 * scale)
    theta_u = np.asarray(apply_delta(jnp.asarray(theta), res.delta, jnp.asarray(mask)))
    assert np.all(theta_u[mask] == 0.0)  # exactly
    np.testing.assert_allclose(theta_u[~mask], (theta + d_ref)[~mask], rtol=1e-8, atol=1e-9)
    assert float(np.max(np.asarray(constraint_residual(jnp.asarray(theta), res.delta, jnp.asarray(mask))))) < 1e-9


@pytest.mark.parametrize("seed", [0, 3])
def test_group_obs_float32_close_to_float64_oracle(strict, seed):
    theta, fisher, mask = make_problem(8, 12, 30, seed, damping=1e-2)
    t32, f32 = theta.astype(np.float32), fisher.astype(np.float32)
    res = group_obs(jnp.asarray(t32), jnp.asarray(f32), jnp.asarray(mask))
    assert res.delta.dtype == jnp.float32
    d_ref, l_ref = oracle(t32.astype(np.float64), f32.astype(np.float64), mask)
    np.testing.assert_allclose(np.asarray(res.delta), d_ref, rtol=2e-3, atol=2e-3 * np.abs(d_ref).max())
    np.testing.assert_allclose(np.asarray(res.lam), l_ref, rtol=2e-3, atol=2e-3 * np.abs(l_ref).max())
    theta_u = np.asarray(apply_delta(jnp.asarray(t32), res.delta, jnp.asarray(mask)))
    assert np.all(theta_u[mask] == 0.0)
    assert float(np.asarray(res.residual).max()) < 1e-3 * np.abs(l_ref).max()


def test_factor_reuse_and_single_compile(x64):
    theta, fisher, _ = make_problem(5, 6, 4, 0)
    factor = factorize(jnp.asarray(fisher))
    assert isinstance(factor, FisherFactor)
    chol = np.asarray(factor.chol)
    np.testing.assert_allclose(chol @ np.swapaxes(chol, 1, 2), fisher, rtol=1e-12, atol=1e-14)
    assert np.all(np.triu(chol, 1) == 0)
    rng = np.random.default_rng(7)
    from zkapex_jax.core.obs import _group_obs_core

    _group_obs_core.clear_cache()
    for p in (0.0, 0.2, 0.7, 1.0):  # different masked counts per block: same shapes, same jit
        mask = rng.random((5, 6)) < p
        res = group_obs(jnp.asarray(theta), factor, jnp.asarray(mask), max_masked=6)
        d_ref, l_ref = oracle(theta, fisher, mask)
        np.testing.assert_allclose(np.asarray(res.delta), d_ref, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(np.asarray(res.lam), l_ref, rtol=1e-8, atol=1e-9)
        if p == 0.0:
            assert np.all(np.asarray(res.delta) == 0.0) and np.all(np.asarray(res.lam) == 0.0)
    assert _group_obs_core._cache_size() == 1  # one compiled program for every mask


def test_kkt_residual_matches_numpy(x64):
    rng = np.random.default_rng(2)
    f, d, lam = rng.normal(size=(3, 4, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ref = np.abs(np.einsum("kij,kj->ki", f, d) + lam).max(1)
    np.testing.assert_allclose(np.asarray(kkt_residual(jnp.asarray(f), jnp.asarray(d), jnp.asarray(lam))), ref, rtol=1e-12)
    with pytest.raises(ShapeError):
        kkt_residual(jnp.asarray(f), jnp.asarray(d[:, :3]), jnp.asarray(lam))


def test_input_errors(strict):
    theta, fisher, mask = make_problem(4, 3, 5, 0)
    t, f, m = jnp.asarray(theta, jnp.float32), jnp.asarray(fisher, jnp.float32), jnp.asarray(mask)
    with pytest.raises(ShapeError, match="theta must be"):
        group_obs(t[:, :2], f, m)
    with pytest.raises(ShapeError, match="mask must be"):
        group_obs(t, f, m[:3])
    with pytest.raises(ShapeError, match="boolean"):
        group_obs(t, f, m.astype(jnp.int32))
    with pytest.raises(ShapeError, match="fisher must be"):
        group_obs(t, f[:, :, :2], m)
    with pytest.raises(ShapeError, match="floating"):
        group_obs(t, f.astype(jnp.int32), m)
    with pytest.raises(ShapeError, match="dtype"):
        group_obs(t.astype(jnp.float16), f, m)
    with pytest.raises(NonFiniteError, match=r"theta .*block\(s\) 2"):
        group_obs(t.at[2, 1].set(jnp.nan), f, m)
    with pytest.raises(NonFiniteError, match=r"fisher .*block\(s\) 3"):
        group_obs(t, f.at[3, 0, 0].set(jnp.inf), m)
    with pytest.raises(ShapeError):
        apply_delta(t, t[:, :2], m)


def test_not_positive_definite_names_block(strict):
    theta, fisher, mask = make_problem(4, 3, 5, 0)
    fisher[2] = -np.eye(3)
    with pytest.raises(SingularBlockError, match=r"block\(s\) 2 .*positive definite"):
        group_obs(jnp.asarray(theta, jnp.float32), jnp.asarray(fisher, jnp.float32), jnp.asarray(mask))
    _, fisher, _ = make_problem(4, 3, 5, 0)
    fisher[1, 0, 2] += 1.0  # not symmetric
    with pytest.raises(SingularBlockError, match=r"block\(s\) 1 .*symmetric"):
        factorize(jnp.asarray(fisher, jnp.float32))
    fisher = np.stack([np.eye(3), np.zeros((3, 3))])  # singular (PSD, not PD) block 1
    with pytest.raises(SingularBlockError, match=r"block\(s\) 1 "):
        factorize(jnp.asarray(fisher))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_singular_masked_subsystem_names_block(dtype):
    """For an exactly factorized SPD C every E^T C^-1 E is PD; a singular one arises only
    numerically. Feed a factor that is singular at a masked position of block 2, and ask for a
    tolerance no float can meet to exercise the constraint check."""
    with jax.enable_x64(dtype == jnp.float64), jax.numpy_dtype_promotion("strict"):
        theta, fisher, mask = make_problem(4, 3, 5, 0)
        chol = np.linalg.cholesky(fisher)
        chol[2, 1, 1] = 0.0
        mask[2] = [True, True, False]
        factor = FisherFactor(jnp.asarray(fisher, dtype), jnp.asarray(chol, dtype))
        with pytest.raises(SingularBlockError, match=r"block\(s\) 2"):
            group_obs(jnp.asarray(theta, dtype), factor, jnp.asarray(mask))
        theta, fisher, mask = make_problem(4, 12, 3, 1, damping=1e-3)
        mask[:] = False
        mask[3, :10] = True
        with pytest.raises(SingularBlockError, match=r"block\(s\) 3 .*rtol 1e-30"):
            group_obs(jnp.asarray(theta, dtype), jnp.asarray(fisher, dtype), jnp.asarray(mask), rtol=1e-30)


def test_masked_positions():
    from zkapex_jax.core.obs import masked_positions

    m = np.array([[False, True, False, True], [False] * 4, [True] * 4])
    idx, valid = masked_positions(m)
    assert idx.shape == (3, 4) and idx.dtype == np.int32
    assert idx.tolist() == [[1, 3, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3]]
    assert valid.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]
    idx, valid = masked_positions(np.zeros((2, 20), bool))
    assert idx.shape == (2, 1) and not valid.any()  # at least 1
    idx, valid = masked_positions(np.eye(20, dtype=bool)[:3] | np.eye(20, k=5, dtype=bool)[:3])
    assert idx.shape == (3, 8) and valid.sum(1).tolist() == [2, 2, 2]  # 2 rounded up to 8
    with pytest.raises(ShapeError, match="max_masked"):
        masked_positions(m, max_masked=2)


@pytest.mark.parametrize("block_batch", [None, 1, 2, 3, 7])
def test_fisher_group_obs_equals_dense_oracle_in_every_grouping(x64, block_batch):
    """Gradients -> Fisher -> Group-OBS in groups of block_batch blocks equals the dense float64
    oracle on the Fisher built from the same gradients, whatever the grouping (last group shorter)."""
    from zkapex_jax.core.obs import fisher_group_obs

    rng = np.random.default_rng(5)
    n, nb, b, damping = 6, 7, 5, 1e-2
    g = rng.normal(size=(n, nb, b))
    theta = rng.normal(size=(nb, b))
    mask = rng.random((nb, b)) < 0.4
    mask[0] = False
    fisher = np.einsum("nki,nkj->kij", g, g) / n + damping * np.eye(b)
    d_ref, l_ref = oracle(theta, fisher, mask)
    res = fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask, damping=damping, block_batch=block_batch)
    np.testing.assert_allclose(np.asarray(res.delta), d_ref, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.lam), l_ref, rtol=1e-8, atol=1e-9)
    assert res.residual.shape == (nb,)
    flat = fisher_group_obs(jnp.asarray(g.reshape(n, -1)), jnp.asarray(theta), mask, damping=damping, block_batch=block_batch)
    np.testing.assert_array_equal(np.asarray(flat.delta), np.asarray(res.delta))
    host = fisher_group_obs(g, jnp.asarray(theta), mask, damping=damping, block_batch=block_batch)  # numpy: host-side groups
    np.testing.assert_array_equal(np.asarray(host.delta), np.asarray(res.delta))


def test_fisher_group_obs_memory_budget_and_errors(x64):
    from zkapex_jax.core.obs import block_batch_for, fisher_group_obs

    rng = np.random.default_rng(6)
    n, nb, b = 4, 6, 8
    g, theta = rng.normal(size=(n, nb, b)), rng.normal(size=(nb, b))
    mask = np.zeros((nb, b), bool)
    mask[:, 0] = True
    per = block_batch_for(10**9, n=n, block_size=b, max_masked=8, itemsize=8)
    assert per == 10**9 // (8 * (n * b + 3 * b * b + 2 * b * 8 + 8 * b))
    assert block_batch_for(2 * (8 * (n * b + 3 * b * b + 2 * b * 8 + 8 * b)), n=n, block_size=b, max_masked=8, itemsize=8) == 2
    a = fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask, damping=1e-3, max_memory=2 * 8 * (n * b + 3 * b * b + 24 * b))
    c = fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask, damping=1e-3)
    np.testing.assert_allclose(np.asarray(a.delta), np.asarray(c.delta), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="below one block"):
        fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask, damping=1e-3, max_memory=100)
    with pytest.raises(ValueError, match="not both"):
        fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask, damping=1e-3, max_memory=10**6, block_batch=2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block_batch"):
            fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask, damping=1e-3, block_batch=bad)
    with pytest.raises(ShapeError, match="grads must be"):
        fisher_group_obs(jnp.asarray(g[:, :5]), jnp.asarray(theta), mask, damping=1e-3)
    with pytest.raises(ShapeError, match="mask must be boolean"):
        fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask.astype(int), damping=1e-3)
    # a zero-gradient block with no damping is singular: the error names the GLOBAL block index
    g = rng.normal(size=(3 * b, nb, b))  # N > B: full-rank blocks without damping ...
    g[:, 4] = 0.0  # ... but block 4, in the second group of 3
    with pytest.raises(SingularBlockError, match=r"block\(s\) 4 are not positive definite"):
        fisher_group_obs(jnp.asarray(g), jnp.asarray(theta), mask, damping=0.0, block_batch=3)
