"""Fixed-point quantization of the ZK-APEX statement, its error bound and the tolerance τ.

The circuit (circuits/relation.py) works on exact integers. For blocks ``b`` of ``B`` weights:

* θ on one global power-of-two scale: ``θ̂ = round(θ · 2^sθ)``. ``sθ`` is fixed at commitment
  time from θp alone (before any mask exists), with 16× headroom below ezkl's input range
  ``|x| ≤ 2^24 − 1`` for θu and λ.
* the Fisher per block on its own power-of-two scale, so blocks of very different magnitude keep
  the same relative precision: ``s_b = −⌈log2 max|C_b|⌉`` (so ``max|C_b|·2^s_b ∈ (½, 1]``) and
  ``Ĉ_b = round(C_b · 2^(s_b + s_c))``, ``|Ĉ_b| ≤ 2^s_c``. The KKT system ``Cδ + E_Mλ = 0`` is
  invariant under ``C_b → 2^s_b C_b, λ_b → 2^s_b λ_b``; the statement is about the committed Ĉ.
* δ, λ: the prover's integer witness is the exact Group-OBS solution for the committed Ĉ,
  rounded: ``δ̂_M = −θ̂p_M`` (so θ̂u_M = 0 exactly), ``δ̂_F = round(−Ĉ_FF⁻¹ Ĉ_FM δ̂_M)`` (float64
  solve), ``λ̂_M = round(−(Ĉδ̂)_M / 2^s_c)``, ``λ̂_F = 0``. (The float core's δ is an equally valid
  starting point; it differs from this δ̂ by the quantization of C.)

The circuit checks ``|r| ≤ τ`` element-wise with ``r = Ĉδ̂ + 2^s_c λ̂`` (integers).

**Error bound.** Write ``δ*`` for the exact real solution given ``δ̂_M`` (so ``(Ĉδ*)_F = 0``) and
``e = δ̂ − δ*`` (``e_M = 0``, ``|e_F| ≤ ½ + ε`` where ε is the float64 solve error in integer
units). Off the mask, ``r_i = Σ_{j∈F} Ĉ_ij e_j``, so ``|r_i| ≤ (½+ε) Σ_{j∈F}|Ĉ_ij| ≤
(½+ε)(B−1)·2^s_c``. On the mask, λ̂ absorbs ``(Ĉδ̂)_M`` up to its rounding: ``|r_i| ≤ 2^(s_c−1)``.
Hence ``|r|_∞ ≤ (B−1)·2^(s_c−1) + ε(B−1)·2^s_c ≤ τ := B·2^(s_c−1)`` whenever ``ε ≤ 1/(2(B−1))``
(ε ~ 2^24·κ(Ĉ_FF)·2^-52, i.e. any block with condition number below ~10^6). In real units
(divide by ``2^(sθ+s_c+s_b)``) this is ``|C_b δ + E λ| ≤ B·2^-(sθ+1) · max|C_b|``: the KKT
residual of the rounded θu is at most what rounding θu to sθ bits can cause. :func:`quantize_unlearning`
computes the integer residual exactly and raises if any honest entry exceeded τ (it never should).

**What τ detects.** A cheating δ̃ = δ + η (real units) moves the residual by ``C'η`` where
``C' = 2^s_b C``: any η with ``|C'η|_∞ > B·2^-(sθ+1)`` is rejected — e.g. the mask-only update
(η = −δ_F) whenever its residual exceeds that (see tests).

τ depends only on public values (B, s_c), so the verifier recomputes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._errors import NonFiniteError, ShapeError, SingularBlockError, ZkapexError

#: ezkl's range (decomposition base 4096, 2 legs): every input and every abs/relu argument.
INPUT_BOUND = 4096 ** 2 - 1
THETA_HEADROOM = 16


class QuantizationError(ZkapexError):
    """Values do not fit the fixed-point ranges (or an honest residual exceeded τ)."""


def tau(block_size: int, s_c: int) -> int:
    """The public tolerance τ = B·2^(s_c−1) on |Ĉδ̂ + 2^s_c λ̂| (integer units)."""
    return int(block_size) * 2 ** (int(s_c) - 1)


def default_fisher_exponent(block_size: int, bound: int = INPUT_BOUND) -> int:
    """Largest s_c with B·2^s_c ≤ (bound+1)/2, so τ ≤ bound/4 and |r|−τ stays in ezkl's range."""
    s = int(math.floor(math.log2((bound + 1) / 2 / int(block_size))))
    if s < 1:
        raise QuantizationError(f"block size {block_size} too large for the range ±{bound}")
    return s


