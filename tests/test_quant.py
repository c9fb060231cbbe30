"""zkapex_jax.quant: scales, the inverse Fisher, the honest witness and the weight-unit bound,
each against an independent oracle (numpy float64 / exact rationals)."""

from fractions import Fraction

import numpy as np
import pytest

from zkapex_jax import NonFiniteError, ShapeError, SingularBlockError
from zkapex_jax.core import quant
from zkapex_jax.protocol._circuits import relation


def spd(rng, nb, B, damping=1e-2, n=None):
    n = n or 3 * B
    g = rng.normal(size=(nb, n, B))
    return np.einsum("kni,knj->kij", g, g) / n + damping * np.eye(B)


def test_theta_exponent_and_rounding():
    th = np.array([0.3, -0.0123456, 0.25])
    s = quant.theta_exponent(th, 16)
    assert 0.3 * 2.0 ** s <= 2 ** 14 < 0.3 * 2.0 ** (s + 1)  # the largest with 4x headroom under 2^16
    q = quant.quantize_theta(th, s)
    # independent oracle: round half to even of the exact product (not floor, not truncation)
    want = [round(Fraction(x) * 2 ** s) for x in th]
    assert q.tolist() == want
    assert quant.quantize_theta([-0.5 * 2.0 ** -10, 1.5 * 2.0 ** -10], 10).tolist() == [0, 2]
    with pytest.raises(quant.QuantizationError):
        quant.quantize_theta([1.0], 20, bound_bits=16)


@pytest.mark.parametrize("seed", range(3))
def test_inverse_fisher_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    C = spd(rng, 4, 6) * np.array([1, 1e-5, 1e3, 1])[:, None, None]
    A = quant.inverse_fisher(C)
    np.testing.assert_allclose(A, np.linalg.inv(C), rtol=1e-9, atol=0)
    np.testing.assert_array_equal(A, np.swapaxes(A, 1, 2))


def test_inverse_fisher_errors():
    C = np.stack([np.eye(3), np.diag([1.0, 0.0, 1.0])])
    with pytest.raises(SingularBlockError, match=r"\[1\]"):
        quant.inverse_fisher(C)
    with pytest.raises(NonFiniteError):
        quant.inverse_fisher(np.full((1, 2, 2), np.nan))
    with pytest.raises(ShapeError):
        quant.inverse_fisher(np.ones((2, 3)))


def test_inverse_exponents_normalize_each_block():
    rng = np.random.default_rng(1)
    A = np.linalg.inv(spd(rng, 5, 4)) * (10.0 ** np.arange(-4, 1))[:, None, None]
    e = quant.inverse_block_exponents(A, 24)
    q = quant.quantize_inverse(A, e, 24)
    mx = np.max(np.abs(q), axis=(1, 2))
    assert np.all(mx >= 2 ** 22) and np.all(mx < 2 ** 23)


def _spec(B=8, kmax=4, K=1, **kw):
    return relation.CircuitSpec(relation.CommitSpec(block_size=B, logrows=14, **kw), kmax=kmax, chunk_blocks=K)


def _block(seed, B=8, k=3, damping=1e-2):
    rng = np.random.default_rng(seed)
    C = spd(rng, 1, B, damping)
    A = quant.inverse_fisher(C)
    Ah = quant.quantize_inverse(A, quant.inverse_block_exponents(A, 24), 24)[0]
    th = rng.normal(size=B) * 0.05
    tq = quant.quantize_theta(th, quant.theta_exponent(th, 16))
    S = np.sort(rng.choice(B, size=k, replace=False))
    return tq, Ah, S, C[0], th


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 2), (2, 3), (3, 4), (4, 4)])
def test_certified_block_is_exact_group_obs_to_half_a_unit(seed, k):
    spec = _spec(kmax=4)
    tq, Ah, S, _, _ = _block(seed, k=k)
    w = quant.certify_block(tq, Ah, S, spec)
    exact = quant.exact_update(tq, Ah, S, spec.bounds.h)
    assert all(w.theta_u[i] == 0 for i in S)
    dev = max(abs(Fraction(int(a)) - b) for a, b in zip(w.theta_u, exact))
    assert dev <= Fraction(1, 2) + Fraction(1, 100)  # rounding, plus μ̂'s rounding (tiny)
    ref = relation.relation_reference(
        spec, tq[None], w.theta_u[None], np.pad(Ah[:, S], ((0, 0), (0, spec.kmax - k)))[None],
        np.array(w.mu, dtype=object)[None], w.ycert[None], np.isin(np.arange(8), S)[None], w.idx[None], w.q[None])
    assert ref["ok"], ref


