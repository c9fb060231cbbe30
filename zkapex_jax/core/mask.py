"""The provider's mask: saliency scores, top-k selection and the published ``Mask`` artifact.

Scores (higher = more tied to the forget set = masked first), elementwise over a kernel ``w``:

``second_order_neg`` (the paper's ViT/LM runs)
    ``s = g_forget * w - h * diag(F_forget) * w**2``, then ``s <- s / (r * s_retain + 1e-12)``
    where ``s_retain`` is the same score on retain data; ``g`` is the mean per-example gradient
    and ``diag(F) = mean g**2 + damping`` (the diagonal of the block empirical Fisher, whatever
    the block size). Paper: ``h = 0.4485, r = 2.0`` (ViT), ``h = 0.5, r = 1.5`` (LM),
    damping ``1e-8``.
``taylor_forget`` (not in the paper; added after the Study-1 diagnosis, see docs/RESULTS.md)
    ``dL_f = -g_forget * w + 0.5 * diag(F_forget) * w**2``: the second-order Taylor estimate of
    how much the mean forget loss RISES when the weight is set to zero (``w -> 0``, step
    ``-w``), with ``g`` the mean gradient of the loss (not of the log-likelihood) and ``diag(F)``
    the Fisher diagonal as the curvature. No retain term. The top of this score are the weights
    whose removal hurts the forget set most. (The paper's ``second_order_neg`` above is kept
    exactly as stated; with mean per-example gradients its ``g * w`` term dominates, so it is
    ``~ g_forget / (r * g_retain)``, whatever the sign convention of ``g``.)
``salun``
    ``|g_forget|`` (SalUn-style gradient saliency).
``ssd``
    ``diag(F_forget) / (diag(F_retain) + eps)`` (Selective Synaptic Dampening importance ratio).

:func:`top_k_mask` keeps the ``k = round_half_up(fraction * D)`` highest scores, globally over
all selected kernels or per kernel; ties are broken towards the lower index (kernels in sorted
path order, row-major within a kernel), so the mask is deterministic.

:class:`Mask` is the file a provider publishes: JSON with ``format = "zkapex.mask"``,
``version = 1``, the paths, shapes, fraction, method, the sorted row-major flat indices of the
masked weights of each kernel (in its native Flax shape), free-form ``meta`` and the sha256 of
the canonical JSON of all of that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._io import atomic_write_text, canonical_json, content_digest
from .._errors import ArtifactError, MaskMismatchError, NonFiniteError, ShapeError, UnknownParameterError
from .blocks import BlockLayout
from .fisher import _check_damping, grad_moments
from .params import flatten_params, set_paths

__all__ = [
    "MASK_FORMAT",
    "MASK_VERSION",
    "MASKED",
    "METHODS",
    "Mask",
    "PROTECTED",
    "protect_top",
    "compute_scores",
    "score_second_order_neg",
    "score_taylor_forget",
    "score_salun",
    "score_ssd",
    "top_k_count",
    "top_k_mask",
    "dense_mask",
    "zero_masked",
]

MASK_FORMAT = "zkapex.mask"
MASK_VERSION = 1
METHODS = ("second_order_neg", "salun", "ssd", "taylor_forget")


# ---------------------------------------------------------------------------- scores
def score_second_order_neg(w, grad_forget, fdiag_forget, grad_retain, fdiag_retain, *, h=0.4485, r=2.0):
    """The paper's "second-order neg" score (elementwise, any common shape).

    ``s_f = grad_forget * w - h * fdiag_forget * w**2``, ``s_r`` the same on retain data,
    returns ``s_f / (r * s_r + 1e-12)``.
    """
    w = jnp.asarray(w)
    s_f = grad_forget * w - h * fdiag_forget * jnp.square(w)
    s_r = grad_retain * w - h * fdiag_retain * jnp.square(w)
    return s_f / (r * s_r + 1e-12)


def score_taylor_forget(w, grad_forget, fdiag_forget):
    """Second-order Taylor increase of the forget loss when each weight is zeroed (elementwise).

    ``-grad_forget * w + 0.5 * fdiag_forget * w**2`` (``grad_forget``: mean gradient of the
    LOSS; ``fdiag_forget``: Fisher diagonal incl. damping, used as the curvature).
    """
    w = jnp.asarray(w)
    return -jnp.asarray(grad_forget) * w + 0.5 * jnp.asarray(fdiag_forget) * jnp.square(w)


def score_salun(grad_forget):
    """SalUn-style saliency ``|grad_forget|``."""
    return jnp.abs(jnp.asarray(grad_forget))


def score_ssd(fdiag_forget, fdiag_retain, *, eps=1e-12):
    """SSD-style importance ratio ``fdiag_forget / (fdiag_retain + eps)``."""
    return jnp.asarray(fdiag_forget) / (jnp.asarray(fdiag_retain) + eps)


def compute_scores(
    loss_fn: Callable[[Any, Any], Any],
    params: Any,
    forget_batch: Any,
    retain_batch: Any | None,
    *,
    wrt: str | Iterable[str],
    method: str = "second_order_neg",
    h: float = 0.4485,
    r: float = 2.0,
    damping: float = 1e-8,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Saliency score of every weight of the ``wrt``-selected kernels.

    Per-example gradients (``vmap`` of ``grad`` of the one-example ``loss_fn``) of the forget and
    retain batches are reduced, chunk by chunk, to the mean gradient ``g`` and the Fisher diagonal
    ``diag(F) = mean g**2 + damping``; then the ``method``'s score (module docstring).

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar``.
      params: the model parameters (the provider's global model).
      forget_batch, retain_batch: pytrees with a leading example axis (``retain_batch`` may be
        ``None`` for ``"salun"`` and ``"taylor_forget"``; it is not used by them).
      wrt: path pattern(s) of the kernels to score.
      method: ``"second_order_neg"``, ``"salun"``, ``"ssd"`` or ``"taylor_forget"``.
      h, r: the second-order-neg constants.
      damping: added to the Fisher diagonal.
      chunk_size: examples per streamed chunk (``None``: all at once).

    Returns:
      ``{path: scores of the kernel's native shape}`` (sorted paths).
    """
    if method not in METHODS:
        raise ValueError(f"unknown score method {method!r}; choose one of {METHODS}")
    damp = _check_damping(damping)
    g_f, sq_f = grad_moments(loss_fn, params, forget_batch, wrt=wrt, chunk_size=chunk_size)
    if method == "salun":
        return {p: score_salun(g_f[p]) for p in g_f}
    if method == "taylor_forget":
        flat = flatten_params(params)
        return {p: score_taylor_forget(flat[p], g_f[p], sq_f[p] + damp) for p in g_f}
    if retain_batch is None:
        raise ValueError(f"method {method!r} needs a retain batch")
    g_r, sq_r = grad_moments(loss_fn, params, retain_batch, wrt=wrt, chunk_size=chunk_size)
    if method == "ssd":
        return {p: score_ssd(sq_f[p] + damp, sq_r[p] + damp) for p in g_f}
    flat = flatten_params(params)
    return {
        p: score_second_order_neg(
            flat[p], g_f[p], sq_f[p] + damp, g_r[p], sq_r[p] + damp, h=h, r=r
        )
        for p in g_f
    }


