"""Client side: the unlearning update on the committed integers, and the proof bundle.

Bundle directory::

    statement.json      format zkapex.statement: client/request ids, mask digest, commitment hash,
                        circuit spec, scales, τ, SRS label, per chunk: proof file, its sha256, Com(θu)
    proofs/chunk_00000.json ...   one ezkl proof per chunk
    settings.json       ezkl settings used (informational; the verifier uses its own)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import quant
from .._errors import ArtifactError, MaskMismatchError, ShapeError, ZkapexError
from ._circuits import stages
from .artifacts import atomic_write_bytes, sha256_hex, write_json_artifact
from .commitments import Commitment, CommitmentSecrets, chunk_slices, pad_chunk, quantize_personalization, random_blinders
from .keystore import KeyStore
from .statement import context_limbs, mask_digest, statement_core

STATEMENT_FORMAT = "zkapex.statement"
VERSION = 1


class ProofError(ZkapexError):
    """Proving failed or produced a proof that does not match the published commitments."""


@dataclass(frozen=True)
class Unlearned:
    """The update on the committed integers. theta_u/delta/lam (nb,B) float (real units)."""

    theta_u: np.ndarray
    delta: np.ndarray
    lam: np.ndarray
    q: quant.QuantizedUnlearning
    theta_p_q: np.ndarray
    fisher_q: np.ndarray


def unlearn_committed(theta_p, fisher, mask_blocks, commitment: Commitment, secrets: CommitmentSecrets) -> Unlearned:
    """Group-OBS for the committed (quantized) θp and C and the mask (nb,B) bool; θu is exactly the
    model the proof certifies (θ̂u·2^-sθ)."""
    spec = commitment.spec
    m = np.asarray(mask_blocks, dtype=bool)
    if m.shape != (commitment.num_blocks, spec.block_size):
        raise MaskMismatchError(f"mask blocks have shape {m.shape}, the commitment has "
                                f"({commitment.num_blocks}, {spec.block_size})")
    tq, cq, sth, _ = quantize_personalization(theta_p, fisher, spec, theta_exp=secrets.theta_exp,
                                              fisher_exps=secrets.fisher_exps)
    q = quant.quantize_unlearning(tq, cq, m, spec.s_c)
    s = 2.0 ** -sth
    lam_real = np.ldexp(q.lam.astype(np.float64), -sth)  # in units of the normalized Fisher
    return Unlearned(theta_u=q.theta_u * s, delta=q.delta * s, lam=lam_real, q=q, theta_p_q=tq, fisher_q=cq)


def _prove_one(args):
    art, inputs, out = args
    return stages.prove_chunk(art, inputs, out)


def prove_unlearning(theta_p, fisher, mask_blocks, commitment: Commitment, secrets: CommitmentSecrets, *,
                     request_id: str, out_dir, keystore: KeyStore | None = None, jobs: int = 1,
                     progress: bool = False) -> Path:
    """Prove the unlearning of ``mask_blocks`` (nb,B) bool for the committed θp (nb,B), C (nb,B,B).

    Writes the bundle directory ``out_dir`` (built in a temporary sibling, then renamed: nothing
    half-written). Raises ProofError if θp/C do not open the published commitment."""
    if secrets.commitment_sha256 and secrets.commitment_sha256 != commitment.sha256:
        raise ArtifactError("the secrets file belongs to another commitment")
    m = np.asarray(mask_blocks, dtype=bool)
    u = unlearn_committed(theta_p, fisher, m, commitment, secrets)
    return prove_witness(u.theta_p_q, u.fisher_q, u.q.theta_u, u.q.lam, m, commitment, secrets,
                         request_id=request_id, out_dir=out_dir, keystore=keystore, jobs=jobs, progress=progress)


def prove_witness(theta_p_q, fisher_q, theta_u_q, lam_q, mask_blocks, commitment: Commitment,
                  secrets: CommitmentSecrets, *, request_id: str, out_dir, keystore: KeyStore | None = None,
                  jobs: int = 1, progress: bool = False, check_openings: bool = True) -> Path:
    """Prove raw integer witnesses θ̂p, θ̂u, λ̂ (nb,B) int, Ĉ (nb,B,B) int for the mask (nb,B).

    No honesty check: whatever the witness, the verifier decides (used by the adversarial tests).
    ``check_openings`` raises ProofError when the proofs' Com(θp)/Com(C) are not the published ones."""
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("request_id must be a non-empty string")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    spec = commitment.spec
    nb, B = commitment.num_blocks, spec.block_size
    arrays = {"theta_p": theta_p_q, "theta_u": theta_u_q, "lam": lam_q, "mask": mask_blocks}
    for k, a in arrays.items():
        if np.shape(a) != (nb, B):
            raise ShapeError(f"{k} has shape {np.shape(a)}, expected ({nb}, {B})")
    if np.shape(fisher_q) != (nb, B, B):
        raise ShapeError(f"fisher has shape {np.shape(fisher_q)}, expected ({nb}, {B}, {B})")
    tpq, cq, tuq, lq = (np.asarray(a, dtype=np.int64) for a in (theta_p_q, fisher_q, theta_u_q, lam_q))
    m = np.asarray(mask_blocks, dtype=bool)
    keystore = keystore or KeyStore()
    art = keystore.ensure(spec)
    if art.meta["srs_sha256"] != commitment.srs_sha256:
        raise ProofError("the SRS in use differs from the one the commitment was made with")
    md = mask_digest(m)
    core = statement_core(client_id=commitment.client_id, request_id=request_id, mask_digest=md,
                          commitment_sha256=commitment.sha256, spec=spec.to_dict(), theta_exp=commitment.theta_exp,
                          n_chunks=commitment.n_chunks)
    K, R = spec.chunk_blocks, spec.n_blind
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "proofs").mkdir()
        tasks = []
        for c, sl in chunk_slices(commitment.num_blocks, K):
            inputs = [
                pad_chunk(tpq[sl], K).ravel().tolist() + list(secrets.blind_theta_p[c]),
                pad_chunk(cq[sl], K, fisher_scale=2 ** spec.s_c).ravel().tolist() + list(secrets.blind_fisher[c]),
                pad_chunk(tuq[sl], K).ravel().tolist() + random_blinders(R),
                pad_chunk(lq[sl], K).ravel().tolist() + random_blinders(R),
                context_limbs(core, c, spec.n_ctx) + pad_chunk(m[sl].astype(np.int64), K).ravel().tolist(),
            ]
            tasks.append((art, inputs, tmp / "proofs" / f"chunk_{c:05d}.json"))
        t0 = time.perf_counter()
        if jobs > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
                it = ex.map(_prove_one, tasks)
                if progress:
                    from tqdm import tqdm
                    it = tqdm(it, total=len(tasks), desc="prove", unit="chunk")
                timings = list(it)
        else:
            it = tasks
            if progress:
                from tqdm import tqdm
                it = tqdm(tasks, desc="prove", unit="chunk")
            timings = [_prove_one(t) for t in it]
        wall = time.perf_counter() - t0
        chunks = []
        for c, (_, _, p) in enumerate(tasks):
            proof = json.loads(p.read_bytes())
            _, coms = stages.proof_public(proof)
            if check_openings and (coms[0] != commitment.com_theta_p[c] or coms[1] != commitment.com_fisher[c]):
                raise ProofError(f"chunk {c}: θp/C do not open the published personalization commitment "
                                 "(wrong parameters, Fisher or secrets file)")
            chunks.append({"index": c, "proof": f"proofs/{p.name}", "proof_sha256": sha256_hex(p.read_bytes()),
                           "com_theta_u": coms[2]})
        shutil.copyfile(art.settings, tmp / "settings.json")
        write_json_artifact(tmp / "statement.json", STATEMENT_FORMAT, VERSION, {
            **core, "tau": spec.tau, "s_c": spec.s_c, "chunks": chunks,
            "srs": {"sha256": commitment.srs_sha256, "insecure": bool(art.srs_insecure)},
            "prover": {"wall_s": round(wall, 3), "jobs": jobs,
                       "witness_s": round(sum(t["witness_s"] for t in timings), 3),
                       "prove_s": round(sum(t["prove_s"] for t in timings), 3),
                       "logrows": art.logrows, "num_rows": art.num_rows}})
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
