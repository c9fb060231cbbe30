"""The parameters outside the statement, and the opening that ties a deployed model to a bundle.

A proof certifies the statement's kernels (the block layout). Everything else in the model — the
head, the biases, layer norms, every layer the mask does not select — is bound by the commitment
through a **salted digest**: ``rest_digest = sha256(domain ‖ salt ‖ canonical(rest))`` with a fresh
256-bit salt kept in the client's secrets. With the salt secret it hides the values (random-oracle
hiding); sha256's collision resistance makes it binding. The unlearning update may not change any
of these parameters: the prover refuses a deployed model whose rest differs from θp's, and the
verifier, given the deployed checkpoint and its :class:`Opening`, checks the whole model:

* every statement block: ``Com(θ̂u_b ‖ blinders_b)`` recomputed from the deployed kernels equals the
  bundle's Com(θu_b) (which the proofs certify, or which equals Com(θp_b) for unmasked blocks);
* every other parameter: ``rest_digest(deployed rest, salt)`` equals the commitment's.

``canonical(rest)``: for each path in sorted order, the path, dtype name, shape and the raw
little-endian bytes of the C-contiguous array — a change of value, dtype or shape changes it.
"""

from __future__ import annotations

import hashlib
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import ArtifactError, ShapeError
from .artifacts import canonical_json, load_arrays, save_arrays

OPENING_FORMAT = "zkapex.deployment-opening"
OPENING_VERSION = 1
SALT_BYTES = 32
_DOMAIN = b"zkapex.rest-parameters.v1\x00"


def split_rest(params: Mapping, statement_paths) -> dict[str, np.ndarray]:
    """``{path: array}`` of every parameter of ``params`` (a nested dict) not in ``statement_paths``."""
    from ..core.params import flatten_params

    keep = set(statement_paths)
    flat = flatten_params(params)
    missing = keep - set(flat)
    if missing:
        raise ShapeError(f"the model has no parameter {sorted(missing)[0]!r} of the statement")
    return {p: np.asarray(v) for p, v in flat.items() if p not in keep}


def _canonical_leaf(path: str, a) -> bytes:
    a = np.asarray(a)
    if a.dtype.kind in "OUSM m":
        raise ShapeError(f"parameter {path!r} has dtype {a.dtype}, expected numbers")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    head = canonical_json([path, a.dtype.name, list(a.shape)])
    return len(head).to_bytes(8, "little") + head + np.ascontiguousarray(a).tobytes()


def rest_digest(rest: Mapping[str, np.ndarray], salt: bytes) -> str:
    """sha256 (hex) of the salted canonical serialization of ``rest`` (see module docstring)."""
    if not isinstance(salt, (bytes, bytearray)) or len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    h = hashlib.sha256(_DOMAIN + bytes(salt))
    for path in sorted(rest):
        h.update(_canonical_leaf(path, rest[path]))
    return h.hexdigest()


def rest_manifest(rest: Mapping[str, np.ndarray]) -> list:
    """The public description of the rest: ``[[path, dtype, shape], ...]`` (no values)."""
    return [[p, np.asarray(rest[p]).dtype.name, list(np.shape(rest[p]))] for p in sorted(rest)]


def new_salt() -> bytes:
    return _secrets.token_bytes(SALT_BYTES)


def rest_difference(committed: Mapping[str, np.ndarray], deployed: Mapping[str, np.ndarray]) -> str | None:
    """The first difference between two rests as a sentence (None if equal, bit for bit)."""
    for p in sorted(set(committed) | set(deployed)):
        if p not in deployed:
            return f"parameter {p!r} is missing from the unlearned model"
        if p not in committed:
            return f"parameter {p!r} is not in the personalized model"
        a, b = np.asarray(committed[p]), np.asarray(deployed[p])
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"parameter {p!r} is {b.dtype}{list(b.shape)}, the personalized model's is {a.dtype}{list(a.shape)}"
        if _canonical_leaf(p, a) != _canonical_leaf(p, b):
            n = int(np.sum(~((a == b) | (np.isnan(a) & np.isnan(b))))) if a.dtype.kind == "f" else int(np.sum(a != b))
            return (f"parameter {p!r} outside the statement changed ({n} of {a.size} values): the certified update "
                    "may change only the statement's kernels")
    return None


@dataclass(frozen=True)
class Opening:
    """What lets a holder of the deployed model check it against a bundle: the blinders of every
    block's Com(θu_b) (nb, R) and the salt of the commitment's rest digest. Give it only to whoever
    receives the deployed model (with the model it reveals nothing more; without it, it would
    let a guess of θu be tested against Com(θu))."""

    blind_theta_u: np.ndarray
    rest_salt: bytes
    statement_sha256: str

    def save(self, path) -> str:
        from .._io import atomic_group

        with atomic_group() as g:
            return save_arrays(g.stage(path), OPENING_FORMAT, OPENING_VERSION,
                               {"blind_theta_u": np.asarray(self.blind_theta_u, dtype=np.int64),
                                "rest_salt": salt_array(self.rest_salt)},
                               {"statement_sha256": self.statement_sha256})

    @classmethod
    def load(cls, path) -> "Opening":
        arrs, meta = load_arrays(path, OPENING_FORMAT, (OPENING_VERSION,))
        bt, salt = arrs.get("blind_theta_u"), arrs.get("rest_salt")
        sh = meta.get("statement_sha256")
        if bt is None or bt.dtype.kind != "i" or bt.ndim != 2 or not isinstance(sh, str):
            raise ArtifactError(f"{path}: malformed deployment opening")
        return cls(blind_theta_u=bt, rest_salt=salt_bytes(salt, path), statement_sha256=sh)


def salt_array(salt: bytes) -> np.ndarray:
    return np.frombuffer(bytes(salt), dtype=np.uint8).copy()


def salt_bytes(arr, path: str | Path = "secrets") -> bytes:
    a = np.asarray(arr)
    if a.dtype != np.uint8 or a.shape != (SALT_BYTES,):
        raise ArtifactError(f"{path}: rest salt missing or malformed")
    return a.tobytes()