# ---------------------------------------------------------------------------- top-k
def top_k_count(fraction: float, size: int) -> int:
    """``k = round_half_up(fraction * size)``, computed exactly from the decimal ``repr`` of
    ``fraction`` (so ``0.04 * 2_359_296 = 94371.84 -> 94372``, ``0.5 * 5 = 2.5 -> 3``)."""
    f = _check_fraction(fraction)
    return int((Decimal(repr(f)) * int(size)).to_integral_value(rounding=ROUND_HALF_UP))


def _check_fraction(fraction: Any) -> float:
    try:
        f = float(fraction)
    except (TypeError, ValueError) as e:
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}") from e
    if not (0.0 <= f <= 1.0):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    return f


def _top_k_flat(s: np.ndarray, k: int) -> np.ndarray:
    """Boolean of ``s``'s shape selecting its ``k`` largest entries; ties -> lower index."""
    d = s.size
    out = np.zeros(d, dtype=bool)
    if k <= 0:
        return out
    if k >= d:
        out[:] = True
        return out
    v = np.partition(s, d - k)[d - k]  # the k-th largest value
    above = s > v
    out |= above
    need = k - int(above.sum())
    out[np.flatnonzero(s == v)[:need]] = True
    return out


def top_k_mask(scores: Mapping[str, Any], fraction: float, *, scope: str = "global") -> dict[str, Any]:
    """Mask the top ``fraction`` of weights by score.

    Args:
      scores: ``{path: array}`` (e.g. from :func:`compute_scores`).
      fraction: in ``[0, 1]``.
      scope: ``"global"`` -- exactly ``top_k_count(fraction, D)`` weights over all paths together
        (``D`` the total); ``"per_param"`` -- ``top_k_count(fraction, size)`` in each path.
        Ties are broken towards the lower index (sorted paths, row-major).

    Returns:
      ``{path: bool array of the score's shape}`` (sorted paths).

    Raises:
      NonFiniteError: NaN scores. ValueError: bad fraction/scope or no scores.
    """
    if scope not in ("global", "per_param"):
        raise ValueError(f"scope must be 'global' or 'per_param', got {scope!r}")
    if not scores:
        raise ValueError("no scores given")
    _check_fraction(fraction)
    paths = sorted(scores)
    arrs = {p: np.asarray(scores[p]) for p in paths}
    for p, a in arrs.items():
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise ShapeError(f"scores for {p!r} must be numeric, got dtype {a.dtype}")
        if np.isnan(a).any():
            raise NonFiniteError(f"scores for {p!r} contain NaN")
    if scope == "per_param":
        return {
            p: jnp.asarray(_top_k_flat(arrs[p].astype(np.float64).reshape(-1), top_k_count(fraction, arrs[p].size)).reshape(arrs[p].shape))
            for p in paths
        }
    flat = np.concatenate([arrs[p].astype(np.float64).reshape(-1) for p in paths])
    sel = _top_k_flat(flat, top_k_count(fraction, flat.size))
    out, start = {}, 0
    for p in paths:
        n = arrs[p].size
        out[p] = jnp.asarray(sel[start : start + n].reshape(arrs[p].shape))
        start += n
    return out


