"""The personalization commitment: blinded KZG commitments to θp per block and to every column of
the inverse Fisher ``A_b = C_b⁻¹`` per block, made before any mask exists.

Each committed vector is a block's ``B`` integers followed by ``n_blind`` uniformly random
52-bit blinders, so the (otherwise deterministic) KZG commitment hides the values. Commitments
depend only on the values and the commitment's ``logrows`` (all proof circuits of one commitment
share it), so any circuit's proof can be compared with them byte for byte. Commitments are
computed in batches (:func:`circuits.stages.commit_vectors`).

Files (both :func:`~zkapex_jax.protocol.artifacts.save_arrays` ``.npz`` artifacts, format, version
and content hash checked on load):

* the public commitment: ``com_theta_p`` (nb, 64) and ``com_columns`` (nb, B, 64) uint8 (each
  point big-endian x ‖ y), plus the client id, :class:`CommitSpec`, sθ, the block layout, SRS, and
  the salted digest of every parameter *outside* the statement with its manifest (paths, dtypes,
  shapes; :mod:`~zkapex_jax.protocol.binding`) — so the whole model is bound, not only its kernels;
* the client's secrets: blinders (nb, R) and (nb, B, R), per-block exponents of Â, sθ, the rest salt.
"""

from __future__ import annotations

import secrets as _secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import quant
from .._errors import ArtifactError, ShapeError
from ._circuits import relation, stages
from . import binding
from .artifacts import load_arrays, save_arrays
from .keystore import KeyStore

COMMITMENT_FORMAT = "zkapex.commitment"
SECRETS_FORMAT = "zkapex.commitment-secrets"
VERSION = 3
BLIND_BITS = 52  # ezkl reads inputs as f64: exact below 2^53


def random_blinders(*shape) -> np.ndarray:
    """Uniform integers in [−2^51, 2^51) of the given shape (int64), from the OS's CSPRNG."""
    n = int(np.prod(shape)) if shape else 1
    v = np.array([_secrets.randbits(BLIND_BITS) - 2 ** (BLIND_BITS - 1) for _ in range(n)], dtype=np.int64)
    return v.reshape(shape)


@dataclass(frozen=True)
class Commitment:
    """Public personalization commitment (what the client publishes)."""

    client_id: str
    spec: "relation.CommitSpec"
    theta_exp: int
    num_blocks: int
    layout: dict | None
    com_theta_p: np.ndarray   # (nb, 64) uint8
    com_columns: np.ndarray   # (nb, B, 64) uint8
    srs_sha256: str
    srs_insecure: bool
    rest_digest: str = ""     # salted sha256 of every parameter outside the statement
    rest_manifest: list = field(default_factory=list)  # [[path, dtype, shape], ...] of those parameters
    sha256: str = ""
    path: Path | None = field(default=None, compare=False)

    def theta_p_hex(self, b: int) -> str:
        return bytes(self.com_theta_p[b]).hex()

    def column_hex(self, b: int, j: int) -> str:
        return bytes(self.com_columns[b, j]).hex()


@dataclass(frozen=True)
class CommitmentSecrets:
    """Client-side secrets: blinders of θp (nb,R) and of the columns (nb,B,R), exponents of Â, and
    the committed Â itself (``inverse_q`` (nb,B,B) int32, |Â| < 2^a ≤ 2^31): computed once at
    commit time and carried, so unlearning and proving open exactly the committed columns
    without the Fisher and without re-inverting it (``None`` in secrets written before it: then
    Â is recomputed from the Fisher)."""

    blind_theta_p: np.ndarray
    blind_columns: np.ndarray
    inverse_exps: np.ndarray
    theta_exp: int
    commitment_sha256: str
    rest_salt: bytes = b""
    inverse_q: np.ndarray | None = None


