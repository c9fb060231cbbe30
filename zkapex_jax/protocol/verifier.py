"""Provider side: verify a proof bundle against the provider's own keys and published data.

``ezkl.verify`` only checks a proof against the public values stored in it. The verifier here
additionally requires:

1. the statement names the published commitment (hash, client id, spec, sθ) and the published
   mask (digest); its proof plan equals the canonical plan the verifier derives from the mask
   (:func:`~zkapex_jax.protocol.statement.plan_proofs`): every masked block proven exactly once,
   in its bucket, no other block;
2. every proof verifies under the vk/settings/SRS of the verifier's own :class:`KeyStore`,
   derived from the public spec (never files from the bundle), and the SRS is the commitment's;
3. its public instances are exactly the expected ones: statement limbs (client, request, mask,
   commitment, spec, sθ, proof index, proof count), per block the published mask bits, the
   masked positions (slots) and slot-used bits, the public 0, all ``zeros`` (θ̂u[S] = 0, and
   θ̂u[T] = θ̂p[T] for protected weights T), all ``asym`` (the committed Â[P,P] is symmetric, v7)
   and all ``sink`` values 0;
4. the commitments embedded in each proof equal the published ones: Com(θp_b), and for every used
   slot t Com(Â_b[:, S_t]) — **this comparison binds the proof to the committed curvature** (a
   wrong column passes every in-circuit check) — and Com(θu_b) equals the statement's;
5. Com(θu_b) = Com(θp_b) for every block without a masked weight (the model is unchanged there);
6. the statement names the published mask *file* (``mask_sha256``: forget set, method, fraction,
   meta — not only its bits) when the caller gives it, and the commitment's digest of every
   parameter outside the statement (``rest_digest``);
7. given the deployed model and its :class:`~zkapex_jax.protocol.binding.Opening`
   (:func:`check_deployment`): every statement block of the deployed kernels opens the bundle's
   Com(θu_b), and every other parameter opens the commitment's rest digest — the whole deployed
   model is the certified one. Without it, VALID is about the model the commitments define, and
   the report says the deployed model was not checked.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import ArtifactError
from ._circuits import relation, stages
from .artifacts import read_json_artifact, require, sha256_hex
from ..core import quant
from .commitments import Commitment, opening_mismatch
from ..core.mask import PROTECTED
from .keystore import KeyStore
from .prover import STATEMENT_FORMAT, VERSION
from .statement import context_limbs, mask_digest, masked_of, plan_proofs, request_codes, statement_core

#: proof files larger than this are rejected unread (ezkl proofs here are < 1 MB).
MAX_PROOF_BYTES = 64 << 20


@dataclass
class VerificationResult:
    valid: bool
    reason: str
    insecure_srs: bool = True
    n_proofs: int = 0
    client_id: str = ""
    request_id: str = ""
    bound_units: float = 0.0
    details: dict = field(default_factory=dict)

    def __bool__(self):
        return self.valid


def load_statement(bundle) -> dict:
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise ArtifactError(f"{bundle}: bundle directory not found")
    path = bundle / "statement.json"
    if path.exists() and not path.is_file():
        raise ArtifactError(f"{path}: not a regular file")
    doc = read_json_artifact(path, STATEMENT_FORMAT, (VERSION,))
    for key, typ in (("client_id", str), ("request_id", str), ("mask_digest", str), ("mask_sha256", str),
                     ("rest_digest", str), ("commitment_sha256", str),
                     ("spec", dict), ("theta_exp", int), ("n_chunks", int), ("proofs", list),
                     ("com_theta_u", list), ("srs", dict)):
        require(doc, key, typ, path)
    for i, c in enumerate(doc["proofs"]):
        ok = isinstance(c, dict) and all(isinstance(c.get(k), t) and not isinstance(c.get(k), bool) for k, t in
                                         (("index", int), ("kmax", int), ("chunk_blocks", int), ("blocks", list),
                                          ("proof", str), ("proof_sha256", str)))
        if not ok or not all(isinstance(b, int) and not isinstance(b, bool) for b in c["blocks"]):
            raise ArtifactError(f"{path}: proof entry {i} is malformed")
    if not all(isinstance(x, str) for x in doc["com_theta_u"]):
        raise ArtifactError(f"{path}: com_theta_u must be a list of strings")
    return doc


def _read_proof(bundle: Path, rel: str) -> bytes:
    root = bundle.resolve()
    if "\x00" in rel:
        raise ValueError("NUL byte in the proof path")
    p = (bundle / rel).resolve()
    if root not in p.parents:
        raise ValueError(f"proof path {rel!r} escapes the bundle")
    st = os.stat(p)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"proof {rel!r} is not a regular file")
    if st.st_size > MAX_PROOF_BYTES:
        raise ValueError(f"proof {rel!r} is larger than {MAX_PROOF_BYTES} bytes")
    with open(p, "rb") as f:
        return f.read(MAX_PROOF_BYTES + 1)


def expected_instances(spec, blocks, mask, ctx) -> list[int]:
    """The public instances a proof of ``blocks`` must carry (see circuits/relation.py)."""
    K, B, k = spec.chunk_blocks, spec.block_size, spec.kmax
    pub = list(ctx)
    for j in range(K):
        if j < len(blocks):
            row = mask[blocks[j]]
            idx, q = quant.slot_layout(np.flatnonzero(row), k)
            pub += row.astype(np.int64).tolist() + idx.tolist() + q.tolist()
        else:
            pub += [0] * (B + 2 * k)
    pub.append(0)
    return pub + [0] * (spec.n_instances() - len(pub))   # zeros, asym and sink: all 0


def _column_ranges_problem(bundle: Path, st: dict, commitment: Commitment, m, plan, keystore: KeyStore) -> str | None:
    """For an ``amortized`` commitment: every column a proof of ``plan`` reads (each masked or
    protected weight's) must be covered by a column range proof of the bundle that verifies under
    the verifier's own keys and embeds that column's published commitment (:mod:`.ranges`). The
    first problem as a sentence, or None. Each entry must cover a column the request reads (no
    padding the verifier's work with unrelated proofs)."""
    from . import ranges

    entries = st.get("column_ranges")
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("proof"), str) and isinstance(e.get("proof_sha256"), str)
            for e in entries):
        return "the statement's column range proofs are missing or malformed"
    read = set(ranges.read_columns(plan, m))
    if len(entries) > len(read):
        return f"{len(entries)} column range proofs for the {len(read)} columns the request reads"
    rspec = ranges.range_spec(commitment.spec, root=keystore.root)
    art = keystore.ensure(rspec)
    if art.meta["srs_sha256"] != commitment.srs_sha256:
        return "the verifier's SRS differs from the one the commitment was made with"
    covered = set()
    for i, e in enumerate(entries):
        try:
            raw = _read_proof(bundle, e["proof"])
        except (OSError, ValueError) as ex:
            return f"column range proof {i}: unreadable ({ex})"
        if sha256_hex(raw) != e["proof_sha256"]:
            return f"column range proof {i}: file differs from the hash in the statement"
        cols = e.get("columns")
        bad = ranges.column_list_problem(cols, commitment, rspec)
        if bad:
            return f"column range proof {i}: {bad}"
        if not {tuple(c) for c in cols} & read:
            return f"column range proof {i} covers no column the request reads"
        bad = ranges.check_range_proof(raw, cols, commitment, rspec, art)
        if bad:
            return f"column range proof {i}: {bad}"
        covered |= {tuple(c) for c in cols}
    missing = sorted(read - covered)
    if missing:
        b, j = missing[0]
        return (f"column {j} of block {b} is read by the request but no verified column range proof covers it "
                f"({len(missing)} such columns): |Â| < 2^a is not proven for it")
    return None