# ---------------------------------------------------------------------------- artifact
def dense_mask(params: Mapping, mask: "Mask | Mapping[str, Any]") -> dict[str, np.ndarray]:
    """``{path: bool array of the leaf's shape}`` of a :class:`Mask` or a dense mapping, checked
    against ``params`` (``UnknownParameterError`` / ``ShapeError`` / ``MaskMismatchError``)."""
    if isinstance(mask, Mask):
        mask.check_matches(params)
        return mask.dense()
    flat = flatten_params(params)
    out = {}
    for path, m in mask.items():
        if path not in flat:
            raise UnknownParameterError(f"mask path {path!r} is not a parameter of the model")
        m = np.asarray(m)
        if m.shape != tuple(flat[path].shape):
            raise ShapeError(f"mask for {path!r} has shape {m.shape}, the parameter has {tuple(flat[path].shape)}")
        out[path] = m.astype(bool)
    return out


def zero_masked(params: Mapping, mask: "Mask | Mapping[str, Any]", *, check: bool = True) -> dict:
    """θ with the masked entries set to exactly 0, nothing else changed (the mask-only model).

    ``mask``: a :class:`Mask` or ``{path: bool array of the leaf's shape}``; ``check=False``
    skips the validation (for a mask already returned by :func:`dense_mask`, inside a loop)."""
    dense = dense_mask(params, mask) if check else mask
    flat = flatten_params(params)
    return set_paths(params, {p: jnp.where(jnp.asarray(m), jnp.zeros((), flat[p].dtype), flat[p])
                              for p, m in dense.items()})


#: codes of :meth:`Mask.request_blocks`: a masked weight (zeroed), a protected one (not moved)
MASKED, PROTECTED = 1, 2


def _flat_indices(v, shape, what: str) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ShapeError(f"{what} must be a 1-D integer array")
    a = a.astype(np.int64)
    size = int(np.prod(shape))
    if a.size and (a[0] < 0 or a[-1] >= size or np.any(np.diff(a) <= 0)):
        raise ShapeError(f"{what} must be sorted, unique and in [0, {size})")
    a.setflags(write=False)
    return a


