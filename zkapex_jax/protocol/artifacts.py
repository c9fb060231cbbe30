"""Artifacts on disk: JSON documents and ``.npz`` array files, each with ``format``, ``version``
and a sha256 content hash, written atomically (temp file in the same folder + ``os.replace``) and
validated on load (:class:`~zkapex_jax.ArtifactError` naming the file and the problem)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import ArtifactError
from .._io import (atomic_write_bytes, canonical_json, check_format_version,  # noqa: F401 (the envelope,
                   content_digest, read_json_artifact, validate_json_doc,  # defined on the ground floor,
                   write_json_artifact)  # re-exported here)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def require(doc: Mapping, key: str, typ, path) -> Any:
    """``doc[key]`` checked to be of type ``typ`` (ArtifactError naming file and field otherwise)."""
    if key not in doc:
        raise ArtifactError(f"{path}: missing field {key!r}")
    v = doc[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise ArtifactError(f"{path}: field {key!r} has type {type(v).__name__}, expected {typ}")
    return v


def _arrays_digest(fmt, version, arrays: Mapping[str, np.ndarray], meta) -> str:
    h = hashlib.sha256()
    h.update(canonical_json({"format": fmt, "version": version, "meta": meta}))
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(canonical_json([k, a.dtype.str, list(a.shape)]))
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path, fmt: str, version: int, arrays: Mapping[str, Any], meta: Mapping | None = None) -> str:
    """An ``.npz`` of named arrays plus a JSON header (format, version, meta, sha256)."""
    arrs = {k: np.asarray(v) for k, v in arrays.items()}
    if any(k.startswith("__") for k in arrs):
        raise ValueError("array names may not start with '__'")
    meta = dict(meta or {})
    digest = _arrays_digest(fmt, version, arrs, meta)
    header = {"format": fmt, "version": version, "meta": meta, "sha256": digest}
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrs)
    atomic_write_bytes(path, buf.getvalue())
    return digest


def load_arrays(path, fmt: str, versions=(1,)) -> tuple[dict[str, np.ndarray], dict]:
    from .._io import open_regular_file

    path = Path(path)
    try:
        with open_regular_file(path, what="artifact") as f, np.load(f, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except Exception as e:  # zipfile/pickle/ValueError: a malformed file
        raise ArtifactError(f"{path}: not a readable .npz artifact ({e})") from None
    if "__header__" not in data:
        raise ArtifactError(f"{path}: missing header")
    from .._io import loads_strict

    try:
        header = loads_strict(data.pop("__header__").tobytes(), f"{path} header")
    except Exception as e:
        raise ArtifactError(f"{path}: malformed header ({e})") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: malformed header (not a JSON object)")
    check_format_version(header, path, fmt, versions)
    if _arrays_digest(fmt, header["version"], data, header.get("meta", {})) != header.get("sha256"):
        raise ArtifactError(f"{path}: content hash mismatch (file edited or corrupted)")
    return data, header.get("meta", {})
