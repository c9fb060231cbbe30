"""The ground floor of every file the package writes or reads.

Atomic file writes (a temporary file in the destination's folder, fsync, then ``os.replace``, so a
reader sees the old file or the new one and never half of one); the JSON artifact envelope
(``format``, ``version``, ``sha256`` over the canonical JSON of the rest: :func:`canonical_json`,
:func:`content_digest`, :func:`write_json_artifact`, :func:`read_json_artifact`); hostile-input
reads (regular files only, size caps, strict JSON)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import ArtifactError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class _Group:
    def __init__(self):
        self.pending: list[tuple[Path, Path]] = []

    def stage(self, path) -> Path:
        """A temporary path beside ``path``; it becomes ``path`` when the group commits."""
        path = Path(path)
        if any(p.resolve() == path.resolve() for p, _ in self.pending):
            raise ValueError(f"{path} is named twice as an output")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.pending.append((path, Path(tmp)))
        return Path(tmp)


class atomic_group:
    """Write several files all or nothing: ``with atomic_group() as g: write(g.stage(p), ...)``.
    On success every staged file replaces its destination; on any error none does and the
    temporaries are removed."""

    def __enter__(self) -> _Group:
        self.g = _Group()
        return self.g

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            for dst, tmp in self.g.pending:
                os.replace(tmp, dst)
        else:
            for _, tmp in self.g.pending:
                if tmp.exists():
                    tmp.unlink()
        return False


# ---------------------------------------------------------------------------- the artifact envelope
# Every JSON artifact (masks, statements, results files, ...) is {"format", "version", ...,
# "sha256"} with sha256 over the canonical JSON of everything else; these two define the bytes.

def canonical_json(obj) -> bytes:
    """The hashed form: sorted keys, no spaces, ASCII escapes; NaN/Infinity refused (``ValueError``)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def content_digest(doc) -> str:
    """sha256 (hex) of :func:`canonical_json` of ``doc`` without its ``sha256`` field."""
    import hashlib

    return hashlib.sha256(canonical_json({k: v for k, v in doc.items() if k != "sha256"})).hexdigest()


def write_json_artifact(path, fmt: str, version: int, payload: Mapping[str, Any]) -> str:
    """Write ``{"format", "version", "sha256", **payload}``; the hash covers format, version and
    payload (canonical JSON). Returns the hash."""
    body = {"format": fmt, "version": int(version), **payload}
    if "sha256" in payload:
        raise ValueError("payload may not contain 'sha256'")
    digest = content_digest(body)
    atomic_write_bytes(path, json.dumps({**body, "sha256": digest}, indent=1, sort_keys=True).encode())
    return digest


def read_json_artifact(path, fmt: str, versions=(1,)) -> dict:
    """Load and validate a JSON artifact written by :func:`write_json_artifact`."""
    path = Path(path)
    try:
        raw = read_regular_file(path, what="artifact")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(str(e)) from None
    try:
        doc = loads_strict(raw, str(path))
    except ValueError as e:
        raise ArtifactError(str(e)) from None
    return validate_json_doc(doc, path, fmt, versions)


def check_format_version(doc: Mapping, path, fmt: str, versions=(1,)) -> None:
    """The envelope's head (a JSON document's or an array file's header): ``format`` is ``fmt`` and
    ``version`` one of ``versions``; ``ArtifactError`` naming ``path`` otherwise."""
    if doc.get("format") != fmt:
        raise ArtifactError(f"{path}: format is {doc.get('format')!r}, expected {fmt!r}")
    if isinstance(doc.get("version"), bool) or doc.get("version") not in versions:
        raise ArtifactError(f"{path}: version {doc.get('version')!r} unsupported (expected one of {list(versions)})")


def validate_json_doc(doc, path, fmt: str, versions=(1,)) -> dict:
    """``doc`` if it is a JSON object of format ``fmt``, a version in ``versions`` and an intact
    sha256 (:func:`content_digest`); ``ArtifactError`` naming ``path`` and the problem otherwise."""
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    check_format_version(doc, path, fmt, versions)
    digest = doc.get("sha256")
    if not isinstance(digest, str) or content_digest(doc) != digest:
        raise ArtifactError(f"{path}: content hash mismatch (file edited or corrupted)")
    return doc


# ---------------------------------------------------------------------------- hostile-input reads
#: artifacts (JSON statements, masks, commitments, secrets, Fisher files) larger than this are
#: rejected unread; the largest honest one here is a B = 576 Fisher of a ViT-B layer (~1.4 GB).
MAX_ARTIFACT_BYTES = 4 << 30
#: integers in JSON artifacts longer than this many digits are rejected (field elements: 78).
MAX_JSON_INT_DIGITS = 100


def open_regular_file(path: str | os.PathLike, *, max_bytes: int = MAX_ARTIFACT_BYTES, what: str = "file"):
    """A binary file object for ``path`` after the checks of :func:`read_regular_file` (regular
    file, size cap, no blocking open); the caller closes it."""
    import stat as _stat

    p = os.fspath(path)
    if "\x00" in p:
        raise ValueError(f"{what} path {p!r} contains a NUL byte")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {p}: file not found") from None
    except OSError as e:
        raise ValueError(f"{what} {p}: cannot open ({e.strerror})") from None
    st = os.fstat(fd)
    if not _stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
        os.close(fd)
        raise ValueError(f"{what} {p}: " + ("not a regular file" if not _stat.S_ISREG(st.st_mode) else
                                            f"{st.st_size} bytes is larger than the limit of {max_bytes}"))
    return os.fdopen(fd, "rb")


def read_regular_file(path: str | os.PathLike, *, max_bytes: int = MAX_ARTIFACT_BYTES, what: str = "file") -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; ``ValueError``
    naming the problem otherwise. Never blocks on a FIFO or a device (opened non-blocking, checked
    with ``fstat`` before any read, :func:`open_regular_file`) and never reads more than
    ``max_bytes + 1`` bytes (a file that grows after the check is still refused)."""
    with open_regular_file(path, max_bytes=max_bytes, what=what) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{what} {os.fspath(path)}: larger than the limit of {max_bytes} bytes")
    return data


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _bounded_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"an integer of {len(s)} digits (more than {MAX_JSON_INT_DIGITS})")
    return int(s)


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(s: str) -> float:
    import math

    x = float(s)
    if not math.isfinite(x):
        raise ValueError(f"number {s[:20]} overflows a double")
    return x


def loads_strict(raw: bytes | str, what: str = "JSON"):
    """``json.loads`` that refuses duplicate keys (a second parser might keep the other value),
    NaN/Infinity, integers of more than :data:`MAX_JSON_INT_DIGITS` digits and nesting deep enough
    to exhaust the stack; every refusal is a ``ValueError`` naming ``what``."""
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_int=_bounded_int, parse_float=_finite_float,
                          parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{what}: nested too deeply") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: not UTF-8 ({e.reason})") from None
    except ValueError as e:
        raise ValueError(f"{what}: not valid JSON ({e})") from None