def protect_top(mask: "Mask", scores: Mapping[str, Any], layout: BlockLayout, per_block: int) -> "Mask":
    """[provider] The certified forget-aware request: in every block of ``layout`` (the client's
    committed block layout) that holds a masked weight, protect the ``per_block`` unmasked weights
    with the highest forget ``scores`` (the same scores the mask was cut from) — the weights the
    forget set leans on that the mask leaves in place. The certificate then pins them
    (θu = θp there), so the compensation cannot rebuild the removed weights' effect through
    them; a proof reads ``k + per_block`` committed columns per block instead of ``k``.
    Returns the mask with :attr:`Mask.protect` set."""
    r = int(per_block)
    if r < 0:
        raise ValueError(f"per_block must be ≥ 0, got {per_block}")
    m = np.asarray(mask.to_blocks(layout), dtype=bool)
    missing = sorted(set(layout.paths) - set(scores))
    if missing:
        raise MaskMismatchError(f"no scores for {missing}")
    sb = np.asarray(layout.to_blocks({p: jnp.asarray(scores[p], jnp.float32) for p in layout.paths}), np.float64)
    if sb.shape != m.shape or not np.all(np.isfinite(sb)):
        raise ShapeError("scores must be finite and of the masked kernels' shapes")
    prot = np.zeros_like(m)
    if r:
        s = np.where(m, -np.inf, sb)
        order = np.argsort(-s, axis=1, kind="stable")[:, :r]
        rows = np.flatnonzero(m.any(axis=1))
        for b in rows:
            keep = order[b][~m[b, order[b]]]
            prot[b, keep] = True
    dense = {p: np.asarray(v, dtype=bool) for p, v in layout.from_blocks(jnp.asarray(prot)).items()}
    return mask.with_protection(dense)


