"""The public statement of one unlearning request and its binding into every proof.

Each chunk proof carries ``n_ctx`` public 21-bit limbs of ``H(statement core ‖ chunk index)``; the
verifier recomputes them, so a proof made for another client, request, mask, personalization
commitment, circuit or chunk position is rejected (the limbs are public instances: editing them
invalidates the proof)."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ..core.mask import MASKED, PROTECTED
from .artifacts import canonical_json

LIMB_BITS = 21


def request_codes(mask_blocks) -> np.ndarray:
    """The request per weight, (nb,B) int8: a boolean block mask (True = masked), or codes
    0 / :data:`~zkapex_jax.core.mask.MASKED` (1) / :data:`~zkapex_jax.core.mask.PROTECTED` (2)
    (:meth:`~zkapex_jax.core.mask.Mask.request_blocks`). ValueError on anything else."""
    m = np.asarray(mask_blocks)
    if m.ndim != 2:
        raise ValueError(f"mask blocks must be (nb, B), got shape {m.shape}")
    if m.dtype == np.bool_:
        return m.astype(np.int8)
    if not np.issubdtype(m.dtype, np.integer) or (m.size and (m.min() < 0 or m.max() > PROTECTED)):
        raise ValueError("mask blocks must be boolean or hold the codes 0 (free), 1 (masked), 2 (protected)")
    return m.astype(np.int8)


def masked_of(codes) -> np.ndarray:
    """(nb,B) bool: the weights the request zeroes."""
    return np.asarray(codes) == MASKED


def mask_digest(mask_blocks) -> str:
    """sha256 of a (nb,B) block request (shape + packed bits of the masked weights, then, when
    there are protected weights, their packed bits): what the statement binds."""
    m = request_codes(mask_blocks)
    h = hashlib.sha256(canonical_json(["zkapex.mask-blocks", list(m.shape)]))
    h.update(np.packbits((m == MASKED).ravel()).tobytes())
    if np.any(m == PROTECTED):
        h.update(b"zkapex.protected-blocks")
        h.update(np.packbits((m == PROTECTED).ravel()).tobytes())
    return h.hexdigest()


def statement_core(*, client_id: str, request_id: str, mask_digest: str, commitment_sha256: str,
                   spec: dict, theta_exp: int, n_chunks: int, mask_sha256: str = "", rest_digest: str = "") -> dict:
    """What every proof's limbs bind: who, which request, which mask — its bits (``mask_digest``)
    and the whole published mask file (``mask_sha256``: forget set, method, fraction, meta) — which
    commitment (whose hash covers θp, Â and the digest of the parameters outside the statement,
    repeated as ``rest_digest``), the circuit spec, sθ and the number of proofs."""
    return {"client_id": client_id, "request_id": request_id, "mask_digest": mask_digest,
            "mask_sha256": mask_sha256, "commitment_sha256": commitment_sha256, "rest_digest": rest_digest,
            "spec": spec, "theta_exp": int(theta_exp), "n_chunks": int(n_chunks)}


def context_limbs(core: dict, chunk_index: int, n_ctx: int) -> list[int]:
    """``n_ctx`` limbs of LIMB_BITS bits of sha256(core ‖ chunk) (top bits first), in [0, 2^21)."""
    digest = hashlib.sha256(canonical_json({"core": core, "chunk": int(chunk_index)})).digest()
    v = int.from_bytes(digest, "big")
    total = 256
    limbs = []
    for i in range(n_ctx):
        shift = total - LIMB_BITS * (i + 1)
        limbs.append((v >> shift) & ((1 << LIMB_BITS) - 1) if shift >= 0 else (v << -shift) & ((1 << LIMB_BITS) - 1))
    return limbs


def n_chunks(num_blocks: int, chunk_blocks: int) -> int:
    return max(1, math.ceil(num_blocks / chunk_blocks))


# ----------------------------------------------------------------------------- the proof plan

#: blocks per proof are capped so a proof stays small enough to retry cheaply.
MAX_CHUNK_BLOCKS = 16


def bucket_sizes(block_size: int) -> list[int]:
    """Slot counts of the buckets: 1, 2, 4, then 1.5× steps (8, 12, 16, 24, 32, 48, …) up to the
    block size (a block pays for its bucket's kmax, so steps stay ≤ 1.5×)."""
    out, k = [1, 2, 4], 8
    while k < block_size:
        out.append(k)
        out.append(k * 3 // 2)
        k *= 2
    return sorted({x for x in out if x < block_size} | {block_size})


def bucket_spec(cspec, kmax: int, *, root=None, protected: bool = False):
    """The circuit of bucket ``kmax`` (``protected``: the variant for blocks with protected
    weights): as many blocks per proof as fit the commitment's logrows (≤ MAX_CHUNK_BLOCKS), or
    None if not even one block fits (or no sound bounds exist for ``kmax`` slots). Row counts come from ezkl's own layout (gen_settings,
    cached), so both parties find the same K."""
    from ._circuits import relation, stages

    try:
        relation.derive_bounds(cspec, kmax)
    except ValueError:  # no sound bounds for that many slots (e.g. kmax = 576 at s = 60): no circuit
        return None
    one = relation.CircuitSpec(cspec, kmax=kmax, chunk_blocks=1, protected=protected)
    if not stages.fits(one, root=root):
        return None
    lo, hi = 1, MAX_CHUNK_BLOCKS + 1  # fits(lo), rows grow with K: bisect the largest K that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if stages.fits(relation.CircuitSpec(cspec, kmax=kmax, chunk_blocks=mid, protected=protected), root=root):
            lo = mid
        else:
            hi = mid
    return relation.CircuitSpec(cspec, kmax=kmax, chunk_blocks=lo, protected=protected)


def plan_proofs(mask_blocks, cspec, *, root=None) -> list[tuple]:
    """The canonical proof plan for a (nb,B) block request (bool mask or codes, see
    :func:`request_codes`): ``[(CircuitSpec, [block, ...]), ...]``.

    Blocks with a masked weight, in index order, go to the smallest bucket with kmax ≥ their slot
    count (masked + protected weights) whose circuit fits the commitment's logrows, K consecutive
    ones per proof; blocks with protected weights go to the protected variant of the circuit (the
    plain one reads the mask row as 0/1 and costs fewer rows). Blocks without a masked weight are not proven (θu_b = θp_b, same commitment,
    so their protected weights are unchanged too). Both parties derive the same plan from public
    data. Raises ValueError if a block's slot count exceeds every bucket that fits."""
    m = request_codes(mask_blocks)
    counts = np.where(masked_of(m).any(axis=1), (m > 0).sum(axis=1), 0)
    prot = np.any(m == PROTECTED, axis=1)
    groups: dict[tuple, list[int]] = {}
    specs = {}
    sizes = bucket_sizes(cspec.block_size)
    for b in np.flatnonzero(counts):
        k = int(counts[b])
        # the smallest bucket that holds k; a circuit's rows grow with kmax (B·kmax products and
        # checks, kmax³ for Y·D), so if it does not fit, no larger bucket does either
        kmax = next((x for x in sizes if x >= k), None)
        key = (bool(prot[b]), kmax)  # plain buckets first, then the protected circuits
        if kmax is not None and key not in specs:
            specs[key] = bucket_spec(cspec, kmax, root=root, protected=key[0])
        if kmax is None or specs[key] is None:
            raise ValueError(f"block {int(b)} has {k} masked (and protected) weights: no circuit with that many slots fits "
                             f"{cspec.wrap} × 2^{cspec.logrows} rows; commit with a larger logrows or wrap")
        groups.setdefault(key, []).append(int(b))
    plan = []
    for key in sorted(groups):
        spec, blocks = specs[key], groups[key]
        for i in range(0, len(blocks), spec.chunk_blocks):
            plan.append((spec, blocks[i:i + spec.chunk_blocks]))
    return plan


def default_logrows(block_size: int, *, k_cap: int | None = None, root=None, **commit_kw) -> int:
    """The smallest logrows (≥ ezkl's minimum) at which a block with ``k_cap`` masked weights
    fits one proof (with ``wrap=W`` in ``commit_kw``: fits W sets of 2^logrows rows, ezkl's column
    wrapping): the commitment fixes it, so choose it before the mask. Default k_cap:
    B/2 clipped to [4, 32] (B = 16: 8 → logrows 13; B = 576: 32 → 19); with wrapping min(B, 32), so a
    block of ≤ 32 weights can be proven whatever the mask puts in it (B = 16, wrap 2: logrows 13). Every proof is paid at this
    logrows (each committed input is one column of 2^logrows rows), so smaller is cheaper; a block
    with more masked weights than fit is refused at proving time, never dropped."""
    from ._circuits import relation, stages

    if k_cap is None:  # with wrapping, every block of up to 32 weights fits whatever its mask
        k_cap = min(block_size, 32) if commit_kw.get("wrap", 1) > 1 else min(block_size, max(4, min(32, block_size // 2)))
    k_cap = int(k_cap)
    # start below any fit: a block's circuit has more than 10·B·k_cap rows (measured 17–60 per B·k),
    # spread over `wrap` sets; the range decomposition follows logrows, so each candidate is its own spec
    wrap = int(commit_kw.get("wrap", 1))
    lr = max(2, math.ceil(math.log2(max(2.0, 10.0 * block_size * k_cap / wrap))))
    while lr <= 24:
        try:
            cs = relation.CommitSpec(block_size=block_size, logrows=lr, **commit_kw)
        except ValueError:  # below ezkl's minimum for this decomposition, or B does not fit a column
            lr += 1
            continue
        if stages.fits(relation.CircuitSpec(cs, kmax=k_cap, chunk_blocks=1), root=root):
            return lr
        lr += 1
    raise ValueError(f"no logrows ≤ 24 fits a block of {block_size} with {k_cap} masked weights"
                     + (f" in {commit_kw['wrap']} sets of rows" if commit_kw.get("wrap", 1) > 1 else ""))
