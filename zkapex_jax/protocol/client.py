"""The client's stages: personalize the global model on private data (full fine-tuning or
LoRA), compute the block-wise Fisher of θp on that data, and unlearn a published mask with
Group-OBS. Pure functions over a :class:`~zkapex_jax.models.Family`; nothing prints.

::

    theta_p, hist = personalize(fam, theta_g, own_data, Recipe(epochs=30, lr=8e-4, batch=16,
                                                               layer_decay=0.8), key=k)
    layout = BlockLayout.from_params(theta_p, fam.mask_patterns, 576)
    fisher = client_fisher(fam, theta_p, own_data, layout, damping=1e-6)   # (nb, B, B)
    theta_u, info = unlearn(theta_p, fisher, mask, layout)                # θu = θp + δ

Committing to θp and the curvature, and proving θu, are :mod:`zkapex_jax.protocol`'s
``commit_personalization`` / ``prove_unlearning``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from .._errors import UnknownParameterError
from ..core.blocks import BlockLayout
from ..core.fisher import accumulate_fisher
from ..core.mask import Mask, zero_masked
from ..core.obs import apply_delta, forget_aware_obs, group_obs, protected_basis
from ..core.params import get_paths, set_paths
from ..models.lora import LoRAConfig, init_lora, lora_loss, merge_lora
from .provider import Recipe, fit_recipe

__all__ = ["personalize", "curvature", "client_curvature", "client_fisher", "relative_damping", "unlearn", "mask_only"]


def personalize(family, theta_global, data, recipe: Recipe, *, key, lora: LoRAConfig | None = None):
    """[client] Fine-tune the global model on the client's ``data`` with ``recipe`` (the
    paper's: AdamW, warm-up, layer-wise lr decay). With ``lora``, train rank-r adapters on
    ``lora.targets`` instead (no weight decay on them) and merge them into θp.
    Returns ``(theta_p, history)``."""
    if lora is None:
        return fit_recipe(family.loss, theta_global, data, recipe, key=key)
    k_init, k_fit = jax.random.split(key)
    adapters = init_lora(theta_global, lora.targets, lora.rank, k_init)
    recipe = Recipe(**{**recipe.__dict__, "weight_decay": 0.0, "layer_decay": None})
    adapters, hist = fit_recipe(lora_loss(family.loss, theta_global, lora.scale), adapters, data, recipe, key=k_fit)
    return merge_lora(theta_global, adapters, lora.scale), hist


def client_curvature(family, theta_p, data, layout: BlockLayout, *, kind: str = "empirical", damping: float = 1e-6,
                     relative: bool = False, chunk_size: int = 32, key=None, n_samples: int = 1):
    """[client] The block curvature ``C_b`` of ``kind`` (:data:`~zkapex_jax.core.curvature.CURVATURES`)
    at θp on the client's ``data``, damped by :func:`~zkapex_jax.core.curvature.damp` (absolute
    or relative to each block's scale). ``key``: the PRNG key of the ``true`` Fisher's label
    draws. Every kind depends only on θp and the data: it can be committed before any mask.
    Returns ``(nb, B, B)``."""
    from ..core import curvature as cv

    if kind not in cv.CURVATURES:
        raise ValueError(f"curvature must be one of {cv.CURVATURES}, got {kind!r}")
    if kind == "empirical":
        return client_fisher(family, theta_p, data, layout, damping=damping, chunk_size=chunk_size, relative=relative)
    if kind in ("true", "exact", "logits") and family.kind != "classifier":
        raise ValueError(f"the {kind!r} Fisher needs a classifier family ({family.name} is a {family.kind}: its "
                         "loss reads the targets from its inputs); use 'empirical', 'layer_inputs' or "
                         "'layer_covariance'")
    if kind == "true":
        if key is None:
            raise ValueError("the 'true' Fisher samples labels: give a PRNG key")
        c = cv.true_fisher(family.loss, family.predict, theta_p, data, layout, key=key, n_samples=n_samples,
                           chunk_size=chunk_size)
    elif kind == "exact":
        c = cv.exact_fisher(family.loss, family.predict, theta_p, data, layout, chunk_size=chunk_size)
    elif kind == "logits":
        c = cv.logit_gauss_newton(family.predict, theta_p, data, layout, chunk_size=chunk_size)
    else:
        stats = layer_input_statistics(family, theta_p, data, layout.paths, chunk_size=chunk_size)
        moments = ({p: st["second"] for p, st in stats.items()} if kind == "layer_inputs"
                   else cv.centered_moments(stats))
        c = jnp.asarray(cv.layer_hessian_blocks(moments, layout, dtype=jnp.float32))
    return cv.damp(c, damping, relative=relative)


def curvature(family, theta_p, data, layout: BlockLayout, spec, *, key=None):
    """[client] The curvature artifact of :class:`~zkapex_jax.protocol.config.CurvatureSpec`
    ``spec`` at θp on ``data`` (already subsampled to ``spec.n_examples`` by the caller):
    :func:`client_curvature` of ``spec.kind`` with its damping, as a
    :class:`~zkapex_jax.protocol.api.Curvature` that records how it was made (what
    ``api.commit`` commits). ``key``: the ``true`` Fisher's label draws."""
    import numpy as np

    from .api import Curvature

    if spec.block_size != layout.block_size:
        raise ValueError(f"the layout's blocks ({layout.block_size}) are not the spec's ({spec.block_size})")
    c = client_curvature(family, theta_p, data, layout, kind=spec.kind, damping=spec.damping, relative=spec.relative,
                         chunk_size=spec.chunk, key=key)
    return Curvature(np.asarray(c, dtype=np.float64), layout, kind=spec.kind, damping=float(spec.damping),
                     relative=bool(spec.relative))


