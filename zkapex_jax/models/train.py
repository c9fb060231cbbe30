"""Training: optax AdamW with warm-up and layer-wise learning-rate decay, a train step over a
per-example loss, an epoch loop, batched accuracy, and orbax checkpoints.

The paper's global training and personalization (arXiv 2512.09953): AdamW, 30 epochs, lr 8e-4,
layer-wise lr decay 0.8, 3 warm-up steps. Layer-wise decay (BEiT style): a parameter of layer
``id`` gets ``lr · decay ** (L + 1 - id)`` where the embeddings have ``id = 0``, encoder/decoder
layer ``i`` (path component ``layer/<i>`` or ``layers/<i>``) has ``id = i + 1`` and everything
after the last layer (final norm, classifier / LM head) has ``id = L + 1`` (full lr).

Style: the step is a pure function; the caller jits it (``fit`` is such a caller).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._errors import ArtifactError, ShapeError, ZkapexError
from ..core.params import flatten_params, unflatten_params

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "layer_id",
    "layer_lr_scales",
    "make_schedule",
    "make_optimizer",
    "make_train_step",
    "steps_per_epoch",
    "fit",
    "train",
    "accuracy",
    "evaluate",
    "params_sha256",
    "save_checkpoint",
    "load_checkpoint",
    "cache_path",
    "load_or_train",
]

_LAYER_RE = re.compile(r"(?:^|/)(?:layers?|blocks)/(\d+)(?:/|$)")
_NO_DECAY_LEAVES = ("bias", "scale", "cls_token", "position_embeddings")


# ---------------------------------------------------------------------------------------------
# optimizer


def layer_id(path: str, num_layers: int) -> int:
    """Layer id of a parameter path for layer-wise lr decay: ``0`` for embeddings (a path
    component starting with ``embed`` or ``project_in``), ``i + 1`` for ``.../layer/<i>/...``,
    ``.../layers/<i>/...`` or ``blocks/<i>/...`` (EfficientNet), ``num_layers + 1`` for the rest (final norm, heads)."""
    m = _LAYER_RE.search(path)
    if m:
        return int(m.group(1)) + 1
    parts = path.split("/")
    if any(p.startswith("embed") or p == "project_in" for p in parts):
        return 0
    return num_layers + 1


def _num_layers(paths) -> int:
    idx = [int(m.group(1)) for p in paths if (m := _LAYER_RE.search(p))]
    return max(idx) + 1 if idx else 0


def layer_lr_scales(params, layer_decay: float | None, layer_of: Callable[[str], int] | None = None) -> dict[str, float]:
    """``{path: lr factor}``: ``layer_decay ** (max_id - layer_of(path))`` (all 1.0 when
    ``layer_decay`` is None). ``layer_of`` defaults to :func:`layer_id` with the number of layers
    read from the paths; a custom one returns an int id (larger = closer to the output)."""
    flat = flatten_params(params)
    if layer_decay is None:
        return {p: 1.0 for p in flat}
    if not (0.0 < float(layer_decay) <= 1.0):
        raise ZkapexError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if layer_of is None:
        n = _num_layers(flat)
        ids = {p: layer_id(p, n) for p in flat}
    else:
        ids = {p: int(layer_of(p)) for p in flat}
    top = max(ids.values())
    return {p: float(layer_decay) ** (top - i) for p, i in ids.items()}


def make_schedule(lr: float, total_steps: int, warmup_steps: int = 3, *, decay: str = "cosine",
                  end_value: float = 0.0) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine (or ``"linear"``, or
    ``"constant"``) decay to ``end_value`` at ``total_steps``."""
    if total_steps < 1 or warmup_steps < 0:
        raise ZkapexError(f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
    decay_steps = max(total_steps - warmup_steps, 1)
    warm = optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else optax.constant_schedule(lr)
    if decay == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=end_value / lr if lr else 0.0)
    elif decay == "linear":
        main = optax.linear_schedule(lr, end_value, decay_steps)
    elif decay == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ZkapexError(f"unknown decay {decay!r}; expected 'cosine', 'linear' or 'constant'")
    return optax.join_schedules([warm, main], [warmup_steps]) if warmup_steps else main


