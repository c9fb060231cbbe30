"""Parameter paths: flatten a Flax params pytree into ``{"a/b/c": leaf}`` and select leaves
with ``fnmatch`` patterns (``*`` may span several path components)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import UnknownParameterError

SEP = "/"


def _key_str(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flatten_params(params: Mapping) -> dict[str, Any]:
    """Flat ``{path: leaf}`` view of a nested dict of parameters, sorted by path."""
    out: dict[str, Any] = {}

    def rec(node, prefix):
        if isinstance(node, Mapping):
            for k in node:
                rec(node[k], f"{prefix}{SEP}{k}" if prefix else str(k))
        else:
            out[prefix] = node

    rec(params, "")
    return dict(sorted(out.items()))


def unflatten_params(flat: Mapping[str, Any]) -> dict:
    """Inverse of :func:`flatten_params`."""
    root: dict = {}
    for path, leaf in flat.items():
        node = root
        parts = path.split(SEP)
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = leaf
    return root


def _as_patterns(patterns: str | Iterable[str]) -> list[str]:
    if isinstance(patterns, str):
        return [patterns]
    pats = list(patterns)
    if not pats or not all(isinstance(p, str) for p in pats):
        raise UnknownParameterError(f"expected a non-empty sequence of path patterns, got {patterns!r}")
    return pats


def select_paths(params: Mapping, patterns: str | Iterable[str]) -> list[str]:
    """Sorted paths of the leaves matching any of ``patterns``.

    Raises ``UnknownParameterError`` naming each pattern that matches nothing."""
    flat = flatten_params(params)
    pats = _as_patterns(patterns)
    selected: set[str] = set()
    for pat in pats:
        hits = [p for p in flat if fnmatch.fnmatchcase(p, pat)]
        if not hits:
            sample = ", ".join(list(flat)[:6])
            raise UnknownParameterError(
                f"parameter pattern {pat!r} matches no parameter path (paths look like: {sample}, ...)"
            )
        selected.update(hits)
    return sorted(selected)


def get_paths(params: Mapping, paths: Iterable[str]) -> dict[str, Any]:
    """``{path: leaf}`` for exact ``paths``; ``UnknownParameterError`` for a missing one."""
    flat = flatten_params(params)
    out = {}
    for p in paths:
        if p not in flat:
            raise UnknownParameterError(f"unknown parameter path {p!r}")
        out[p] = flat[p]
    return out


def set_paths(params: Mapping, updates: Mapping[str, Any]) -> dict:
    """A copy of ``params`` with the leaves at ``updates``' paths replaced (shapes checked)."""
    flat = flatten_params(params)
    for p, v in updates.items():
        if p not in flat:
            raise UnknownParameterError(f"unknown parameter path {p!r}")
        if tuple(getattr(v, "shape", ())) != tuple(getattr(flat[p], "shape", ())):
            from .._errors import ShapeError

            raise ShapeError(
                f"update for {p!r} has shape {tuple(v.shape)}, parameter has {tuple(flat[p].shape)}"
            )
        flat[p] = v
    return unflatten_params(flat)
