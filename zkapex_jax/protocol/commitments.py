"""The personalization commitment: blinded KZG commitments to θp and C per chunk.

Made at personalization time, before any mask exists: the chunking (``K`` consecutive blocks of
the layout per chunk) depends only on the layout and the circuit shape. Each committed column is
the chunk's integers followed by ``n_blind`` uniformly random 24-bit blinders, so the (otherwise
deterministic) KZG commitment hides the values; the blinders and per-block Fisher exponents stay
in the client's secrets file."""

from __future__ import annotations

import secrets as _secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import quant
from .._errors import ArtifactError, ShapeError, SingularBlockError
from ._circuits import relation, stages
from .artifacts import read_json_artifact, require, write_json_artifact
from .keystore import KeyStore
from .statement import n_chunks as _n_chunks

COMMITMENT_FORMAT = "zkapex.commitment"
SECRETS_FORMAT = "zkapex.commitment-secrets"
VERSION = 1
BLIND_BITS = 24


def random_blinders(n: int) -> list[int]:
    """``n`` uniform integers in [−2^23, 2^23) (inside ezkl's ±(2^24−1) input range)."""
    return [_secrets.randbits(BLIND_BITS) - 2 ** (BLIND_BITS - 1) for _ in range(n)]


@dataclass(frozen=True)
class Commitment:
    """Public personalization commitment (what the client publishes)."""

    client_id: str
    spec: "relation.CircuitSpec"
    theta_exp: int
    num_blocks: int
    layout: dict | None
    com_theta_p: tuple[str, ...]
    com_fisher: tuple[str, ...]
    srs_sha256: str
    srs_insecure: bool
    sha256: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def n_chunks(self) -> int:
        return len(self.com_theta_p)


@dataclass(frozen=True)
class CommitmentSecrets:
    """Client-side secrets: blinders per chunk for θp and C, per-block Fisher exponents."""

    blind_theta_p: tuple[tuple[int, ...], ...]
    blind_fisher: tuple[tuple[int, ...], ...]
    fisher_exps: np.ndarray
    theta_exp: int
    commitment_sha256: str


def chunk_slices(num_blocks: int, chunk_blocks: int):
    for c in range(_n_chunks(num_blocks, chunk_blocks)):
        yield c, slice(c * chunk_blocks, min((c + 1) * chunk_blocks, num_blocks))


def pad_chunk(a: np.ndarray, chunk_blocks: int, *, fisher_scale: int | None = None) -> np.ndarray:
    """Pad the leading (block) axis to ``chunk_blocks``: zeros, or ``fisher_scale·I`` for Fisher
    blocks (a normalized padding block; with θ = 0 and no mask its update is δ = 0)."""
    pad = chunk_blocks - a.shape[0]
    if pad == 0:
        return a
    fill = np.zeros((pad,) + a.shape[1:], dtype=a.dtype)
    if fisher_scale is not None:
        fill[:] = fisher_scale * np.eye(a.shape[-1], dtype=a.dtype)
    return np.concatenate([a, fill], axis=0)


def quantize_personalization(theta_p, fisher, spec, *, theta_exp=None, fisher_exps=None):
    """(θ̂p (nb,B), Ĉ (nb,B,B), sθ, s_b (nb,)) with the scales fixed now (or given)."""
    theta_p = np.asarray(theta_p, dtype=np.float64)
    fisher = np.asarray(fisher, dtype=np.float64)
    B = spec.block_size
    if theta_p.ndim != 2 or theta_p.shape[1] != B or fisher.shape != (theta_p.shape[0], B, B):
        raise ShapeError(f"theta_p {theta_p.shape} / fisher {fisher.shape} do not match block size {B}: "
                         "expected (nb, B) and (nb, B, B)")
    if theta_exp is None:
        theta_exp = quant.theta_exponent(theta_p)
    if fisher_exps is None:
        fisher_exps = quant.fisher_block_exponents(fisher)
    tq = quant.quantize_theta(theta_p, theta_exp)
    cq = quant.quantize_fisher(fisher, fisher_exps, spec.s_c)
    low = np.flatnonzero(np.max(np.diagonal(cq, axis1=1, axis2=2), axis=1) < 2 ** (spec.s_c - 1))
    if low.size:
        raise SingularBlockError(f"Fisher blocks {low[:8].tolist()} are not positive semi-definite "
                                 "(largest entry off the diagonal); the circuit requires normalized PSD blocks")
    return tq, cq, int(theta_exp), np.asarray(fisher_exps, dtype=np.int64)