def check_deployment(statement: dict, commitment: Commitment, theta_u, rest, opening, *,
                     keystore: KeyStore | None = None) -> str | None:
    """Is the deployed model — statement kernels ``theta_u`` (nb,B) float and every other
    parameter ``rest`` ({path: array}) — the one the bundle certifies? Returns the first
    discrepancy as a sentence, or None. ``opening``: the client's
    :class:`~zkapex_jax.protocol.binding.Opening` for this bundle."""
    from . import binding
    from .commitments import commit_circuit

    if opening.statement_sha256 != statement.get("sha256"):
        return "the deployment opening belongs to another bundle"
    cs = commitment.spec
    g = np.asarray(theta_u, dtype=np.float64)
    if g.shape != (commitment.num_blocks, cs.block_size):
        return f"the deployed statement kernels have block shape {g.shape}, the commitment {commitment.num_blocks, cs.block_size}"
    if opening.blind_theta_u.shape != (commitment.num_blocks, cs.n_blind):
        return "the deployment opening does not match the commitment's blocks"
    if not np.all(np.isfinite(g)):
        return "the deployed model holds NaN or infinite weights"
    scaled = np.ldexp(g, commitment.theta_exp)
    q = np.rint(scaled)
    if np.any(np.abs(q - scaled) > 0) or np.any(np.abs(q) >= 2.0 ** 52):
        b, i = (int(x) for x in np.argwhere((np.abs(q - scaled) > 0) | (np.abs(q) >= 2.0 ** 52))[0])
        return f"weight {i} of block {b} of the deployed model is not on the committed grid 2^-{commitment.theta_exp}"
    if binding.rest_digest(rest, opening.rest_salt) != commitment.rest_digest:
        return ("a parameter outside the statement differs from the committed personalized model (or the "
                "opening's salt is not the commitment's)")
    ks = keystore or KeyStore()
    art = ks.ensure(commit_circuit(cs))
    q = q.astype(np.int64)
    vecs = [[int(x) for x in q[b]] + [int(x) for x in opening.blind_theta_u[b]] for b in range(commitment.num_blocks)]
    for b, c in enumerate(stages.commit_vectors(art, vecs)):  # batched inside
        if c != statement["com_theta_u"][b]:
            return f"block {b} of the deployed kernels does not open the certified Com(θu)"
    return None


