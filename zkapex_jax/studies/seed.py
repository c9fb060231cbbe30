"""One study seed as one sequence of the protocol's stages, for any model family.

The image studies (:mod:`.vit_fmnist`: the ViT and the pretrained EfficientNet configs) and the
code study (:mod:`.opt_code`) differ in their data, their evaluation and their baselines' data;
the stages of a seed are the same, and they live here once::

    world = SeedWorld(family, stages, theta_global, theta_global_retrain, personal, mask_forget,
                      mask_retain, evaluate, ...)           # what the study supplies
    run = run_seed(world, pers_key, pers_retrain_key)      # the stages below, timed

1. [client]   θp = personalize(θg) on its private data (and the retrain baseline: the same
              personalization of the provider's model trained without the forget set);
2. [provider] scores on its global model (forget vs retain examples) → the published mask;
3. [client]   the curvature of ``stages.curvature.kind`` at θp on its data, undamped, then
              damped (the configured damping, or the one ``choose_damping`` picks on the
              client's validation data), factorized once;
4. [client]   Group-OBS: θu = θp + δ, θu[M] = 0; mask-only for comparison;
5. selectivity (the same curvature family on the forget examples, :func:`~.metrics.selectivity`);
6. the study's baselines on θp (name → function of ``(theta_p, dense_mask)``);
7. every model evaluated by the study's ``evaluate``; the provider's models too; then
   :func:`~.metrics.add_outcomes` (recovery, forget progress, gaps to retrain, collapse guard).

Pure up to the study's callbacks: PRNG keys come in explicitly, nothing prints or writes; stages
longer than a second report to the ``zkapex_jax.studies`` logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core.curvature import damp
from ..core.obs import factorize
from ..models import Family, LoRAConfig
from ..protocol import client, provider
from ..protocol.config import StageConfig
from .metrics import add_outcomes, selectivity

__all__ = ["SeedWorld", "SeedRun", "run_seed"]


@dataclass(frozen=True)
class SeedWorld:
    """What one study seed supplies to :func:`run_seed`.

    Attributes:
      family: the model family (loss, predict, init).
      stages: the protocol's settings (:class:`~zkapex_jax.protocol.config.StageConfig`): the
        personal recipe, the mask spec, the curvature spec (kind, block size, damping).
      theta_global, theta_global_retrain: the provider's models (the second, trained without the
        forget set, is personalized into the retrain baseline; ``None``: no retrain row).
      personal: the client's private training examples (a pytree with a leading example axis).
      mask_forget, mask_retain: the provider's examples for the mask scores.
      evaluate: ``params -> {metric: value}`` (``personal_acc`` and ``forget_acc`` at least).
      curvature_data: the client's examples for the curvature (default: the first
        ``stages.curvature.n_examples`` of ``personal``).
      forget_curvature_data: the forget examples of the selectivity measures (default
        ``mask_forget``).
      curvature_key: PRNG key of the ``true`` Fisher's label draws (both curvatures).
      lora: personalize through merged LoRA adapters (``None``: all weights).
      mask_meta: what the published mask records about its forget set.
      choose_damping: ``(theta_p, raw (nb, B, B), mask, layout) -> {"damping": value, ...}``: the damping
        picked on the client's validation data; ``None`` keeps ``stages.curvature.damping``.
      baselines: ``{name: fn(theta_p, dense_mask) -> (params, info)}`` (the functions of
        :mod:`.baselines` with the study's data bound), run in this order.
      recovery_min_drop: recovery is reported where masking cost at least this much.
    """

    family: Family
    stages: StageConfig
    theta_global: Any
    theta_global_retrain: Any
    personal: Any
    mask_forget: Any
    mask_retain: Any
    evaluate: Callable[[Any], dict]
    curvature_data: Any = None
    forget_curvature_data: Any = None
    curvature_key: Any = None
    lora: LoRAConfig | None = None
    mask_meta: Mapping[str, Any] = field(default_factory=dict)
    choose_damping: Callable[..., Mapping[str, Any]] | None = None
    baselines: Mapping[str, Callable[[Any, Mapping], Any]] = field(default_factory=dict)
    recovery_min_drop: float = 1e-3


@dataclass
class SeedRun:
    """What :func:`run_seed` measured and built (the studies' sweeps reuse the objects).

    ``models`` / ``metrics``: by method (``personalized``, ``mask_only``, ``zkapex``, ``retrain``
    when a retrain model was given, the baselines; ``metrics`` also ``global`` and
    ``global_retrain``); ``raw``: the undamped curvature ``(nb, B, B)``; ``fisher``: the damped one
    Group-OBS used, ``factor`` its factorization; ``damping``: its value, whether relative, the kind
    and (when chosen) the validation accuracies; ``obs``: :func:`~zkapex_jax.protocol.client.unlearn`'s
    info; ``selectivity``: :func:`~.metrics.selectivity` over the masked blocks; ``times``: seconds
    per stage; ``history``: the personalization's; ``baseline_info``: what each baseline returned
    beside its parameters."""

    models: dict
    metrics: dict
    times: dict
    theta_p: Any
    scores: dict
    mask: Any
    layout: Any
    raw: Any
    fisher: Any
    factor: Any
    damping: dict
    obs: dict
    selectivity: dict
    history: dict
    baseline_info: dict


_LOG = logging.getLogger("zkapex_jax.studies")


def _timed(times: dict, name: str, fn, *args, **kw):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kw))
    dt = time.perf_counter() - t0
    times[name] = times.get(name, 0.0) + dt
    if dt > 1.0:  # progress of the long stages (a study seed runs for minutes to an hour)
        _LOG.info("seed stage %s done in %.1fs", name[:-2] if name.endswith("_s") else name, dt)
    return out


def _first(examples, n: int | None):
    if n is None:
        return examples
    return jax.tree_util.tree_map(lambda a: a[:n], examples)


def run_seed(world: SeedWorld, pers_key, pers_retrain_key) -> SeedRun:
    """The stages of one study seed (module docstring), with the client's personalization keys
    (θp and the retrain baseline's)."""
    fam, st = world.family, world.stages
    cs = st.curvature
    times: dict[str, float] = {}

    theta_p, hist = _timed(times, "personalize_s", client.personalize, fam, world.theta_global, world.personal,
                           st.personal_recipe, key=pers_key, lora=world.lora)
    theta_rp = None
    if world.theta_global_retrain is not None:
        theta_rp, _ = _timed(times, "retrain_personalize_s", client.personalize, fam, world.theta_global_retrain,
                             world.personal, st.personal_recipe, key=pers_retrain_key, lora=world.lora)

    scores = _timed(times, "mask_s", provider.request_scores, fam, world.theta_global, world.mask_forget,
                    world.mask_retain, st.mask, chunk_size=cs.chunk)
    mask = provider.publish_request(scores, st.mask, meta=dict(world.mask_meta))

    layout = st.layout(fam, theta_p)
    data_c = world.curvature_data if world.curvature_data is not None else _first(world.personal, cs.n_examples)
    raw = _timed(times, "curvature_s", client.client_curvature, fam, theta_p, data_c, layout, kind=cs.kind,
                 damping=0.0, chunk_size=cs.chunk, key=world.curvature_key)
    damping = {"value": cs.damping, "relative": cs.relative, "kind": cs.kind}
    if world.choose_damping is not None:
        choice = dict(_timed(times, "damping_choice_s", world.choose_damping, theta_p, raw, mask, layout))
        damping["value"] = choice.pop("damping")
        damping.update(choice)
    fisher = damp(raw, damping["value"], relative=cs.relative)
    factor = _timed(times, "group_obs_s", factorize, fisher)
    theta_u, obs = _timed(times, "group_obs_s", client.unlearn, theta_p, factor, mask, layout)
    models = {"personalized": theta_p, "mask_only": client.mask_only(theta_p, mask), "zkapex": theta_u}
    if theta_rp is not None:
        models["retrain"] = theta_rp

    # selectivity: how much of the forget set's curvature (same family, undamped) lies where the
    # client's data excite; the damping the committed curvature carries, per block
    forget_c = world.forget_curvature_data if world.forget_curvature_data is not None else world.mask_forget
    f_forget = _timed(times, "selectivity_s", client.client_curvature, fam, theta_p, forget_c, layout, kind=cs.kind,
                      damping=0.0, chunk_size=cs.chunk, key=world.curvature_key)
    per_block = np.mean(np.asarray(jnp.diagonal(fisher, axis1=1, axis2=2), np.float64)
                        - np.asarray(jnp.diagonal(raw, axis1=1, axis2=2), np.float64), axis=1)
    sel = _timed(times, "selectivity_s", selectivity, fisher, f_forget, np.asarray(mask.to_blocks(layout)),
                 damping=per_block)
    del f_forget

    dense = mask.dense()
    baseline_info = {}
    for name, fn in world.baselines.items():
        models[name], baseline_info[name] = _timed(times, f"{name}_s", fn, theta_p, dense)

    metrics = {name: _timed(times, "evaluate_s", world.evaluate, p) for name, p in models.items()}
    metrics["global"] = _timed(times, "evaluate_s", world.evaluate, world.theta_global)
    if world.theta_global_retrain is not None:
        metrics["global_retrain"] = _timed(times, "evaluate_s", world.evaluate, world.theta_global_retrain)
    add_outcomes(metrics, eps=world.recovery_min_drop)
    return SeedRun(models=models, metrics=metrics, times=times, theta_p=theta_p, scores=scores, mask=mask,
                   layout=layout, raw=raw, fisher=fisher, factor=factor, damping=damping, obs=obs, selectivity=sel,
                   history=hist, baseline_info=baseline_info)
