"""zkapex_jax.quant: fixed-point mapping, per-block scales, the error bound and τ (float64 oracles)."""

import numpy as np
import pytest

from zkapex_jax import quant
from zkapex_jax._errors import NonFiniteError, ShapeError, SingularBlockError


def _spd_blocks(rng, nb, B, *, spread=6, damping=1e-3):
    """Random SPD blocks whose magnitudes span 10^-spread .. 10^1 (one scale per block)."""
    g = rng.normal(size=(nb, 3 * B, B))
    c = np.einsum("kni,knj->kij", g, g) / (3 * B) + damping * np.eye(B)
    return c * 10.0 ** rng.uniform(-spread, 1, size=(nb, 1, 1))


def _group_obs_ref(theta, fisher, mask):
    """float64 Group-OBS: δ = −C⁻¹E(EᵀC⁻¹E)⁻¹θ_M, λ = (EᵀC⁻¹E)⁻¹θ_M on the mask."""
    nb, B = theta.shape
    delta, lam = np.zeros_like(theta), np.zeros_like(theta)
    for k in range(nb):
        idx = np.flatnonzero(mask[k])
        if idx.size == 0:
            continue
        cinv = np.linalg.inv(fisher[k])
        E = np.eye(B)[:, idx]
        lam_m = np.linalg.solve(E.T @ cinv @ E, theta[k, idx])
        delta[k] = -cinv @ E @ lam_m
        lam[k, idx] = lam_m
    return delta, lam


def _quantize_all(rng, nb, B, p_mask):
    fisher = _spd_blocks(rng, nb, B)
    theta = rng.normal(size=(nb, B)) * 0.05
    mask = rng.random((nb, B)) < p_mask
    s_c = quant.default_fisher_exponent(B)
    s_t = quant.theta_exponent(theta)
    exps = quant.fisher_block_exponents(fisher)
    return theta, fisher, mask, s_t, s_c, exps, quant.quantize_theta(theta, s_t), quant.quantize_fisher(fisher, exps, s_c)


def test_tau_and_exponent_formulas():
    for B in (4, 16, 64, 576):
        s_c = quant.default_fisher_exponent(B)
        assert B * 2 ** s_c <= (quant.INPUT_BOUND + 1) // 2 < B * 2 ** (s_c + 1)
        assert quant.tau(B, s_c) == B * 2 ** (s_c - 1)
    with pytest.raises(quant.QuantizationError):
        quant.default_fisher_exponent(2 ** 24)


def test_block_exponents_normalize_each_block():
    rng = np.random.default_rng(0)
    c = _spd_blocks(rng, 7, 5, spread=9)
    e = quant.fisher_block_exponents(c)
    scaled = np.max(np.abs(c), axis=(1, 2)) * 2.0 ** e
    assert np.all((scaled > 0.5) & (scaled <= 1.0))
    q = quant.quantize_fisher(c, e, 10)
    assert np.array_equal(q, np.swapaxes(q, 1, 2))
    # PSD blocks: the largest entry sits on the diagonal, so the circuit's normalization check holds
    assert np.all(np.max(np.diagonal(q, axis1=1, axis2=2), axis=1) >= 2 ** 9)
    assert np.max(np.abs(q)) <= 2 ** 10
    # every block keeps ~s_c bits regardless of its magnitude
    deq = quant.dequantize_fisher(q, e, 10)
    rel = np.max(np.abs(deq - c), axis=(1, 2)) / np.max(np.abs(c), axis=(1, 2))
    assert np.all(rel <= 2.0 ** -10)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("B,p_mask", [(4, 0.3), (8, 0.1), (16, 0.25), (8, 1.0), (8, 0.0)])