def test_exact_update_matches_float_group_obs():
    """The oracle itself: exact Group-OBS on Â equals δ = −A E (EᵀAE)⁻¹ θ_M in float64."""
    spec = _spec(kmax=4)
    tq, Ah, S, _, _ = _block(7, k=3)
    h = spec.bounds.h
    ex = np.array([float(x) for x in quant.exact_update(tq, Ah, S, h)])
    A = Ah.astype(np.float64)
    d = -A[:, S] @ np.linalg.solve(A[np.ix_(S, S)], tq[S].astype(np.float64))
    np.testing.assert_allclose(ex, tq + d, rtol=0, atol=1e-6)


def test_certified_update_agrees_with_core_group_obs(x64):
    from zkapex_jax.core import obs

    spec = _spec(kmax=4)
    tq, Ah, S, C, th = _block(3, k=4)
    w = quant.certify_block(tq, Ah, S, spec)
    mask = np.isin(np.arange(8), S)
    res = obs.group_obs(tq[None].astype(np.float64), C[None], mask[None])
    core = tq + np.asarray(res.delta)[0]
    assert np.max(np.abs(w.theta_u - core)) <= 1.0  # rounding only (Â is C⁻¹ to 2^-23)


def test_designed_singular_curvature_cannot_be_certified():
    """A committed inverse whose masked sub-matrix is singular (two equal columns) has no Y."""
    spec = _spec(kmax=2)
    Ah = np.eye(8, dtype=np.int64) * 2 ** 22
    Ah[:, 1] = Ah[:, 0]
    Ah[1, :] = Ah[0, :]
    with pytest.raises(quant.QuantizationError, match="singular|ill-conditioned"):
        quant.certify_block(np.arange(8), Ah, np.array([0, 1]), spec)


def test_ill_conditioned_block_is_refused_with_advice():
    spec = _spec(kmax=2)
    Ah = np.eye(8, dtype=np.int64) * 2 ** 22
    Ah[0, 1] = Ah[1, 0] = 2 ** 22 - 1  # nearly singular 2x2 masked sub-matrix
    with pytest.raises(quant.QuantizationError, match="damping"):
        quant.certify_block(np.arange(8) * 100, Ah, np.array([0, 1]), spec)


def test_bound_formula_independent_oracle():
    """ε recomputed here from the docstring's formula: k·2^a·V*/h, V* = k·2^y·2^(s−g−t)/(2^ty − k·2^e)."""
    for kmax in (1, 2, 3, 8, 24, 32):
        spec = _spec(B=64, kmax=kmax)
        b, a = spec.bounds, spec.commit.a_bits
        v = Fraction(kmax * 2 ** b.y * 2 ** (b.s - b.g - b.t), 2 ** b.ty - kmax * 2 ** b.e)
        assert b.epsilon == Fraction(kmax * 2 ** a) * v / 2 ** (b.s - b.g)
        assert b.epsilon <= Fraction(1, 4)
        assert quant.weight_unit_bound(spec) == pytest.approx(1 + float(b.epsilon))
        # honest feasibility: ½·kmax·2^a < 2^(s−g−t) and kmax·2^e ≤ 2^ty/4; |μ*| ≤ 2^(s−1) < 2^60
        assert Fraction(kmax * 2 ** a, 2) < 2 ** (b.s - b.g - b.t)
        assert kmax * 2 ** b.e * 4 <= 2 ** b.ty
        assert b.s - b.g + max(0, (kmax - 1).bit_length()) + b.gamma - a + spec.commit.theta_bits <= b.s - 1


