"""Study 1 — personalized unlearning of a ViT on Fashion-MNIST (ZK-APEX's image study, scaled).

The entry point with its command line is ``experiments/vit_fmnist.py``; the named configs are in
``experiments/configs/vit_fmnist.py``. Progress goes to the ``zkapex_jax.studies`` logger.

Per seed: train the global ViT on all classes and the retrain model without the forget classes
(provider), personalize both on the client's original + edge-"sketch" images (client), score the
provider mask on the GLOBAL model, then compare personalized, mask_only, zkapex (mask +
Group-OBS), retrain, finetune_after_mask, gradient_ascent, ssd, salun. Sweeps (mask fraction,
Fisher block size, damping, number of Fisher samples) reuse each seed's trained models.
Results: ``{"study", "seeds", "methods": {name: {metric: {mean, std}}}, "recovery": {mean, std},
"settings", "wall_time_s", "sweeps", "per_seed"}``; figures as PNG.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ..models import train as T
from ..models import FC1_PATTERN_VIT as FC1
from ..protocol import client as client_stage
from . import baselines as B
from . import image as P
from . import metrics as M
from . import report as common
from . import seed as S
from .image import PipelineConfig

METHODS = ("personalized", "mask_only", "zkapex", "retrain", "finetune_after_mask", "gradient_ascent",
           "ssd", "salun")
SWEEPS = ("fraction", "block", "damping", "rel_damping", "nfisher", "pattern")


_LOG = logging.getLogger("zkapex_jax.studies")


def _log(msg: str) -> None:
    _LOG.info("vit_fmnist: %s", msg)


FC2 = "*/encoder/layer/*/output/dense/kernel"
ATT_Q = "*/encoder/layer/*/attention/attention/query/kernel"
ATT_K = "*/encoder/layer/*/attention/attention/key/kernel"
ATT_V = "*/encoder/layer/*/attention/attention/value/kernel"
ATT_O = "*/encoder/layer/*/attention/output/dense/kernel"
HEAD = "classifier/kernel"


@dataclass(frozen=True)
class StudyConfig:
    """The study: a pipeline config, seeds, baseline settings and sweep grids.

    Baselines (``zkapex_jax.studies.baselines``) run on the personalized model θp:
    fine-tune-after-mask on the client's personalization training set; gradient ascent on the
    provider's forget images (``n_mask_forget`` of them); SSD with forget = those images and
    retain = the client's training set; SalUn with saliency from the forget images, random-label
    fine-tuning on them plus the client's training set.
    """

    name: str
    pipeline: PipelineConfig
    study: str = "vit_fmnist"  # the results' "study" and the figures' prefix
    seeds: tuple[int, ...] = (0, 1, 2)
    # recovery is reported only where masking cost at least this much personal accuracy
    # (about one standard error of the personal-accuracy estimate on ~2,400 test images)
    recovery_min_drop: float = 0.01
    # fine-tune after mask (unmasked weights, mask held at 0)
    ft_steps: int = 60
    ft_lr: float = 1e-4
    ft_batch: int = 16
    # gradient ascent (all weights, SGD, step budget)
    ga_steps: int = 30
    ga_lr: float = 5e-3
    ga_batch: int = 32
    # SSD
    ssd_alpha: float = 10.0
    ssd_lambda: float = 1.0
    # SalUn
    salun_fraction: float = 0.5
    salun_steps: int = 40
    salun_lr: float = 1e-4
    salun_batch: int = 16
    # also report mask-only / ZK-APEX with these provider scores (rows "mask_only__<m>", "zkapex__<m>")
    extra_mask_methods: tuple[str, ...] = ()
    # sweeps (each over every seed in sweep_seeds; models are reused from the main run)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)
    sweep_fractions: tuple[float, ...] = (0.01, 0.04, 0.1, 0.2, 0.35, 0.5)
    sweep_block_sizes: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    sweep_dampings: tuple[float, ...] = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    # damping relative to the Fisher's scale: C = F + alpha * mean(diag F) * I
    sweep_rel_dampings: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    sweep_n_fisher: tuple[int, ...] = (8, 16, 32, 64, 96)
    # ablation beyond the paper: which matrices the provider may mask (same 4% fraction)
    sweep_patterns: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("fc1", (FC1,)),
        ("fc1+fc2", (FC1, FC2)),
        ("all_encoder_dense", (FC1, FC2, ATT_Q, ATT_K, ATT_V, ATT_O)),
        ("fc1+head", (FC1, HEAD)),
    )

    def replace(self, **kw) -> "StudyConfig":
        return dataclasses.replace(self, **kw)


def _cache_path(cache_dir, cfg: P.PipelineConfig, seed: int, tag: str):
    keys = ("model", "dataset", "forget_classes", "personal_classes", "shift", "n_orig", "n_shift",
            "n_train_per_domain", "max_global_train", "max_test", "global_epochs", "global_lr", "global_batch",
            "global_warmup", "weight_decay")
    d = {k: getattr(cfg, k) for k in keys}
    for k in ("model_overrides", "pretrained"):  # only when set, so earlier caches stay valid
        if getattr(cfg, k):
            d[k] = getattr(cfg, k)
    return T.cache_path(cache_dir, f"{tag}-s{seed}", d)


def _global_model(cfg, data, seed, key, *, exclude_forget, cache_dir):
    """The provider's global (or retrain) model of ``seed``, cached under ``cache_dir``.
    Returns ``(params, training seconds, cached)``."""
    path = _cache_path(cache_dir, cfg, seed, "retrain" if exclude_forget else "global")
    params, meta, cached = T.load_or_train(
        path, lambda: (P.train_global(cfg, data, key=key, exclude_forget=exclude_forget)[0], {}), {"seed": seed})
    return params, meta.get("seconds", float("nan")), cached


def world(study: StudyConfig, seed: int, data, theta_g, theta_rg, keys: dict) -> S.SeedWorld:
    """The image study's seed in the shared stages' words (:class:`~.seed.SeedWorld`): the client's
    personalization images, the provider's ``n_mask_forget`` / ``n_mask_retain`` images (the mask
    scores; the forget ones also feed gradient ascent, SSD and SalUn), the evaluation with the
    entropy MIA, and the four baselines with their keys (``keys``: ``ft``, ``ga``, ``sal``)."""
    cfg = study.pipeline
    fns = P.model_fns(cfg)
    st = cfg.stages()
    forget_b, retain_b = P.mask_examples(cfg, data.forget_train, data.retain_train, seed=seed)
    personal_b = (data.personal_train.x, data.personal_train.y)
    curv, curv_key = P.curvature_examples(cfg, data.personal_train, seed=seed)
    num_labels = fns.model.config.num_labels
    baselines = {
        "finetune_after_mask": lambda th, dense: B.finetune_after_mask(
            fns.loss, th, dense, personal_b, steps=study.ft_steps, lr=study.ft_lr, batch_size=study.ft_batch,
            key=keys["ft"]),
        "gradient_ascent": lambda th, dense: B.gradient_ascent(
            fns.loss, th, forget_b, steps=study.ga_steps, lr=study.ga_lr, batch_size=study.ga_batch,
            key=keys["ga"]),
        "ssd": lambda th, dense: B.ssd(fns.loss, th, forget_b, personal_b, alpha=study.ssd_alpha, lam=study.ssd_lambda,
                                       chunk_size=cfg.fisher_chunk),
        "salun": lambda th, dense: B.salun(
            fns.loss, th, forget_b, personal_b, relabel=B.random_labels(num_labels), fraction=study.salun_fraction,
            steps=study.salun_steps, lr=study.salun_lr, batch_size=study.salun_batch, key=keys["sal"],
            chunk_size=cfg.fisher_chunk),
    }
    return S.SeedWorld(
        family=fns, stages=st, theta_global=theta_g, theta_global_retrain=theta_rg, personal=personal_b,
        mask_forget=forget_b, mask_retain=retain_b,
        evaluate=lambda params: P.evaluate(cfg, params, data, seed=seed),
        curvature_data=curv, curvature_key=curv_key,
        mask_meta={"forget_classes": list(cfg.forget_classes)}, baselines=baselines,
        recovery_min_drop=study.recovery_min_drop)


def run_seed(study: StudyConfig, seed: int, *, cache_dir=None) -> tuple[dict, dict, dict]:
    """All methods for one seed (the shared stages of :func:`zkapex_jax.studies.seed.run_seed` on
    this study's world). Returns (metrics {method: {metric: value}}, timings, state) where
    ``state`` holds the trained models and objects the sweeps reuse."""
    cfg = study.pipeline
    k_glob, k_ret, k_pers, k_rpers, k_ft, k_ga, k_sal = jax.random.split(jax.random.PRNGKey(seed), 7)
    timings: dict[str, float] = {}
    data = P.load_data(cfg, seed)

    theta_g, timings["train_global_s"], cached_g = _global_model(cfg, data, seed, k_glob, exclude_forget=False,
                                                                 cache_dir=cache_dir)
    theta_rg, timings["train_retrain_s"], cached_r = _global_model(cfg, data, seed, k_ret, exclude_forget=True,
                                                                   cache_dir=cache_dir)
    _log(f"seed {seed}: global models ready (cached: {cached_g}, {cached_r})")
    w = world(study, seed, data, theta_g, theta_rg, {"ft": k_ft, "ga": k_ga, "sal": k_sal})
    run = S.run_seed(w, k_pers, k_rpers)
    results = run.metrics
    timings.update(run.times)

    # the same mask-only / ZK-APEX with other provider scores (same fraction, same client curvature)
    for meth in study.extra_mask_methods:
        m2 = P.provider_mask(cfg.replace(mask_method=meth), theta_g, data, seed=seed)
        sub = {"personalized": results["personalized"], "retrain": results["retrain"],
               "mask_only": w.evaluate(P.mask_only(run.theta_p, m2)),
               "zkapex": w.evaluate(P.unlearn(run.theta_p, run.factor, m2, run.layout)[0])}
        sub = M.add_outcomes({k: dict(v) for k, v in sub.items()}, eps=study.recovery_min_drop)
        results[f"mask_only__{meth}"], results[f"zkapex__{meth}"] = sub["mask_only"], sub["zkapex"]
    extra = {"num_masked": run.obs["num_masked"], "max_kkt_residual": run.obs["max_residual"],
             **{f"selectivity_{k}": v for k, v in run.selectivity.items()},
             "ssd_dampened": run.baseline_info["ssd"]["n_dampened"],
             "salun_salient": run.baseline_info["salun"]["n_salient"], "num_blocks": run.layout.num_blocks}
    state = dict(data=data, theta_g=theta_g, theta_p=run.theta_p, theta_rp=run.models["retrain"], scores=run.scores,
                 mask=run.mask, fisher_undamped=run.raw, layout=run.layout, fisher=run.fisher, factor=run.factor,
                 results=results)
    return results, {**timings, **extra}, state


# ----------------------------------------------------------------------------- sweeps

def _eval_light(cfg, params, data, seed):
    return P.evaluate(cfg, params, data, mia=False, seed=seed)


def sweep_seed(study: StudyConfig, state: dict, seed: int, which) -> dict:
    """Sweeps for one seed over the models in ``state``. Returns {sweep: {"x": [...], metric series}}."""
    cfg = study.pipeline
    data, theta_p, layout = state["data"], state["theta_p"], state["layout"]
    out: dict = {}
    if "fraction" in which:
        rows = []
        for f in study.sweep_fractions:
            mask = P.provider_mask(cfg, state["theta_g"], data, scores=state["scores"], fraction=f)
            mo = _eval_light(cfg, P.mask_only(theta_p, mask), data, seed)
            zk = _eval_light(cfg, P.unlearn(theta_p, state["factor"], mask, layout)[0], data, seed)
            zk["recovery"] = M.recovery(zk["personal_acc"], mo["personal_acc"],
                                        state["results"]["personalized"]["personal_acc"], eps=study.recovery_min_drop)
            rows.append({"mask_only": mo, "zkapex": zk})
        out["fraction"] = {"x": list(study.sweep_fractions), "rows": rows}
    mask = state["mask"]
    mo_acc = state["results"]["mask_only"]["personal_acc"]
    p_acc = state["results"]["personalized"]["personal_acc"]

    def point(fisher_or_factor, lay):
        zk = _eval_light(cfg, P.unlearn(theta_p, fisher_or_factor, mask, lay)[0], data, seed)
        zk["recovery"] = M.recovery(zk["personal_acc"], mo_acc, p_acc, eps=study.recovery_min_drop)
        return {"zkapex": zk}

    def safe_point(fn):
        try:
            return fn()
        except ValueError as e:  # SingularBlockError / NonFiniteError: record, do not abort the study
            return {"zkapex": {"error": f"{type(e).__name__}: {str(e)[:200]}"}}

    if "block" in which:
        rows = []
        for b in study.sweep_block_sizes:
            lay = P.block_layout(cfg, theta_p, block_size=b)
            rows.append(safe_point(lambda: point(P.client_fisher(cfg, theta_p, data, lay, seed=seed), lay)))
        out["block"] = {"x": list(study.sweep_block_sizes), "rows": rows}
    if "damping" in which:
        f0 = state["fisher_undamped"]  # computed once per seed in run_seed
        eye = jnp.eye(layout.block_size, dtype=f0.dtype)
        rows = [safe_point(lambda d=d: point(f0 + jnp.asarray(d, f0.dtype) * eye, layout)) for d in study.sweep_dampings]
        out["damping"] = {"x": list(study.sweep_dampings), "rows": rows}
    if "rel_damping" in which:
        f0 = state["fisher_undamped"]  # computed once per seed in run_seed
        rows = [safe_point(lambda a=a: point(client_stage.relative_damping(f0, a), layout))
                for a in study.sweep_rel_dampings]
        out["rel_damping"] = {"x": list(study.sweep_rel_dampings), "rows": rows,
                              "fisher_mean_diag": float(jnp.mean(jnp.diagonal(f0, axis1=1, axis2=2)))}
    if "pattern" in which:
        rows = []
        for label, pats in study.sweep_patterns:
            c2 = cfg.replace(mask_pattern=tuple(pats))

            def pat_point(c2=c2):
                m2 = P.provider_mask(c2, state["theta_g"], data, seed=seed)
                lay2 = P.block_layout(c2, theta_p)
                f2 = P.client_fisher(c2, theta_p, data, lay2, seed=seed)
                mo = _eval_light(cfg, P.mask_only(theta_p, m2), data, seed)
                zk = _eval_light(cfg, P.unlearn(theta_p, f2, m2, lay2)[0], data, seed)
                zk["recovery"] = M.recovery(zk["personal_acc"], mo["personal_acc"], p_acc, eps=study.recovery_min_drop)
                return {"mask_only": mo, "zkapex": zk}

            try:
                rows.append(pat_point())
            except ValueError as e:
                err = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                rows.append({"mask_only": err, "zkapex": err})
        out["pattern"] = {"x": [label for label, _ in study.sweep_patterns], "rows": rows}
    if "nfisher" in which:
        rows = [safe_point(lambda n=n: point(P.client_fisher(cfg, theta_p, data, layout, n_samples=n, seed=seed), layout))
                for n in study.sweep_n_fisher]
        out["nfisher"] = {"x": list(study.sweep_n_fisher), "rows": rows}
    return out


def _sweep_stats(per_seed_sweeps: list[dict]) -> dict:
    """{sweep: {"x", method: {metric: {"mean": [...], "std": [...]}}}} over seeds."""
    out = {}
    for name in per_seed_sweeps[0]:
        x = per_seed_sweeps[0][name]["x"]
        methods = per_seed_sweeps[0][name]["rows"][0].keys()
        res = {"x": x}
        for m in methods:
            metrics = sorted({k for s in per_seed_sweeps for row in s[name]["rows"] for k in row[m]
                              if k != "error"})
            res[m] = {}
            for k in metrics:
                stats = [common.mean_std([s[name]["rows"][i][m].get(k) for s in per_seed_sweeps])
                         for i in range(len(x))]
                res[m][k] = {"mean": [st["mean"] for st in stats], "std": [st["std"] for st in stats],
                             "ci95": [st["ci95"] for st in stats]}
            errs = [[s[name]["rows"][i][m].get("error") for s in per_seed_sweeps] for i in range(len(x))]
            if any(e for row in errs for e in row):
                res[m]["errors"] = errs
        out[name] = res
    return out


def make_figures(results: dict, fig_dir: str) -> list[str]:
    """The sweep plots (PNG) from a results dict; returns the paths written."""
    prefix = results.get("study", "vit_fmnist")
    sw = results.get("sweeps") or {}
    meth = results["methods"]
    ref = {k: (meth[k]["personal_acc"]["mean"], meth[k]["forget_acc"]["mean"])
           for k in ("personalized", "retrain") if k in meth}
    paths = []
    if "fraction" in sw:
        s = sw["fraction"]
        p = os.path.join(fig_dir, f"{prefix}_fraction.png")
        common.plot_sweep(p, s["x"], {
            "zkapex personal": (s["zkapex"]["personal_acc"]["mean"], s["zkapex"]["personal_acc"]["std"]),
            "zkapex forget": (s["zkapex"]["forget_acc"]["mean"], s["zkapex"]["forget_acc"]["std"]),
            "mask-only personal": (s["mask_only"]["personal_acc"]["mean"], s["mask_only"]["personal_acc"]["std"]),
            "mask-only forget": (s["mask_only"]["forget_acc"]["mean"], s["mask_only"]["forget_acc"]["std"]),
        }, xlabel="mask fraction of fc1 weights", ylabel="accuracy", logx=True,
            title="Mask fraction: forget vs personal accuracy",
            hlines={"personalized personal": ref["personalized"][0], "personalized forget": ref["personalized"][1],
                    "retrain personal": ref["retrain"][0], "retrain forget": ref["retrain"][1],
                    "target: forget halfway to retrain": 0.5 * (ref["personalized"][1] + ref["retrain"][1])})
        paths.append(p)
        p = os.path.join(fig_dir, f"{prefix}_tradeoff.png")
        common.plot_tradeoff(p, {
            k.replace("_", "-"): (s[k]["forget_acc"]["mean"], s[k]["personal_acc"]["mean"], s[k]["personal_acc"]["std"])
            for k in ("zkapex", "mask_only")},
            points={f"{k} (mean of seeds)": (ref[k][1], ref[k][0]) for k in ("personalized", "retrain")},
            labels=s["x"], xlabel="forget accuracy (lower = more forgotten)", ylabel="personal accuracy",
            title="Trade-off over the mask fraction (labels: fraction of fc1)")
        paths.append(p)
    labels = {"block": ("Fisher block size B", True), "damping": ("damping", True),
              "rel_damping": ("damping / mean diag(F)", True),
              "nfisher": ("number of Fisher samples m", True)}
    for name, (xlabel, logx) in labels.items():
        if name not in sw:
            continue
        s = sw[name]
        z = s["zkapex"]
        if "personal_acc" not in z:
            continue
        p = os.path.join(fig_dir, f"{prefix}_{name}.png")
        common.plot_sweep(p, s["x"], {
            "zkapex personal": (z["personal_acc"]["mean"], z["personal_acc"]["std"]),
            "zkapex forget": (z["forget_acc"]["mean"], z["forget_acc"]["std"])},
            xlabel=xlabel, ylabel="accuracy", logx=logx, title=f"Sweep: {xlabel}",
            hlines={"personalized personal": ref["personalized"][0],
                    "mask-only personal": meth["mask_only"]["personal_acc"]["mean"],
                    "retrain forget": ref["retrain"][1]})
        paths.append(p)
    return paths


def tables_markdown(results: dict) -> str:
    """The main table and the sweep tables of a results dict, as markdown (for docs/RESULTS.md)."""
    cols = ("personal_acc", "personal_acc_orig", "personal_acc_shift", "forget_acc", "other_acc", "mia_acc",
            "mia_auc", "recovery", "gap_to_retrain", "forget_progress", "collapsed")
    meth = {m: results["methods"][m] for m in (*METHODS, *sorted(set(results["methods"]) - {*METHODS, "global"}),
                                                 "global") if m in results["methods"]}
    parts = [common.markdown_table(meth, cols)]
    for name, sw in (results.get("sweeps") or {}).items():
        keys = [k for k in ("mask_only", "zkapex") if k in sw]
        head = "| " + name + " | " + " | ".join(f"{k} {m}" for k in keys for m in ("personal_acc", "forget_acc")) + " |"
        rows = [head, "|---|" + "|".join("---" for _ in keys for _m in range(2)) + "|"]
        for i, x in enumerate(sw["x"]):
            cells = []
            for k in keys:
                for m in ("personal_acc", "forget_acc"):
                    st = sw[k].get(m)
                    cells.append("error" if st is None or st["mean"][i] is None else
                                 common.fmt_pm({"mean": st["mean"][i], "std": st["std"][i]}))
            rows.append(f"| {x if isinstance(x, str) else format(x, 'g')} | " + " | ".join(cells) + " |")
        parts.append(f"Sweep `{name}`:\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- driver

def _extra_names(study) -> tuple[str, ...]:
    return tuple(f"{k}__{m}" for m in study.extra_mask_methods for k in ("mask_only", "zkapex"))


def _assemble(study, seeds, per_seed, timings, sweeps_per_seed, t_all) -> dict:
    methods = common.aggregate([{m: r[m] for m in (*METHODS, *_extra_names(study), "global")} for r in per_seed])
    rec = common.mean_std([r["zkapex"]["recovery"] for r in per_seed])
    fp = methods["zkapex"].get("forget_progress", {}).get("mean")
    out = {
        "study": study.study,
        "seeds": [int(s) for s in seeds],
        "methods": methods,
        "recovery": rec,
        "targets": {
            "recovery_ge_0.95": None if rec["mean"] is None else bool(rec["mean"] >= 0.95),
            "forget_progress_ge_0.5": None if fp is None else bool(fp >= 0.5),
            # forgetting counts only where the model did not collapse (the utility guard)
            "not_collapsed": None if methods["zkapex"].get("collapsed", {}).get("mean") is None
            else bool(methods["zkapex"]["collapsed"]["mean"] == 0.0),
        },
        "config": study.name,
        "settings": {"pipeline": study.pipeline.to_dict(),
                     **{k: v for k, v in dataclasses.asdict(study).items() if k not in ("pipeline", "name")}},
        "timings": {k: common.mean_std([t.get(k) for t in timings]) for k in timings[0]},
        "per_seed": [{"seed": s, "metrics": r, "timings": t} for s, r, t in zip(seeds, per_seed, timings)],
        "selectivity": {k[len("selectivity_"):]: common.mean_std([t.get(k) for t in timings])
                        for k in timings[0] if k.startswith("selectivity_") and not k.endswith("_s")},
        "platform": {"jax": jax.__version__, "backend": jax.default_backend(), "devices": str(jax.devices()),
                     "cpu_count": os.cpu_count()},
    }
    if sweeps_per_seed:
        out["sweeps"] = _sweep_stats(sweeps_per_seed)
        out["sweep_seeds"] = [s for s in seeds if s in study.sweep_seeds][:len(sweeps_per_seed)]
    out["wall_time_s"] = time.perf_counter() - t_all
    return out


def run_study(study: StudyConfig, *, seeds=None, sweeps=SWEEPS, cache_dir=None, on_seed=None) -> dict:
    """Run the study; return the results dict (not yet written). ``on_seed(partial_results)`` is
    called after every seed (e.g. to write partial results)."""
    seeds = [int(s) for s in (study.seeds if seeds is None else seeds)]
    t_all = time.perf_counter()
    per_seed, timings, sweeps_per_seed = [], [], []
    states = {}
    for i, s in enumerate(seeds):  # the main table first, for every seed
        t0 = time.perf_counter()
        res, tim, state = run_seed(study, s, cache_dir=cache_dir)
        tim["seed_total_s"] = time.perf_counter() - t0
        _log(f"seed {s}: " + ", ".join(f"{m} P={res[m]['personal_acc']:.3f} F={res[m]['forget_acc']:.3f}"
                                       for m in METHODS) + f" recovery={res['zkapex']['recovery']:.3f}")
        per_seed.append(res)
        timings.append(tim)
        if sweeps and s in study.sweep_seeds:
            states[s] = state
        if on_seed is not None:
            on_seed(_assemble(study, seeds[: i + 1], per_seed, timings, sweeps_per_seed, t_all))
    for i, s in enumerate(seeds):  # then the sweeps, reusing each seed's models
        if s not in states:
            continue
        t0 = time.perf_counter()
        sweeps_per_seed.append(sweep_seed(study, states.pop(s), s, sweeps))
        timings[i]["sweeps_s"] = time.perf_counter() - t0
        _log(f"seed {s}: sweeps done in {timings[i]['sweeps_s']:.0f}s")
        if on_seed is not None and states:
            on_seed(_assemble(study, seeds, per_seed, timings, sweeps_per_seed, t_all))
    return _assemble(study, seeds, per_seed, timings, sweeps_per_seed, t_all)


def rederive(results: dict, study: StudyConfig, *, ablation: dict | None = None) -> dict:
    """Recompute the derived metrics (recovery, gap_to_retrain, forget_progress) of every seed from
    its measured accuracies with the current definitions (``study.recovery_min_drop``),
    re-aggregate, and optionally attach the sweeps of another run (``ablation["sweeps"]``) under
    ``"ablations"``. Sweep-level recovery values (aggregated, not recomputable) are dropped.
    Used when a definition changed after a long run; nothing is re-measured."""
    per_seed = [dict(ps) for ps in results["per_seed"]]
    for ps in per_seed:
        ps["metrics"] = M.add_outcomes({m: dict(v) for m, v in ps["metrics"].items() if m != "global"},
                                       eps=study.recovery_min_drop) | {"global": ps["metrics"]["global"]}
    out = dict(results)
    out["per_seed"] = per_seed
    out["methods"] = common.aggregate([{m: ps["metrics"][m] for m in (*METHODS, "global")} for ps in per_seed])
    out["recovery"] = common.mean_std([ps["metrics"]["zkapex"]["recovery"] for ps in per_seed])
    out["recovery"]["n_defined"] = int(sum(1 for ps in per_seed
                                           if ps["metrics"]["zkapex"]["recovery"] == ps["metrics"]["zkapex"]["recovery"]))
    fp = out["methods"]["zkapex"].get("forget_progress", {}).get("mean")
    rec = out["recovery"]["mean"]
    out["targets"] = {"recovery_ge_0.95": None if rec is None else bool(rec >= 0.95),
                      "forget_progress_ge_0.5": None if fp is None else bool(fp >= 0.5)}
    out["settings"] = dict(out["settings"], recovery_min_drop=study.recovery_min_drop)
    for sw in (out.get("sweeps") or {}).values():
        for k, v in sw.items():
            if isinstance(v, dict):
                v.pop("recovery", None)
    if ablation is not None:
        out["ablations"] = {"seeds": ablation["seeds"], "sweeps": ablation.get("sweeps", {}),
                            "personalized": ablation["methods"]["personalized"],
                            "retrain": ablation["methods"]["retrain"]}
    out["rederived"] = True
    return out
