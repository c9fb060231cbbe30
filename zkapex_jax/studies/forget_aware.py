"""Forget-aware ZK-APEX against plain ZK-APEX on the image study (beyond the paper).

The provider publishes with the mask a per-block forget subspace ``U`` (the top-``r`` directions
of the forget set's per-example gradients at the global model,
:func:`zkapex_jax.protocol.provider.publish_forget_subspace`); the client solves Group-OBS with
the extra constraints ``U_Rᵀ δ = 0`` (:func:`zkapex_jax.core.obs.forget_aware_obs`), so that its
compensation does not rebuild what the mask removed along the forget directions.

Per seed and mask fraction: mask-only, ZK-APEX and forget-aware ZK-APEX for each rank, with
personal / forget / other-class accuracies, recovery and forget progress (the share of the way
from personalized to retrain on forget accuracy). The entry point is
``experiments/forget_aware.py``; progress goes to the ``zkapex_jax.studies`` logger.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import jax

from ..core.obs import factorize
from ..protocol import client, provider
from . import image as P
from .metrics import add_outcomes
from .report import aggregate
from .vit_fmnist import _global_model

STUDY = "forget_aware"
_LOG = logging.getLogger("zkapex_jax.studies")


@dataclass(frozen=True)
class ForgetAwareConfig:
    """The image pipeline, seeds, mask fractions and forget-subspace ranks to compare."""

    name: str
    pipeline: P.PipelineConfig
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    fractions: tuple[float, ...] = (0.04, 0.1, 0.2, 0.35)
    ranks: tuple[int, ...] = (1, 4, 16)
    recovery_min_drop: float = 0.01

    def replace(self, **kw) -> "ForgetAwareConfig":
        return dataclasses.replace(self, **kw)


def run_seed(cfg: ForgetAwareConfig, seed: int, *, cache_dir=None) -> dict:
    """``{fraction: {method: metrics}}`` for one seed (methods ``personalized``, ``retrain``,
    ``mask_only``, ``zkapex``, ``zkapex_fa_r<r>``), plus ``"times"``."""
    pc = cfg.pipeline
    fam = P.model_fns(pc)  # the config, with its model overrides
    k_glob, k_ret, k_pers, k_rpers = jax.random.split(jax.random.PRNGKey(seed), 4)
    times = {}
    t0 = time.perf_counter()
    data = P.load_data(pc, seed)
    theta_g, _, _ = _global_model(pc, data, seed, k_glob, exclude_forget=False, cache_dir=cache_dir)
    theta_rg, _, _ = _global_model(pc, data, seed, k_ret, exclude_forget=True, cache_dir=cache_dir)
    times["global_models_s"] = time.perf_counter() - t0
    theta_p, _ = P.personalize(pc, theta_g, data, key=k_pers)
    theta_rp, _ = P.personalize(pc, theta_rg, data, key=k_rpers)
    scores = P.provider_scores(pc, theta_g, data, seed=seed)
    layout = P.block_layout(pc, theta_p)
    forget, _ = P.mask_examples(pc, data.forget_train, data.retain_train, seed=seed)
    t0 = time.perf_counter()
    u_all = provider.publish_forget_subspace(fam, theta_g, forget, layout, max(cfg.ranks),
                                             chunk_size=pc.fisher_chunk)
    times["forget_subspace_s"] = time.perf_counter() - t0
    factor = factorize(P.client_fisher(pc, theta_p, data, layout, seed=seed))

    def ev(params):
        return P.evaluate(pc, params, data, mia=False, seed=seed)

    base = {"personalized": ev(theta_p), "retrain": ev(theta_rp)}
    out = {}
    t0 = time.perf_counter()
    for frac in cfg.fractions:
        mask = P.provider_mask(pc, theta_g, data, scores=scores, fraction=frac)
        res = {k: dict(v) for k, v in base.items()}
        res["mask_only"] = ev(P.mask_only(theta_p, mask))
        res["zkapex"] = ev(P.unlearn(theta_p, factor, mask, layout)[0])
        for r in cfg.ranks:
            theta_fa, _ = client.unlearn(theta_p, factor, mask, layout, forget_basis=u_all[:, :, :r])
            res[f"zkapex_fa_r{r}"] = ev(theta_fa)
        out[str(frac)] = add_outcomes(res, eps=cfg.recovery_min_drop)
        _LOG.info("forget_aware seed %d fraction %g: %s", seed, frac, ", ".join(
            f"{m} p={v['personal_acc']:.3f} f={v['forget_acc']:.3f}" for m, v in out[str(frac)].items()))
    times["methods_s"] = time.perf_counter() - t0
    out["times"] = times
    return out


def run_study(cfg: ForgetAwareConfig, *, seeds=None, cache_dir=None) -> dict:
    """Every seed; returns the results object (``methods`` keyed ``"<method>@<fraction>"``)."""
    seeds = tuple(cfg.seeds if seeds is None else seeds)
    t0 = time.perf_counter()
    per_seed = []
    for s in seeds:
        per_seed.append(run_seed(cfg, s, cache_dir=cache_dir))
        _LOG.info("forget_aware: seed %d done (%.0f s so far)", s, time.perf_counter() - t0)
    flat = [{f"{m}@{f}": v for f, ms in run.items() if f != "times" for m, v in ms.items()} for run in per_seed]
    methods = aggregate(flat)
    main = f"zkapex@{cfg.fractions[0]}"
    return {
        "study": STUDY,
        "seeds": list(seeds),
        "methods": methods,
        "recovery": methods[main]["recovery"],
        "config": {**{k: v for k, v in dataclasses.asdict(cfg).items() if k != "pipeline"},
                   "pipeline": cfg.pipeline.to_dict()},
        "per_seed": flat,
        "times": [run["times"] for run in per_seed],
        "wall_time_s": time.perf_counter() - t0,
        "device": str(jax.devices()[0]),
    }


def tables_markdown(results: dict) -> str:
    """One table per fraction: mean and 95% bootstrap CI over seeds."""
    cfg = results["config"]
    methods = ["personalized", "mask_only", "zkapex", *[f"zkapex_fa_r{r}" for r in cfg["ranks"]], "retrain"]
    metrics = ("personal_acc", "forget_acc", "other_acc", "recovery", "forget_progress")

    def cell(st):
        if st is None or st.get("mean") is None:
            return "n/a"
        ci = st.get("ci95")
        return f"{st['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = []
    for f in cfg["fractions"]:
        lines += [f"Mask fraction {f} (seeds {results['seeds']}; mean [95% bootstrap CI]):", "",
                  "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for m in methods:
            st = results["methods"].get(f"{m}@{f}")
            if st is not None:
                lines.append(f"| {m} | " + " | ".join(cell(st.get(k)) for k in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


BASELINES = ("finetune_after_mask", "gradient_ascent", "ssd", "salun")


def plot_tradeoff(results: dict, path: str, baselines: dict | None = None) -> str:
    """Personal accuracy against forget progress over the mask fractions (mean ± std over seeds),
    one curve per method; personalized and retrain as reference points. ``baselines``: the image
    study's results object of the same pipeline, whose baselines (fine-tune after mask, gradient
    ascent, SSD, SalUn; mean over its seeds) are drawn as points."""
    from .report import plot_tradeoff as plot

    cfg = results["config"]
    fr = cfg["fractions"]

    def series(m, k, stat="mean"):
        return [results["methods"].get(f"{m}@{f}", {}).get(k, {}).get(stat) for f in fr]

    curves = {m: (series(m, "forget_progress"), series(m, "personal_acc"), series(m, "personal_acc", "std"))
              for m in ["mask_only", "zkapex", *[f"zkapex_fa_r{r}" for r in cfg["ranks"]]]}
    ref = {m: (results["methods"][f"{m}@{fr[0]}"]["forget_progress"]["mean"],
               results["methods"][f"{m}@{fr[0]}"]["personal_acc"]["mean"]) for m in ("personalized", "retrain")}
    for m in BASELINES:
        st = (baselines or {}).get("methods", {}).get(m)
        if st and st.get("forget_progress", {}).get("mean") is not None:
            ref[m] = (st["forget_progress"]["mean"], st["personal_acc"]["mean"])
    plot(path, curves, points=ref, labels=fr, xlabel="forget progress (0 = personalized, 1 = retrain)",
         ylabel="personal accuracy", title=f"Forget-aware vs plain ZK-APEX, seeds {results['seeds']}")
    return path
