"""Provider side: verify a proof bundle against the provider's own keys and published data.

``ezkl.verify`` only checks a proof against the public values stored in it. The verifier here
additionally requires, for every chunk ``0..n−1`` (none missing, none extra):

1. the proof verifies under the vk/settings/SRS from the provider's own :class:`KeyStore`, derived
   from the circuit spec in the *published commitment* (never files from the bundle);
2. the SRS is the one the commitment was made with;
3. the public instances are exactly ``[ctx limbs, mask blocks of the chunk, 0, 0, 0, 0]``: the limbs
   recomputed from (client id, request id, mask digest, commitment hash, spec, sθ, chunk index,
   chunk count) and the mask blocks taken from the published mask — so a proof replayed for
   another client/request/mask/chunk, a false statement with non-zero checks, or edited
   instances is rejected;
4. the commitments embedded in the proof equal the published Com(θp), Com(C) of that chunk and
   the statement's Com(θu).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import ArtifactError
from ._circuits import relation, stages
from .artifacts import read_json_artifact, require, sha256_hex
from .commitments import Commitment, pad_chunk
from .keystore import KeyStore
from .prover import STATEMENT_FORMAT, VERSION
from .statement import context_limbs, mask_digest, statement_core


@dataclass
class VerificationResult:
    valid: bool
    reason: str
    insecure_srs: bool = True
    n_chunks: int = 0
    client_id: str = ""
    request_id: str = ""
    details: dict = field(default_factory=dict)

    def __bool__(self):
        return self.valid


def load_statement(bundle) -> dict:
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise ArtifactError(f"{bundle}: bundle directory not found")
    path = bundle / "statement.json"
    doc = read_json_artifact(path, STATEMENT_FORMAT, (VERSION,))
    for key, typ in (("client_id", str), ("request_id", str), ("mask_digest", str), ("commitment_sha256", str),
                     ("spec", dict), ("theta_exp", int), ("n_chunks", int), ("tau", int), ("s_c", int),
                     ("chunks", list), ("srs", dict)):
        require(doc, key, typ, path)
    for i, c in enumerate(doc["chunks"]):
        if not isinstance(c, dict) or not all(isinstance(c.get(k), t) for k, t in
                                              (("index", int), ("proof", str), ("proof_sha256", str), ("com_theta_u", str))):
            raise ArtifactError(f"{path}: chunk entry {i} is malformed")
    return doc


def verify_bundle(bundle, commitment: Commitment, mask_blocks, *, keystore: KeyStore | None = None,
                  client_id: str | None = None, request_id: str | None = None, progress: bool = False) -> VerificationResult:
    """Verify ``bundle`` (a directory) for the published ``commitment`` and mask blocks (nb,B) bool.

    Returns a :class:`VerificationResult` (``valid`` False with the reason on any rejection).
    Raises ArtifactError only if the bundle's statement file is missing or malformed."""
    bundle = Path(bundle)
    st = load_statement(bundle)
    spec = commitment.spec
    res = VerificationResult(False, "", insecure_srs=commitment.srs_insecure, client_id=st["client_id"],
                             request_id=st["request_id"])

    def reject(msg):
        res.reason = msg
        return res

    if client_id is not None and st["client_id"] != client_id:
        return reject(f"statement is for client {st['client_id']!r}, expected {client_id!r}")
    if request_id is not None and st["request_id"] != request_id:
        return reject(f"statement is for request {st['request_id']!r}, expected {request_id!r}")
    if st["client_id"] != commitment.client_id:
        return reject(f"statement client {st['client_id']!r} differs from the commitment's {commitment.client_id!r}")
    if st["commitment_sha256"] != commitment.sha256:
        return reject("statement refers to another personalization commitment")
    if st["spec"] != spec.to_dict() or st["theta_exp"] != commitment.theta_exp:
        return reject("statement's circuit spec or θ scale differs from the commitment's")
    if st["tau"] != spec.tau or st["s_c"] != spec.s_c:
        return reject(f"statement's τ={st['tau']} / s_c={st['s_c']} differ from the ones the circuit fixes "
                      f"({spec.tau}, {spec.s_c})")
    m = np.asarray(mask_blocks)
    if m.shape != (commitment.num_blocks, spec.block_size):
        return reject(f"published mask has block shape {m.shape}, commitment needs "
                      f"({commitment.num_blocks}, {spec.block_size})")
    m = m.astype(bool)
    md = mask_digest(m)
    if st["mask_digest"] != md:
        return reject("statement's mask digest differs from the published mask")
    n = commitment.n_chunks
    if st["n_chunks"] != n:
        return reject(f"statement has {st['n_chunks']} chunks, the commitment {n}")
    idx = [c["index"] for c in st["chunks"]]
    if sorted(idx) != list(range(n)):
        missing = sorted(set(range(n)) - set(idx))
        return reject(f"chunks missing or repeated: expected 0..{n - 1}, missing {missing[:10]}, got {len(idx)} entries")
    if st["srs"].get("sha256") != commitment.srs_sha256:
        return reject("bundle made with a different SRS than the commitment")
    keystore = keystore or KeyStore()
    art = keystore.ensure(spec)
    meta = art.meta
    if meta["srs_sha256"] != commitment.srs_sha256:
        return reject("the verifier's SRS differs from the one the commitment was made with")
    res.insecure_srs = bool(art.srs_insecure or commitment.srs_insecure)
    core = statement_core(client_id=commitment.client_id, request_id=st["request_id"], mask_digest=md,
                          commitment_sha256=commitment.sha256, spec=spec.to_dict(), theta_exp=commitment.theta_exp,
                          n_chunks=n)
    K = spec.chunk_blocks
    KB = K * spec.block_size
    n_inst = spec.n_ctx + KB + relation.N_CHECKS
    entries = sorted(st["chunks"], key=lambda c: c["index"])
    if progress:
        from tqdm import tqdm
        entries = tqdm(entries, desc="verify", unit="chunk")
    root = bundle.resolve()
    for e in entries:
        c = e["index"]
        p = (bundle / e["proof"]).resolve()
        if root not in p.parents:
            return reject(f"chunk {c}: proof path {e['proof']!r} escapes the bundle")
        try:
            raw = p.read_bytes()
        except OSError as ex:
            return reject(f"chunk {c}: proof file unreadable ({ex.__class__.__name__})")
        if sha256_hex(raw) != e["proof_sha256"]:
            return reject(f"chunk {c}: proof file differs from the hash in the statement")
        try:
            proof = json.loads(raw)
            inst, coms = stages.proof_public(proof)
        except Exception as ex:  # noqa: BLE001 — any malformed proof is a rejection
            return reject(f"chunk {c}: malformed proof ({ex.__class__.__name__}: {str(ex)[:80]})")
        if len(inst) != n_inst:
            return reject(f"chunk {c}: proof has {len(inst)} public values, the circuit {n_inst}")
        if coms[0] != commitment.com_theta_p[c]:
            return reject(f"chunk {c}: Com(θp) in the proof is not the published one")
        if coms[1] != commitment.com_fisher[c]:
            return reject(f"chunk {c}: Com(C) in the proof is not the published one")
        if coms[2] != e["com_theta_u"]:
            return reject(f"chunk {c}: Com(θu) in the proof differs from the statement's")
        ctx = context_limbs(core, c, spec.n_ctx)
        if inst[:spec.n_ctx] != ctx:
            return reject(f"chunk {c}: proof is bound to another statement (client, request, mask, commitment or chunk)")
        sl = slice(c * K, min((c + 1) * K, commitment.num_blocks))
        want_mask = pad_chunk(m[sl].astype(np.int64), K).ravel().tolist()
        if inst[spec.n_ctx:spec.n_ctx + KB] != want_mask:
            return reject(f"chunk {c}: proof's mask differs from the published mask")
        checks = inst[spec.n_ctx + KB:]
        for name, v in zip(relation.CHECK_NAMES, checks):
            if v != 0:
                return reject(f"chunk {c}: {name} (check value {v})")
        if not stages.verify_chunk(p, art.settings, art.vk, art.srs):
            return reject(f"chunk {c}: proof does not verify under the provider's verification key")
    res.valid = True
    res.n_chunks = n
    res.reason = f"valid: {n} chunk proofs verified" + (" (INSECURE locally generated SRS: test only)"
                                                          if res.insecure_srs else "")
    return res