def _as_f64(x, name, ndim):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ShapeError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name} holds NaN or infinite values")
    return a


def theta_exponent(theta_p, *, bound: int = INPUT_BOUND, headroom: int = THETA_HEADROOM) -> int:
    """Largest sθ with max|θp|·2^sθ ≤ bound/headroom (capped at 40). θp: any shape."""
    t = _as_f64(theta_p, "theta_p", np.ndim(theta_p))
    m = float(np.max(np.abs(t))) if t.size else 0.0
    if m == 0.0:
        return 20
    return int(min(40, math.floor(math.log2(bound / headroom / m))))


def fisher_block_exponents(fisher) -> np.ndarray:
    """(nb,) int: s_b = −⌈log2 max|C_b|⌉, so max|C_b|·2^s_b ∈ (½, 1]. fisher (nb,B,B)."""
    c = _as_f64(fisher, "fisher", 3)
    if c.shape[1] != c.shape[2]:
        raise ShapeError(f"fisher blocks must be square, got {c.shape}")
    m = np.max(np.abs(c), axis=(1, 2))
    bad = np.flatnonzero(m == 0)
    if bad.size:
        raise SingularBlockError(f"Fisher blocks {bad[:8].tolist()} are all zero")
    return -np.ceil(np.log2(m)).astype(np.int64)


def quantize_theta(theta, s_theta: int, *, bound: int = INPUT_BOUND) -> np.ndarray:
    """round(θ·2^sθ) as int64, any shape; QuantizationError if outside ±bound."""
    t = _as_f64(theta, "theta", np.ndim(theta))
    q = np.rint(np.ldexp(t, int(s_theta))).astype(np.int64)
    _check_range(q, "theta", bound)
    return q


def quantize_fisher(fisher, block_exps, s_c: int) -> np.ndarray:
    """Ĉ_b = round(C_b·2^(s_b+s_c)) as int64 (nb,B,B); symmetric if C is."""
    c = _as_f64(fisher, "fisher", 3)
    e = np.asarray(block_exps, dtype=np.int64)
    if e.shape != (c.shape[0],):
        raise ShapeError(f"block_exps must have shape ({c.shape[0]},), got {e.shape}")
    q = np.rint(np.ldexp(c, (e + int(s_c))[:, None, None])).astype(np.int64)
    _check_range(q, "fisher", 2 ** int(s_c))
    return q


def dequantize_fisher(fisher_q, block_exps, s_c: int) -> np.ndarray:
    return np.ldexp(np.asarray(fisher_q, dtype=np.float64),
                    -(np.asarray(block_exps, dtype=np.int64) + int(s_c))[:, None, None])


def _check_range(q, name, bound):
    if q.size and int(np.max(np.abs(q))) > bound:
        i = np.unravel_index(int(np.argmax(np.abs(q))), q.shape)
        raise QuantizationError(f"{name} exceeds the fixed-point range ±{bound} at {tuple(int(x) for x in i)} "
                                f"(value {int(q[i])}); use a smaller scale")


@dataclass(frozen=True)
class QuantizedUnlearning:
    """Integer witness of one statement. Shapes: (nb,B) except residual (nb,B)."""

    theta_u: np.ndarray   # θ̂u = θ̂p + δ̂, zero on the mask
    delta: np.ndarray     # δ̂
    lam: np.ndarray       # λ̂ (scale 2^sθ; the circuit multiplies by 2^s_c), zero off the mask
    residual: np.ndarray  # r = Ĉδ̂ + 2^s_c λ̂ (exact, int64)
    tau: int


