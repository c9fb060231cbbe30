"""Key store: circuits compiled and keyed by whoever holds the store, from the public relation.

The provider's verifier uses only keys from its own store (never keys shipped in a bundle); the
client uses its own store (by default the user cache) to prove. Both derive the same keys from
the same public circuit spec and SRS."""

from __future__ import annotations

import os
from pathlib import Path

from ._circuits import relation, stages


class KeyStore:
    """Circuits under ``root/circuits/{spec.key}``; the SRS from ``srs_path`` (a ceremony file) or
    the shared cache (``$ZKAPEX_CACHE/srs``, generated locally and labelled insecure)."""

    def __init__(self, root: str | os.PathLike | None = None, *, srs_path: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else stages.cache_dir()
        self.srs_path = Path(srs_path) if srs_path is not None else None

    def ensure(self, spec: "relation.CircuitSpec") -> "stages.CircuitArtifacts":
        """Compile + key ``spec`` once (cached); returns the artifact paths."""
        return stages.ensure_circuit(spec, srs_path=self.srs_path, root=self.root)

    def is_keyed(self, spec: "relation.CircuitSpec") -> bool:
        """Whether :meth:`ensure` would find ``spec`` compiled and keyed (no work)."""
        return stages.is_keyed(spec, srs_path=self.srs_path, root=self.root)

    def rows(self, spec: "relation.CircuitSpec") -> int:
        """ezkl's row count of ``spec`` (cached gen_settings; no keys)."""
        return stages.num_rows(spec, root=self.root)

    def srs_sha256(self, logrows: int) -> str:
        """sha256 of the SRS this store keys circuits of ``logrows`` with."""
        return stages.srs_sha256(logrows, self.srs_path)

    def __repr__(self):
        return f"KeyStore({str(self.root)!r}, srs_path={self.srs_path})"
