"""The ZK-APEX protocol: personalization commitment, unlearning statement, proof bundle, verifier.

See docs/PROOFS.md for the design and the soundness argument."""

from .artifacts import load_arrays, read_json_artifact, save_arrays, write_json_artifact
from .commitments import (
    Commitment,
    CommitmentSecrets,
    commit_personalization,
    load_commitment,
    load_secrets,
    save_commitment,
)
from .keystore import KeyStore
from .prover import ProofError, Unlearned, prove_unlearning, unlearn_committed
from .statement import context_limbs, mask_digest
from .verifier import VerificationResult, load_statement, verify_bundle
from ._circuits import relation as _relation

CircuitSpec = _relation.CircuitSpec

__all__ = [
    "CircuitSpec", "Commitment", "CommitmentSecrets", "KeyStore", "ProofError", "Unlearned",
    "VerificationResult", "commit_personalization", "context_limbs", "load_arrays", "load_commitment",
    "load_secrets", "load_statement", "mask_digest", "prove_unlearning", "read_json_artifact",
    "save_arrays", "save_commitment", "unlearn_committed", "verify_bundle", "write_json_artifact",
]
