"""Fixed-point quantization of the ZK-APEX statement in inverse-Fisher column form, and the
honest integer witness.

Scales (all powers of two, all fixed at personalization time, before any mask):

* θ on one global scale: ``θ̂ = round(θ·2^sθ)``, ``sθ`` the largest with ``max|θp|·2^sθ ≤ 2^(w−2)``
  (``w = theta_bits``: 4× headroom for θu). One θ *unit* is ``2^−sθ``.
* the inverse Fisher ``A_b = C_b⁻¹`` per block on its own scale: ``Â_b = round(A_b·2^e_b)`` with
  ``max|Â_b| ∈ [2^(a−2), 2^(a−1))``. Group-OBS is invariant under ``A_b → c·A_b`` (δ = −A E(EᵀAE)⁻¹θ_M),
  so per-block scales change nothing but precision.

The witness for a block with masked positions ``S`` (:func:`certify_block`), with ``h = 2^(s−g)``:
``μ̂ = round(μ*)`` where ``Â[S,S]μ* = h·θ̂p[S]`` (float64 solve, refined against the exact integer
residual), ``θ̂u[S] = 0``, ``θ̂u[F] = θ̂p[F] − round((Â[F,S]μ̂)/h)`` (exact integers), and
``Y = round(2^ty·D⁻¹)`` for the padded ``D = Â[S,S]``. Every bound of the circuit is checked here
exactly, so a block the circuit would reject raises :class:`QuantizationError` naming the block
and the reason (e.g. an ill-conditioned masked sub-matrix: increase damping) before any proving.

**The guarantee** (circuits/relation.py, docs/PROOFS.md): any θ̂u the verifier accepts satisfies
``θ̂u[S] = 0`` and ``|θ̂u − θ̂u*|∞ < 1 + ε`` units, ``θ̂u*`` the exact Group-OBS result for the
committed ``Â``; :func:`weight_unit_bound` returns ``1 + ε``. Blocks without a masked weight are
pinned exactly (θ̂u = θ̂p: same commitment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._errors import NonFiniteError, ShapeError, SingularBlockError, ZkapexError


class QuantizationError(ZkapexError):
    """Values do not fit the fixed-point ranges, or a block cannot be certified."""


def _as_f64(x, name, ndim=None):
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ShapeError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name} holds NaN or infinite values")
    return a


def theta_exponent(theta_p, theta_bits: int = 16) -> int:
    """Largest sθ with max|θp|·2^sθ ≤ 2^(theta_bits−2) (capped at 40). θp: any shape."""
    t = _as_f64(theta_p, "theta_p")
    m = float(np.max(np.abs(t))) if t.size else 0.0
    if m == 0.0:
        return theta_bits - 2
    return int(min(40, math.floor(math.log2(2.0 ** (theta_bits - 2) / m))))


def quantize_theta(theta, s_theta: int, bound_bits: int = 16) -> np.ndarray:
    """round(θ·2^sθ) as int64, any shape; QuantizationError if |θ̂| ≥ 2^bound_bits."""
    t = _as_f64(theta, "theta")
    q = np.rint(np.ldexp(t, int(s_theta))).astype(np.int64)
    _check_range(q, "theta", 2 ** bound_bits)
    return q


def inverse_fisher(fisher) -> np.ndarray:
    """A_b = C_b⁻¹ for every block, (nb,B,B) float64 symmetric.

    Per block: LAPACK ``dpotrf`` (Cholesky of the symmetrized block) then ``dpotri`` (the inverse
    from the factor, B³ flops in all), one block at a time so that the working set is one block.
    SingularBlockError naming the blocks that are not positive definite."""
    from scipy.linalg import lapack  # noqa: PLC0415 - scipy is a dependency of jax

    c = _as_f64(fisher, "fisher", 3)
    if c.shape[1] != c.shape[2]:
        raise ShapeError(f"fisher blocks must be square, got {c.shape}")
    out = np.empty_like(c)
    lower = np.tril_indices(c.shape[1], -1)
    bad = []
    for b in range(c.shape[0]):
        cb = 0.5 * (c[b] + c[b].T)
        L, info = lapack.dpotrf(cb, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            bad.append(b)
            continue
        a, info = lapack.dpotri(L, lower=1, overwrite_c=1)
        if info != 0:
            bad.append(b)
            continue
        a[lower[1], lower[0]] = a[lower]  # dpotri fills the lower triangle only
        out[b] = a
    if bad:
        raise SingularBlockError(f"Fisher blocks {bad[:8]} are not positive definite (add damping)")
    return out


def inverse_block_exponents(A, a_bits: int = 24) -> np.ndarray:
    """(nb,) int e_b with max|A_b|·2^e_b ∈ [2^(a−2), 2^(a−1)) and round(max|A_b|·2^e_b) < 2^(a−1)
    (a maximum just below 2^(a−1) that would round up to it takes the next smaller exponent)."""
    a = _as_f64(A, "inverse fisher", 3)
    m = np.max(np.abs(a), axis=(1, 2))
    bad = np.flatnonzero(m == 0)
    if bad.size:
        raise SingularBlockError(f"inverse Fisher blocks {bad[:8].tolist()} are all zero")
    e = (a_bits - 2 - np.floor(np.log2(m))).astype(np.int64)
    return e - (np.rint(np.ldexp(m, e)) >= 2.0 ** (a_bits - 1)).astype(np.int64)


def quantize_inverse(A, exps, a_bits: int = 24) -> np.ndarray:
    """Â_b = round(A_b·2^e_b) as int64 (nb,B,B), |Â| < 2^(a−1)."""
    a = _as_f64(A, "inverse fisher", 3)
    e = np.asarray(exps, dtype=np.int64)
    if e.shape != (a.shape[0],):
        raise ShapeError(f"exponents must have shape ({a.shape[0]},), got {e.shape}")
    q = np.rint(np.ldexp(a, e[:, None, None])).astype(np.int64)
    _check_range(q, "inverse fisher", 2 ** (a_bits - 1))
    return q


def _check_range(q, name, bound):
    if q.size and int(np.max(np.abs(q))) >= bound:
        i = np.unravel_index(int(np.argmax(np.abs(q))), q.shape)
        raise QuantizationError(f"{name} leaves the fixed-point range ±{bound} at {tuple(int(x) for x in i)} "
                                f"(value {int(q[i])})")


@dataclass(frozen=True)
class BlockWitness:
    """Integer witness of one masked block for a circuit of ``kmax`` slots.

    theta_u (B,) int64; mu (kmax,) Python ints (< 2^60); ycert (kmax,kmax) int64;
    idx (kmax,) slot positions (unused slots 0); q (kmax,) 0/1 slot used; positions: the sorted
    slot positions P = S ∪ T (masked and protected weights, the columns of Â the proof reads);
    removed: the masked positions S (zeroed)."""

    theta_u: np.ndarray
    mu: list
    ycert: np.ndarray
    idx: np.ndarray
    q: np.ndarray
    positions: np.ndarray
    removed: np.ndarray = None

    def __post_init__(self):
        if self.removed is None:
            object.__setattr__(self, "removed", np.asarray(self.positions, dtype=np.int64))


def _obj(a):
    return np.asarray(a, dtype=np.int64).astype(object)


def slot_layout(positions, kmax: int):
    """(idx, q) for the masked ``positions`` (sorted) in ``kmax`` slots."""
    k = len(positions)
    if k > kmax:
        raise QuantizationError(f"{k} masked weights do not fit {kmax} slots")
    idx = np.zeros(kmax, dtype=np.int64)
    idx[:k] = positions
    q = np.zeros(kmax, dtype=np.int64)
    q[:k] = 1
    return idx, q


def padded_d(a_hat_cols, idx, q, a_bits: int):
    """D = Â[S,S] on used slots, 2^(a−1)·I on unused ones; (kmax,kmax) int64. a_hat_cols (B,kmax)."""
    cols = np.asarray(a_hat_cols, dtype=np.int64)
    D = cols[idx, :] * (q[:, None] * q[None, :])
    D = D + np.diag((1 - q) * 2 ** (a_bits - 1))
    return D


def compensation_move(theta_p_q, theta_u_q, removed, delta_ratio: int) -> tuple[int, int, list[int]]:
    """Relation v9's compensation bound for one block in exact integers: ``(sq, limit, moves)`` with
    ``moves[i] = |θ̂u_i − θ̂p_i|``, ``sq = Σ moves²`` and ``limit = ρ·Σ_{j∈removed}|θ̂p_j|``; the
    circuit admits the block iff ``0 ≤ limit² − sq < 2^s``."""
    moves = [abs(int(u) - int(p)) for p, u in zip(theta_p_q, theta_u_q)]
    limit = int(delta_ratio) * sum(abs(int(theta_p_q[j])) for j in removed)
    return sum(m * m for m in moves), limit, moves


def certify_block(theta_p_q, a_hat, positions, spec, *, block: int | None = None, protected=()) -> BlockWitness:
    """The honest integer witness for one block. theta_p_q (B,) int, a_hat (B,B) int (Â of the
    block), positions: sorted masked indices S (k ≥ 1); ``protected``: indices T the compensation
    may not move (the certified forget-aware request, disjoint from S; |S| + |T| ≤ spec.kmax).
    ``spec``: a circuits CircuitSpec.

    With P = S ∪ T the update is Group-OBS under the extra constraints δ[T] = 0:
    Â[P,P]·μ = h·[θ̂p[S]; 0], θ̂u = θ̂p − Â[:,P]·μ/h, θ̂u[S] = 0, θ̂u[T] = θ̂p[T].
    Raises QuantizationError when a bound of the circuit would fail (the message names the block)."""
    where = f"block {block}" if block is not None else "block"
    bd, cs = spec.bounds, spec.commit
    tp = np.asarray(theta_p_q, dtype=np.int64)
    Ah = np.asarray(a_hat, dtype=np.int64)
    S = np.asarray(positions, dtype=np.int64)
    T = np.asarray(protected, dtype=np.int64).reshape(-1)
    B = tp.shape[0]
    if Ah.shape != (B, B):
        raise ShapeError(f"{where}: inverse Fisher block has shape {Ah.shape}, expected ({B}, {B})")
    if S.size == 0:
        raise QuantizationError(f"{where}: no masked weight (blocks without a mask are not proven)")
    if np.intersect1d(S, T).size or np.unique(T).size != T.size or (T.size and (T.min() < 0 or T.max() >= B)):
        raise QuantizationError(f"{where}: protected positions must be distinct, in the block and not masked")
    P = np.sort(np.concatenate([S, T]))
    is_s = np.isin(P, S)
    k, kmax = P.size, spec.kmax
    idx, q = slot_layout(P, kmax)
    cols = np.zeros((B, kmax), dtype=np.int64)
    cols[:, :k] = Ah[:, P]
    D = padded_d(cols, idx, q, cs.a_bits)
    h = bd.h
    # μ* : D μ = h·[θ̂p[S]; 0 on T] (unused slots: 0), float solve + exact-residual refinement
    rhs = np.zeros(kmax, dtype=object)
    rhs[:k] = _obj(np.where(is_s, tp[P], 0)) * h
    Df = D.astype(np.float64)
    try:
        Dinv = np.linalg.inv(Df)
    except np.linalg.LinAlgError:
        raise QuantizationError(f"{where}: the masked sub-matrix of the inverse Fisher is singular") from None
    mu = np.array([int(x) for x in np.rint(Dinv @ np.array([float(x) for x in rhs]))], dtype=object)
    Dobj = _obj(D)
    for _ in range(4):
        res = rhs - Dobj.dot(mu)
        step = np.rint(Dinv @ np.array([float(x) for x in res]))
        if not np.any(step):
            break
        mu = mu + np.array([int(x) for x in step], dtype=object)
    mu = mu * _obj(q)
    mu_bound = 2 ** min(bd.s, 60)
    if any(abs(int(x)) >= mu_bound for x in mu):
        raise QuantizationError(f"{where}: μ̂ leaves its range (ill-conditioned masked sub-matrix; increase damping)")
    res = rhs - Dobj.dot(mu)
    tol_masked = 2 ** (bd.s - bd.g - bd.t)
    if max(abs(int(x)) for x in res) >= tol_masked:
        raise QuantizationError(f"{where}: masked rows residual exceeds the bound (ill-conditioned)")
    amu = _obj(cols).dot(mu)  # (B,) exact
    tu = np.zeros(B, dtype=object)
    for i in range(B):
        v = int(tp[i]) * h - int(amu[i])  # h·θ̂u ≈ h·θ̂p − Â μ̂
        tu[i] = (2 * v + h) // (2 * h)  # round half up
    tu[S] = 0
    if any(int(tu[i]) != int(tp[i]) for i in T):
        raise QuantizationError(f"{where}: a protected weight moved (internal error)")
    r = (tu - _obj(tp)) * h + amu
    free = np.ones(B, dtype=bool)
    free[P] = False
    if free.any() and max(abs(int(x)) for x in r[free]) >= h:
        raise QuantizationError(f"{where}: free-row residual exceeds one unit (internal error)")
    if max(abs(int(x)) for x in tu) >= 2 ** bd.s:
        raise QuantizationError(f"{where}: θ̂u leaves the range")
    sq, limit, moves = compensation_move(tp, tu, S, cs.delta_ratio)
    if sq > limit * limit:  # the circuit's check (v9): ‖θ̂u − θ̂p‖₂ ≤ ρ·Σ_S|θ̂p|, exact integers
        i = int(np.argmax(moves))
        raise QuantizationError(
            f"{where}: the update moves the block by {math.isqrt(sq)} units (ℓ2; weight {i} by {moves[i]}), more than "
            f"the public compensation bound {cs.delta_ratio}·Σ|θ̂p[S]| = {limit}: the committed curvature makes the "
            "masked weights a lever here (ill-conditioned or designed); increase damping")
    if limit * limit >= 2 ** bd.s:
        raise QuantizationError(f"{where}: the compensation bound {limit} leaves the range (|θ̂p| above the "
                                "commitment's θ bits)")
    Y = np.rint(Dinv * 2.0 ** bd.ty).astype(np.int64)
    if int(np.max(np.abs(Y))) >= 2 ** bd.y:
        raise QuantizationError(
            f"{where}: the masked sub-matrix of the inverse Fisher is too ill-conditioned to certify "
            f"(max|D⁻¹|·2^a = {float(np.max(np.abs(Dinv))) * 2 ** cs.a_bits:.3g} ≥ 2^{bd.gamma}); increase damping")
    E = _obj(Y).dot(Dobj) - _obj(np.eye(kmax, dtype=np.int64)) * 2 ** bd.ty
    if max(abs(int(x)) for x in E.ravel()) >= 2 ** bd.e:
        raise QuantizationError(f"{where}: the inverse certificate Y is not accurate enough (internal error)")
    return BlockWitness(theta_u=np.array([int(x) for x in tu], dtype=np.int64), mu=[int(x) for x in mu],
                        ycert=Y, idx=idx, q=q, positions=P, removed=S)


def exact_update(theta_p_q, a_hat, positions, h: int, protected=()):
    """θ̂u* as exact Fractions (B,): the Group-OBS result for the committed Â, with δ[T] = 0 on
    the ``protected`` positions T (test oracle)."""
    from fractions import Fraction

    tp = [int(x) for x in theta_p_q]
    removed = {int(x) for x in positions}
    P = sorted(removed | {int(x) for x in protected})
    k = len(P)
    Ah = np.asarray(a_hat, dtype=np.int64)
    M = [[Fraction(int(Ah[P[i], P[j]])) for j in range(k)] + [Fraction(h * tp[P[i]] if P[i] in removed else 0)]
         for i in range(k)]
    for c in range(k):  # Gauss–Jordan with exact rationals
        p = next(r for r in range(c, k) if M[r][c] != 0)
        M[c], M[p] = M[p], M[c]
        piv = M[c][c]
        M[c] = [x / piv for x in M[c]]
        for r in range(k):
            if r != c and M[r][c] != 0:
                f = M[r][c]
                M[r] = [x - f * y for x, y in zip(M[r], M[c])]
    mu = [M[i][k] for i in range(k)]
    out = []
    for i in range(len(tp)):
        if i in removed:
            out.append(Fraction(0))
        else:
            out.append(Fraction(tp[i]) - sum(int(Ah[i, P[j]]) * mu[j] for j in range(k)) / h)
    return out


def weight_unit_bound(spec) -> float:
    """1 + ε: any accepted θ̂u is within this many θ units of θ̂u* (free rows; 0 on the mask)."""
    return 1.0 + float(spec.bounds.epsilon)