def kkt_residual_int(fisher_q, delta_q, lam_q, s_c: int) -> np.ndarray:
    """Exact r = Ĉδ̂ + 2^s_c λ̂ (int64; |Ĉ| ≤ 2^23, |δ̂| ≤ 2^24 keeps B ≤ 2^15 exact)."""
    C = np.asarray(fisher_q, dtype=np.int64)
    d = np.asarray(delta_q, dtype=np.int64)
    return np.einsum("kij,kj->ki", C, d) + np.asarray(lam_q, dtype=np.int64) * (2 ** int(s_c))


def quantize_unlearning(theta_p_q, fisher_q, mask, s_c: int, *, bound: int = INPUT_BOUND) -> QuantizedUnlearning:
    """The Group-OBS update for the committed integers, rounded (see the module docstring).

    theta_p_q (nb,B) int, fisher_q (nb,B,B) int, mask (nb,B) bool. Raises SingularBlockError if
    a block's off-mask Fisher is singular, QuantizationError if a value leaves the range or the
    honest residual exceeds τ (ill-conditioned block)."""
    tp = np.asarray(theta_p_q, dtype=np.int64)
    C = np.asarray(fisher_q, dtype=np.int64)
    m = np.asarray(mask, dtype=bool)
    nb, B = tp.shape if tp.ndim == 2 else (None, None)
    if tp.ndim != 2 or C.shape != (nb, B, B) or m.shape != (nb, B):
        raise ShapeError(f"shapes theta_p {tp.shape}, fisher {C.shape}, mask {m.shape} do not agree "
                         "((nb,B), (nb,B,B), (nb,B))")
    delta = np.where(m, -tp, 0).astype(np.int64)
    # exact solve of C_FF δ_F = −C_FM δ_M as one batched system: masked rows/cols → identity.
    Cf = C.astype(np.float64)
    keep = ~m
    A = np.where(keep[:, :, None] & keep[:, None, :], Cf, 0.0)
    A[m] = 0.0
    idx = np.nonzero(m)
    A[idx[0], idx[1], idx[1]] = 1.0
    rhs = -np.einsum("kij,kj->ki", Cf, delta.astype(np.float64))
    rhs[m] = 0.0
    try:
        sol = np.linalg.solve(A, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        sol = np.full_like(rhs, np.nan)
        for k in range(nb):
            try:
                sol[k] = np.linalg.solve(A[k], rhs[k])
            except np.linalg.LinAlgError:
                pass
    bad = np.flatnonzero(~np.all(np.isfinite(sol), axis=1))
    if bad.size:
        raise SingularBlockError(f"quantized Fisher blocks {bad[:8].tolist()} are singular off the mask")
    delta = np.where(m, delta, np.rint(sol)).astype(np.int64)
    cd = np.einsum("kij,kj->ki", C, delta)
    lam = np.where(m, -np.rint(cd / 2.0 ** s_c), 0).astype(np.int64)
    theta_u = tp + delta
    theta_u[m] = 0
    for name, a in (("theta_u", theta_u), ("lam", lam), ("delta", delta)):
        _check_range(a, name, bound)
    r = kkt_residual_int(C, delta, lam, s_c)
    t = tau(B, s_c)
    over = np.flatnonzero(np.max(np.abs(r), axis=1) > t)
    if over.size:
        raise QuantizationError(f"honest residual exceeds τ={t} in blocks {over[:8].tolist()} "
                                "(ill-conditioned Fisher blocks; increase damping)")
    return QuantizedUnlearning(theta_u=theta_u, delta=delta, lam=lam, residual=r, tau=t)


def residual_bound_real(block_size: int, s_theta: int) -> float:
    """The honest bound in real units of the normalized Fisher C' = 2^s_b C: B·2^-(sθ+1)."""
    return block_size * 2.0 ** (-(s_theta + 1))