def test_honest_witness_within_tau(seed, B, p_mask):
    rng = np.random.default_rng(1000 * seed + B)
    theta, fisher, mask, s_t, s_c, exps, tq, cq = _quantize_all(rng, 6, B, p_mask)
    w = quant.quantize_unlearning(tq, cq, mask, s_c)
    assert np.all(np.abs(w.residual) <= w.tau)
    assert np.array_equal(w.residual, quant.kkt_residual_int(cq, w.delta, w.lam, s_c))
    assert np.all(w.theta_u[mask] == 0) and np.array_equal(w.theta_u, tq + w.delta)
    assert np.all(w.lam[~mask] == 0)
    # the integer witness is the float64 Group-OBS solution for the dequantized Fisher, rounded
    d_ref, lam_ref = _group_obs_ref(tq / 2.0 ** s_t, quant.dequantize_fisher(cq, exps, s_c) * 2.0 ** exps[:, None, None], mask)
    assert np.max(np.abs(w.delta / 2.0 ** s_t - d_ref)) <= 2.0 ** -s_t * (0.5 + 1e-6) + 1e-9 * np.max(np.abs(d_ref), initial=0)
    # and close to Group-OBS on the unquantized Fisher (C quantized to s_c bits per block)
    d_true, _ = _group_obs_ref(theta, fisher, mask)
    scale = np.max(np.abs(theta))
    assert np.max(np.abs(w.delta / 2.0 ** s_t - d_true)) <= 1e-3 * scale + 2.0 ** -s_t


@pytest.mark.parametrize("seed", range(6))
def test_wrong_compensation_exceeds_tau(seed):
    rng = np.random.default_rng(seed)
    theta, fisher, mask, s_t, s_c, exps, tq, cq = _quantize_all(rng, 6, 8, 0.3)
    mask[:, 0] = True  # every block has a masked weight
    w = quant.quantize_unlearning(tq, cq, mask, s_c)
    # mask-only: δ = −θ on the mask, nothing elsewhere; best λ on the mask
    d = np.where(mask, -tq, 0)
    lam = np.where(mask, -np.rint(np.einsum("kij,kj->ki", cq, d) / 2.0 ** s_c), 0).astype(np.int64)
    r = quant.kkt_residual_int(cq, d, lam, s_c)
    assert np.max(np.abs(r)) > w.tau
    # a perturbed compensation: add 1% of ‖δ_F‖ noise off the mask
    eta = np.where(mask, 0, np.rint(rng.normal(size=w.delta.shape) * 0.01 * np.max(np.abs(w.delta)))).astype(np.int64)
    r2 = quant.kkt_residual_int(cq, w.delta + eta, w.lam, s_c)
    assert np.max(np.abs(r2)) > w.tau


def test_errors_are_clear():
    rng = np.random.default_rng(3)
    theta, fisher, mask, s_t, s_c, exps, tq, cq = _quantize_all(rng, 3, 4, 0.3)
    with pytest.raises(quant.QuantizationError, match="fixed-point range"):
        quant.quantize_theta(theta, s_t + 10)
    with pytest.raises(NonFiniteError):
        quant.quantize_theta(np.array([np.nan]), 3)
    with pytest.raises(ShapeError):
        quant.fisher_block_exponents(np.zeros((2, 3, 4)))
    with pytest.raises(SingularBlockError):
        quant.fisher_block_exponents(np.zeros((2, 3, 3)))
    with pytest.raises(ShapeError):
        quant.quantize_unlearning(tq, cq[:2], mask, s_c)
    sing = cq.copy()
    sing[0] = 0
    with pytest.raises(SingularBlockError, match=r"\[0\]"):
        quant.quantize_unlearning(tq, sing, np.zeros_like(mask), s_c)


def test_theta_exponent_headroom():
    t = np.array([0.3, -0.7])
    s = quant.theta_exponent(t)
    assert 0.7 * 2 ** s <= quant.INPUT_BOUND / quant.THETA_HEADROOM < 0.7 * 2 ** (s + 1)


def test_agrees_with_core_group_obs():
    obs = pytest.importorskip("zkapex_jax.obs")
    rng = np.random.default_rng(5)
    theta, fisher, mask, s_t, s_c, exps, tq, cq = _quantize_all(rng, 4, 8, 0.25)
    mask[:, 1] = True
    w = quant.quantize_unlearning(tq, cq, mask, s_c)
    fq = quant.dequantize_fisher(cq, exps, s_c) * 2.0 ** exps[:, None, None]
    res = obs.group_obs((tq / 2.0 ** s_t).astype(np.float32), fq.astype(np.float32), mask)
    delta = np.asarray(res.delta, dtype=np.float64)
    assert np.max(np.abs(w.delta / 2.0 ** s_t - delta)) <= 1e-3 * np.max(np.abs(delta))
