"""Forget-aware Group-OBS (the compensation kept orthogonal to the provider's forget subspace)
against a dense float64 KKT solve; the forget subspace against numpy's SVD of the gradients."""

import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax._errors import ShapeError
from zkapex_jax.core.obs import (
    compensation_basis,
    factorize,
    forget_aware_obs,
    forget_subspace,
    group_obs,
    kkt_residual,
)
from test_obs import make_problem


def kkt_oracle(theta, fisher, mask, basis):
    """min 1/2 d^T C d s.t. d_M = -theta_M and U_R^T d = 0 (U_R = U with masked rows zeroed),
    by the dense KKT system [[C, A], [A^T, 0]] in float64 (dependent columns removed by SVD)."""
    nb, b = theta.shape
    out = np.zeros((nb, b))
    for k in range(nb):
        m = np.flatnonzero(mask[k])
        u = basis[k].copy()
        u[m] = 0.0
        w, sv, _ = np.linalg.svd(u, full_matrices=False)
        u = w[:, sv > 1e-9 * max(sv.max(initial=0.0), 1e-300)]
        a = np.concatenate([np.eye(b)[:, m], u], axis=1)
        if a.shape[1] == 0:
            continue
        kkt = np.block([[fisher[k], a], [a.T, np.zeros((a.shape[1], a.shape[1]))]])
        rhs = np.concatenate([np.zeros(b), -theta[k, m], np.zeros(u.shape[1])])
        out[k] = np.linalg.solve(kkt, rhs)[:b]
    return out


@pytest.mark.parametrize("nb,b,n,r", [(4, 6, 3, 2), (5, 8, 20, 3), (3, 16, 4, 5), (3, 16, 40, 16)])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_dense_kkt_float64(x64, nb, b, n, r, seed):
    theta, fisher, mask = make_problem(nb, b, n, seed)
    basis = np.random.default_rng(seed + 10).normal(size=(nb, b, r))
    res = forget_aware_obs(jnp.asarray(theta), jnp.asarray(fisher), mask, jnp.asarray(basis))
    delta = np.asarray(res.delta)
    np.testing.assert_allclose(delta, kkt_oracle(theta, fisher, mask, basis), rtol=1e-8, atol=1e-10)
    # the constraints: masked weights removed, compensation orthogonal to U on the kept weights
    np.testing.assert_allclose(delta[mask], -theta[mask], atol=1e-10)
    u_r = np.where(mask[:, :, None], 0.0, basis)
    np.testing.assert_allclose(np.einsum("kbr,kb->kr", u_r, delta), 0.0, atol=1e-9)
    assert float(np.max(np.asarray(kkt_residual(fisher, res.delta, res.lam)))) < 1e-9


def test_no_basis_is_plain_group_obs_and_more_constraints_cost_more(x64):
    theta, fisher, mask = make_problem(6, 8, 5, 3)
    factor = factorize(jnp.asarray(fisher))
    plain = group_obs(jnp.asarray(theta), factor, mask)
    none = forget_aware_obs(jnp.asarray(theta), factor, mask, np.zeros((6, 8, 0)))
    zero = forget_aware_obs(jnp.asarray(theta), factor, mask, np.zeros((6, 8, 3)))  # all columns dropped
    for r in (none, zero):
        np.testing.assert_allclose(np.asarray(r.delta), np.asarray(plain.delta), rtol=1e-10, atol=1e-12)
    basis = np.random.default_rng(0).normal(size=(6, 8, 2))
    fa = forget_aware_obs(jnp.asarray(theta), factor, mask, basis)
    q = lambda d: np.einsum("kb,kbc,kc->k", d, fisher, d)  # noqa: E731
    assert np.all(q(np.asarray(fa.delta)) >= q(np.asarray(plain.delta)) - 1e-10)


def test_dependent_and_masked_only_columns_are_dropped(x64):
    theta, fisher, mask = make_problem(3, 8, 6, 4)
    rng = np.random.default_rng(1)
    u = rng.normal(size=(3, 8, 2))
    on_mask = np.where(mask[:, :, None], rng.normal(size=(3, 8, 1)), 0.0)  # lives on masked rows only
    messy = np.concatenate([u, u[:, :, :1] * 3.0, on_mask, u[:, :, 1:] - 2 * u[:, :, :1]], axis=2)
    a = forget_aware_obs(jnp.asarray(theta), jnp.asarray(fisher), mask, messy)
    b = forget_aware_obs(jnp.asarray(theta), jnp.asarray(fisher), mask, u)
    np.testing.assert_allclose(np.asarray(a.delta), np.asarray(b.delta), rtol=1e-9, atol=1e-11)
    q, valid = compensation_basis(messy, mask)
    assert valid.sum(axis=1).max() <= 2
    np.testing.assert_allclose(q[mask], 0.0, atol=1e-12)


def test_float32_close_to_float64():
    theta, fisher, mask = make_problem(8, 16, 40, 5)
    basis = np.random.default_rng(2).normal(size=(8, 16, 3))
    ref = kkt_oracle(theta, fisher, mask, basis)
    res = forget_aware_obs(jnp.asarray(theta, jnp.float32), jnp.asarray(fisher, jnp.float32), mask, basis)
    assert res.delta.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(res.delta), ref, atol=2e-4 * np.abs(ref).max())


def test_forget_subspace_is_the_top_right_singular_space(x64):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 30, 8)) * np.linspace(3, 0.1, 8)  # (nb, N, B), decaying spectrum
    f = np.einsum("kni,knj->kij", g, g) / 30
    u = np.asarray(forget_subspace(jnp.asarray(f), 3))
    for k in range(3):
        _, _, vt = np.linalg.svd(g[k], full_matrices=False)
        want = vt[:3].T
        np.testing.assert_allclose(u[k] @ u[k].T, want @ want.T, atol=1e-10)  # same projector
    with pytest.raises(ShapeError):
        forget_subspace(jnp.asarray(f), 9)
    with pytest.raises(ShapeError):
        compensation_basis(np.zeros((3, 8, 9)), np.zeros((3, 8), bool))
