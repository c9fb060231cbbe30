"""Exact per-example gradients and the block-wise empirical Fisher.

* :func:`per_example_grads` -- ``jax.vmap`` of ``jax.grad`` of a loss written for ONE example,
  restricted to selected parameters (the others are closed over, never differentiated) and
  optionally streamed over chunks with ``lax.map`` so that activation memory is
  ``O(chunk_size)``.
* :func:`blockwise_fisher` -- ``F_b = damping * I + (1/N) sum_i g_{i,b} g_{i,b}^T`` from a
  ``(N, D)`` gradient matrix.
* :func:`accumulate_fisher` -- the same Fisher computed straight from a loss, parameters and a
  batch: per chunk of examples, per-example gradients of the layout's kernels are cut into blocks
  and their outer products summed in a ``lax.scan`` carry, so memory is ``O(chunk_size * D +
  nb * B^2)`` whatever ``N``. Optionally data parallel with ``jax.sharding`` (the batch sharded
  over a 1-D mesh, the Fisher replicated).
* :func:`grad_moments` -- streamed mean gradient and mean squared gradient (for mask scores).

All functions are pure; :func:`per_example_grads` and :func:`blockwise_fisher` may be jitted by
the caller. :func:`accumulate_fisher` and :func:`grad_moments` jit their own scan.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._errors import NonFiniteError, ShapeError, UnknownParameterError
from .blocks import BlockLayout, from_blocks, to_blocks
from .params import SEP, _key_str, select_paths

__all__ = [
    "per_example_grads",
    "blockwise_fisher",
    "fisher_diagonal",
    "accumulate_fisher",
    "grad_moments",
    "data_mesh",
    "batch_size",
    "block_gram",
    "BlockLayout",
    "to_blocks",
    "from_blocks",
]


# ---------------------------------------------------------------------------- validation
def batch_size(batch: Any) -> int:
    """The common leading axis ``N`` of every leaf of ``batch`` (``ShapeError`` otherwise)."""
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ShapeError("the batch has no array leaves")
    sizes = set()
    for x in leaves:
        shp = np.shape(x)
        if len(shp) == 0:
            raise ShapeError("every batch leaf needs a leading example axis; got a scalar leaf")
        sizes.add(int(shp[0]))
    if len(sizes) != 1:
        raise ShapeError(f"batch leaves disagree on the number of examples N: {sorted(sizes)}")
    (n,) = sizes
    if n < 1:
        raise ShapeError("the batch holds no examples (N = 0)")
    return n


def _check_chunk(chunk_size: Any, name: str = "chunk_size") -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ShapeError(f"{name} must be a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


def _check_damping(damping: Any) -> float:
    try:
        d = float(damping)
    except (TypeError, ValueError) as e:
        raise ValueError(f"damping must be a non-negative number, got {damping!r}") from e
    if not math.isfinite(d):
        raise NonFiniteError(f"damping must be finite, got {damping!r}")
    if d < 0:
        raise ValueError(f"damping must be non-negative, got {damping!r}")
    return d


def _tree_paths(params: Any) -> tuple[list[str], list[Any], Any]:
    kl, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [SEP.join(_key_str(k) for k in kp) for kp, _ in kl]
    return paths, [x for _, x in kl], treedef


def _resolve_wrt(params: Any, wrt: str | Iterable[str]) -> list[str]:
    """Sorted selected paths (``UnknownParameterError`` if a pattern matches nothing)."""
    sel = select_paths(params, wrt)
    tree_paths, _, _ = _tree_paths(params)
    missing = [p for p in sel if p not in tree_paths]
    if missing:  # params tree with non-Mapping containers the path utilities do not walk
        raise UnknownParameterError(f"selected paths {missing} are not leaves of the params pytree")
    return sel


# ---------------------------------------------------------------------------- per-example grads
def _pad_and_chunk(batch: Any, n: int, chunk: int):
    """Leaves ``(N, ...)`` -> ``(n_chunks, chunk, ...)``, padding by repeating the last example
    (a real example, so the loss stays finite). Returns (chunks, n_chunks)."""
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n

    def f(x):
        x = jnp.asarray(x)
        if pad:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
        return x.reshape((n_chunks, chunk) + x.shape[1:])

    return jax.tree_util.tree_map(f, batch), n_chunks


def _per_example_fn(loss_fn: Callable, params: Any, paths: Sequence[str] | None):
    """A function ``batch -> grads`` (vmap of grad) for all params or the given exact paths."""
    if paths is None:
        g = jax.grad(loss_fn)
        return lambda b: jax.vmap(g, in_axes=(None, 0))(params, b)

    tree_paths, leaves, treedef = _tree_paths(params)
    index = {p: i for i, p in enumerate(tree_paths)}
    sel_idx = [index[p] for p in paths]

    def loss_sel(sel_leaves, example):
        new = list(leaves)
        for i, v in zip(sel_idx, sel_leaves):
            new[i] = v
        return loss_fn(jax.tree_util.tree_unflatten(treedef, new), example)

    g = jax.grad(loss_sel)
    sel0 = tuple(leaves[i] for i in sel_idx)

    def run(b):
        gs = jax.vmap(g, in_axes=(None, 0))(sel0, b)
        return dict(zip(paths, gs))

    return run


def per_example_grads(
    loss_fn: Callable[[Any, Any], Any],
    params: Any,
    batch: Any,
    *,
    wrt: str | Iterable[str] | None = None,
    chunk_size: int | None = None,
):
    """Exact per-example gradients, ``jax.vmap(jax.grad(loss_fn))``.

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar`` for ONE example (no batch axis).
      params: the parameter pytree (nested dicts / ``FrozenDict``).
      batch: pytree whose leaves share a leading axis of ``N`` examples.
      wrt: ``None`` (all parameters) or path pattern(s) (``fnmatch``; see
        :func:`zkapex_jax.core.params.select_paths`). Only the selected leaves are differentiated; the
        others are closed over as constants.
      chunk_size: ``None`` for one ``vmap`` over all ``N``; otherwise the batch is padded to a
        multiple of ``chunk_size`` (repeating the last example) and processed chunk by chunk with
        ``lax.map``, so intermediate memory is ``O(chunk_size)``; padded rows are dropped.

    Returns:
      ``wrt=None``: a pytree with the structure of ``params``, each leaf ``(N, *leaf.shape)``.
      ``wrt`` given: a dict ``{path: (N, *shape)}`` of the selected leaves, sorted by path.

    Raises:
      UnknownParameterError: a ``wrt`` pattern matches no parameter.
      ShapeError: batch leaves disagree on ``N``, a leaf is a scalar, ``N == 0`` or a bad
        ``chunk_size``.
    """
    n = batch_size(batch)
    paths = None if wrt is None else _resolve_wrt(params, wrt)
    fn = _per_example_fn(loss_fn, params, paths)
    if chunk_size is None:
        return fn(batch)
    chunk = _check_chunk(chunk_size)
    if chunk >= n:
        return fn(batch)
    chunks, n_chunks = _pad_and_chunk(batch, n, chunk)
    out = lax.map(fn, chunks)
    return jax.tree_util.tree_map(lambda x: x.reshape((n_chunks * chunk,) + x.shape[2:])[:n], out)


# ---------------------------------------------------------------------------- Fisher from grads
def _gram_batched(x):
    return jnp.einsum("nbi,nbj->bij", x, x, precision=lax.Precision.HIGHEST)


def _gram_per_block(x):
    # XLA:CPU runs plain 2-D matmuls ~1.5x faster than one batched dot_general (measured)
    return lax.map(lambda k: jnp.matmul(x[:, k, :].T, x[:, k, :], precision=lax.Precision.HIGHEST),
                   jnp.arange(x.shape[1]))


def _gram_sym_per_block(x):
    """As :func:`_gram_per_block`, computing 3 of the 4 half-size tiles (the Gram matrix is
    symmetric: the upper-right tile is the transpose of the lower-left one). Needs an even ``B``."""
    h = x.shape[2] // 2

    def one(k):
        a, b = x[:, k, :h], x[:, k, h:]
        c11 = jnp.matmul(a.T, a, precision=lax.Precision.HIGHEST)
        c21 = jnp.matmul(b.T, a, precision=lax.Precision.HIGHEST)
        c22 = jnp.matmul(b.T, b, precision=lax.Precision.HIGHEST)
        return jnp.concatenate([jnp.concatenate([c11, c21.T], 1), jnp.concatenate([c21, c22], 1)], 0)

    return lax.map(one, jnp.arange(x.shape[1]))


def _gram_cpu(x):
    # the symmetric tiling pays off once the half tiles are large GEMMs (measured at B = 576:
    # 0.94 s vs 1.04 s for 512 blocks, N = 480, 2 cores)
    return _gram_sym_per_block(x) if x.shape[2] % 2 == 0 and x.shape[2] >= 256 else _gram_per_block(x)


GRAM_BRANCHES = {"batched": _gram_batched, "per_block": _gram_per_block, "sym_per_block": _gram_sym_per_block}
"""Every implementation :func:`block_gram` may lower to (tests force each one)."""


def block_gram(x):
    """``sum_n x[n, b, :]^T x[n, b, :]`` per block: ``(n, nb, B) -> (nb, B, B)``.

    One batched ``dot_general`` on accelerators; on CPU a ``lax.map`` of 2-D matmuls over blocks,
    with symmetric half tiles when ``B`` is even and >= 256 (chosen at lowering time with
    ``lax.platform_dependent``). Full float32 precision (no TF32)."""
    return lax.platform_dependent(x, cpu=_gram_cpu, default=_gram_batched)


def blockwise_fisher(grads: Any, block_size: int, *, damping: float):
    """Block-wise empirical Fisher ``F_b = damping * I + (1/N) sum_i g_{i,b} g_{i,b}^T``.

    Args:
      grads: ``(N, D)`` per-example gradients, ``D`` divisible by ``block_size``; block ``b`` is
        ``grads[:, b*B:(b+1)*B]`` (lay kernels out with :class:`~zkapex_jax.core.blocks.BlockLayout`).
      block_size: ``B``.
      damping: non-negative ``float`` added on the diagonal.

    Returns:
      ``(D // B, B, B)`` of the dtype of ``grads``.
    """
    grads = jnp.asarray(grads)
    if grads.ndim != 2:
        raise ShapeError(f"grads must be (N, D), got shape {grads.shape}")
    if not jnp.issubdtype(grads.dtype, jnp.floating):
        raise ShapeError(f"grads must be floating point, got dtype {grads.dtype}")
    n, d = grads.shape
    b = _check_chunk(block_size, "block_size")
    if n < 1:
        raise ShapeError("grads hold no examples (N = 0)")
    if d % b:
        raise ShapeError(f"D = {d} is not divisible by block_size {b}")
    damp = _check_damping(damping)
    return _blockwise_fisher_core(grads, jnp.asarray(damp, grads.dtype), block_size=b)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _blockwise_fisher_core(grads, damping, *, block_size):
    n, d = grads.shape
    f = block_gram(grads.reshape(n, d // block_size, block_size))
    return f / n + damping * jnp.eye(block_size, dtype=grads.dtype)


def fisher_diagonal(grads: Any, *, damping: float = 0.0):
    """Diagonal of the empirical Fisher, ``mean_i g_i**2 + damping``: ``(N, ...) -> (...)``.

    (The diagonal of any block-wise Fisher ``damping * I + (1/N) sum g g^T``, whatever ``B``.)"""
    grads = jnp.asarray(grads)
    if grads.ndim < 1 or grads.shape[0] < 1:
        raise ShapeError(f"grads must be (N, ...) with N >= 1, got shape {grads.shape}")
    return jnp.mean(jnp.square(grads), axis=0) + _check_damping(damping)


# ---------------------------------------------------------------------------- streaming
def data_mesh(devices: Sequence[Any] | None = None, axis_name: str = "data") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all) with one axis named ``axis_name``."""
    devs = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devs), (axis_name,))