def opening_mismatch(commitment: "Commitment", spec, blocks, mask_blocks, coms) -> str | None:
    """Compare the commitments a proof embeds (``coms``, in input order) with the published ones
    for the proof's ``blocks``: Com(θp_b) and, per used slot t, Com(Â_b[:, S_t]). Returns the first
    mismatch as a sentence, or None. (What binds a proof to the committed curvature.)"""
    for j, b in enumerate(blocks):
        if coms[spec.input_index("theta_p", j)] != commitment.theta_p_hex(b):
            return f"Com(θp) of block {b} is not the published one"
        for t, pos in enumerate(np.flatnonzero(mask_blocks[b])):
            if coms[spec.input_index("col", j, t)] != commitment.column_hex(b, int(pos)):
                return f"slot {t} of block {b} is not the published inverse-Fisher column {int(pos)}"
    return None


def commit_circuit(cspec: "relation.CommitSpec") -> "relation.CircuitSpec":
    """The circuit whose keys the client uses to commit (any circuit of this logrows would do)."""
    return relation.CircuitSpec(cspec, kmax=1, chunk_blocks=1)


def quantize_personalization(theta_p, fisher, cspec, *, theta_exp=None, inverse_exps=None, inverse=None,
                             inverse_q=None):
    """(θ̂p (nb,B) int64, Â (nb,B,B) int64, sθ, exponents (nb,)) with the scales fixed now (or given).

    ``inverse`` (nb,B,B) may be passed instead of recomputing C⁻¹ from ``fisher``; ``inverse_q``,
    the committed Â itself (:attr:`CommitmentSecrets.inverse_q`, with ``inverse_exps``), skips
    both (``fisher`` may then be None)."""
    theta_p = np.asarray(theta_p, dtype=np.float64)
    B = cspec.block_size
    if theta_p.ndim != 2 or theta_p.shape[1] != B:
        raise ShapeError(f"theta_p has shape {theta_p.shape}, expected (nb, {B})")
    if theta_exp is None:
        theta_exp = quant.theta_exponent(theta_p, cspec.theta_bits)
    tq = quant.quantize_theta(theta_p, theta_exp, cspec.theta_bits)
    if inverse_q is not None:
        aq = np.asarray(inverse_q)
        if inverse_exps is None or aq.dtype.kind != "i" or aq.shape != (theta_p.shape[0], B, B):
            raise ShapeError(f"the committed inverse has shape {aq.shape} ({aq.dtype}), expected integers of shape "
                             f"({theta_p.shape[0]}, {B}, {B}) with their exponents")
        if np.abs(aq.astype(np.int64)).max(initial=0) >= 2 ** cspec.a_bits:
            raise ShapeError(f"the committed inverse leaves the range |Â| < 2^{cspec.a_bits}")
        return tq, aq.astype(np.int64), int(theta_exp), np.asarray(inverse_exps, dtype=np.int64)
    if fisher is None and inverse is None:
        raise ValueError("no curvature: pass the Fisher (or its inverse), or secrets that carry the committed inverse")
    A = quant.inverse_fisher(fisher) if inverse is None else np.asarray(inverse, dtype=np.float64)
    if A.shape != (theta_p.shape[0], B, B):
        raise ShapeError(f"fisher/inverse has shape {A.shape}, expected ({theta_p.shape[0]}, {B}, {B})")
    if inverse_exps is None:
        inverse_exps = quant.inverse_block_exponents(A, cspec.a_bits)
    aq = quant.quantize_inverse(A, inverse_exps, cspec.a_bits)
    return tq, aq, int(theta_exp), np.asarray(inverse_exps, dtype=np.int64)


def _vec(values, blinders) -> list[int]:
    return [int(x) for x in values] + [int(x) for x in blinders]