def test_slot_layout_and_errors():
    idx, q = quant.slot_layout(np.array([2, 5]), 4)
    assert idx.tolist() == [2, 5, 0, 0] and q.tolist() == [1, 1, 0, 0]
    with pytest.raises(quant.QuantizationError):
        quant.slot_layout(np.arange(5), 4)
    with pytest.raises(quant.QuantizationError, match="no masked"):
        quant.certify_block(np.arange(8), np.eye(8, dtype=np.int64), np.array([], dtype=np.int64), _spec())


def test_inverse_quantization_rounds_to_nearest():
    A = np.array([[[1.0, 0.3], [0.3, -2.0 ** -30]]])
    e = quant.inverse_block_exponents(A, 24)
    assert e.tolist() == [22]
    q = quant.quantize_inverse(A, e, 24)
    want = [[round(Fraction(x) * 2 ** 22) for x in row] for row in A[0]]
    assert q[0].tolist() == want and q[0, 1, 1] == 0


@pytest.mark.parametrize("a_bits", [16, 24])
def test_a_maximum_that_rounds_up_to_the_range_edge_still_quantizes(a_bits):
    """Issue 15: max|A_b|·2^e just below 2^(a−1) used to round to exactly 2^(a−1) and leave the range."""
    A = np.zeros((2, 2, 2))
    A[0] = np.diag([(2.0 ** (a_bits - 1) - 0.3) * 2.0 ** -30, 1e-9])   # rounds up to the edge at e = 30
    A[1] = np.diag([(2.0 ** (a_bits - 1) - 0.7) * 2.0 ** -30, 1e-9])   # does not
    e = quant.inverse_block_exponents(A, a_bits)
    assert e.tolist() == [29, 30]
    q = quant.quantize_inverse(A, e, a_bits)
    assert int(np.abs(q).max()) < 2 ** (a_bits - 1) and int(q[0, 0, 0]) >= 2 ** (a_bits - 2) - 1


def test_compensation_bound_refuses_a_lever_block():
    """A column (d, ±(2^23 − 1), …) makes the single masked weight a lever: the update would move
    the free weights by ~2^23/d times the removed weight; the public bound ρ·Σ|θ̂p[S]| refuses it
    with advice, and a ρ large enough admits the same block (the check is the only difference)."""
    import dataclasses
    B = 8
    cs = relation.CommitSpec(block_size=B, logrows=13)
    A = (np.eye(B) * 2 ** 22).astype(np.int64)
    A[:, 0] = np.where(np.arange(B) % 2 == 0, 1, -1) * (2 ** 23 - 1)
    A[0, :] = A[:, 0]
    A[0, 0] = 17
    tp = np.arange(1, B + 1, dtype=np.int64) * 100
    spec = relation.CircuitSpec(cs, kmax=1)
    with pytest.raises(quant.QuantizationError, match="compensation bound"):
        quant.certify_block(tp, A, [0], spec)
    # a milder lever (d = 2^14: ~512× the removed weight per free weight, ~1,350× in ℓ2) is refused by
    # ρ = 16 and admitted by ρ = 2^11; the window (ρ·B·2^(w−2))² < 2^s allows ρ ≤ 2^12 for blocks of 8
    A[0, 0] = 2 ** 14
    with pytest.raises(quant.QuantizationError, match="compensation bound"):
        quant.certify_block(tp, A, [0], spec)
    loose = relation.CircuitSpec(dataclasses.replace(cs, delta_ratio=2 ** 11), kmax=1)
    w = quant.certify_block(tp, A, [0], loose)
    assert np.abs(w.theta_u - tp).max() > 400 * 100
    with pytest.raises(ValueError, match="delta_ratio"):
        dataclasses.replace(cs, delta_ratio=2 ** 13)


