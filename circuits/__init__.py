"""The ZK-APEX KKT relation as an ONNX graph (:mod:`circuits.relation`) and the ezkl stages that
compile, key, prove and verify it, with caching (:mod:`circuits.stages`). See circuits/README.md."""

from .relation import CHECK_NAMES, N_CHECKS, CircuitSpec, build_relation, relation_reference
from .stages import (
    CircuitArtifacts,
    EzklError,
    cache_dir,
    commit_columns,
    ensure_circuit,
    ensure_srs,
    prove_chunk,
    verify_chunk,
)

__all__ = [
    "CHECK_NAMES",
    "N_CHECKS",
    "CircuitSpec",
    "build_relation",
    "relation_reference",
    "CircuitArtifacts",
    "EzklError",
    "cache_dir",
    "commit_columns",
    "ensure_circuit",
    "ensure_srs",
    "prove_chunk",
    "verify_chunk",
]
