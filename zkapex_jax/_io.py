"""Atomic file writes: a temporary file in the destination's folder, fsync, then ``os.replace``,
so a reader sees the old file or the new one and never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