def layer_input_statistics(family, params, data, paths, *, chunk_size: int = 32) -> dict[str, dict]:
    """[client] :func:`~zkapex_jax.core.curvature.input_statistics` of the inputs of the kernels
    ``paths`` on ``data`` (a classifier's ``(x, y)`` or a language model's tokens), accumulated over
    chunks of ``chunk_size`` examples (the inputs are never all in memory at once)."""
    import numpy as np

    from ..core.curvature import input_statistics

    if family.layer_inputs is None:
        raise ValueError(f"family {family.name} does not expose its layer inputs: the layer curvatures and the "
                         "bias correction are unavailable")
    x = np.asarray(data[0] if family.kind == "classifier" else data)
    acc: dict[str, dict] = {}
    for s in range(0, len(x), max(1, chunk_size)):
        for p, st in input_statistics(family.layer_inputs(params, x[s:s + chunk_size], list(paths)), len(x)).items():
            if p not in acc:
                acc[p] = st
            else:
                acc[p] = {"second": acc[p]["second"] + st["second"], "first": acc[p]["first"] + st["first"],
                          "positions": st["positions"]}
    return acc


def bias_corrected(theta_p, theta_u, means, paths):
    """[client] ``θu`` with the bias of every kernel in ``paths`` shifted by
    :func:`~zkapex_jax.core.curvature.bias_shift` of its change ``θu − θp`` (the removed weights'
    mean contribution and the compensation's moved into the bias; ``means``: ``{path: μ (in,)}``,
    :func:`~zkapex_jax.core.curvature.input_means`). A kernel ``…/kernel`` needs its bias
    ``…/bias`` beside it. Float-only: relation v7 binds the biases as unchanged, so an update with
    this correction cannot be certified (measured in ``experiments/curvature_study.py``)."""
    import numpy as np

    from ..core.curvature import bias_shift

    paths = list(paths)
    kp, ku = get_paths(theta_p, paths), get_paths(theta_u, paths)
    bias_paths = {}
    for p in paths:
        if not p.endswith("/kernel"):
            raise ValueError(f"bias correction needs kernels named '…/kernel', got {p!r}")
        bias_paths[p] = p[: -len("kernel")] + "bias"
    try:
        biases = get_paths(theta_u, list(bias_paths.values()))
    except UnknownParameterError as e:
        raise ValueError(f"bias correction: no bias beside a masked kernel ({e})") from None
    if missing := sorted(set(paths) - set(means)):
        raise ValueError(f"bias correction: no mean input for {missing[0]!r}")
    upd = {}
    for p in paths:
        d = np.asarray(ku[p], np.float64) - np.asarray(kp[p], np.float64)
        b = biases[bias_paths[p]]
        upd[bias_paths[p]] = jnp.asarray(np.asarray(b, np.float64) + bias_shift(d, means[p]), dtype=jnp.asarray(b).dtype)
    return set_paths(theta_u, upd)


