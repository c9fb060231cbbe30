"""Group-OBS over all Fisher blocks in one ``jax.jit`` with fixed shapes.

For every block ``b`` with Fisher ``C`` (``B x B``, symmetric positive definite), weights
``theta`` (``B``) and a boolean mask ``m`` selecting the weights to remove (``E`` = the columns of
the identity at the masked positions), Group-OBS solves

    min_delta  1/2 delta^T C delta   s.t.  E^T (theta + delta) = 0

whose KKT conditions are ``C delta + E lam = 0`` and ``E^T delta = -theta_M``:

    lam_M  = (E^T C^-1 E)^-1 theta_M
    delta  = -C^-1 E lam_M = -C^-1 E (E^T C^-1 E)^-1 theta_M.

Fixed shapes whatever the number of masked entries per block (0 included): the masked
positions of each block are gathered into ``idx (nb, K)`` (``K`` = the largest count, rounded
up to a multiple of 8, or a caller-fixed ``max_masked``), padded with a ``valid`` flag. With the
Cholesky factor ``C = L L^T`` we solve ``X = C^-1 E`` (``B x K``; padding columns of ``E`` are
zero), form ``S = E^T C^-1 E`` on the valid rows/columns and the identity on the padding (so
``S`` is symmetric positive definite), solve ``S lam_K = where(valid, theta[idx], 0)`` by
Cholesky and set ``delta = -X lam_K``. The padding part of ``lam_K`` is exactly zero, and
``lam`` scattered back to ``(nb, B)`` is zero off the mask. A block with no masked weight gives
``lam = delta = 0``. All blocks go through one ``jax.jit``; ``C^-1`` is never formed, so a block
costs ``B^3/3`` (Cholesky, once per Fisher) ``+ 2 B^2 K`` (per mask).

:func:`factorize` computes and validates the Cholesky factor once so that many masks can reuse
it (lineax style). Inputs are validated outside the jit (shapes, dtypes, finiteness, symmetry,
positive definiteness); a singular masked sub-system is detected after the jit from the result
(non-finite values or a masked constraint that is not met) and reported with the block index.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from .._errors import NonFiniteError, ShapeError, SingularBlockError

__all__ = [
    "FisherFactor",
    "GroupOBSResult",
    "factorize",
    "group_obs",
    "apply_delta",
    "kkt_residual",
    "constraint_residual",
    "masked_positions",
    "fisher_group_obs",
    "block_batch_for",
    "forget_subspace",
    "compensation_basis",
    "protected_basis",
    "forget_aware_obs",
]

_HI = lax.Precision.HIGHEST  # no TF32/bf16 passes on GPU/TPU


class FisherFactor(NamedTuple):
    """A validated block-wise Fisher and its Cholesky factor, reusable for many masks.

    Attributes:
      fisher: ``(nb, B, B)`` the Fisher blocks ``C``.
      chol: ``(nb, B, B)`` lower-triangular ``L`` with ``C = L L^T``.
    """

    fisher: Any
    chol: Any


class GroupOBSResult(NamedTuple):
    """Result of :func:`group_obs`.

    Attributes:
      delta: ``(nb, B)`` the update; ``theta + delta`` vanishes on the mask (up to rounding;
        :func:`apply_delta` sets it exactly).
      lam: ``(nb, B)`` the Lagrange multipliers ``E lam_M``, zero off the mask.
      residual: ``(nb,)`` ``max |C delta + E lam|`` per block (the KKT stationarity residual).
    """

    delta: Any
    lam: Any
    residual: Any


# ---------------------------------------------------------------------------- helpers
def _blocks_str(bad: np.ndarray, limit: int = 8, offset: int = 0) -> str:
    idx = np.flatnonzero(bad) + offset
    s = ", ".join(str(int(i)) for i in idx[:limit])
    if idx.size > limit:
        s += f", ... ({idx.size} blocks in all)"
    return s


def _check_float(x, name: str):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ShapeError(f"{name} must be floating point, got dtype {x.dtype}")


def _check_finite_blocks(x, name: str, axes: tuple[int, ...], offset: int = 0):
    ok = np.asarray(jnp.all(jnp.isfinite(x), axis=axes))
    if not ok.all():
        raise NonFiniteError(f"{name} holds NaN or infinite values in block(s) {_blocks_str(~ok, offset=offset)}")


def _default_rtol(dtype) -> float:
    # measured (benchmarks/bench_fisher_obs.py, B=576, N=480 < B, damping 1e-6): float32 meets the
    # masked constraint to ~4e-7 relative; a singular masked system misses it by O(1) or gives
    # non-finite values. 5e-2 leaves room for much worse conditioning before raising.
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 5e-2


@jax.jit
def _factor_core(fisher):
    """Per-block checks and the Cholesky factor in one program. The symmetry check is a fused
    reduction (no transposed copy is materialized) and the factorization reads the lower
    triangle only (``symmetrize_input=False``: the check above already bounds the asymmetry)."""
    finite = jnp.all(jnp.isfinite(fisher), axis=(1, 2))
    scale = jnp.max(jnp.abs(fisher), axis=(1, 2))
    asym = jnp.max(jnp.abs(fisher - jnp.swapaxes(fisher, 1, 2)), axis=(1, 2))
    chol = jnp.linalg.cholesky(fisher, symmetrize_input=False)
    diag = jnp.diagonal(chol, axis1=1, axis2=2)
    ok = jnp.all(jnp.isfinite(diag), axis=1) & jnp.all(diag > 0, axis=1)
    return chol, finite, asym, scale, ok


def _lapack_threads(fisher):
    """On CPU, XLA factorizes a batch of blocks with one LAPACK ``potrf`` call per block; for
    blocks up to 1024 OpenBLAS's own threading slows each call down (measured at B = 576, 512
    blocks, 2 cores: 2.45 s with 2 BLAS threads, 1.71 s with 1). Limit BLAS to one thread for
    the duration of the call there; elsewhere (accelerators, big blocks) change nothing."""
    import contextlib  # noqa: PLC0415

    if fisher.shape[-1] > 1024 or jax.default_backend() != "cpu":
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:  # pragma: no cover - pinned, but optional for correctness
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def factorize(fisher: Any, *, block_offset: int = 0) -> FisherFactor:
    """Validate ``fisher`` ``(nb, B, B)`` and compute its Cholesky factor once.

    Raises:
      ShapeError: not ``(nb, B, B)`` with ``nb, B >= 1``, or not floating point.
      NonFiniteError: NaN/inf entries (the message names the blocks).
      SingularBlockError: a block that is not symmetric (relative asymmetry above
        ``sqrt(eps)``) or not numerically positive definite (the message names the blocks,
        numbered from ``block_offset``).
    """
    fisher = jnp.asarray(fisher)
    if fisher.ndim != 3 or fisher.shape[1] != fisher.shape[2] or min(fisher.shape) < 1:
        raise ShapeError(f"fisher must be (nb, B, B) with nb, B >= 1, got shape {fisher.shape}")
    _check_float(fisher, "fisher")
    with _lapack_threads(fisher):
        chol, finite, asym, scale, ok = _factor_core(fisher)
        finite = np.asarray(finite)  # waits for the whole program inside the context
    if not finite.all():
        raise NonFiniteError(f"fisher holds NaN or infinite values in block(s) {_blocks_str(~finite, offset=block_offset)}")
    tol = float(np.sqrt(np.finfo(fisher.dtype).eps))
    bad = np.asarray(asym) > tol * np.asarray(scale)
    if bad.any():
        raise SingularBlockError(f"fisher block(s) {_blocks_str(bad, offset=block_offset)} are not symmetric")
    ok = np.asarray(ok)
    if not ok.all():
        raise SingularBlockError(
            f"fisher block(s) {_blocks_str(~ok, offset=block_offset)} are not positive definite (Cholesky failed); "
            "increase the damping"
        )
    return FisherFactor(fisher, chol)


def _cho_solve(chol, rhs):
    y = solve_triangular(chol, rhs, lower=True)
    return solve_triangular(chol, y, lower=True, trans="T")


@jax.jit
def _group_obs_core(fisher, chol, theta, idx, valid):
    """One jit over all blocks.

    ``fisher, chol (nb,B,B)``, ``theta (nb,B)``, ``idx (nb,K)`` int32 positions of the masked
    weights of each block padded to ``K`` (padding points at 0), ``valid (nb,K)`` bool.
    Returns ``delta (nb,B), lam (nb,B), residual (nb,)``.

    With ``C = L L^T`` and ``Y = L^-1 E`` (one triangular solve with ``K`` right-hand sides),
    ``E^T C^-1 E = Y^T Y`` (symmetric by construction) and ``delta = -C^-1 E lam =
    -L^-T (Y lam)`` (one solve with a single right-hand side): half the triangular work of
    forming ``C^-1 E`` explicitly.
    """
    nb, b = theta.shape
    dtype = theta.dtype
    zero = jnp.zeros((), dtype)
    rhs = jnp.where(valid, jnp.take_along_axis(theta, idx, axis=1), zero)
    delta, lam_k = _kkt_solve(chol, _one_hot_columns(idx, valid, b, dtype), valid, rhs)
    lam = jnp.zeros((nb, b), dtype).at[jnp.arange(nb)[:, None], idx].add(lam_k)
    residual = _kkt_residual(fisher, delta, lam)
    return delta, lam, residual


def _one_hot_columns(idx, valid, b: int, dtype):
    """E ``(nb, B, K)``: one-hot columns at the masked positions, zero columns for the padding."""
    return ((jnp.arange(b, dtype=idx.dtype)[None, :, None] == idx[:, None, :]) & valid[:, None, :]).astype(dtype)


def _kkt_solve(chol, a, av, rhs):
    """``delta = -C^-1 A (A^T C^-1 A)^-1 rhs`` per block for constraint columns ``a (nb, B, m)``
    (``av (nb, m)`` marks the used ones; padding columns are zero), from ``C = L L^T``: with
    ``Y = L^-1 A`` (one triangular solve with m right-hand sides), ``A^T C^-1 A = Y^T Y``
    (symmetric by construction, identity on the padding) and ``delta = -L^-T (Y nu)`` (one solve
    with a single right-hand side). Returns ``(delta (nb, B), nu (nb, m))``, ``nu`` zero on the
    padding."""
    m = a.shape[2]
    dtype = a.dtype
    zero = jnp.zeros((), dtype)
    y = solve_triangular(chol, a, lower=True)
    s = jnp.einsum("bik,bil->bkl", y, y, precision=_HI)
    s = jnp.where(av[:, :, None] & av[:, None, :], s, jnp.eye(m, dtype=dtype))  # (+) I on the padding
    nu = _cho_solve(jnp.linalg.cholesky(s, symmetrize_input=False), rhs[..., None])[..., 0]
    nu = jnp.where(av, nu, zero)
    w = jnp.einsum("bik,bk->bi", y, nu, precision=_HI)
    delta = -solve_triangular(chol, w[..., None], lower=True, trans="T")[..., 0]
    return delta, nu


def masked_positions(mask: Any, *, max_masked: int | None = None):
    """``(nb, B)`` bool -> ``idx (nb, K)`` int32 (masked positions, ascending, padded with 0) and
    ``valid (nb, K)`` bool. ``K = max_masked`` if given (``ShapeError`` if a block has more),
    else the largest count rounded up to a multiple of 8 (capped at ``B``, at least 1), so that
    masks of similar density share one compiled program."""
    m = np.asarray(mask)
    nb, b = m.shape
    counts = m.sum(axis=1)
    kmax = int(counts.max()) if nb else 0
    if max_masked is None:
        k = min(b, max(1, -(-kmax // 8) * 8))
    else:
        k = int(max_masked)
        if not 1 <= k <= b:
            raise ShapeError(f"max_masked must be in [1, B = {b}], got {max_masked}")
        if kmax > k:
            raise ShapeError(f"block {int(np.argmax(counts))} has {kmax} masked weights > max_masked = {k}")
    # stable argsort of ~mask puts the masked positions first, in ascending order
    order = np.argsort(~m, axis=1, kind="stable")[:, :k].astype(np.int32)
    valid = np.arange(k)[None, :] < counts[:, None]
    idx = np.where(valid, order, 0).astype(np.int32)
    return idx, valid


def _kkt_residual(fisher, delta, lam):
    return jnp.max(jnp.abs(jnp.einsum("bij,bj->bi", fisher, delta, precision=_HI) + lam), axis=-1)


def group_obs(
    theta: Any,
    fisher: Any,
    mask: Any,
    *,
    check: bool = True,
    rtol: float | None = None,
    max_masked: int | None = None,
    block_offset: int = 0,
) -> GroupOBSResult:
    """Group-OBS update of every block in one jit.

    Args:
      theta: ``(nb, B)`` the personalized weights ``theta_p`` in block layout.
      fisher: ``(nb, B, B)`` symmetric positive definite Fisher blocks ``C``, or a
        :class:`FisherFactor` from :func:`factorize` (reused across masks).
      mask: ``(nb, B)`` bool, True where a weight must be removed (any count per block, 0 ok).
      check: verify the result (finite, and the masked constraint ``theta_M + delta_M = 0`` met to
        ``rtol`` relative to ``max |theta_M|`` per block); a failing block raises
        ``SingularBlockError`` naming it (its masked sub-system ``E^T C^-1 E`` is singular).
      rtol: tolerance of that check (default 5e-2 for float32, 1e-6 for float64).
      max_masked: the static width ``K`` of the masked sub-systems (see
        :func:`masked_positions`); by default the largest per-block count rounded up to a
        multiple of 8. Fix it to reuse one compiled program for every mask.
      block_offset: the index of the first block, used only to name blocks in errors.

    Cost per block: ``2 B^2 K`` for ``C^-1 E`` from the Cholesky factor plus ``O(K^3)``, all
    blocks in one jitted program whose shapes depend only on ``(nb, B, K)``.

    Returns:
      :class:`GroupOBSResult` ``(delta (nb, B), lam (nb, B) zero off the mask, residual (nb,))``.

    Raises:
      ShapeError, NonFiniteError, SingularBlockError: see :func:`factorize`, plus bad ``theta``
      or ``mask`` shapes/dtypes and singular masked sub-systems.
    """
    factor = fisher if isinstance(fisher, FisherFactor) else factorize(fisher, block_offset=block_offset)
    nb, b, _ = factor.fisher.shape
    theta = jnp.asarray(theta)
    mask = jnp.asarray(mask)
    if theta.shape != (nb, b):
        raise ShapeError(f"theta must be (nb, B) = {(nb, b)} to match fisher, got shape {theta.shape}")
    if mask.shape != (nb, b):
        raise ShapeError(f"mask must be (nb, B) = {(nb, b)} to match fisher, got shape {mask.shape}")
    if mask.dtype != jnp.bool_:
        raise ShapeError(f"mask must be boolean, got dtype {mask.dtype}")
    _check_float(theta, "theta")
    if theta.dtype != factor.fisher.dtype:
        raise ShapeError(f"theta dtype {theta.dtype} differs from fisher dtype {factor.fisher.dtype}")
    _check_finite_blocks(theta, "theta", (1,), offset=block_offset)
    idx, valid = masked_positions(mask, max_masked=max_masked)
    delta, lam, residual = _group_obs_core(factor.fisher, factor.chol, theta, jnp.asarray(idx), jnp.asarray(valid))
    if check:
        _check_solution(theta, delta, lam, mask, rtol, block_offset, "the masked sub-system E^T C^-1 E")
    return GroupOBSResult(delta, lam, residual)


def _check_solution(theta, delta, lam, mask, rtol, block_offset: int, system: str) -> None:
    """Raise ``SingularBlockError`` naming the blocks whose solution is non-finite or misses the
    masked constraint ``theta_M + delta_M = 0`` by more than ``rtol`` (default per dtype) relative
    to ``max |theta_M|``; ``system`` names what was solved."""
    tol = _default_rtol(theta.dtype) if rtol is None else float(rtol)
    finite = np.asarray(jnp.all(jnp.isfinite(delta) & jnp.isfinite(lam), axis=1))
    if not finite.all():
        raise SingularBlockError(
            f"{system} of block(s) {_blocks_str(~finite, offset=block_offset)} is singular (non-finite solution)"
        )
    err = np.asarray(constraint_residual(theta, delta, mask)).astype(np.float64)
    scale = np.asarray(jnp.max(jnp.where(mask, jnp.abs(theta), jnp.zeros((), theta.dtype)), axis=1)).astype(np.float64)
    bad = err > tol * scale + float(np.finfo(np.dtype(theta.dtype)).tiny)
    if bad.any():
        worst = int(np.argmax(np.where(bad, err / np.maximum(scale, 1e-300), -1.0)))
        raise SingularBlockError(
            f"{system} of block(s) {_blocks_str(bad, offset=block_offset)} is singular or "
            f"too ill-conditioned for {theta.dtype}: theta_M + delta_M = {err[worst]:.3g} vs "
            f"max|theta_M| = {scale[worst]:.3g} in block {worst + block_offset} (rtol {tol:g}); "
            "increase the damping or use float64"
        )


def apply_delta(theta: Any, delta: Any, mask: Any):
    """``theta_u = theta + delta`` with ``theta_u[mask] = 0`` exactly. Shapes ``(nb, B)`` (or any
    common shape); jittable."""
    theta, delta, mask = jnp.asarray(theta), jnp.asarray(delta), jnp.asarray(mask)
    if theta.shape != delta.shape or theta.shape != mask.shape:
        raise ShapeError(f"theta {theta.shape}, delta {delta.shape} and mask {mask.shape} must match")
    if mask.dtype != jnp.bool_:
        raise ShapeError(f"mask must be boolean, got dtype {mask.dtype}")
    return jnp.where(mask, jnp.zeros((), theta.dtype), theta + delta)


def kkt_residual(fisher: Any, delta: Any, lam: Any):
    """``max_i |(C delta + E lam)_i|`` per block: ``(nb,B,B), (nb,B), (nb,B) -> (nb,)`` (``lam``
    zero off the mask, as :func:`group_obs` returns it). Jittable."""
    fisher, delta, lam = jnp.asarray(fisher), jnp.asarray(delta), jnp.asarray(lam)
    if fisher.ndim != 3 or delta.shape != fisher.shape[:2] or lam.shape != delta.shape:
        raise ShapeError(f"expected fisher (nb,B,B), delta and lam (nb,B); got {fisher.shape}, {delta.shape}, {lam.shape}")
    return _kkt_residual(fisher, delta, lam)


def constraint_residual(theta: Any, delta: Any, mask: Any):
    """``max_{i in M} |theta_i + delta_i|`` per block (0 for a block with nothing masked). Jittable."""
    theta, delta, mask = jnp.asarray(theta), jnp.asarray(delta), jnp.asarray(mask)
    return jnp.max(jnp.where(mask, jnp.abs(theta + delta), jnp.zeros((), theta.dtype)), axis=-1)


# ---------------------------------------------------------------------------- bounded memory
def _bytes_per_block(n: int, b: int, k: int, itemsize: int) -> int:
    """Working set of one block inside :func:`fisher_group_obs`: its slice of the gradients, the
    Gram/Fisher block, the Cholesky factor, one more B x B temporary (the factorization's
    checks), ``E``, ``L^-1 E`` and a few B-vectors."""
    return itemsize * (n * b + 3 * b * b + 2 * b * k + 8 * b)


def block_batch_for(max_memory: int, *, n: int, block_size: int, max_masked: int, itemsize: int = 4) -> int:
    """The largest number of blocks whose working set (see :func:`fisher_group_obs`) fits in
    ``max_memory`` bytes; ``ValueError`` if not even one block fits."""
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, np.integer)) or max_memory < 1:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    per = _bytes_per_block(n, block_size, max_masked, itemsize)
    if per > max_memory:
        raise ValueError(f"max_memory = {max_memory} bytes is below one block's working set ({per} bytes: "
                         f"N = {n}, B = {block_size}, K = {max_masked})")
    return int(max_memory // per)


def fisher_group_obs(
    grads: Any,
    theta: Any,
    mask: Any,
    *,
    damping: float,
    block_batch: int | None = None,
    max_memory: int | None = None,
    max_masked: int | None = None,
    check: bool = True,
    rtol: float | None = None,
) -> GroupOBSResult:
    """Per-example gradients -> block Fisher -> Cholesky -> Group-OBS, ``block_batch`` blocks at
    a time, so that the working set is bounded whatever the number of blocks.

    Equivalent to ``group_obs(theta, blockwise_fisher(grads, B, damping=damping), mask)`` but no
    ``(nb, B, B)`` array is ever held: groups of ``block_batch`` blocks go through
    :func:`~zkapex_jax.core.fisher.blockwise_fisher`, :func:`factorize` and :func:`group_obs` and only
    ``delta``, ``lam`` and ``residual`` (``O(nb B)``) are kept. Every group has the same static
    shape (the last one is computed with its own, smaller shape), and ``K`` is fixed for all groups
    from the whole mask, so at most two programs are compiled.

    Args:
      grads: ``(N, nb, B)`` per-example gradients in block layout (``(N, D)`` with ``D = nb*B``
        is accepted when ``theta`` gives ``nb, B``). A numpy array (e.g. ``np.load(...,
        mmap_mode="r")``) stays on the host and is sent to the device one group at a time.
      theta: ``(nb, B)`` ``theta_p`` in block layout.
      mask: ``(nb, B)`` bool.
      damping: non-negative float added on the Fisher's diagonal.
      block_batch: blocks per group (default: all, or what ``max_memory`` allows).
      max_memory: a budget in bytes for the per-group working set (the gradients themselves and
        the ``O(nb B)`` outputs are the caller's and not counted); sets ``block_batch`` with
        :func:`block_batch_for`. Give one of ``block_batch``/``max_memory``, not both.
      max_masked, check, rtol: as in :func:`group_obs`.

    Returns:
      :class:`GroupOBSResult` over all ``nb`` blocks. Errors name global block indices.
    """
    from .fisher import blockwise_fisher  # noqa: PLC0415 - fisher imports nothing from obs

    theta = jnp.asarray(theta)
    if theta.ndim != 2:
        raise ShapeError(f"theta must be (nb, B), got shape {theta.shape}")
    nb, b = theta.shape
    # a host (numpy, possibly memory-mapped) array stays on the host: only one group at a time is
    # copied to the device, so neither host nor device ever holds a second full copy
    grads = grads if isinstance(grads, np.ndarray) else jnp.asarray(grads)
    if grads.ndim == 2 and grads.shape[1] == nb * b:
        grads = grads.reshape(grads.shape[0], nb, b)
    if grads.ndim != 3 or grads.shape[1:] != (nb, b):
        raise ShapeError(f"grads must be (N, nb, B) = (N, {nb}, {b}) or (N, {nb * b}), got shape {grads.shape}")
    m = np.asarray(mask)
    if m.shape != (nb, b) or m.dtype != np.bool_:
        raise ShapeError(f"mask must be boolean (nb, B) = {(nb, b)}, got {m.dtype} {m.shape}")
    if block_batch is not None and max_memory is not None:
        raise ValueError("give block_batch or max_memory, not both")
    k = masked_positions(m, max_masked=max_masked)[0].shape[1]
    if max_memory is not None:
        block_batch = block_batch_for(max_memory, n=int(grads.shape[0]), block_size=b, max_masked=k,
                                      itemsize=jnp.dtype(grads.dtype).itemsize)
    if block_batch is None:
        block_batch = nb
    if isinstance(block_batch, bool) or not isinstance(block_batch, (int, np.integer)) or block_batch < 1:
        raise ValueError(f"block_batch must be a positive integer, got {block_batch!r}")
    step = min(int(block_batch), nb)
    deltas, lams, residuals = [], [], []
    for start in range(0, nb, step):
        sl = slice(start, min(start + step, nb))
        g = grads[:, sl, :]
        g = jnp.asarray(np.ascontiguousarray(g)) if isinstance(g, np.ndarray) else g
        fisher = blockwise_fisher(g.reshape(g.shape[0], -1), b, damping=damping)
        del g
        res = group_obs(theta[sl], factorize(fisher, block_offset=start), jnp.asarray(m[sl]), check=check,
                        rtol=rtol, max_masked=k, block_offset=start)
        deltas.append(res.delta)
        lams.append(res.lam)
        residuals.append(res.residual)
        del fisher, res
    cat = (lambda xs: xs[0]) if len(deltas) == 1 else (lambda xs: jnp.concatenate(xs, 0))
    return GroupOBSResult(cat(deltas), cat(lams), cat(residuals))


# ---------------------------------------------------------------------------- forget-aware variant


def forget_subspace(forget_fisher: Any, rank: int) -> jax.Array:
    """The provider's per-block forget subspace: the top-``rank`` eigenvectors of each block of the
    forget set's (undamped) block Fisher ``F_b = (1/N) sum g g^T`` -- equivalently the top right
    singular vectors of the forget per-example gradients in that block.

    ``(nb, B, B) -> U (nb, B, rank)`` (orthonormal columns, largest eigenvalue first). Jittable."""
    f = jnp.asarray(forget_fisher)
    if f.ndim != 3 or f.shape[1] != f.shape[2]:
        raise ShapeError(f"forget_fisher must be (nb, B, B), got shape {f.shape}")
    if not 1 <= int(rank) <= f.shape[1]:
        raise ShapeError(f"rank must be in [1, B = {f.shape[1]}], got {rank}")
    _, vecs = jnp.linalg.eigh(0.5 * (f + jnp.swapaxes(f, 1, 2)))
    return vecs[:, :, ::-1][:, :, : int(rank)]


def protected_basis(protected: Any) -> np.ndarray:
    """The coordinate basis of the provider's protected weights (the certified forget-aware
    request, :func:`zkapex_jax.core.mask.protect_top`): ``(nb, B)`` bool -> ``(nb, B, r)`` one-hot
    columns (``r`` = the largest per-block count, at least 1; unused columns zero). With it
    :func:`forget_aware_obs` is Group-OBS under ``delta[T] = 0`` -- the update the circuit certifies."""
    t = np.asarray(protected, dtype=bool)
    if t.ndim != 2:
        raise ShapeError(f"protected must be (nb, B), got shape {t.shape}")
    r = max(1, int(t.sum(axis=1).max(initial=0)))
    out = np.zeros((*t.shape, r))
    b, i = np.nonzero(t)
    out[b, i, (np.cumsum(t, axis=1) - 1)[b, i]] = 1.0   # the j-th protected weight of a block → column j
    return out


def compensation_basis(basis: Any, mask: Any, *, rank_tol: float = 1e-6):
    """Host-side preparation of the extra constraints of :func:`forget_aware_obs`: the rows of
    ``basis`` at masked positions are zeroed (``delta_M = -theta_M`` is fixed by the mask; only
    the compensation on the kept weights is constrained), the rest is orthonormalized per block
    (float64 SVD) and directions whose singular value falls below ``rank_tol`` times the block's
    largest are dropped (padding). ``(nb, B, r), (nb, B) -> Q (nb, B, r)``, ``valid (nb, r)`` bool."""
    u = np.array(basis, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if u.ndim != 3 or u.shape[:2] != m.shape:
        raise ShapeError(f"basis must be (nb, B, r) matching mask {m.shape}, got shape {u.shape}")
    if u.shape[2] > u.shape[1]:
        raise ShapeError(f"basis has {u.shape[2]} columns, more than the block size {u.shape[1]}")
    if not np.isfinite(u).all():
        raise NonFiniteError("basis has non-finite values")
    u[m] = 0.0
    nb, b, r = u.shape
    q = np.zeros_like(u)
    valid = np.zeros((nb, r), bool)
    if r == 0 or nb == 0:
        return q, valid
    w, sv, _ = np.linalg.svd(u, full_matrices=False)  # w (nb, B, r) orthonormal, sv (nb, r) descending
    keep = sv > rank_tol * np.maximum(sv[:, :1], 1e-300)
    q = np.where(keep[:, None, :], w, 0.0)  # the kept directions span U_R; descending order packs them first
    valid = keep
    return q, valid


@jax.jit
def _forget_aware_core(fisher, chol, theta, idx, valid, q, qvalid):
    """Group-OBS with extra constraints ``Q^T delta = 0``: the constraint matrix is ``A = [E, Q]``
    (``(nb, B, K + r)``; padding columns zero and identity on ``S``'s padding), right-hand side
    ``[theta_M; 0]``, and ``delta = -C^-1 A (A^T C^-1 A)^-1 [theta_M; 0]``.
    Returns ``delta (nb,B)``, ``lam = A nu (nb,B)`` (``E lam_M + Q mu``), ``residual (nb,)``."""
    nb, b = theta.shape
    r = q.shape[2]
    dtype = theta.dtype
    zero = jnp.zeros((), dtype)
    e = _one_hot_columns(idx, valid, b, dtype)
    a = jnp.concatenate([e, jnp.where(qvalid[:, None, :], q, zero)], axis=2)  # (nb, B, K + r)
    av = jnp.concatenate([valid, qvalid], axis=1)
    rhs = jnp.concatenate([jnp.where(valid, jnp.take_along_axis(theta, idx, axis=1), zero),
                           jnp.zeros((nb, r), dtype)], axis=1)
    delta, nu = _kkt_solve(chol, a, av, rhs)
    lam = jnp.einsum("bik,bk->bi", a, nu, precision=_HI)
    return delta, lam, _kkt_residual(fisher, delta, lam)


def forget_aware_obs(
    theta: Any,
    fisher: Any,
    mask: Any,
    basis: Any,
    *,
    check: bool = True,
    rtol: float | None = None,
    max_masked: int | None = None,
    rank_tol: float = 1e-6,
    block_offset: int = 0,
) -> GroupOBSResult:
    """Forget-aware Group-OBS (beyond the paper): the compensation may not move the kept weights
    along the provider's forget subspace ``U``.

    Per block: ``min 1/2 delta^T C delta`` s.t. ``E^T (theta + delta) = 0`` and
    ``U_R^T delta = 0``, where ``U_R`` is ``U`` with its masked rows zeroed
    (:func:`compensation_basis`). To first order the forget inputs then see only the removal of
    the masked weights, not the compensation that would rebuild their effect. ``delta = 0`` on the
    kept weights is always feasible and ``[E, U_R]`` has full column rank after the
    orthonormalization, so every block is solvable. One jit over all blocks, as :func:`group_obs`.

    Args:
      theta, fisher, mask, check, rtol, max_masked, block_offset: as :func:`group_obs`.
      basis: ``(nb, B, r)`` the public forget subspace per block (e.g. :func:`forget_subspace`
        of the forget set's block Fisher); columns need not be orthonormal.
      rank_tol: relative tolerance for dropping dependent columns of ``U_R``.

    Returns:
      :class:`GroupOBSResult`; here ``lam = E lam_M + U_R mu`` (not zero off the mask), so
      ``kkt_residual(fisher, delta, lam)`` is still ``max |C delta + lam|``.
    """
    factor = fisher if isinstance(fisher, FisherFactor) else factorize(fisher, block_offset=block_offset)
    nb, b, _ = factor.fisher.shape
    theta = jnp.asarray(theta)
    mask_np = np.asarray(mask)
    if theta.shape != (nb, b) or mask_np.shape != (nb, b):
        raise ShapeError(f"theta and mask must be (nb, B) = {(nb, b)}, got {theta.shape} and {mask_np.shape}")
    if mask_np.dtype != np.bool_:
        raise ShapeError(f"mask must be boolean, got dtype {mask_np.dtype}")
    _check_float(theta, "theta")
    _check_finite_blocks(theta, "theta", (1,), offset=block_offset)
    q, qvalid = compensation_basis(basis, mask_np, rank_tol=rank_tol)
    idx, valid = masked_positions(mask_np, max_masked=max_masked)
    delta, lam, residual = _forget_aware_core(factor.fisher, factor.chol, theta, jnp.asarray(idx), jnp.asarray(valid),
                                              jnp.asarray(q, theta.dtype), jnp.asarray(qvalid))
    if check:
        _check_solution(theta, delta, lam, jnp.asarray(mask_np), rtol, block_offset,
                        "forget-aware Group-OBS: the constrained system [E, U_R]^T C^-1 [E, U_R]")
    return GroupOBSResult(delta, lam, residual)
