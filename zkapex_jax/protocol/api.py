"""The protocol's stages on a model's parameters: params in, params out, the block layout inside.

The lower layers work on a statement's blocks — θ as ``(nb, B)``, the curvature as
``(nb, B, B)``, a request as ``(nb, B)`` codes. These functions take what a user holds (a
parameter pytree, a :class:`Curvature` artifact, a :class:`~zkapex_jax.core.mask.Mask`) and do
the conversion once, here, for the CLI, the demo and the studies alike::

    curv = Curvature(fisher, layout, kind="layer_inputs", damping=1e-3, relative=True)
    com, sec = commit(theta_p, curv, CommitSpec(block_size=16, logrows=13), client_id="c0")  # before the mask
    theta_u, u = unlearn(theta_p, mask, com, sec)           # Â comes from the secrets (computed once)
    bundle = prove(theta_p, mask, com, sec, request_id="r0", out_dir="bundle", unlearned=theta_u)
    res = verify(bundle, com, mask, request_id="r0", deployed=theta_u, opening=Opening.load(...))

Everything a stage needs about the layout comes from the commitment (:func:`commitment_layout`),
so a client cannot unlearn or prove against a layout other than the committed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import ArtifactError, ShapeError
from ..core.blocks import BlockLayout
from ..core.mask import Mask
from ..core.params import get_paths, set_paths
from .artifacts import load_arrays, save_arrays
from .commitments import Commitment, CommitmentSecrets, commit_personalization
from .keystore import KeyStore

__all__ = ["Curvature", "statement_blocks", "with_statement", "rest_of", "commitment_layout", "request", "commit_spec",
           "commit", "unlearn", "prove", "verify"]

CURVATURE_FORMAT = "zkapex.fisher"
CURVATURE_VERSION = 2   # 1: fisher + layout; 2: + the curvature's kind and damping


# ----------------------------------------------------------------------------- params ↔ blocks

def statement_blocks(params, layout: BlockLayout) -> np.ndarray:
    """The statement's kernels of ``params`` as blocks ``(nb, B)`` float64."""
    return np.asarray(layout.to_blocks(get_paths(params, layout.paths)), dtype=np.float64)


def with_statement(params, layout: BlockLayout, blocks):
    """``params`` with the statement's kernels replaced by ``blocks`` (nb, B); each kernel keeps
    its dtype, every other parameter is ``params``' own (the same objects)."""
    blocks = np.asarray(blocks)
    if blocks.shape != (layout.num_blocks, layout.block_size):
        raise ShapeError(f"blocks have shape {blocks.shape}, the layout needs ({layout.num_blocks}, {layout.block_size})")
    old = get_paths(params, layout.paths)
    return set_paths(params, {p: np.asarray(v, dtype=np.float64).astype(np.asarray(old[p]).dtype)
                              for p, v in layout.from_blocks(blocks).items()})


def rest_of(params, layout: BlockLayout) -> dict:
    """Every parameter outside the statement's kernels ({path: array}): what the commitment binds
    by digest and the update may not change."""
    from .binding import split_rest

    return split_rest(params, layout.paths)


def commitment_layout(commitment: Commitment) -> BlockLayout:
    """The committed block layout (ArtifactError if the commitment has none or it is malformed)."""
    where = commitment.path or "commitment"
    if commitment.layout is None:
        raise ArtifactError(f"{where}: commitment has no block layout")
    try:
        layout = BlockLayout.from_dict(commitment.layout)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: malformed block layout ({e})") from None
    if (layout.num_blocks, layout.block_size) != (commitment.num_blocks, commitment.spec.block_size):
        raise ArtifactError(f"{where}: block layout ({layout.num_blocks} × {layout.block_size}) differs from the "
                            f"commitment's ({commitment.num_blocks} × {commitment.spec.block_size})")
    return layout


def request(mask: Mask, layout: BlockLayout) -> tuple[np.ndarray, str]:
    """(the request's (nb, B) int8 codes — 0 / 1 masked / 2 protected — and the mask's content hash,
    which a statement binds: forget set, method and fraction as well as the bits)."""
    return mask.request_blocks(layout), mask.content_hash()


# ----------------------------------------------------------------------------- the curvature artifact

