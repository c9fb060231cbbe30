"""Curvature families for Group-OBS: one undamped ``(nb, B, B)`` block curvature per family,
behind one interface; damping is applied apart (:func:`damp`), as in kfac-jax.

=================  =====================================================================
``empirical``      the paper's: ``(1/N) Σ_i g_i g_iᵀ``, ``g_i`` the per-example gradient at the
                   example's own label. On a model that fits its training data the gradients
                   vanish and so does this curvature (the damping then decides the update).
``true``           the Fisher with labels **sampled** from the model's predictive distribution
                   (``n_samples`` draws per example, as K-FAC / kfac-jax estimate it). At a model
                   that predicts its data with confidence p* it scales like (1 − p*), the
                   empirical Fisher like (1 − p*)²: both vanish, the empirical one far faster.
``exact``          the same expectation computed exactly: every label weighed by its
                   probability, ``(1/N) Σ_i Σ_y p(y|x_i) g_{i,y} g_{i,y}ᵀ`` — for a softmax
                   cross-entropy this is the Gauss–Newton matrix ``Jᵀ (diag p − ppᵀ) J``.
                   Costs K (classes) per-example gradients per example.
``logits``         the Gauss–Newton matrix of the squared error of the **centred logits**,
                   ``(1/N) Σ_i Σ_c h_{i,c} h_{i,c}ᵀ`` with ``h_{i,c} = ∇θ (z_c − mean_c z)(x_i)``:
                   the curvature of ``Σ_i ||z̄(x_i; θ) − z̄(x_i; θp)||²`` at θp (the model
                   distilled into itself; softmax ignores the common mode, so it is removed).
                   Unlike ``exact`` (``Jᵀ (diag p − ppᵀ) J``) it does not vanish when the model is
                   confident, and unlike ``layer_inputs`` it sees how a weight's change travels
                   through every later layer to the output. Costs K per-example gradients per
                   example.
``layer_inputs``   the layer-wise Hessian of OBC / SparseGPT: for a kernel ``W`` (in, out)
                   applied at P positions, ``H = I_out ⊗ G`` with ``G = (1/N) Σ_i Σ_p x_{i,p}
                   x_{i,p}ᵀ`` the masked layer's input second moment — the curvature of
                   ``Σ ||x W − x Ŵ||²``, blocked like the layout. Needs the family's
                   ``layer_inputs`` (per-position inputs for tokens and convolutions).
``layer_covariance`` the same with the input **covariance** ``G − P·μμᵀ`` (``μ`` the mean input
                   over examples and positions): the layer Hessian when the output unit's bias is
                   free to absorb the mean. Paired with :func:`bias_shift` (``δb = −μᵀδW``) it is
                   the joint optimum over kernel and bias of ``Σ ||x W + b − x Ŵ − b̂||²`` for a
                   whole fan-in (blocks restrict it to the fan-in's chunks, as for every family).
=================  =====================================================================

All of them depend only on θp and the client's data, so each can be committed before any mask
exists. Labels: classifiers only for ``true`` / ``exact`` / ``logits`` (a language model's loss
reads its targets from its inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import ShapeError
from .blocks import BlockLayout
from .fisher import accumulate_fisher

__all__ = ["CURVATURES", "LAYER_KINDS", "empirical_fisher", "true_fisher", "exact_fisher", "logit_gauss_newton",
           "input_moments",
           "input_statistics", "centered_moments", "input_means", "bias_shift", "layer_hessian_blocks", "damp"]

CURVATURES = ("empirical", "true", "exact", "logits", "layer_inputs", "layer_covariance")
#: the families read from the masked layers' inputs (``Family.layer_inputs``)
LAYER_KINDS = ("layer_inputs", "layer_covariance")


def empirical_fisher(loss_fn, params, batch, layout: BlockLayout, *, chunk_size: int = 32):
    """``(1/N) Σ g_i g_iᵀ`` per block (undamped); ``batch = (x, y)`` or any example pytree."""
    return accumulate_fisher(loss_fn, params, batch, layout, damping=0.0, chunk_size=chunk_size)


def _logits(logits_fn, params, x, chunk: int = 256) -> np.ndarray:
    out = [np.asarray(logits_fn(params, jnp.asarray(x[i:i + chunk]))) for i in range(0, len(x), chunk)]
    return np.concatenate(out).astype(np.float64)


def true_fisher(loss_fn, logits_fn: Callable, params, batch, layout: BlockLayout, *, key, n_samples: int = 1,
                chunk_size: int = 32):
    """Empirical Fisher at labels drawn from ``softmax(logits_fn(params, x))`` (``n_samples`` per
    example, PRNG ``key``); ``batch = (x, y)`` (``y`` unused). Undamped ``(nb, B, B)``."""
    x, _ = batch
    x = np.asarray(x)
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be ≥ 1, got {n_samples!r}")
    logits = _logits(logits_fn, params, x)
    ys = np.asarray(jax.random.categorical(key, jnp.asarray(logits), axis=-1, shape=(int(n_samples), len(x))))
    xs = np.concatenate([x] * int(n_samples))
    return accumulate_fisher(loss_fn, params, (xs, ys.reshape(-1).astype(np.int32)), layout, damping=0.0,
                             chunk_size=chunk_size)


def exact_fisher(loss_fn, logits_fn: Callable, params, batch, layout: BlockLayout, *, chunk_size: int = 32,
                 min_prob: float = 0.0):
    """``(1/N) Σ_i Σ_y p(y|x_i) g_{i,y} g_{i,y}ᵀ`` (the Gauss–Newton matrix of the softmax
    cross-entropy), every class weighed by its predicted probability; classes with
    ``p ≤ min_prob`` are skipped (0: none). Undamped ``(nb, B, B)``."""
    x, _ = batch
    x = np.asarray(x)
    z = _logits(logits_fn, params, x)
    p = np.exp(z - _logsumexp(z))                                     # (N, K), rows sum to 1
    ii, yy = np.nonzero(p > min_prob)
    return accumulate_fisher(loss_fn, params, (x[ii], yy.astype(np.int32)), layout, damping=0.0,
                             chunk_size=chunk_size, weights=p[ii, yy])  # Σ p g gᵀ / Σ p = (1/N) Σ_i Σ_y


def logit_gauss_newton(logits_fn: Callable, params, batch, layout: BlockLayout, *, chunk_size: int = 32):
    """``(1/N) Σ_i Σ_c h_{i,c} h_{i,c}ᵀ``, ``h_{i,c}`` the gradient of the centred logit
    ``z_c − mean(z)`` of example ``i`` (the Gauss–Newton matrix of the centred logits' squared
    error); ``batch = (x, y)`` (``y`` unused), ``logits_fn(params, x (n, ...)) -> (n, K)``
    traceable. Undamped ``(nb, B, B)``."""
    x, _ = batch
    x = np.asarray(x)
    n = len(x)
    k = int(_logits(logits_fn, params, x[:1]).shape[-1])

    def centred_logit(p, example):
        xi, c = example
        z = logits_fn(p, xi[None])[0]
        return z[c] - jnp.mean(z)

    ii, cc = np.repeat(np.arange(n), k), np.tile(np.arange(k, dtype=np.int32), n)
    c = accumulate_fisher(centred_logit, params, (x[ii], cc), layout, damping=0.0, chunk_size=chunk_size)
    return c * k  # accumulate_fisher averages over the N·K pairs: (1/N) Σ_i Σ_c


def _logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _as_npi(path, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise ShapeError(f"inputs of {path!r} must be (N, P, in), got shape {x.shape}")
    return x


def input_statistics(inputs: Mapping[str, Any], n_examples: int | None = None) -> dict[str, dict]:
    """``{path: {"second": G (in, in), "first": s (in,), "positions": P}}`` from ``{path: (N, P, in)}``
    (or ``(N, in)``): ``G = (1/N) Σ_i Σ_p x_{i,p} x_{i,p}ᵀ`` and ``s = (1/N) Σ_i Σ_p x_{i,p}`` in
    float64, ``N = n_examples`` (default: the rows given) so that chunks of one data set add up."""
    out = {}
    for path, x in inputs.items():
        x = _as_npi(path, x)
        n = x.shape[0] if n_examples is None else n_examples
        flat = x.reshape(-1, x.shape[-1])
        out[path] = {"second": flat.T @ flat / n, "first": flat.sum(axis=0) / n, "positions": int(x.shape[1])}
    return out


def input_moments(inputs: Mapping[str, Any], n_examples: int | None = None) -> dict[str, np.ndarray]:
    """``{path: G (in, in)}`` with ``G = (1/N) Σ_i Σ_p x_{i,p} x_{i,p}ᵀ`` from ``{path: (N, P, in)}``
    (or ``(N, in)``) float64 sums."""
    return {p: st["second"] for p, st in input_statistics(inputs, n_examples).items()}


def centered_moments(stats: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    """``{path: G − s sᵀ / P}`` of :func:`input_statistics` (summed over chunks): the per-example
    sum over positions of the centred second moment, ``(1/N) Σ_i Σ_p (x − μ)(x − μ)ᵀ``."""
    return {p: st["second"] - np.outer(st["first"], st["first"]) / st["positions"] for p, st in stats.items()}


def input_means(stats: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    """``{path: μ (in,)}``, the mean input over examples and positions, of :func:`input_statistics`."""
    return {p: np.asarray(st["first"], np.float64) / st["positions"] for p, st in stats.items()}


def bias_shift(kernel_delta: Any, mean: Any) -> np.ndarray:
    """``δb = −μᵀ δW`` ``(out,)`` for a kernel change ``δW`` ``(in, out)`` and its layer's mean input
    ``μ`` ``(in,)``: the bias change that keeps every output unit's mean pre-activation where it
    was (the removed weights' mean contribution, and the compensation's, moved into the bias)."""
    d = np.asarray(kernel_delta, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    if d.ndim != 2 or mu.shape != (d.shape[0],):
        raise ShapeError(f"bias_shift needs δW (in, out) and μ (in,), got {d.shape} and {mu.shape}")
    return -(mu @ d)


def layer_hessian_blocks(moments: Mapping[str, np.ndarray], layout: BlockLayout, *, dtype=np.float64,
                         chunk: int | None = None) -> np.ndarray:
    """``(nb, B, B)`` blocks of ``⊕_kernels (I_out ⊗ G_kernel)`` in the layout's order: entry
    ``(a, b)`` of a block is ``G[i_a, i_b]`` when both weights feed the same output unit of the
    same 2-D kernel ``(in, out)``, else 0. Built ``chunk`` blocks at a time (default: ~2^27
    entries), so the temporaries stay a bounded fraction of the ``dtype`` result."""
    for p, s in zip(layout.paths, layout.shapes):
        if len(s) != 2:
            raise ShapeError(f"layer_inputs curvature needs 2-D kernels (in, out); {p!r} has shape {s}")
        if p not in moments or np.shape(moments[p]) != (s[0], s[0]):
            raise ShapeError(f"no input second moment ({s[0]}, {s[0]}) for {p!r}")
    # global flat index of every weight, blocked exactly like the parameters
    offs, ids = 0, {}
    for p, s in zip(layout.paths, layout.shapes):
        ids[p] = (np.arange(s[0] * s[1], dtype=np.float64) + offs).reshape(s)
        offs += s[0] * s[1]
    gidx = np.rint(np.asarray(layout.to_blocks(ids), dtype=np.float64)).astype(np.int64)  # (nb, B)
    starts = np.cumsum([0] + [s[0] * s[1] for s in layout.shapes])
    kern = np.searchsorted(starts, gidx, side="right") - 1                                  # (nb, B)
    local = gidx - starts[kern]
    outs = np.asarray([s[1] for s in layout.shapes])[kern]
    i_in, i_out = local // outs, local % outs
    nb, B = gidx.shape
    G = [np.asarray(moments[p], dtype=np.float64) for p in layout.paths]
    H = np.zeros((nb, B, B), dtype=dtype)
    step = max(1, int(chunk) if chunk is not None else 2**27 // (B * B))
    for lo in range(0, nb, step):
        sl = slice(lo, min(nb, lo + step))
        kc, ic, oc = kern[sl], i_in[sl], i_out[sl]
        same = (kc[:, :, None] == kc[:, None, :]) & (oc[:, :, None] == oc[:, None, :])
        for k in np.unique(kc):
            sel = same & (kc == k)[:, :, None]
            ii = np.where(kc == k, ic, 0)
            H[sl][sel] = G[k][ii[:, :, None], ii[:, None, :]][sel]
    return H


def damp(curvature, damping: float, *, relative: bool = False):
    """``C_b + d_b·I``: ``d_b = damping`` or, with ``relative``, ``damping · max(mean diag C_b,
    mean diag C)`` (each block's scale, floored at the whole curvature's)."""
    c = jnp.asarray(curvature)
    if not relative:
        return c + jnp.asarray(damping, c.dtype) * jnp.eye(c.shape[-1], dtype=c.dtype)
    diag = jnp.diagonal(c, axis1=1, axis2=2)
    scale = jnp.maximum(jnp.mean(diag, axis=1), jnp.mean(diag))
    return c + (damping * scale).astype(c.dtype)[:, None, None] * jnp.eye(c.shape[-1], dtype=c.dtype)