def _mesh_axis(sharding: Any) -> tuple[Mesh, str]:
    if isinstance(sharding, NamedSharding):
        mesh, spec = sharding.mesh, sharding.spec
        axis = spec[0] if len(spec) else None
        if isinstance(axis, tuple):
            if len(axis) != 1:
                raise ValueError(f"shard the batch over one mesh axis, got spec {spec}")
            axis = axis[0]
        if axis is None:
            raise ValueError(
                f"the NamedSharding's spec {spec} does not shard the leading (batch) axis; "
                "use NamedSharding(mesh, PartitionSpec('data'))"
            )
        return mesh, axis
    if isinstance(sharding, Mesh):
        if len(sharding.axis_names) != 1:
            raise ValueError(f"expected a 1-D mesh, got axes {sharding.axis_names}")
        return sharding, sharding.axis_names[0]
    raise TypeError(f"sharding must be None, a jax.sharding.Mesh or a NamedSharding, got {type(sharding)}")


def _prepare_chunks(batch, n, chunk_size, sharding, example_weights=None):
    """Pad/reshape the batch to ``(n_chunks, chunk, ...)`` plus a ``(n_chunks, chunk)`` weight of
    the real examples (1, or √w for ``example_weights`` w; 0 for padding: it multiplies the
    gradients, so their outer products carry w); place it on the mesh when data parallel.
    Returns (chunks, weights, mesh)."""
    mesh = axis = None
    ndev = 1
    if sharding is not None:
        mesh, axis = _mesh_axis(sharding)
        ndev = int(mesh.shape[axis])
    chunk = min(_check_chunk(chunk_size), n)
    chunk = -(-chunk // ndev) * ndev  # a multiple of the number of devices
    chunks, n_chunks = _pad_and_chunk(batch, n, chunk)
    weights = (np.arange(n_chunks * chunk) < n).astype(np.float64)
    if example_weights is not None:
        weights[:n] = np.sqrt(example_weights)
    weights = weights.reshape(n_chunks, chunk).astype(np.float64 if jax.config.jax_enable_x64 else np.float32)
    if mesh is not None:
        xs_sh = NamedSharding(mesh, PartitionSpec(None, axis))
        chunks = jax.device_put(chunks, xs_sh)
        weights = jax.device_put(weights, xs_sh)
    return chunks, weights, mesh


def _replicate(tree, mesh):
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def _fisher_scan_impl(params, chunks, weights, damping, total, *, loss_fn, layout, n, ndev, split, replicated):
    """``lax.scan`` over chunks. With ``ndev`` devices the carry is ``(ndev, nb, B, B)``, sharded
    over devices (``split``): each device sums the outer products of its own examples with no
    communication, and one reduction over devices happens after the scan."""
    paths = list(layout.paths)
    leaves = _select_leaves(params, paths)
    dtype = jnp.result_type(*leaves)
    nb, b = layout.num_blocks, layout.block_size

    def step(acc, xs):
        chunk, w = xs
        g = _per_example_fn(loss_fn, params, paths)(chunk)  # {path: (c, *shape)}
        gb = layout.to_blocks_batched(g).astype(dtype)  # (c, nb, B)
        gb = gb * w.astype(dtype)[:, None, None]  # padded examples -> 0
        if ndev == 1:
            acc = acc + block_gram(gb)[None]
        else:
            gb = gb.reshape(ndev, gb.shape[0] // ndev, nb, b)
            acc = acc + jnp.einsum("dnbi,dnbj->dbij", gb, gb, precision=lax.Precision.HIGHEST)
        if split is not None:
            acc = lax.with_sharding_constraint(acc, split)
        return acc, None

    acc0 = jnp.zeros((ndev, nb, b, b), dtype)
    if split is not None:
        acc0 = lax.with_sharding_constraint(acc0, split)
    acc, _ = lax.scan(step, acc0, (chunks, weights))
    f = jnp.sum(acc, axis=0) / total.astype(dtype) + damping.astype(dtype) * jnp.eye(b, dtype=dtype)
    if replicated is not None:
        f = lax.with_sharding_constraint(f, replicated)
    return f


def _select_leaves(params, paths):
    tree_paths, leaves, _ = _tree_paths(params)
    index = {p: i for i, p in enumerate(tree_paths)}
    return [leaves[index[p]] for p in paths]


_fisher_scan = jax.jit(
    _fisher_scan_impl, static_argnames=("loss_fn", "layout", "n", "ndev", "split", "replicated")
)


def accumulate_fisher(
    loss_fn: Callable[[Any, Any], Any],
    params: Any,
    batch: Any,
    layout: BlockLayout,
    *,
    damping: float,
    chunk_size: int = 64,
    sharding: Mesh | NamedSharding | None = None,
    weights: Any = None,
):
    """Block-wise empirical Fisher of the layout's kernels, streamed over chunks of examples.

    For each chunk of ``chunk_size`` examples, per-example gradients of ``layout.paths`` are cut
    into blocks (``(c, nb, B)``) and ``sum_i g_{i,b} g_{i,b}^T`` is added to a ``(nb, B, B)``
    ``lax.scan`` carry; the result is ``damping * I + (1/N) * sum``. Memory is bounded by one
    chunk's gradients plus the carry, whatever ``N``. Padding rows (when ``chunk_size`` does not
    divide ``N``) get weight 0, so the result is exact.

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar`` for ONE example.
      params: parameter pytree; must contain ``layout.paths`` with ``layout.shapes``.
      batch: pytree of arrays with a leading axis of ``N`` examples.
      layout: the :class:`~zkapex_jax.core.blocks.BlockLayout` (paths, block size, order).
      damping: non-negative float added on the diagonal.
      chunk_size: examples per scan step (rounded up to a multiple of the device count when
        sharded; capped at ``N``).
      sharding: ``None`` (one device), or a 1-D ``jax.sharding.Mesh`` / a ``NamedSharding`` whose
        spec shards the leading axis (e.g. ``NamedSharding(data_mesh(), PartitionSpec('data'))``):
        each chunk's examples are split over the mesh axis, params and the Fisher are replicated
        and XLA all-reduces the per-device sums.
      weights: optional ``(N,)`` non-negative example weights ``w``: the result is then
        ``damping * I + sum_i w_i g g^T / sum_i w_i`` (the exact Fisher of
        :mod:`~zkapex_jax.core.curvature` weighs every label by its probability).

    Returns:
      ``(nb, B, B)`` Fisher blocks, in the dtype of the selected parameters.
    """
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a BlockLayout, got {type(layout)}")
    n = batch_size(batch)
    damp = _check_damping(damping)
    got = dict(zip(layout.paths, _select_existing(params, layout.paths)))
    for p, s in zip(layout.paths, layout.shapes):
        if tuple(np.shape(got[p])) != s:
            raise ShapeError(f"parameter {p!r} has shape {tuple(np.shape(got[p]))}, the layout says {s}")
    total = float(n)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n,) or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ShapeError(f"weights must be ({n},) finite, non-negative and not all zero")
        total = float(weights.sum())
    chunks, w, mesh = _prepare_chunks(batch, n, chunk_size, sharding, weights)
    kw = _scan_shardings(mesh, sharding)
    params = _replicate(params, mesh)
    f = np.float64 if jax.config.jax_enable_x64 else np.float32
    return _fisher_scan(params, chunks, w, f(damp), f(total), loss_fn=loss_fn, layout=layout, n=n, **kw)


def _scan_shardings(mesh, sharding) -> dict:
    if mesh is None:
        return {"ndev": 1, "split": None, "replicated": None}
    _, axis = _mesh_axis(sharding)
    return {
        "ndev": int(mesh.shape[axis]),
        "split": NamedSharding(mesh, PartitionSpec(axis)),
        "replicated": NamedSharding(mesh, PartitionSpec()),
    }


def _select_existing(params, paths):
    tree_paths, leaves, _ = _tree_paths(params)
    index = {p: i for i, p in enumerate(tree_paths)}
    missing = [p for p in paths if p not in index]
    if missing:
        raise UnknownParameterError(f"parameter path(s) {missing} not found in params")
    return [leaves[index[p]] for p in paths]


def _moments_scan_impl(params, chunks, weights, *, loss_fn, paths, n):
    leaves = _select_leaves(params, list(paths))

    def step(carry, xs):
        s1, s2 = carry
        chunk, w = xs
        g = _per_example_fn(loss_fn, params, list(paths))(chunk)
        s1 = {p: s1[p] + jnp.einsum("n,n...->...", w.astype(g[p].dtype), g[p]) for p in paths}
        s2 = {p: s2[p] + jnp.einsum("n,n...->...", w.astype(g[p].dtype), jnp.square(g[p])) for p in paths}
        return (s1, s2), None

    zeros = {p: jnp.zeros(x.shape, x.dtype) for p, x in zip(paths, leaves)}
    (s1, s2), _ = lax.scan(step, (zeros, dict(zeros)), (chunks, weights))
    return {p: s1[p] / n for p in paths}, {p: s2[p] / n for p in paths}


_moments_scan = jax.jit(_moments_scan_impl, static_argnames=("loss_fn", "paths", "n"))


def grad_moments(
    loss_fn: Callable[[Any, Any], Any],
    params: Any,
    batch: Any,
    *,
    wrt: str | Iterable[str],
    chunk_size: int | None = None,
):
    """Mean per-example gradient and mean squared per-example gradient, streamed over chunks.

    Returns ``(mean, mean_sq)``, two dicts ``{path: native shape}`` over the ``wrt`` selection:
    ``mean = (1/N) sum_i g_i`` and ``mean_sq = (1/N) sum_i g_i**2`` (the Fisher diagonal without
    damping). Memory ``O(chunk_size)`` per-example gradients (``chunk_size=None``: all ``N`` at once).
    """
    n = batch_size(batch)
    paths = tuple(_resolve_wrt(params, wrt))
    chunks, weights, _ = _prepare_chunks(batch, n, n if chunk_size is None else chunk_size, None)
    return _moments_scan(params, chunks, weights, loss_fn=loss_fn, paths=paths, n=n)