def client_fisher(family, theta_p, data, layout: BlockLayout, *, damping: float = 1e-6, chunk_size: int = 32,
                  relative: bool = False):
    """[client] ``C_b = d_b·I + (1/N) Σ_i g_i g_iᵀ`` over ``layout``'s blocks, ``g_i`` the
    per-example gradient of ``family.loss`` at θp (vmap, ``chunk_size`` examples at a time), with
    ``d_b = damping`` or, with ``relative``, ``d_b = damping · max(mean diag F_b, mean diag F)``:
    the damping follows each block's curvature scale (which differs by orders of magnitude between
    models and between blocks: an absolute or a single global value leaves large blocks
    numerically singular in float32 and small ones without compensation), floored at the whole
    Fisher's scale so that blocks without curvature stay well posed. Returns ``(nb, B, B)``."""
    if not relative:
        return accumulate_fisher(family.loss, theta_p, data, layout, damping=damping, chunk_size=chunk_size)
    f = accumulate_fisher(family.loss, theta_p, data, layout, damping=0.0, chunk_size=chunk_size)
    return relative_damping(f, damping)


def relative_damping(fisher, alpha: float):
    """``F_b + alpha · max(mean diag F_b, mean diag F) · I`` per block (see :func:`client_fisher`)."""
    from ..core.curvature import damp

    return damp(fisher, alpha, relative=True)


def unlearn(theta_p, fisher, mask: Mask, layout: BlockLayout, *, forget_basis=None):
    """[client] Group-OBS: per block ``δ = −C⁻¹E(EᵀC⁻¹E)⁻¹θ_M``, ``θu = θp + δ`` with
    ``θu[M] = 0`` exactly. With ``forget_basis`` (``(nb, B, r)``, the provider's
    :func:`~zkapex_jax.protocol.provider.publish_forget_subspace`), the forget-aware variant:
    the compensation on the kept weights is also orthogonal to that subspace; a mask with
    protected weights (:func:`~zkapex_jax.core.mask.protect_top`) leaves them unmoved (the
    update the certificate proves).

    ``fisher``: ``(nb, B, B)`` or a ``FisherFactor`` (factorize once, reuse across masks).
    Returns ``(theta_u, info)``, ``info = {"result": GroupOBSResult, "max_residual",
    "num_masked", "delta_norm", "theta_masked_norm", "seconds"}``."""
    mask.check_matches(theta_p)
    t0 = time.perf_counter()
    theta_b = layout.to_blocks(get_paths(theta_p, layout.paths))
    mask_b = mask.to_blocks(layout)
    if forget_basis is None and mask.protect:  # the certified forget-aware request: δ[T] = 0
        forget_basis = protected_basis(mask.protected_blocks(layout))
    if forget_basis is None:
        res = group_obs(theta_b, fisher, mask_b)
    else:
        res = forget_aware_obs(theta_b, fisher, mask_b, forget_basis)
    theta_u_b = apply_delta(theta_b, res.delta, mask_b)
    theta_u = set_paths(theta_p, layout.from_blocks(theta_u_b))
    jax.block_until_ready(theta_u_b)
    return theta_u, {"result": res, "max_residual": float(jnp.max(res.residual)),
                     "num_masked": int(mask.num_masked), "delta_norm": float(jnp.linalg.norm(res.delta)),
                     "theta_masked_norm": float(jnp.linalg.norm(jnp.where(mask_b, theta_b, 0.0))),
                     "seconds": time.perf_counter() - t0}


def mask_only(theta_p, mask: Mask):
    """θp with the masked weights set to 0 and nothing compensated (the recovery baseline)."""
    return zero_masked(theta_p, mask)
