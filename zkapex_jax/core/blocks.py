"""Block layout: how selected kernels are cut into consecutive blocks of ``B`` weights.

A :class:`BlockLayout` fixes, for a set of parameter paths (sorted), the order in which each
kernel's weights are flattened and then cut into blocks of ``block_size`` consecutive weights.
All selected kernels are concatenated in path order into one ``(num_blocks, block_size)``
stack; the block-wise Fisher is ``(num_blocks, block_size, block_size)`` in the same order.

Orders (for a 2-D Flax kernel of shape ``(in, out)``):

``"out_in"`` (default, the paper's)
    The PyTorch ``(out, in)`` weight flattened row-major, i.e. ``kernel.T.reshape(-1)``.
    Consecutive weights share an output unit and run along the input dimension, so a block of
    ``B`` weights (``B`` dividing ``in``) holds ``B`` inputs of one output neuron.
``"in_out"``
    The Flax kernel flattened row-major, ``kernel.reshape(-1)``: consecutive weights share an
    input and run along the output dimension.

Leaves that are not 2-D (biases, scales, conv kernels) are always flattened with
``reshape(-1)`` whatever the order.

Everything here is pure ``jax.numpy`` and can be used under ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._errors import ShapeError, UnknownParameterError
from .params import flatten_params, select_paths

ORDERS = ("out_in", "in_out")

__all__ = ["BlockLayout", "ORDERS", "flatten_leaf", "unflatten_leaf", "to_blocks", "from_blocks"]


def _check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"block order must be one of {ORDERS}, got {order!r}")
    return order


def flatten_leaf(x: Any, order: str = "out_in", *, batched: bool = False):
    """Flatten one parameter (or a batch of them) in the given block order.

    Args:
      x: array of a parameter's native shape, or ``(N, *shape)`` when ``batched``.
      order: ``"out_in"`` (2-D kernels flattened as ``kernel.T``) or ``"in_out"``.
      batched: whether ``x`` has a leading batch axis to keep.

    Returns:
      ``(size,)`` or ``(N, size)``.
    """
    _check_order(order)
    x = jnp.asarray(x)
    ndim = x.ndim - (1 if batched else 0)
    if order == "out_in" and ndim == 2:
        x = jnp.swapaxes(x, -1, -2)
    return x.reshape((x.shape[0], -1) if batched else (-1,))


def unflatten_leaf(v: Any, shape: tuple[int, ...], order: str = "out_in"):
    """Inverse of :func:`flatten_leaf` (unbatched): ``(size,)`` -> native ``shape``."""
    _check_order(order)
    v = jnp.asarray(v)
    if order == "out_in" and len(shape) == 2:
        return v.reshape((shape[1], shape[0])).T
    return v.reshape(shape)


@dataclass(frozen=True)
class BlockLayout:
    """Which kernels are blocked, in which order, with which block size.

    Attributes:
      paths: sorted parameter paths (``"a/b/kernel"``).
      shapes: the native (Flax) shape of each path, e.g. ``(in, out)``.
      block_size: ``B``; every kernel's size must be divisible by it.
      order: ``"out_in"`` (default, the paper's) or ``"in_out"``; see the module docstring.
    """

    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    block_size: int
    order: str = "out_in"

    def __post_init__(self):
        paths = tuple(str(p) for p in self.paths)
        shapes = tuple(tuple(int(d) for d in s) for s in self.shapes)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "shapes", shapes)
        if not paths:
            raise ShapeError("a BlockLayout needs at least one parameter path")
        if len(paths) != len(shapes):
            raise ShapeError(f"{len(paths)} paths but {len(shapes)} shapes")
        if list(paths) != sorted(set(paths)):
            raise ShapeError(f"BlockLayout paths must be sorted and unique, got {paths}")
        _check_order(self.order)
        b = self.block_size
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ShapeError(f"block_size must be a positive integer, got {b!r}")
        object.__setattr__(self, "block_size", int(b))
        for p, s in zip(paths, shapes):
            if any(d < 1 for d in s):
                raise ShapeError(f"parameter {p!r} has an empty shape {s}")
            size = int(np.prod(s, dtype=np.int64))
            if size % self.block_size:
                raise ShapeError(
                    f"parameter {p!r} of shape {s} has {size} weights, not divisible by "
                    f"block_size {self.block_size}"
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(
        cls, params: Mapping, patterns: str | Iterable[str], block_size: int, order: str = "out_in"
    ) -> "BlockLayout":
        """Layout of the leaves of ``params`` matching ``patterns`` (``fnmatch``, see
        :func:`zkapex_jax.core.params.select_paths`); ``UnknownParameterError`` if a pattern matches
        nothing, ``ShapeError`` if a kernel's size is not divisible by ``block_size``."""
        paths = select_paths(params, patterns)
        flat = flatten_params(params)
        shapes = tuple(tuple(np.shape(flat[p])) for p in paths)
        return cls(tuple(paths), shapes, block_size, order)

    # ------------------------------------------------------------------ sizes
    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of weights of each path."""
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def size(self) -> int:
        """Total number of weights ``D``."""
        return sum(self.sizes)

    @property
    def blocks_per_path(self) -> tuple[int, ...]:
        return tuple(n // self.block_size for n in self.sizes)

    @property
    def num_blocks(self) -> int:
        """``nb = D // B``."""
        return self.size // self.block_size

    @property
    def block_offsets(self) -> tuple[int, ...]:
        """Index of each path's first block in the stack (length ``len(paths) + 1``)."""
        out = [0]
        for n in self.blocks_per_path:
            out.append(out[-1] + n)
        return tuple(out)

    # ------------------------------------------------------------------ conversions
    def _leaves(self, flat: Mapping[str, Any], batched: bool):
        missing = [p for p in self.paths if p not in flat]
        if missing:
            raise UnknownParameterError(
                f"the block layout needs parameter(s) {missing} which are not in the given mapping"
            )
        leaves = []
        n = None
        for p, s in zip(self.paths, self.shapes):
            x = flat[p]
            shp = tuple(np.shape(x))
            if batched:
                if len(shp) != len(s) + 1 or shp[1:] != s:
                    raise ShapeError(f"{p!r}: expected shape (N, *{s}), got {shp}")
                if n is None:
                    n = shp[0]
                elif shp[0] != n:
                    raise ShapeError(f"{p!r}: leading axis {shp[0]} differs from {n} of other leaves")
            elif shp != s:
                raise ShapeError(f"{p!r}: expected shape {s}, got {shp}")
            leaves.append(x)
        return leaves

    def to_vector(self, flat: Mapping[str, Any]):
        """``{path: native shape}`` -> ``(D,)`` in layout order."""
        leaves = self._leaves(flat, batched=False)
        return jnp.concatenate([flatten_leaf(x, self.order) for x in leaves])

    def to_blocks(self, flat: Mapping[str, Any]):
        """``{path: native shape}`` (extra paths ignored) -> ``(nb, B)``. Works for bool masks too."""
        return self.to_vector(flat).reshape(self.num_blocks, self.block_size)

    def to_blocks_batched(self, flat: Mapping[str, Any]):
        """``{path: (N, *shape)}`` -> ``(N, nb, B)`` (e.g. per-example gradients)."""
        leaves = self._leaves(flat, batched=True)
        v = jnp.concatenate([flatten_leaf(x, self.order, batched=True) for x in leaves], axis=1)
        return v.reshape(v.shape[0], self.num_blocks, self.block_size)

    def from_blocks(self, blocks: Any) -> dict[str, Any]:
        """``(nb, B)`` (or ``(D,)``) -> ``{path: array of the native shape}``."""
        blocks = jnp.asarray(blocks)
        if blocks.shape not in ((self.num_blocks, self.block_size), (self.size,)):
            raise ShapeError(
                f"expected blocks of shape ({self.num_blocks}, {self.block_size}), got {blocks.shape}"
            )
        v = blocks.reshape(-1)
        out = {}
        start = 0
        for p, s, n in zip(self.paths, self.shapes, self.sizes):
            out[p] = unflatten_leaf(v[start : start + n], s, self.order)
            start += n
        return out

    def block_ids(self) -> list[tuple[str, int]]:
        """``[(path, index of the block within that path)]`` for every block (for messages)."""
        return [(p, i) for p, n in zip(self.paths, self.blocks_per_path) for i in range(n)]

    def describe_block(self, b: int) -> str:
        """Human-readable name of block ``b``, e.g. ``"block 7 (path 'a/kernel', block 3)"``."""
        offs = self.block_offsets
        for k, p in enumerate(self.paths):
            if offs[k] <= b < offs[k + 1]:
                return f"block {b} ({p!r}, block {b - offs[k]} of {self.blocks_per_path[k]})"
        return f"block {b}"

    # ------------------------------------------------------------------ artifacts
    def to_dict(self) -> dict:
        return {
            "paths": list(self.paths),
            "shapes": [list(s) for s in self.shapes],
            "block_size": self.block_size,
            "order": self.order,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "BlockLayout":
        try:
            return cls(
                tuple(d["paths"]),
                tuple(tuple(s) for s in d["shapes"]),
                int(d["block_size"]),
                str(d.get("order", "out_in")),
            )
        except (KeyError, TypeError) as e:
            raise ShapeError(f"malformed block layout description {d!r}: {e}") from e


def to_blocks(layout: BlockLayout, flat: Mapping[str, Any]):
    """Functional form of :meth:`BlockLayout.to_blocks`: ``{path: native} -> (nb, B)``."""
    return layout.to_blocks(flat)


def from_blocks(layout: BlockLayout, blocks: Any) -> dict[str, Any]:
    """Functional form of :meth:`BlockLayout.from_blocks`: ``(nb, B) -> {path: native}``."""
    return layout.from_blocks(blocks)