def commit_personalization(theta_p, fisher, cspec, *, client_id: str, keystore: KeyStore | None = None,
                           layout: dict | None = None, progress: bool = False, inverse=None, rest=None):
    """Commit to θp (nb,B), the inverse of the Fisher C (nb,B,B) and ``rest`` — ``{path: array}`` of
    every model parameter outside the statement (:func:`~zkapex_jax.protocol.binding.split_rest`;
    None: the model has none). Returns ``(Commitment, CommitmentSecrets)`` (unsaved).
    ``inverse``: C⁻¹ if the caller already has it."""
    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    rest = {} if rest is None else dict(rest)
    salt = binding.new_salt()
    rdigest = binding.rest_digest(rest, salt)
    keystore = keystore or KeyStore()
    art = keystore.ensure(commit_circuit(cspec))
    tq, aq, sth, exps = quantize_personalization(theta_p, fisher, cspec, inverse=inverse)
    nb, B, R = tq.shape[0], cspec.block_size, cspec.n_blind
    bt, bc = random_blinders(nb, R), random_blinders(nb, B, R)
    vectors = [_vec(tq[b], bt[b]) for b in range(nb)]
    vectors += [_vec(aq[b][:, j], bc[b, j]) for b in range(nb) for j in range(B)]
    points = []
    step = 1024
    it = range(0, len(vectors), step)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="commit", unit="batch")
    for i in it:
        points += stages.commit_vectors(art, vectors[i:i + step])
    raw = np.frombuffer(b"".join(bytes.fromhex(p) for p in points), dtype=np.uint8).reshape(len(points), 64)
    meta = art.meta
    com = Commitment(client_id=client_id, spec=cspec, theta_exp=sth, num_blocks=nb, layout=layout,
                     com_theta_p=raw[:nb].copy(), com_columns=raw[nb:].reshape(nb, B, 64).copy(),
                     srs_sha256=meta["srs_sha256"], srs_insecure=bool(art.srs_insecure),
                     rest_digest=rdigest, rest_manifest=binding.rest_manifest(rest))
    sec = CommitmentSecrets(blind_theta_p=bt, blind_columns=bc, inverse_exps=exps, theta_exp=sth,
                            commitment_sha256="", rest_salt=salt,
                            inverse_q=aq.astype(np.int32) if cspec.a_bits <= 31 else aq)
    return com, sec


def _com_meta(com: Commitment) -> dict:
    return {"client_id": com.client_id, "spec": com.spec.to_dict(), "theta_exp": com.theta_exp,
            "num_blocks": com.num_blocks, "layout": com.layout,
            "srs": {"sha256": com.srs_sha256, "insecure": com.srs_insecure},
            "rest": {"digest": com.rest_digest, "manifest": com.rest_manifest}}


def save_commitment(path, com: Commitment, secrets: CommitmentSecrets | None = None, secrets_path=None) -> Commitment:
    """Write the public commitment (and the secrets file, if given). Returns it with its hash."""
    from .._io import atomic_group

    if secrets is not None and secrets_path is None:
        raise ValueError("secrets_path is required with secrets")
    with atomic_group() as g:  # both files or neither
        digest = save_arrays(g.stage(path), COMMITMENT_FORMAT, VERSION,
                             {"com_theta_p": com.com_theta_p, "com_columns": com.com_columns}, _com_meta(com))
        if secrets is not None:
            arrays = {"blind_theta_p": secrets.blind_theta_p, "blind_columns": secrets.blind_columns,
                      "inverse_exps": secrets.inverse_exps, "rest_salt": binding.salt_array(secrets.rest_salt)}
            if secrets.inverse_q is not None:
                arrays["inverse_q"] = secrets.inverse_q
            save_arrays(g.stage(secrets_path), SECRETS_FORMAT, VERSION, arrays,
                        {"commitment_sha256": digest, "theta_exp": secrets.theta_exp})
    return Commitment(**{**com.__dict__, "sha256": digest, "path": Path(path)})


def _meta_field(meta, key, typ, path):
    v = meta.get(key)
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise ArtifactError(f"{path}: field {key!r} missing or of the wrong type")
    if key == "theta_exp" and not -64 <= v <= 64:  # quant.theta_exponent gives ≤ 40
        raise ArtifactError(f"{path}: θ scale exponent {v} out of range [-64, 64]")
    return v


