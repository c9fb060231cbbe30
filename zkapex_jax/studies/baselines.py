"""Unlearning baselines, generic over a per-example loss.

Every function takes ``loss_fn(params, example) -> scalar`` written for ONE example (the
library's convention; it is vmapped here) and data as a pytree whose leaves share a leading
axis N (e.g. ``(x (N, H, W, C), y (N,))`` for images, ``tokens (N, T)`` for a language model),
so the image and the code-LM studies use the same code.

Baselines (the usual ones in the unlearning literature, where they apply to the ZK-APEX setting):

- :func:`mask_only` — the provider's mask applied with no compensation (θp with θp[M] = 0).
- :func:`finetune_after_mask` — mask, then fine-tune the *unmasked* weights on the client's
  data with the masked entries held at exactly zero (the "retrain-the-rest" repair that ZK-APEX's
  closed-form Group-OBS step replaces).
- :func:`gradient_ascent` — ascend the loss on the forget set for a fixed step budget.
- :func:`ssd` — Selective Synaptic Dampening (Foster et al., 2024): with diagonal Fishers
  F_f (forget) and F_r (retain), every weight with F_f > α·F_r is multiplied by
  β = min(λ·F_r / F_f, 1).
- :func:`salun` — SalUn-style saliency unlearning (Fan et al., 2024): a saliency mask of the top
  ``fraction`` of |∇L_forget|, then fine-tuning of the salient weights only on forget examples
  with random labels plus retain examples with their true labels.

All return new params (the inputs are not modified) and, where useful, an info dict.
Nothing here jits at import; each call compiles its own step once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._errors import ShapeError
from ..core.mask import dense_mask, zero_masked
from ..core.params import flatten_params, select_paths, unflatten_params

__all__ = [
    "batch_mean_loss",
    "mask_only",
    "finetune_after_mask",
    "gradient_ascent",
    "ssd",
    "salun",
    "random_labels",
    "mean_grad",
    "diag_fisher",
]

Params = Any
LossFn = Callable[[Params, Any], jax.Array]


# --------------------------------------------------------------------------- helpers

def batch_mean_loss(loss_fn: LossFn) -> Callable[[Params, Any], jax.Array]:
    """``loss(params, batch)`` = mean over the leading axis of ``loss_fn`` vmapped."""

    def loss(params, batch):
        return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0))(params, batch))

    return loss


def _num_examples(data) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ShapeError("data has no arrays")
    n = int(np.shape(leaves[0])[0])
    for leaf in leaves:
        if int(np.shape(leaf)[0]) != n:
            raise ShapeError(f"data leaves disagree on the number of examples: {n} vs {np.shape(leaf)[0]}")
    if n == 0:
        raise ShapeError("data holds no examples")
    return n


def _take(data, idx):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[idx], data)


def _update_mask(params: Params, *, wrt: str | Iterable[str] | None, frozen: Mapping[str, np.ndarray] | None):
    """A pytree like ``params`` with 1.0 where a weight may change and 0.0 elsewhere."""
    flat = flatten_params(params)
    allowed = set(flat) if wrt is None else set(select_paths(params, wrt))
    frozen = frozen or {}
    out = {}
    for path, leaf in flat.items():
        m = jnp.ones(leaf.shape, leaf.dtype) if path in allowed else jnp.zeros(leaf.shape, leaf.dtype)
        if path in frozen:
            m = m * jnp.asarray(~frozen[path], leaf.dtype)
        out[path] = m
    return unflatten_params(out)


def _chunked(data, n: int, chunk_size: int):
    """Yield (chunk, weights) with fixed chunk shape (padding by repeating index 0, weight 0)."""
    for start in range(0, n, chunk_size):
        idx = np.arange(start, start + chunk_size)
        w = (idx < n).astype(np.float32)
        idx = np.where(idx < n, idx, 0)
        yield _take(data, idx), jnp.asarray(w)


def mean_grad(loss_fn: LossFn, params: Params, data, *, chunk_size: int = 64) -> Params:
    """(1/N) Σ_i ∇ loss_fn(params, x_i), streamed in chunks of ``chunk_size``; same tree as params."""
    n = _num_examples(data)

    @jax.jit
    def chunk_grad(p, chunk, w):
        def wloss(p):
            return jnp.sum(w * jax.vmap(loss_fn, in_axes=(None, 0))(p, chunk))

        return jax.grad(wloss)(p)

    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    for chunk, w in _chunked(data, n, chunk_size):
        total = jax.tree_util.tree_map(jnp.add, total, chunk_grad(params, chunk, w))
    return jax.tree_util.tree_map(lambda g: g / n, total)


def diag_fisher(loss_fn: LossFn, params: Params, data, *, chunk_size: int = 32) -> Params:
    """Diagonal empirical Fisher (1/N) Σ_i g_i ⊙ g_i with exact per-example gradients g_i
    (vmap of grad), streamed in chunks; same tree as params."""
    n = _num_examples(data)

    @jax.jit
    def chunk_sq(p, chunk, w):
        g = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(p, chunk)
        return jax.tree_util.tree_map(lambda a: jnp.tensordot(w, a * a, axes=1), g)

    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    for chunk, w in _chunked(data, n, chunk_size):
        total = jax.tree_util.tree_map(jnp.add, total, chunk_sq(params, chunk, w))
    return jax.tree_util.tree_map(lambda g: g / n, total)


def _batches(n: int, batch_size: int, steps: int, key) -> np.ndarray:
    """(steps, batch_size) example indices: epochs of random permutations, concatenated."""
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    reps = -(-need // n)
    idx = np.concatenate([rng.permutation(n) for _ in range(reps)])[:need]
    return idx.reshape(steps, batch_size)


def _run_steps(objective, params, data, *, optimizer, steps, batch_size, key, project=None):
    """Generic optimisation loop: ``objective(params, batch)`` minimised for ``steps`` steps on
    random batches of ``data``; ``project(params)`` (optional) is applied after each update."""
    n = _num_examples(data)
    batch_size = min(batch_size, n)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(p, s, batch):
        loss, g = jax.value_and_grad(objective)(p, batch)
        upd, s = optimizer.update(g, s, p)
        p = optax.apply_updates(p, upd)
        if project is not None:
            p = project(p)
        return p, s, loss

    losses = []
    for idx in _batches(n, batch_size, steps, key):
        params, opt_state, loss = step(params, opt_state, _take(data, jnp.asarray(idx)))
        losses.append(loss)
    return params, [float(x) for x in losses]


def _masked_optimizer(base: optax.GradientTransformation, update_mask) -> optax.GradientTransformation:
    """``base`` followed by zeroing the updates where ``update_mask`` is 0 (weight decay too)."""
    return optax.chain(base, optax.stateless(lambda updates, params=None: jax.tree_util.tree_map(
        jnp.multiply, updates, update_mask)))


# --------------------------------------------------------------------------- baselines

def mask_only(params: Params, mask: Mapping[str, Any]) -> Params:
    """θp with the masked entries set to exactly 0. ``mask``: {path: bool array of the leaf's shape}
    (or a :class:`~zkapex_jax.core.mask.Mask`)."""
    return zero_masked(params, mask)


def finetune_after_mask(loss_fn: LossFn, params: Params, mask: Mapping[str, Any], data, *, steps: int,
                        lr: float = 1e-4, batch_size: int = 32, weight_decay: float = 0.0, key,
                        wrt: str | Iterable[str] | None = None) -> tuple[Params, dict]:
    """Mask, then fine-tune with AdamW on ``data`` (the client's retain/personal data) for
    ``steps`` steps; masked entries are held at exactly 0, only ``wrt`` leaves (default all)
    are trained. Returns (params, {"losses": [...]})."""
    m = dense_mask(params, mask)
    params = mask_only(params, m)
    upd = _update_mask(params, wrt=wrt, frozen=m)
    opt = _masked_optimizer(optax.adamw(lr, weight_decay=weight_decay), upd)
    params, losses = _run_steps(batch_mean_loss(loss_fn), params, data, optimizer=opt, steps=steps,
                                batch_size=batch_size, key=key, project=lambda p: zero_masked(p, m, check=False))
    return params, {"losses": losses}


def gradient_ascent(loss_fn: LossFn, params: Params, forget_data, *, steps: int, lr: float = 1e-5,
                    batch_size: int = 32, key, wrt: str | Iterable[str] | None = None,
                    max_loss: float | None = None) -> tuple[Params, dict]:
    """Maximise the mean loss on ``forget_data`` with SGD for ``steps`` steps (the step budget),
    updating only ``wrt`` leaves (default all). ``max_loss`` (optional) stops the ascent per batch
    once its loss exceeds it (the objective is clipped, so its gradient vanishes), which keeps
    the model from diverging. Returns (params, {"losses": [...]})."""
    base = batch_mean_loss(loss_fn)

    def objective(p, batch):
        loss = base(p, batch)
        if max_loss is not None:
            loss = jnp.minimum(loss, max_loss)
        return -loss

    opt = _masked_optimizer(optax.sgd(lr), _update_mask(params, wrt=wrt, frozen=None))
    params, losses = _run_steps(objective, params, forget_data, optimizer=opt, steps=steps,
                                batch_size=batch_size, key=key)
    return params, {"losses": [-x for x in losses]}


def ssd_importances(loss_fn: LossFn, params: Params, forget_data, retain_data, *,
                    chunk_size: int = 32) -> tuple[Params, Params]:
    """SSD's parameter importances: the diagonal Fishers ``(F_f, F_r)`` on ``forget_data`` and
    ``retain_data`` (each a params-shaped tree). They depend on neither α nor λ, so a sweep over
    SSD's settings computes them once (``ssd(..., importances=...)``)."""
    return (diag_fisher(loss_fn, params, forget_data, chunk_size=chunk_size),
            diag_fisher(loss_fn, params, retain_data, chunk_size=chunk_size))


def ssd(loss_fn: LossFn, params: Params, forget_data, retain_data, *, alpha: float = 10.0,
        lam: float = 1.0, wrt: str | Iterable[str] | None = None, chunk_size: int = 32,
        eps: float = 1e-30, importances: tuple[Params, Params] | None = None) -> tuple[Params, dict]:
    """Selective Synaptic Dampening. With F_f = diag Fisher on ``forget_data`` and F_r on
    ``retain_data``: where F_f > α·F_r, w ← w · min(λ·F_r / F_f, 1). Only ``wrt`` leaves (default
    all). ``importances``: ``(F_f, F_r)`` from :func:`ssd_importances` on the same ``params``
    (computed here if not given; the data are then unused). Returns (params, {"n_dampened": int,
    "n_weights": int})."""
    if not (alpha > 0 and lam > 0):
        raise ValueError(f"SSD needs alpha > 0 and lam > 0, got alpha={alpha}, lam={lam}")
    paths = set(flatten_params(params)) if wrt is None else set(select_paths(params, wrt))
    if importances is None:
        importances = ssd_importances(loss_fn, params, forget_data, retain_data, chunk_size=chunk_size)
    ff, fr = (flatten_params(t) for t in importances)
    flat = flatten_params(params)
    if not (set(flat) <= set(ff) and set(flat) <= set(fr)):
        raise ValueError("SSD importances do not cover every parameter of params (computed on another model?)")
    n_damp, n_tot = 0, 0
    for p in sorted(paths):
        sel = ff[p] > alpha * fr[p]
        beta = jnp.minimum(lam * fr[p] / jnp.maximum(ff[p], eps), 1.0)
        flat[p] = jnp.where(sel, flat[p] * beta.astype(flat[p].dtype), flat[p])
        n_damp += int(jnp.sum(sel))
        n_tot += int(np.prod(flat[p].shape))
    return unflatten_params(flat), {"n_dampened": n_damp, "n_weights": n_tot}


def random_labels(num_classes: int) -> Callable[[Any, jax.Array], Any]:
    """Relabeling for (x, y) classification data: every label replaced by a uniformly random
    *different* class. Returns ``relabel(data, key) -> data``."""
    if num_classes < 2:
        raise ShapeError(f"random_labels needs at least 2 classes, got {num_classes}")

    def relabel(data, key):
        x, y = data
        y = jnp.asarray(y)
        off = jax.random.randint(key, y.shape, 1, num_classes)
        return x, ((y + off) % num_classes).astype(y.dtype)

    return relabel


def salun(loss_fn: LossFn, params: Params, forget_data, retain_data, *, relabel: Callable[[Any, jax.Array], Any],
          fraction: float = 0.5, steps: int, lr: float = 1e-4, batch_size: int = 32, key,
          wrt: str | Iterable[str] | None = None, chunk_size: int = 64) -> tuple[Params, dict]:
    """SalUn-style saliency unlearning.

    1. Saliency: |mean ∇L on ``forget_data``| over the ``wrt`` leaves (default all); the top
       ``fraction`` (global threshold) are salient.
    2. ``relabel(forget_data, key)`` (e.g. :func:`random_labels`), then ``steps`` AdamW steps on
       L(relabelled forget batch) + L(retain batch), updating only salient weights.
    Returns (params, {"n_salient": int, "losses": [...]})."""
    if not 0.0 < fraction <= 1.0:
        raise ShapeError(f"salun: fraction must be in (0, 1], got {fraction}")
    k_label, k_f, k_r = jax.random.split(key, 3)
    paths = sorted(set(flatten_params(params)) if wrt is None else set(select_paths(params, wrt)))
    g = flatten_params(mean_grad(loss_fn, params, forget_data, chunk_size=chunk_size))
    allsal = np.concatenate([np.abs(np.asarray(g[p])).ravel() for p in paths])
    k = max(1, int(round(fraction * allsal.size)))
    thresh = np.partition(allsal, allsal.size - k)[allsal.size - k]
    flat = flatten_params(params)
    upd = {p: jnp.zeros(v.shape, v.dtype) for p, v in flat.items()}
    n_sal = 0
    for p in paths:
        s = np.abs(np.asarray(g[p])) >= thresh
        upd[p] = jnp.asarray(s, flat[p].dtype)
        n_sal += int(s.sum())
    upd = unflatten_params(upd)

    forget_rl = relabel(forget_data, k_label)
    nf, nr = _num_examples(forget_rl), _num_examples(retain_data)
    bs = min(batch_size, nf, nr)
    idx_f = _batches(nf, bs, steps, k_f)
    idx_r = _batches(nr, bs, steps, k_r)
    base = batch_mean_loss(loss_fn)
    opt = _masked_optimizer(optax.adamw(lr, weight_decay=0.0), upd)
    opt_state = opt.init(params)

    @jax.jit
    def step(p, s, bf, br):
        loss, gr = jax.value_and_grad(lambda q: base(q, bf) + base(q, br))(p)
        u, s = opt.update(gr, s, p)
        return optax.apply_updates(p, u), s, loss

    losses = []
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, _take(forget_rl, jnp.asarray(idx_f[i])),
                                       _take(retain_data, jnp.asarray(idx_r[i])))
        losses.append(float(loss))
    return params, {"n_salient": n_sal, "losses": losses}