@dataclass(frozen=True)
class Curvature:
    """The client's block curvature ``C`` (nb, B, B) float64 with its layout and how it was made:
    ``kind`` (:data:`~zkapex_jax.core.curvature.CURVATURES`, or ``"unknown"`` for files written
    before the kind was recorded) and the damping already added (``relative``: a multiple of each
    block's scale). What :func:`commit` commits (its inverse); fixed before any mask exists."""

    fisher: np.ndarray
    layout: BlockLayout
    kind: str = "empirical"
    damping: float | None = None
    relative: bool = False

    def __post_init__(self):
        f = np.asarray(self.fisher, dtype=np.float64)
        want = (self.layout.num_blocks, self.layout.block_size, self.layout.block_size)
        if f.shape != want:
            raise ShapeError(f"curvature has shape {f.shape}, the layout needs {want}")
        object.__setattr__(self, "fisher", f)

    def save(self, path) -> str:
        """Write the artifact (format ``zkapex.fisher`` v2); returns its content hash."""
        return save_arrays(path, CURVATURE_FORMAT, CURVATURE_VERSION, {"fisher": self.fisher},
                           {"layout": self.layout.to_dict(), "kind": self.kind, "damping": self.damping,
                            "relative": bool(self.relative)})

    @classmethod
    def load(cls, path) -> "Curvature":
        """Read and check a curvature file (v1 files read with kind ``"unknown"``)."""
        arrs, meta = load_arrays(path, CURVATURE_FORMAT, versions=(1, CURVATURE_VERSION))
        try:
            layout = BlockLayout.from_dict(meta["layout"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{path}: malformed layout ({e})") from None
        kind, damping, relative = meta.get("kind", "unknown"), meta.get("damping"), meta.get("relative", False)
        if not isinstance(kind, str) or not isinstance(relative, bool) or not (
                damping is None or (isinstance(damping, (int, float)) and not isinstance(damping, bool))):
            raise ArtifactError(f"{path}: malformed kind / damping fields")
        if "fisher" not in arrs:
            raise ArtifactError(f"{path}: no 'fisher' array")
        try:
            return cls(np.asarray(arrs["fisher"], dtype=np.float64), layout, kind, damping, relative)
        except (ShapeError, TypeError, ValueError) as e:
            raise ArtifactError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------- the stages

def commit_spec(block_size: int, logrows: int | None = None, *, wrap: int = 1, keystore: KeyStore | None = None,
                column_range: str = "inline"):
    """The commitment's :class:`~circuits.relation.CommitSpec` for blocks of ``block_size``;
    ``logrows`` None: the smallest at which one block of the default slot cap fits ``wrap`` sets of
    2^logrows rows (``wrap`` > 1: ezkl's column wrapping, short committed columns; ValueError if B
    cannot fit). ``column_range``: ``"inline"`` or ``"amortized"`` (column range proofs apart
    from the requests, :mod:`~zkapex_jax.protocol.ranges`)."""
    from ._circuits import relation
    from .statement import default_logrows

    lr = logrows if logrows is not None else default_logrows(block_size, wrap=wrap,
                                                            root=None if keystore is None else keystore.root)
    return relation.CommitSpec(block_size=block_size, logrows=lr, wrap=wrap, column_range=column_range)


def commit(theta_p, curvature: Curvature, cspec, *, client_id: str, keystore: KeyStore | None = None,
           progress: bool = False) -> tuple[Commitment, CommitmentSecrets]:
    """[client] Commit to the personalized model ``theta_p`` (its statement kernels per block, every
    other parameter by salted digest) and to the inverse of ``curvature``, before any mask.
    Returns ``(Commitment, CommitmentSecrets)`` (unsaved; ``save_commitment`` writes both)."""
    layout = curvature.layout
    if cspec.block_size != layout.block_size:
        raise ShapeError(f"the commitment's block size {cspec.block_size} differs from the curvature's "
                         f"{layout.block_size}")
    return commit_personalization(statement_blocks(theta_p, layout), curvature.fisher, cspec, client_id=client_id,
                                  keystore=keystore, layout=layout.to_dict(), progress=progress,
                                  rest=rest_of(theta_p, layout))


def _client_inputs(theta_p, mask, commitment, secrets, curvature):
    layout = commitment_layout(commitment)
    fisher = None
    if curvature is not None:
        if curvature.layout.to_dict() != commitment.layout:
            raise ArtifactError("the curvature's block layout differs from the commitment's")
        fisher = curvature.fisher
    elif secrets.inverse_q is None:
        raise ArtifactError("these secrets do not carry the committed inverse Fisher (written by an older zkapex): "
                            "give the curvature")
    codes, mask_sha = request(mask, layout)
    return layout, statement_blocks(theta_p, layout), fisher, codes, mask_sha


def _check_committed(commitment, secrets, rest_p) -> None:
    """ProofError unless θp's parameters outside the statement are the committed ones (its
    kernels are checked against Com(θp) before any proof)."""
    from .prover import ProofError, check_rest

    try:
        check_rest(commitment, secrets, rest_p)
    except ProofError as e:
        raise ProofError(f"theta_p is not the committed personalized model ({e})") from None


def unlearn(theta_p, mask: Mask, commitment: Commitment, secrets: CommitmentSecrets, *,
            keystore: KeyStore | None = None, curvature: Curvature | None = None):
    """[client] The certified Group-OBS update of the committed ``theta_p`` for ``mask``.
    Â is the committed one the secrets carry (``curvature`` only for secrets without it).
    Returns ``(theta_u params, Unlearned)``: θu is θp with the statement's kernels replaced by the
    certified update (every other parameter untouched)."""
    from .prover import unlearn_committed

    layout, tb, fisher, codes, _ = _client_inputs(theta_p, mask, commitment, secrets, curvature)
    _check_committed(commitment, secrets, rest_of(theta_p, layout))
    u = unlearn_committed(tb, fisher, codes, commitment, secrets, keystore=keystore)
    return with_statement(theta_p, layout, u.theta_u), u


def prove(theta_p, mask: Mask, commitment: Commitment, secrets: CommitmentSecrets, *, request_id: str, out_dir,
          unlearned=None, keystore: KeyStore | None = None, curvature: Curvature | None = None, jobs: int = 1,
          progress: bool = False, executor: str = "process", ray_address: str | None = None,
          opening_out=None) -> Path:
    """[client] Prove the unlearning of ``mask`` for the committed ``theta_p``; writes the bundle
    ``out_dir`` (and the deployment opening to ``opening_out``). ``unlearned``: the model to
    certify — params (ProofError, nothing written, if its kernels are not the certified
    transformation or any other parameter differs from θp's), or the
    :class:`~zkapex_jax.protocol.prover.Unlearned` that :func:`unlearn` returned for this request
    (proven as it is, without certifying the blocks again); default: the certified update."""
    from ..core.quant import quantize_theta
    from .binding import rest_difference
    from .prover import ProofError, Unlearned, prove_unlearning, prove_witness

    layout, tb, fisher, codes, mask_sha = _client_inputs(theta_p, mask, commitment, secrets, curvature)
    rest_p = rest_of(theta_p, layout)
    _check_committed(commitment, secrets, rest_p)
    if isinstance(unlearned, Unlearned):
        if unlearned.mask is None or not np.array_equal(unlearned.mask, codes):
            raise ProofError("the given Unlearned was made for another request than this mask")
        if not np.array_equal(unlearned.theta_p_q, quantize_theta(tb, commitment.theta_exp, commitment.spec.theta_bits)):
            raise ProofError("the given Unlearned was made from other parameters than theta_p")
        return prove_witness(unlearned, commitment, secrets, request_id=request_id, out_dir=out_dir,
                             keystore=keystore, jobs=jobs, progress=progress, executor=executor,
                             ray_address=ray_address, mask_sha256=mask_sha, opening_out=opening_out)
    theta_u = rest_u = None
    if unlearned is not None:
        theta_u, rest_u = statement_blocks(unlearned, layout), rest_of(unlearned, layout)
        diff = rest_difference(rest_p, rest_u)
        if diff:
            raise ProofError(f"the unlearned model: {diff}")
    return prove_unlearning(tb, fisher, codes, commitment, secrets, request_id=request_id, out_dir=out_dir,
                            keystore=keystore, jobs=jobs, progress=progress, executor=executor,
                            ray_address=ray_address, theta_u=theta_u, rest_u=rest_u, mask_sha256=mask_sha,
                            opening_out=opening_out)


def verify(bundle, commitment: Commitment, mask: Mask, *, keystore: KeyStore | None = None,
           client_id: str | None = None, request_id: str | None = None, deployed=None, opening=None,
           progress: bool = False, forget_accuracy=None, max_forget_accuracy: float | None = None):
    """[provider] Verify ``bundle`` against the published commitment and mask (its bits and its
    content hash). ``deployed`` (params) with its ``opening``
    (:class:`~zkapex_jax.protocol.binding.Opening`): also check that the deployed model is, every
    parameter of it, the certified one.

    ``forget_accuracy(params) -> (accuracy, n)`` (needs ``deployed``): the provider's audit of the
    outcome (:mod:`~zkapex_jax.protocol.audit`), run on the deployed model once everything else
    verified; with ``max_forget_accuracy`` a model above it is rejected ("not forgotten") even though
    its certificate holds. The audit lands in ``details["forget_audit"]`` and
    ``details["certificate_valid"]`` says whether the certificate itself verified. Returns a
    :class:`~zkapex_jax.protocol.verifier.VerificationResult`."""
    from .audit import audit_forgetting, check_policy
    from .verifier import verify_bundle

    if (deployed is None) != (opening is None):
        raise ValueError("deployed and opening go together (the deployed model and its opening)")
    if forget_accuracy is None and max_forget_accuracy is not None:
        raise ValueError("max_forget_accuracy needs forget_accuracy (the audit's evaluation on the forget set)")
    if forget_accuracy is not None and deployed is None:
        raise ValueError("the forget audit evaluates the deployed model: pass deployed and opening")
    check_policy(max_forget_accuracy)  # before any verification work
    layout = commitment_layout(commitment)
    codes, mask_sha = request(mask, layout)
    dep = None if deployed is None else (statement_blocks(deployed, layout), rest_of(deployed, layout), opening)
    res = verify_bundle(bundle, commitment, codes, keystore=keystore, client_id=client_id, request_id=request_id,
                        progress=progress, mask_sha256=mask_sha, deployed=dep)
    res.details["certificate_valid"] = res.valid
    if forget_accuracy is not None and res.valid:  # only the model the bundle opened is audited
        audit = audit_forgetting(forget_accuracy, deployed, max_accuracy=max_forget_accuracy)
        res.details["forget_audit"] = audit.to_dict()
        if not audit.passed:
            res.valid = False
            res.reason = (f"not forgotten: {audit.reason()} (the certificate itself verified: {res.reason})")
        else:
            res.reason = f"{res.reason}; forget audit: {audit.reason()}"
    return res