def load_commitment(path) -> Commitment:
    arrs, meta = load_arrays(path, COMMITMENT_FORMAT, (VERSION,))
    try:
        spec = relation.CommitSpec.from_dict(_meta_field(meta, "spec", dict, path))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: bad commitment spec ({e})") from None
    nb = _meta_field(meta, "num_blocks", int, path)
    srs = _meta_field(meta, "srs", dict, path)
    ct, cc = arrs.get("com_theta_p"), arrs.get("com_columns")
    if (ct is None or cc is None or ct.dtype != np.uint8 or cc.dtype != np.uint8 or ct.shape != (nb, 64)
            or cc.shape != (nb, spec.block_size, 64)):
        raise ArtifactError(f"{path}: commitment arrays do not match {nb} blocks of {spec.block_size}")
    layout = meta.get("layout")
    if layout is not None and not isinstance(layout, dict):
        raise ArtifactError(f"{path}: malformed layout")
    sha = srs.get("sha256")
    if not isinstance(sha, str):
        raise ArtifactError(f"{path}: SRS hash missing")
    rest = _meta_field(meta, "rest", dict, path)
    rd, rm = rest.get("digest"), rest.get("manifest")
    if (not isinstance(rd, str) or len(rd) != 64 or not isinstance(rm, list)
            or not all(isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and isinstance(e[1], str)
                       and isinstance(e[2], list) for e in rm)):
        raise ArtifactError(f"{path}: the digest of the parameters outside the statement is missing or malformed")
    from .artifacts import _arrays_digest  # the file's content hash is its identity
    digest = _arrays_digest(COMMITMENT_FORMAT, VERSION, arrs, meta)
    return Commitment(client_id=_meta_field(meta, "client_id", str, path), spec=spec,
                      theta_exp=_meta_field(meta, "theta_exp", int, path), num_blocks=nb, layout=layout,
                      com_theta_p=ct, com_columns=cc, srs_sha256=sha, srs_insecure=bool(srs.get("insecure", True)),
                      rest_digest=rd, rest_manifest=rm, sha256=digest, path=Path(path))


def load_secrets(path, commitment: Commitment | None = None) -> CommitmentSecrets:
    arrs, meta = load_arrays(path, SECRETS_FORMAT, (VERSION,))
    sec = CommitmentSecrets(blind_theta_p=arrs.get("blind_theta_p"), blind_columns=arrs.get("blind_columns"),
                            inverse_exps=arrs.get("inverse_exps"),
                            theta_exp=_meta_field(meta, "theta_exp", int, path),
                            commitment_sha256=_meta_field(meta, "commitment_sha256", str, path),
                            rest_salt=binding.salt_bytes(arrs.get("rest_salt"), path),
                            inverse_q=arrs.get("inverse_q"))
    for name in ("blind_theta_p", "blind_columns", "inverse_exps"):
        a = getattr(sec, name)
        if a is None or a.dtype.kind != "i":
            raise ArtifactError(f"{path}: {name} missing or not integers")
    if sec.inverse_q is not None and (sec.inverse_q.dtype.kind != "i" or sec.inverse_q.ndim != 3):
        raise ArtifactError(f"{path}: the committed inverse is not an (nb, B, B) integer array")
    if commitment is not None:
        nb, B, R = commitment.num_blocks, commitment.spec.block_size, commitment.spec.n_blind
        if sec.commitment_sha256 != commitment.sha256:
            raise ArtifactError(f"{path}: secrets belong to another commitment")
        if (sec.blind_theta_p.shape != (nb, R) or sec.blind_columns.shape != (nb, B, R)
                or sec.inverse_exps.shape != (nb,)
                or (sec.inverse_q is not None and sec.inverse_q.shape != (nb, B, B))):
            raise ArtifactError(f"{path}: secrets do not match the commitment's blocks")
    return sec
