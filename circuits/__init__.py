"""The ZK-APEX relation in inverse-Fisher column form as an ONNX graph (:mod:`circuits.relation`)
and the ezkl stages that compile, key, commit, prove and verify it, with caching
(:mod:`circuits.stages`). See docs/PROOFS.md."""

from .relation import CHECK_GROUPS, CircuitSpec, CommitSpec, build_relation, derive_bounds, relation_reference
from .stages import (
    CircuitArtifacts,
    EzklError,
    cache_dir,
    commit_vectors,
    ensure_circuit,
    ensure_srs,
    prove_chunk,
    verify_chunk,
    verify_chunk_bytes,
)

__all__ = [
    "CHECK_GROUPS", "CircuitSpec", "CommitSpec", "build_relation", "derive_bounds", "relation_reference",
    "CircuitArtifacts", "EzklError", "cache_dir", "commit_vectors", "ensure_circuit", "ensure_srs",
    "prove_chunk", "verify_chunk", "verify_chunk_bytes",
]
