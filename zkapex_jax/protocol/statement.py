"""The public statement of one unlearning request and its binding into every proof.

Each chunk proof carries ``n_ctx`` public 21-bit limbs of ``H(statement core ‖ chunk index)``; the
verifier recomputes them, so a proof made for another client, request, mask, personalization
commitment, circuit or chunk position is rejected (the limbs are public instances: editing them
invalidates the proof)."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from .artifacts import canonical_json

LIMB_BITS = 21


def mask_digest(mask_blocks) -> str:
    """sha256 of a (nb,B) boolean block mask (shape + packed bits): what the statement binds."""
    m = np.asarray(mask_blocks)
    if m.ndim != 2:
        raise ValueError(f"mask blocks must be (nb, B), got shape {m.shape}")
    m = m.astype(bool)
    h = hashlib.sha256(canonical_json(["zkapex.mask-blocks", list(m.shape)]))
    h.update(np.packbits(m.ravel()).tobytes())
    return h.hexdigest()


def statement_core(*, client_id: str, request_id: str, mask_digest: str, commitment_sha256: str,
                   spec: dict, theta_exp: int, n_chunks: int) -> dict:
    return {"client_id": client_id, "request_id": request_id, "mask_digest": mask_digest,
            "commitment_sha256": commitment_sha256, "spec": spec, "theta_exp": int(theta_exp),
            "n_chunks": int(n_chunks)}


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