def test_compensation_bound_is_euclidean_over_the_block():
    """v9: ‖θ̂u − θ̂p‖₂ ≤ ρ·Σ_S|θ̂p| (one check per block), stronger than v5–v8's per-weight bound:
    the exact oracle accepts one free weight moved by the whole budget X and refuses four free weights
    moved by X/2 each (ℓ2 over X, though each move is within the old per-weight bound)."""
    cs = relation.CommitSpec(block_size=8, logrows=13, delta_ratio=4)
    spec = relation.CircuitSpec(cs, kmax=1)
    tp = np.array([[10, 3, 5, -7, 2, 9, -4, 6]], dtype=np.int64)
    mask = np.array([[1, 0, 0, 0, 0, 0, 0, 0]])
    X = 4 * 10

    def delta_check(tu):
        z = np.zeros((1, 8, 1), dtype=np.int64)
        ref = relation.relation_reference(spec, tp, tu, z, [[0]], np.eye(1, dtype=np.int64)[None] * 0, mask,
                                          [[0]], [[1]])
        return ref["delta"] < 1

    one = tp.copy()
    one[0, 0] = 0                                   # the masked weight removed: 10² of the budget used
    one[0, 1] += int((X * X - 100) ** 0.5)          # one free weight takes the rest (39 units)
    assert delta_check(one)
    spread = tp.copy()
    spread[0, 0] = 0
    spread[0, 1:5] += X // 2                        # four weights by 20 each: 100 + 4·400 > 40²
    assert not delta_check(spread)
    assert np.abs(spread - tp).max() <= X           # each move inside the old per-weight bound


def test_the_certificate_budget_edge_is_derived_and_exact():
    """Issue 15: what a hand-made Y can certify, against what the client's code certifies, for one
    masked weight (D = [d], a = 24, γ = 20): the client needs d ≥ 17; the relation admits a Y for
    d ≥ 13 (κ* = conditioning_bound); for d = 12 no Y in the range satisfies |Y·d − 2^ty| < 2^e."""
    cs = relation.CommitSpec(block_size=8, logrows=13)
    spec = relation.CircuitSpec(cs, kmax=1)
    bd = spec.bounds
    kappa = relation.conditioning_bound(cs, 1)
    assert bd.gamma == 20 and Fraction(2 ** 20) < kappa < Fraction(4, 3) * 2 ** 20 + 1
    tp = np.zeros(8, dtype=np.int64)
    tp[0] = 1000
    for d in (16, 17):  # the client's code: refuses 16, certifies 17
        A = (np.eye(8) * 2 ** 22).astype(np.int64)
        A[0, 0] = d
        if d == 16:
            with pytest.raises(quant.QuantizationError, match="ill-conditioned"):
                quant.certify_block(tp, A, [0], spec)
        else:
            quant.certify_block(tp, A, [0], spec)

    def admissible(d):  # the best hand-made Y: the largest |Y| < 2^y (closest to 2^ty/d from below)
        Y = min(2 ** bd.y - 1, round(2 ** bd.ty / d))
        return abs(Y * d - 2 ** bd.ty) < 2 ** bd.e and abs(Y) < 2 ** bd.y

    assert [d for d in range(10, 20) if admissible(d)] == list(range(13, 20))
    for d in (12, 13):  # κ* separates them exactly: max|D⁻¹|·2^a = 2^24/d
        assert (Fraction(2 ** cs.a_bits, d) < kappa) == admissible(d)
    # d = 12: every Y below 2^y leaves |E| ≥ 2^e (Y·12 ≤ (2^y − 1)·12 < 2^ty − 2^e + 1)
    assert (2 ** bd.y - 1) * 12 <= 2 ** bd.ty - 2 ** bd.e