def _scale_by_tree(scales) -> optax.GradientTransformation:
    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(
    params,
    *,
    lr: float,
    total_steps: int,
    warmup_steps: int = 3,
    weight_decay: float = 0.05,
    layer_decay: float | None = None,
    layer_of: Callable[[str], int] | None = None,
    decay: str = "cosine",
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    grad_clip: float | None = None,
) -> optax.GradientTransformation:
    """AdamW with the schedule of :func:`make_schedule` and per-leaf lr factors from
    :func:`layer_lr_scales` (the whole AdamW update, weight decay included, is scaled — as a
    per-group lr would). Weight decay applies to kernels and token embeddings, not to biases,
    norm scales, the ViT cls token or position embeddings. ``grad_clip``: optional global-norm
    clipping before Adam. ``params`` only fixes the tree structure and paths."""
    flat = flatten_params(params)
    scales = unflatten_params(layer_lr_scales(params, layer_decay, layer_of))
    wd_mask = unflatten_params(
        {p: (np.ndim(v) >= 2 and p.split("/")[-1] not in _NO_DECAY_LEAVES and "embed_positions" not in p)
         for p, v in flat.items()}
    )
    schedule = make_schedule(lr, total_steps, warmup_steps, decay=decay)
    parts = []
    if grad_clip is not None:
        parts.append(optax.clip_by_global_norm(grad_clip))
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=wd_mask))
    if layer_decay is not None:
        parts.append(_scale_by_tree(scales))
    return optax.chain(*parts)