def verify_bundle(bundle, commitment: Commitment, mask_blocks, *, keystore: KeyStore | None = None,
                  client_id: str | None = None, request_id: str | None = None, progress: bool = False,
                  mask_sha256: str | None = None, deployed=None,
                  max_delta_ratio: int = relation.DEFAULT_DELTA_RATIO) -> VerificationResult:
    """Verify ``bundle`` (a directory) for the published ``commitment`` and mask blocks (nb,B) bool.

    ``mask_sha256``: the published mask file's hash (``Mask.content_hash()``); the statement must
    name it. ``max_delta_ratio``: the provider's policy for the compensation bound ρ of the
    commitment (no block moves by more than ρ·Σ|θ̂p[S]| in ℓ2, so no weight either). ``deployed``: ``(theta_u (nb,B), rest {path: array}, Opening)`` — also check that the
    deployed model is exactly the certified one (:func:`check_deployment`).
    Returns a :class:`VerificationResult` (``valid`` False with the reason on any rejection; its
    ``details`` say what was certified, what was proven unchanged, and what was not checked).
    Raises ArtifactError only if the bundle's statement file is missing or malformed."""
    bundle = Path(bundle)
    st = load_statement(bundle)
    cs = commitment.spec
    res = VerificationResult(False, "", insecure_srs=True, client_id=st["client_id"], request_id=st["request_id"])

    def reject(msg):
        res.reason = msg
        return res

    if cs.delta_ratio > max_delta_ratio:
        return reject(f"the commitment's compensation bound ρ = {cs.delta_ratio} exceeds the provider's policy "
                      f"({max_delta_ratio}): a block could move by more than {max_delta_ratio}× its removed weights")

    if client_id is not None and st["client_id"] != client_id:
        return reject(f"statement is for client {st['client_id']!r}, expected {client_id!r}")
    if request_id is not None and st["request_id"] != request_id:
        return reject(f"statement is for request {st['request_id']!r}, expected {request_id!r}")
    if st["client_id"] != commitment.client_id:
        return reject(f"statement client {st['client_id']!r} differs from the commitment's {commitment.client_id!r}")
    if st["commitment_sha256"] != commitment.sha256:
        return reject("statement refers to another personalization commitment")
    if st["rest_digest"] != commitment.rest_digest:
        return reject("statement's digest of the parameters outside the statement is not the commitment's")
    if (json.dumps(st["spec"], sort_keys=True) != json.dumps(cs.to_dict(), sort_keys=True)  # 4.0 is not 4
            or st["theta_exp"] != commitment.theta_exp):
        return reject("statement's commitment spec or θ scale differs from the commitment's")
    m = np.asarray(mask_blocks)
    if m.shape != (commitment.num_blocks, cs.block_size):
        return reject(f"published mask has block shape {m.shape}, commitment needs "
                      f"({commitment.num_blocks}, {cs.block_size})")
    try:
        m = request_codes(m)
    except ValueError as e:
        return reject(f"published mask: {e}")
    md = mask_digest(m)
    if st["mask_digest"] != md:
        return reject("statement's mask digest differs from the published mask")
    if mask_sha256 is not None and st["mask_sha256"] != mask_sha256:
        return reject("statement was made for another mask file (forget set, method, fraction or meta differ)")
    if st["srs"].get("sha256") != commitment.srs_sha256:
        return reject("bundle made with a different SRS than the commitment")
    keystore = keystore or KeyStore()
    try:
        plan = plan_proofs(m, cs, root=keystore.root)
    except ValueError as e:
        return reject(f"the mask cannot be certified under this commitment ({e})")
    n = len(plan)
    if st["n_chunks"] != n or len(st["proofs"]) != n:
        return reject(f"statement has {len(st['proofs'])} proofs ({st['n_chunks']} declared), the mask needs {n}")
    got = sorted(st["proofs"], key=lambda c: c["index"])
    if [c["index"] for c in got] != list(range(n)):
        return reject(f"proof indices are not 0..{n - 1} exactly once")
    for e, (spec, blocks) in zip(got, plan):
        if e["blocks"] != blocks or e["kmax"] != spec.kmax or e["chunk_blocks"] != spec.chunk_blocks:
            return reject(f"proof {e['index']}: covers blocks {e['blocks'][:8]} in bucket k={e['kmax']}, "
                          f"the plan says {blocks[:8]} in k={spec.kmax}")
    if len(st["com_theta_u"]) != commitment.num_blocks:
        return reject("statement lists Com(θu) for the wrong number of blocks")
    masked = masked_of(m).any(axis=1)
    n_protected = int(((m == PROTECTED) & masked[:, None]).sum())
    for b in np.flatnonzero(~masked):
        if st["com_theta_u"][b] != commitment.theta_p_hex(b):
            return reject(f"block {b} has no masked weight but its Com(θu) differs from Com(θp)")
    if cs.column_range == "amortized":
        bad = _column_ranges_problem(bundle, st, commitment, m, plan, keystore)
        if bad:
            return reject(bad)
    elif st.get("column_ranges"):
        return reject("the bundle carries column range proofs, but the commitment's requests check their columns inline")
    core = statement_core(client_id=commitment.client_id, request_id=st["request_id"], mask_digest=md,
                          commitment_sha256=commitment.sha256, spec=cs.to_dict(), theta_exp=commitment.theta_exp,
                          n_chunks=n, mask_sha256=st["mask_sha256"], rest_digest=commitment.rest_digest)
    insecure = bool(commitment.srs_insecure)
    items = list(zip(got, plan))
    if progress:
        from tqdm import tqdm
        items = tqdm(items, desc="verify", unit="proof")
    bound = 0.0
    arts = {}
    for e, (spec, blocks) in items:
        c = e["index"]
        if spec.key not in arts:  # keys (and their hash checks) once per bucket shape
            arts[spec.key] = keystore.ensure(spec)
            if arts[spec.key].meta["srs_sha256"] != commitment.srs_sha256:
                return reject("the verifier's SRS differs from the one the commitment was made with")
        art = arts[spec.key]
        insecure = insecure or bool(art.srs_insecure)
        try:
            raw = _read_proof(bundle, e["proof"])
        except (OSError, ValueError) as ex:
            return reject(f"proof {c}: unreadable ({ex})")
        if sha256_hex(raw) != e["proof_sha256"]:
            return reject(f"proof {c}: file differs from the hash in the statement")
        try:
            inst, coms = stages.proof_public(json.loads(raw), spec.n_inputs)
        except Exception as ex:  # noqa: BLE001 — any malformed proof is a rejection
            return reject(f"proof {c}: malformed ({ex.__class__.__name__}: {str(ex)[:80]})")
        bad = opening_mismatch(commitment, spec, blocks, m, coms)
        if bad:
            return reject(f"proof {c}: {bad}")
        for j, b in enumerate(blocks):
            if coms[spec.input_index("theta_u", j)] != st["com_theta_u"][b]:
                return reject(f"proof {c}: Com(θu) of block {b} differs from the statement's")
        want = expected_instances(spec, blocks, m, context_limbs(core, c, cs.n_ctx))
        if len(inst) != len(want):
            return reject(f"proof {c}: {len(inst)} public values, the circuit has {len(want)}")
        npub = spec.public_length()
        if inst[:cs.n_ctx] != want[:cs.n_ctx]:
            return reject(f"proof {c}: bound to another statement (client, request, mask, commitment or index)")
        if inst[:npub] != want[:npub]:
            return reject(f"proof {c}: public mask / slot positions differ from the published mask")
        sec = spec.output_sections()
        if any(inst[sec["zeros"]]):
            return reject(f"proof {c}: masked weights of θu are not zero (or protected weights moved)")
        if any(inst[sec["asym"]]):
            return reject(f"proof {c}: the committed inverse Fisher is not symmetric on the request's weights "
                          "(Â[P,P] ≠ Â[P,P]ᵀ)")
        if any(inst[sec["sink"]]):
            return reject(f"proof {c}: range-check outputs are not zero")
        if not stages.verify_chunk_bytes(raw, art.settings, art.vk, art.srs):
            return reject(f"proof {c}: does not verify under the provider's verification key")
        bound = max(bound, 1.0 + float(spec.epsilon))
    if deployed is not None:
        bad = check_deployment(st, commitment, *deployed, keystore=keystore)
        if bad:
            return reject(f"deployed model: {bad}")
    n_rest = len(commitment.rest_manifest)
    rest_size = int(sum(int(np.prod(e[2])) for e in commitment.rest_manifest))
    res.details = {
        "certified_blocks": int(masked.sum()), "unchanged_blocks": int((~masked).sum()),
        "protected_weights": n_protected,
        "layout_paths": list((commitment.layout or {}).get("paths", [])),
        "rest_parameters": n_rest, "rest_values": rest_size,
        "mask_file_bound": mask_sha256 is not None, "request_pinned": request_id is not None,
        "deployed_checked": deployed is not None,
        "column_range": cs.column_range,
        "column_range_proofs": len(st.get("column_ranges") or []) if cs.column_range == "amortized" else 0,
    }
    res.valid = True
    res.n_proofs = n
    res.insecure_srs = insecure
    res.bound_units = bound
    res.reason = (f"valid: {n} proofs cover the {int(masked.sum())} masked blocks; "
                  f"{int((~masked).sum())} blocks unchanged (Com(θu) = Com(θp)); θu within {bound:.3f} "
                  f"units of 2^-{commitment.theta_exp} of the committed Group-OBS update"
                  + (f" with {n_protected} protected weights unmoved; " if n_protected else "; ")
                  + (f"the range of every inverse-Fisher column read proven by {res.details['column_range_proofs']} "
                     "column range proof(s); " if cs.column_range == "amortized" else "")
                  + f"{n_rest} parameter arrays ({rest_size} values) outside the statement bound unchanged by the "
                  "commitment's digest" + ("; the deployed model opens all of it" if deployed is not None else ""))
    return res