@dataclass(frozen=True, eq=False)
class Mask:
    """A published provider mask.

    Attributes:
      paths: sorted parameter paths.
      shapes: native (Flax) shape of each path.
      fraction: the requested fraction of masked weights.
      method: how the scores were computed (free string, e.g. ``"second_order_neg"``).
      indices: ``{path: sorted unique int64 row-major flat indices}`` of the masked weights.
      meta: JSON-serializable extra information (h, r, damping, scope, data description, ...).
      protect: ``{path: sorted flat indices}`` of *protected* weights (the certified forget-aware
        update, beyond the paper): the compensation may not move them. Disjoint from ``indices``;
        empty for the paper's plain request (and then absent from the file, so such files hash as
        before). See :func:`protect_top`.
    """

    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    fraction: float
    method: str
    indices: Mapping[str, np.ndarray]
    meta: Mapping[str, Any] = field(default_factory=dict)
    protect: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        paths = tuple(str(p) for p in self.paths)
        if not paths or list(paths) != sorted(set(paths)):
            raise ShapeError(f"mask paths must be non-empty, sorted and unique, got {paths}")
        try:
            shapes = tuple(tuple(int(d) for d in s) for s in self.shapes)
        except TypeError as e:
            raise ShapeError(f"malformed mask shapes {self.shapes!r}") from e
        if len(shapes) != len(paths) or any(not s or min(s) < 1 for s in shapes):
            raise ShapeError(f"mask shapes {shapes} do not fit paths {paths}")
        if set(self.indices) != set(paths):
            raise ShapeError(f"mask indices cover {sorted(self.indices)}, paths are {list(paths)}")
        idx = {p: _flat_indices(self.indices[p], s, f"indices for {p!r}") for p, s in zip(paths, shapes)}
        unknown = sorted(set(self.protect) - set(paths))
        if unknown:
            raise ShapeError(f"protected weights name path(s) {unknown} outside the mask's paths")
        prot = {}
        for p, s in zip(paths, shapes):
            if p in self.protect:
                a = _flat_indices(self.protect[p], s, f"protected indices for {p!r}")
                if a.size and np.intersect1d(a, idx[p]).size:
                    raise ShapeError(f"protected weights of {p!r} overlap the masked ones")
                if a.size:
                    prot[p] = a
        f = _check_fraction(self.fraction)
        if not isinstance(self.method, str):
            raise ShapeError(f"mask method must be a string, got {self.method!r}")
        try:
            meta = json.loads(canonical_json(dict(self.meta)))
        except (TypeError, ValueError) as e:
            raise ShapeError(f"mask meta must be JSON-serializable (no NaN): {e}") from e
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "fraction", f)
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "meta", meta)
        object.__setattr__(self, "protect", prot)

    # -------------------------------------------------------------- construction
    @classmethod
    def from_dense(
        cls, dense: Mapping[str, Any], *, fraction: float, method: str, meta: Mapping[str, Any] | None = None
    ) -> "Mask":
        """From ``{path: bool array of the kernel's native shape}``."""
        paths = tuple(sorted(dense))
        arrs = {p: np.asarray(dense[p]) for p in paths}
        for p, a in arrs.items():
            if a.dtype != np.bool_:
                raise ShapeError(f"dense mask for {p!r} must be boolean, got dtype {a.dtype}")
        return cls(
            paths,
            tuple(a.shape for a in arrs.values()),
            fraction,
            method,
            {p: np.flatnonzero(arrs[p].reshape(-1)) for p in paths},
            dict(meta or {}),
        )

    @classmethod
    def from_scores(
        cls,
        scores: Mapping[str, Any],
        fraction: float,
        *,
        scope: str = "global",
        method: str = "second_order_neg",
        meta: Mapping[str, Any] | None = None,
    ) -> "Mask":
        """:func:`top_k_mask` of ``scores`` wrapped as a ``Mask`` (``meta`` gains ``scope``)."""
        dense = top_k_mask(scores, fraction, scope=scope)
        return cls.from_dense(dense, fraction=fraction, method=method, meta={"scope": scope, **dict(meta or {})})

    # -------------------------------------------------------------- views
    @property
    def num_masked(self) -> int:
        return int(sum(a.size for a in self.indices.values()))

    @property
    def size(self) -> int:
        """Total number of weights covered by the mask's paths."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def dense(self) -> dict[str, np.ndarray]:
        """``{path: bool array of the native shape}``."""
        out = {}
        for p, s in zip(self.paths, self.shapes):
            m = np.zeros(int(np.prod(s)), dtype=bool)
            m[self.indices[p]] = True
            out[p] = m.reshape(s)
        return out

    def check_matches(self, params: Mapping) -> None:
        """``MaskMismatchError`` unless every mask path is a parameter of the mask's shape."""
        flat = flatten_params(params)
        for p, s in zip(self.paths, self.shapes):
            if p not in flat:
                raise MaskMismatchError(f"mask path {p!r} is not a parameter of the model")
            got = tuple(np.shape(flat[p]))
            if got != s:
                raise MaskMismatchError(f"mask path {p!r} has shape {s}, the model's parameter has {got}")

    @property
    def num_protected(self) -> int:
        return int(sum(a.size for a in self.protect.values()))

    def protected_dense(self) -> dict[str, np.ndarray]:
        """``{path: bool array of the native shape}`` of the protected weights."""
        out = {}
        for p, s in zip(self.paths, self.shapes):
            m = np.zeros(int(np.prod(s)), dtype=bool)
            m[self.protect.get(p, np.zeros(0, np.int64))] = True
            out[p] = m.reshape(s)
        return out

    def to_blocks(self, layout: BlockLayout):
        """The mask in ``layout``'s block order: ``(nb, B)`` bool. ``MaskMismatchError`` unless the
        layout covers exactly the mask's paths with the same shapes."""
        self._check_layout(layout)
        return layout.to_blocks({p: jnp.asarray(m) for p, m in self.dense().items()})

    def protected_blocks(self, layout: BlockLayout):
        """The protected weights in ``layout``'s block order: ``(nb, B)`` bool."""
        self._check_layout(layout)
        return layout.to_blocks({p: jnp.asarray(m) for p, m in self.protected_dense().items()})

    def request_blocks(self, layout: BlockLayout) -> np.ndarray:
        """What the certificate is asked, per weight in block order: ``(nb, B)`` int8 with
        :data:`MASKED` (1, zeroed), :data:`PROTECTED` (2, the compensation may not move it) or 0."""
        out = np.asarray(self.to_blocks(layout)).astype(np.int8) * MASKED
        if self.protect:
            out[np.asarray(self.protected_blocks(layout))] = PROTECTED
        return out

    def with_protection(self, protect: Mapping[str, Any]) -> "Mask":
        """This mask with ``protect`` (``{path: bool array of the native shape}``) as its
        protected weights (``meta`` records how many)."""
        idx = {p: np.flatnonzero(np.asarray(protect[p], dtype=bool).reshape(-1)) for p in protect}
        meta = {**dict(self.meta), "protected": int(sum(a.size for a in idx.values()))}
        return Mask(self.paths, self.shapes, self.fraction, self.method, self.indices, meta, idx)

    def _check_layout(self, layout: BlockLayout) -> None:
        if tuple(layout.paths) != self.paths:
            raise MaskMismatchError(
                f"mask paths {list(self.paths)} differ from the block layout's {list(layout.paths)}"
            )
        for p, s, ls in zip(self.paths, self.shapes, layout.shapes):
            if s != tuple(ls):
                raise MaskMismatchError(f"mask path {p!r} has shape {s}, the block layout says {tuple(ls)}")

    # -------------------------------------------------------------- artifact
    def content(self) -> dict:
        """The hashed content (everything in the file except ``sha256``; ``protect`` only when
        there are protected weights)."""
        out = {
            "format": MASK_FORMAT,
            "version": MASK_VERSION,
            "paths": list(self.paths),
            "shapes": [list(s) for s in self.shapes],
            "fraction": self.fraction,
            "method": self.method,
            "indices": {p: self.indices[p].tolist() for p in self.paths},
            "meta": dict(self.meta),
        }
        if self.protect:
            out["protect"] = {p: a.tolist() for p, a in self.protect.items()}
        return out

    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`content` (sorted keys, no spaces)."""
        return content_digest(self.content())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self.content_hash() == other.content_hash()

    def __hash__(self) -> int:
        return hash(self.content_hash())

    def save(self, path: str | os.PathLike) -> str:
        """Write the JSON artifact atomically (temp file + ``os.replace``); returns the sha256."""
        content = self.content()
        digest = content_digest(content)
        doc = dict(content, sha256=digest)
        atomic_write_text(path, json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False))
        return digest

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Mask":
        """Read and validate a mask file; ``ArtifactError`` naming the file on any problem
        (missing, not JSON, wrong format/version, missing fields, hash mismatch, bad indices)."""
        from .._io import loads_strict, read_regular_file

        path = os.fspath(path)
        try:
            raw = read_regular_file(path, what="mask file")
        except FileNotFoundError as e:
            raise ArtifactError(f"mask file {path!r}: cannot read (file not found)") from e
        except (OSError, ValueError) as e:
            raise ArtifactError(str(e)) from e
        try:
            doc = loads_strict(raw, f"mask file {path!r}")
        except ValueError as e:
            raise ArtifactError(str(e)) from e
        if not isinstance(doc, dict):
            raise ArtifactError(f"mask file {path!r}: expected a JSON object")
        if doc.get("format") != MASK_FORMAT:
            raise ArtifactError(f"mask file {path!r}: format is {doc.get('format')!r}, expected {MASK_FORMAT!r}")
        if doc.get("version") != MASK_VERSION:
            raise ArtifactError(f"mask file {path!r}: version {doc.get('version')!r} is not supported (expected {MASK_VERSION})")
        required = ("paths", "shapes", "fraction", "method", "indices", "meta", "sha256")
        missing = [k for k in required if k not in doc]
        if missing:
            raise ArtifactError(f"mask file {path!r}: missing field(s) {missing}")
        extra = sorted(set(doc) - set(required) - {"format", "version", "protect"})
        if extra:
            raise ArtifactError(f"mask file {path!r}: unexpected field(s) {extra}")
        try:
            digest = content_digest(doc)
        except ValueError as e:
            raise ArtifactError(f"mask file {path!r}: content not canonical JSON ({e})") from e
        if digest != doc["sha256"]:
            raise ArtifactError(
                f"mask file {path!r}: sha256 mismatch (file says {doc['sha256']!r}, content hashes to {digest!r}); "
                "the file was modified or corrupted"
            )
        try:
            if not isinstance(doc["indices"], dict) or not isinstance(doc["meta"], dict):
                raise ShapeError("indices and meta must be JSON objects")
            if isinstance(doc["fraction"], bool) or not isinstance(doc["fraction"], (int, float)):
                raise ShapeError("fraction must be a number")
            protect = doc.get("protect", {})
            if not isinstance(protect, dict):
                raise ShapeError("protect must be a JSON object")
            for p, v in [*doc["indices"].items(), *protect.items()]:
                if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
                    raise ShapeError(f"indices for {p!r} must be a list of integers")
            if not isinstance(doc["paths"], list) or not isinstance(doc["shapes"], list):
                raise ShapeError("paths and shapes must be lists")
            if not all(isinstance(p, str) for p in doc["paths"]):
                raise ShapeError("paths must be strings")
            for s in doc["shapes"]:
                if not isinstance(s, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in s):
                    raise ShapeError(f"shape {s!r} must be a list of integers")
            mask = cls(
                tuple(doc["paths"]),
                tuple(tuple(s) for s in doc["shapes"]),
                doc["fraction"],
                doc["method"],
                {p: np.asarray(v, dtype=np.int64) for p, v in doc["indices"].items()},
                doc["meta"],
                {p: np.asarray(v, dtype=np.int64) for p, v in protect.items()},
            )
        except (ShapeError, ValueError, TypeError, OverflowError) as e:
            raise ArtifactError(f"mask file {path!r}: invalid content ({e})") from e
        return mask