def commit_personalization(theta_p, fisher, spec, *, client_id: str, keystore: KeyStore | None = None,
                           layout: dict | None = None, progress: bool = False):
    """Commit to θp (nb,B) and C (nb,B,B). Returns ``(Commitment, CommitmentSecrets)`` (unsaved)."""
    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    keystore = keystore or KeyStore()
    art = keystore.ensure(spec)
    tq, cq, sth, exps = quantize_personalization(theta_p, fisher, spec)
    K, R = spec.chunk_blocks, spec.n_blind
    coms_t, coms_c, bl_t, bl_c = [], [], [], []
    it = list(chunk_slices(tq.shape[0], K))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="commit", unit="chunk")
    for _, sl in it:
        bt, bc = random_blinders(R), random_blinders(R)
        coms_t.append(stages.commit_columns(art, pad_chunk(tq[sl], K).ravel().tolist() + bt))
        coms_c.append(stages.commit_columns(art, pad_chunk(cq[sl], K, fisher_scale=2 ** spec.s_c).ravel().tolist() + bc))
        bl_t.append(tuple(bt))
        bl_c.append(tuple(bc))
    meta = art.meta
    com = Commitment(client_id=client_id, spec=spec, theta_exp=sth, num_blocks=int(tq.shape[0]), layout=layout,
                     com_theta_p=tuple(coms_t), com_fisher=tuple(coms_c), srs_sha256=meta["srs_sha256"],
                     srs_insecure=bool(art.srs_insecure))
    sec = CommitmentSecrets(blind_theta_p=tuple(bl_t), blind_fisher=tuple(bl_c), fisher_exps=exps,
                            theta_exp=sth, commitment_sha256="")
    return com, sec


def _com_payload(com: Commitment) -> dict:
    return {"client_id": com.client_id, "spec": com.spec.to_dict(), "theta_exp": com.theta_exp,
            "num_blocks": com.num_blocks, "layout": com.layout,
            "chunks": [{"com_theta_p": a, "com_fisher": b} for a, b in zip(com.com_theta_p, com.com_fisher)],
            "srs": {"sha256": com.srs_sha256, "insecure": com.srs_insecure}}


def save_commitment(path, com: Commitment, secrets: CommitmentSecrets | None = None, secrets_path=None) -> Commitment:
    """Write the public commitment (and the secrets file, if given). Returns it with its hash."""
    digest = write_json_artifact(path, COMMITMENT_FORMAT, VERSION, _com_payload(com))
    if secrets is not None:
        if secrets_path is None:
            raise ValueError("secrets_path is required with secrets")
        write_json_artifact(secrets_path, SECRETS_FORMAT, VERSION, {
            "commitment_sha256": digest, "theta_exp": secrets.theta_exp,
            "fisher_exps": [int(x) for x in secrets.fisher_exps],
            "blind_theta_p": [list(b) for b in secrets.blind_theta_p],
            "blind_fisher": [list(b) for b in secrets.blind_fisher]})
    return Commitment(**{**com.__dict__, "sha256": digest, "path": Path(path)})


def _is_point(s) -> bool:
    if not isinstance(s, str) or len(s) != 128:
        return False
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return True


def load_commitment(path) -> Commitment:
    doc = read_json_artifact(path, COMMITMENT_FORMAT, (VERSION,))
    try:
        spec = relation.CircuitSpec.from_dict(require(doc, "spec", dict, path))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: bad circuit spec ({e})") from None
    chunks = require(doc, "chunks", list, path)
    srs = require(doc, "srs", dict, path)
    nb = require(doc, "num_blocks", int, path)
    for i, c in enumerate(chunks):
        if not isinstance(c, dict) or not _is_point(c.get("com_theta_p")) or not _is_point(c.get("com_fisher")):
            raise ArtifactError(f"{path}: chunk {i} has malformed commitments")
    if len(chunks) != _n_chunks(nb, spec.chunk_blocks):
        raise ArtifactError(f"{path}: {len(chunks)} chunks for {nb} blocks of chunk size {spec.chunk_blocks}")
    return Commitment(client_id=require(doc, "client_id", str, path), spec=spec,
                      theta_exp=require(doc, "theta_exp", int, path), num_blocks=nb, layout=doc.get("layout"),
                      com_theta_p=tuple(c["com_theta_p"] for c in chunks),
                      com_fisher=tuple(c["com_fisher"] for c in chunks),
                      srs_sha256=str(srs.get("sha256")), srs_insecure=bool(srs.get("insecure", True)),
                      sha256=doc["sha256"], path=Path(path))


def load_secrets(path, commitment: Commitment | None = None) -> CommitmentSecrets:
    doc = read_json_artifact(path, SECRETS_FORMAT, (VERSION,))
    bt, bc = require(doc, "blind_theta_p", list, path), require(doc, "blind_fisher", list, path)
    sec = CommitmentSecrets(blind_theta_p=tuple(tuple(int(x) for x in b) for b in bt),
                            blind_fisher=tuple(tuple(int(x) for x in b) for b in bc),
                            fisher_exps=np.asarray(require(doc, "fisher_exps", list, path), dtype=np.int64),
                            theta_exp=require(doc, "theta_exp", int, path),
                            commitment_sha256=require(doc, "commitment_sha256", str, path))
    if commitment is not None:
        if sec.commitment_sha256 != commitment.sha256:
            raise ArtifactError(f"{path}: secrets belong to another commitment")
        if len(sec.blind_theta_p) != commitment.n_chunks or sec.fisher_exps.shape != (commitment.num_blocks,):
            raise ArtifactError(f"{path}: secrets do not match the commitment's chunks/blocks")
    return sec