# ---------------------------------------------------------------------------------------------
# steps and loops


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """``step(params, opt_state, batch, weights=None) -> (params, opt_state, loss)``.

    ``loss_fn(params, example)`` is the loss of ONE example; the step takes the mean of its
    ``vmap`` over the batch (leading axis ``N`` of every leaf of ``batch``), or the
    ``weights``-weighted mean (``weights`` ``(N,)``; zero weights pad a short batch). Pure: jit
    it where you call it."""

    def step(params, opt_state, batch, weights=None):
        def batch_loss(p):
            losses = jax.vmap(loss_fn, in_axes=(None, 0))(p, batch)
            if weights is None:
                return jnp.mean(losses)
            w = jnp.asarray(weights, losses.dtype)
            return jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), jnp.asarray(1e-12, losses.dtype))

        loss, grads = jax.value_and_grad(batch_loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch in :func:`fit`: ``ceil(n / batch_size)`` (the last batch padded)."""
    return math.ceil(n / min(batch_size, n))


def _num_examples(data) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ShapeError("data has no arrays")
    n = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(n) != 1 or None in n:
        raise ShapeError(f"every leaf of data needs the same leading axis N, got {sorted(map(str, n))}")
    n = n.pop()
    if n == 0:
        raise ShapeError("data holds no examples")
    return n


def fit(
    loss_fn: Callable,
    params,
    data,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    progress: bool = False,
    eval_fn: Callable | None = None,
    opt_state=None,
    return_state: bool = False,
    step: Callable | None = None,
):
    """Train ``params`` for ``epochs`` epochs of shuffled mini-batches.

    Args:
      loss_fn: per-example loss ``loss_fn(params, example)``.
      data: pytree of host arrays with a common leading axis ``N`` (e.g. ``Split(x, y)``).
      optimizer: e.g. from :func:`make_optimizer` with ``total_steps = epochs *
        steps_per_epoch(N, batch_size)``.
      batch_size: the last batch of an epoch is padded to this size with zero weights, so every
        example is used each epoch and one shape is compiled.
      key: PRNG key; epoch ``e`` shuffles with ``jax.random.fold_in(key, e)``.
      progress: a tqdm bar over steps.
      eval_fn: optional ``eval_fn(params) -> dict | float`` called after every epoch.
      opt_state: resume from this optimizer state (default ``optimizer.init(params)``).
      return_state: also return the final optimizer state.
      step: the jitted ``make_train_step(loss_fn, optimizer)`` to use (e.g. one kept across calls
        with the same loss and optimizer settings, so it compiles once); default: jit a new one.

    Returns ``(params, history)`` (or ``(params, history, opt_state)``) with ``history =
    {"loss": [mean loss per epoch], "step_loss": [...], "epoch_time_s": [...], "eval": [...]
    (if eval_fn)}`` — plain floats, JSON-serialisable."""
    n = _num_examples(data)
    bs = min(int(batch_size), n)
    if bs < 1 or epochs < 0:
        raise ZkapexError(f"need batch_size >= 1 and epochs >= 0, got {batch_size}, {epochs}")
    host = jax.tree.map(np.asarray, data)
    if step is None:
        step = jax.jit(make_train_step(loss_fn, optimizer))
    if opt_state is None:
        opt_state = optimizer.init(params)
    nsteps = steps_per_epoch(n, bs)
    history: dict[str, Any] = {"loss": [], "step_loss": [], "epoch_time_s": []}
    if eval_fn is not None:
        history["eval"] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * nsteps, desc="train", unit="step")
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        pad = nsteps * bs - n
        order = np.concatenate([perm, perm[:pad]]) if pad else perm
        weights = np.ones(nsteps * bs, np.float32)
        if pad:
            weights[n:] = 0.0
        losses = []
        for s in range(nsteps):
            idx = order[s * bs : (s + 1) * bs]
            batch = jax.tree.map(lambda a: a[idx], host)
            params, opt_state, loss = step(params, opt_state, batch, weights[s * bs : (s + 1) * bs])
            losses.append(loss)
            if bar is not None:
                bar.update(1)
        step_losses = [float(v) for v in losses]
        w = np.array([weights[s * bs : (s + 1) * bs].sum() for s in range(nsteps)])
        history["step_loss"].extend(step_losses)
        history["loss"].append(float(np.dot(step_losses, w) / w.sum()))
        history["epoch_time_s"].append(time.perf_counter() - t0)
        if eval_fn is not None:
            history["eval"].append(eval_fn(params))
        if bar is not None:
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
    if bar is not None:
        bar.close()
    if return_state:
        return params, history, opt_state
    return params, history


#: alias of :func:`fit` (the module table's name).
train = fit


def _batched_reduce(fn, params, arrays, batch_size):
    """Sum of ``fn(params, *batch, valid) -> (a, b)`` over fixed-size batches (last one padded)."""
    n = arrays[0].shape[0]
    bs = min(batch_size, n)
    tot_a = tot_b = 0.0
    for s in range(0, n, bs):
        chunk = [a[s : s + bs] for a in arrays]
        m = chunk[0].shape[0]
        valid = np.arange(bs) < m
        if m < bs:
            chunk = [np.concatenate([c, np.repeat(c[-1:], bs - m, axis=0)]) for c in chunk]
        a, b = fn(params, *chunk, valid)
        tot_a += float(a)
        tot_b += float(b)
    return tot_a, tot_b


_JIT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached_jit(kind, fn: Callable, build: Callable) -> Callable:
    """One jitted helper per (user function, kind: any hashable), so repeated evaluations (and
    trainings with the same settings) do not recompile."""
    try:
        per_fn = _JIT_CACHE.setdefault(fn, {})
    except TypeError:  # not weak-referenceable: no caching
        return jax.jit(build(fn))
    if kind not in per_fn:
        per_fn[kind] = jax.jit(build(fn))
    return per_fn[kind]


def _accuracy_counts(predict_fn):
    def counts(params, xb, yb, valid):
        pred = jnp.argmax(predict_fn(params, xb), axis=-1)
        return jnp.sum((pred == yb) & valid), jnp.sum(valid)

    return counts


def _loss_sums(loss_fn):
    def sums(params, batch, valid):
        losses = jax.vmap(loss_fn, in_axes=(None, 0))(params, batch)
        v = valid.astype(losses.dtype)
        return jnp.sum(losses * v), jnp.sum(v)

    return sums


def accuracy(predict_fn: Callable, params, x, y, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``predict_fn(params, x_batch) -> logits (n, classes)`` on ``x``
    ``(N, ...)`` with integer labels ``y`` ``(N,)``, in batches (the last one padded)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape[0] != y.shape[0] or y.ndim != 1:
        raise ShapeError(f"x {x.shape} and y {y.shape} must share the leading axis, y (N,)")
    if y.shape[0] == 0:
        raise ShapeError("no examples to evaluate")

    counts = _cached_jit("accuracy", predict_fn, _accuracy_counts)
    c, t = _batched_reduce(counts, params, [x, y], batch_size)
    return c / t


def evaluate(loss_fn: Callable, params, data, *, batch_size: int = 512) -> float:
    """Mean of the per-example ``loss_fn(params, example)`` over ``data`` (pytree, leading N)."""
    n = _num_examples(data)
    leaves, treedef = jax.tree.flatten(jax.tree.map(np.asarray, data))

    sums = _cached_jit("evaluate", loss_fn, _loss_sums)
    del n
    s, t = _batched_reduce(lambda p, *a: sums(p, jax.tree.unflatten(treedef, a[:-1]), a[-1]), params, leaves,
                           batch_size)
    return s / t


# ---------------------------------------------------------------------------------------------
# checkpoints

CHECKPOINT_FORMAT = "zkapex.checkpoint"
CHECKPOINT_VERSION = 1
_META = "meta.json"
_PARAMS = "params"


def params_sha256(params) -> str:
    """sha256 over the flattened params in sorted path order: for each leaf its path, dtype,
    shape and C-order little-endian bytes. Equal for equal values, whatever the device."""
    h = hashlib.sha256()
    for path, leaf in flatten_params(params).items():
        a = np.asarray(leaf)
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
        h.update(path.encode())
        h.update(b"\0")
        h.update(str(a.dtype).encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _is_checkpoint_dir(path) -> bool:
    """A directory this library wrote: exactly the params folder and meta.json of our format."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    if set(os.listdir(path)) != {_PARAMS, _META}:
        return False
    try:
        with open(os.path.join(path, _META), "rb") as fh:
            doc = json.loads(fh.read(1 << 24))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == CHECKPOINT_FORMAT


def save_checkpoint(path, params, meta: Mapping | None = None) -> str:
    """Write ``params`` (orbax ``StandardCheckpointer``) and ``meta.json`` (format, version,
    sha256 of the params, the tree's shapes/dtypes, your JSON-serialisable ``meta``) into the
    directory ``path``, atomically: everything is written to a temporary sibling directory that
    then replaces ``path``. An existing ``path`` is replaced only if it is a checkpoint written by
    this function (``ZkapexError`` otherwise: a user's folder is never deleted). Returns the
    absolute path."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if os.path.lexists(path) and not _is_checkpoint_dir(path):
        raise ZkapexError(f"{path} exists and is not a zkapex checkpoint; refusing to replace it")
    os.makedirs(parent, exist_ok=True)
    flat = {p: np.asarray(v) for p, v in flatten_params(params).items()}
    if not flat:
        raise ZkapexError("cannot checkpoint an empty params tree")
    record = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "sha256": params_sha256(flat),
        "tree": {p: {"shape": list(a.shape), "dtype": str(a.dtype)} for p, a in flat.items()},
        "meta": dict(meta or {}),
    }
    try:
        meta_text = json.dumps(record, indent=1, sort_keys=True)
    except TypeError as exc:
        raise ZkapexError(f"checkpoint meta must be JSON-serialisable: {exc}") from exc
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, _PARAMS), unflatten_params(flat))
            ckptr.wait_until_finished()
        with open(os.path.join(tmp, _META), "w", encoding="utf-8") as fh:
            fh.write(meta_text)
            fh.flush()
            os.fsync(fh.fileno())
        old = None
        if os.path.exists(path):
            old = os.path.join(parent, f".{os.path.basename(path)}.old-{uuid.uuid4().hex}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _check_regular_tree(root: str, max_bytes: int = 64 << 30, max_entries: int = 100_000) -> None:
    """Every entry under ``root`` is a directory or a regular file (no FIFO, device, socket or
    link out of the tree), at most ``max_entries`` of them and ``max_bytes`` in all: the restore
    library would block on a FIFO or read a device forever."""
    import stat as _stat

    total = count = 0
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            count += 1
            if count > max_entries:
                raise ArtifactError(f"checkpoint parameters {root!r}: more than {max_entries} files")
            st = os.lstat(p)
            if _stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(p)
                if not (target == real_root or target.startswith(real_root + os.sep)):
                    raise ArtifactError(f"checkpoint parameters: {p!r} links outside the checkpoint")
                st = os.stat(p)
            if _stat.S_ISDIR(st.st_mode):
                continue
            if not _stat.S_ISREG(st.st_mode):
                raise ArtifactError(f"checkpoint parameters: {p!r} is not a regular file")
            total += st.st_size
            if total > max_bytes:
                raise ArtifactError(f"checkpoint parameters {root!r}: larger than {max_bytes} bytes")


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint` -> ``(params, meta)``, ``params`` a
    nested dict of numpy arrays. Validates format, version, the tree and the sha256; raises
    ``ArtifactError`` naming the file for anything missing or malformed."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    meta_file = os.path.join(path, _META)
    params_dir = os.path.join(path, _PARAMS)
    if not os.path.isdir(path):
        raise ArtifactError(f"checkpoint {path!r} does not exist or is not a directory")
    if not os.path.isfile(meta_file):
        raise ArtifactError(f"checkpoint {path!r}: {meta_file!r} is missing")
    from .._io import loads_strict, read_regular_file

    try:  # a regular file (never a FIFO), size-capped, strict JSON (bounded nesting, no NaN, no duplicate keys)
        record = loads_strict(read_regular_file(meta_file, max_bytes=64 << 20, what="checkpoint meta"), meta_file)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{meta_file!r} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{meta_file!r}: format is {record.get('format') if isinstance(record, dict) else None!r}, "
                            f"expected {CHECKPOINT_FORMAT!r}")
    if record.get("version") != CHECKPOINT_VERSION:
        raise ArtifactError(f"{meta_file!r}: version {record.get('version')!r} is not supported "
                            f"(expected {CHECKPOINT_VERSION})")
    tree = record.get("tree")
    if not isinstance(tree, dict) or not tree or not isinstance(record.get("sha256"), str):
        raise ArtifactError(f"{meta_file!r}: missing or malformed 'tree' / 'sha256'")
    if not os.path.isdir(params_dir):
        raise ArtifactError(f"checkpoint {path!r}: parameter directory {params_dir!r} is missing")
    _check_regular_tree(params_dir)
    try:
        target = unflatten_params(
            {p: jax.ShapeDtypeStruct(tuple(s["shape"]), np.dtype(s["dtype"])) for p, s in tree.items()}
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{meta_file!r}: malformed tree entry: {exc}") from exc
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(params_dir, target)
    except Exception as exc:  # orbax raises many kinds (ValueError, FileNotFoundError, tensorstore...)
        raise ArtifactError(f"checkpoint {path!r}: cannot restore {params_dir!r}: {exc}") from exc
    flat = {p: np.asarray(v) for p, v in flatten_params(restored).items()}
    if set(flat) != set(tree):
        raise ArtifactError(f"checkpoint {path!r}: restored paths differ from {meta_file!r}'s tree")
    for p, a in flat.items():
        if list(a.shape) != list(tree[p]["shape"]) or str(a.dtype) != tree[p]["dtype"]:
            raise ArtifactError(f"checkpoint {path!r}: {p} restored as {a.dtype}{a.shape}, "
                                f"meta says {tree[p]['dtype']}{tuple(tree[p]['shape'])}")
    digest = params_sha256(flat)
    if digest != record["sha256"]:
        raise ArtifactError(f"checkpoint {path!r}: sha256 of the parameters ({digest[:16]}…) does not match "
                            f"{meta_file!r} ({record['sha256'][:16]}…): the checkpoint is corrupt")
    return unflatten_params(flat), record.get("meta", {})


def cache_path(cache_dir, name: str, key: Mapping) -> str | None:
    """``<cache_dir>/<name>-<sha256(key)[:12]>`` for a model trained under the settings ``key``
    (a JSON-able mapping); ``None`` without a ``cache_dir``."""
    if not cache_dir:
        return None
    h = hashlib.sha256(json.dumps(dict(key), sort_keys=True, default=list).encode()).hexdigest()
    return os.path.join(os.fspath(cache_dir), f"{name}-{h[:12]}")


def load_or_train(path, train_fn, meta: Mapping | None = None):
    """The parameters checkpointed at ``path`` if it exists, else ``train_fn() -> (params, meta)``
    timed and saved there (:func:`save_checkpoint`; ``path=None`` trains without saving).

    Returns ``(params, meta, cached)``; ``meta`` is the saved one (with ``seconds``, the training
    time, and the caller's ``meta``) when ``cached``."""
    if path and os.path.isdir(path):
        params, saved = load_checkpoint(path)
        return jax.tree.map(jnp.asarray, params), saved, True
    t0 = time.perf_counter()
    params, extra = train_fn()
    jax.block_until_ready(params)
    out = {**dict(meta or {}), **dict(extra or {}), "seconds": time.perf_counter() - t0}
    if path:
        save_checkpoint(path, params, out)
    return params, out, False
