"""The ZK-APEX protocol: personalization commitment (θp and the inverse Fisher, per block and per
column), the proof plan, the prover (process pool or Ray), and the verifier — on a statement's
blocks, and as stages on a model's parameters (:mod:`.api`: params in, params out).

See docs/PROOFS.md for the design and the soundness argument."""

from . import api, audit, binding
from ._circuits import relation as _relation
from .api import Curvature
from .audit import ForgetAudit, audit_forgetting
from .config import CurvatureSpec, MaskSpec, StageConfig
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
from .prover import (ProofError, Unlearned, adopt_unlearned, prepare_keys, prove_unlearning, prove_witness,
                     unlearn_committed)
from .statement import context_limbs, mask_digest, plan_proofs
from .verifier import VerificationResult, check_deployment, load_statement, verify_bundle

CircuitSpec = _relation.CircuitSpec
CommitSpec = _relation.CommitSpec

__all__ = [
    "CircuitSpec", "CommitSpec", "Commitment", "CommitmentSecrets", "Curvature", "CurvatureSpec", "ForgetAudit", "MaskSpec",
    "StageConfig", "api", "KeyStore", "ProofError", "Unlearned",
    "VerificationResult", "adopt_unlearned", "audit", "audit_forgetting", "binding", "check_deployment", "commit_personalization", "context_limbs", "load_arrays",
    "load_commitment", "load_secrets", "load_statement", "mask_digest", "plan_proofs", "prepare_keys", "prove_unlearning",
    "prove_witness", "read_json_artifact", "save_arrays", "save_commitment", "unlearn_committed",
    "verify_bundle", "write_json_artifact",
]
