"""How the demo's unlearning settings were chosen: on the demo's model and data (``vit-demo``,
the embedded Fashion-MNIST split, the demo's training recipe), every combination of the masked
kernels (the paper's fc1, fc1 and the classifier head, or the head alone), mask score, mask fraction, curvature
family and relative damping α, measured on a **selection seed** (1) and
reported on the demo's own seed (0), so that the demo's table is not the data the settings were
picked on. Per combination: forget accuracy of the masked model, recovery of the compensated one
(α picked on the client's validation images), forget progress toward the retrain baseline (the
global model trained without the forget classes, personalized the same way).

Selection rule (on the selection seed): the combinations whose compensated model keeps forget
progress ≥ 0.5 and recovery ≥ 0.8 without collapse, the cheapest statement (fewest masked
weights: what the proofs' cost follows) first, then the highest recovery. The demo's request is
now chosen among the candidates this grid found by ``experiments/demo_robustness.py``, over
seeds × XLA vector-extension caps (one seed's model differs from machine to machine).

Command line::

    python -m experiments.demo_settings --seeds 1 0 --out experiments/results/demo_settings.json
    python -m experiments.demo_settings --tiny --seeds 0 --out /tmp/demo_settings_tiny.json   # CI smoke
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

PATTERNS = {"fc1": ("*/encoder/layer/*/intermediate/dense/kernel",),
            "fc1+head": ("*/encoder/layer/*/intermediate/dense/kernel", "classifier/kernel"),
            "head": ("classifier/kernel",)}
FRACTIONS = (0.04, 0.1, 0.2)
METHODS = ("second_order_neg", "taylor_forget")
KINDS = ("empirical", "layer_inputs", "layer_covariance")
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)


def demo_config(tiny: bool = False):
    """The demo's model, data and training recipe without its request settings (what is chosen here)."""
    from zkapex_jax.studies.demo import demo_config as cfg_of

    return cfg_of("vit-demo", 16, quick=tiny, request=False)


def run_seed(cfg, seed: int, *, patterns, fractions, methods, kinds, alphas) -> dict:
    import jax

    from zkapex_jax.core.curvature import damp
    from zkapex_jax.studies import image as pl
    from zkapex_jax.studies.metrics import unlearning_outcome

    k_glob, k_pers = jax.random.split(jax.random.PRNGKey(seed))  # the demo's keys
    k_ret, k_rpers = jax.random.split(jax.random.PRNGKey(10_000 + seed))
    data = pl.load_data(cfg, seed)
    theta_g, _ = pl.train_global(cfg, data, key=k_glob)
    theta_p, _ = pl.personalize(cfg, theta_g, data, key=k_pers)
    theta_rg, _ = pl.train_global(cfg, data, key=k_ret, exclude_forget=True)
    rows = {"personalized": pl.evaluate(cfg, theta_p, data, mia=False),
            "retrain": pl.evaluate(cfg, pl.personalize(cfg, theta_rg, data, key=k_rpers)[0], data, mia=False)}
    combos = {}
    for pname in patterns:
        pcfg = cfg.replace(mask_pattern=PATTERNS[pname])
        layout = pl.block_layout(pcfg, theta_p)
        raw = {k: np.asarray(pl.client_fisher(pcfg.replace(curvature=k, damping=0.0, damping_relative=False), theta_p,
                                              data, layout, seed=seed), dtype=np.float64) for k in kinds}
        for method in methods:
            mcfg = pcfg.replace(mask_method=method)
            scores = pl.provider_scores(mcfg, theta_g, data, seed=seed)
            for frac in fractions:
                mask = pl.provider_mask(mcfg, theta_g, data, seed=seed, fraction=frac, scores=scores)
                mo = pl.evaluate(cfg, pl.mask_only(theta_p, mask), data, mia=False)
                for kind in kinds:
                    best = None
                    for a in alphas:
                        theta_u, _ = pl.unlearn(theta_p, np.asarray(damp(raw[kind], a, relative=True)), mask, layout)
                        ev = pl.evaluate(cfg, theta_u, data, mia=False)
                        val = 0.5 * (ev["personal_val_orig"] + ev["personal_val_shift"])
                        if best is None or val > best[0]:
                            best = (val, a, ev)
                    _, a, ev = best
                    combos[f"{pname}/{method}/{frac}/{kind}"] = {
                        "pattern": pname, "method": method, "fraction": frac, "kind": kind, "alpha": a,
                        "masked": int(mask.num_masked), "mask_only": mo, "eval": ev,
                        **unlearning_outcome(ev, rows["personalized"], mo, rows["retrain"])}
    return {"seed": seed, "rows": rows, "combos": combos}


def select(res: dict) -> list[str]:
    """The combinations that meet the demo's targets on ``res`` (one seed), best first."""
    ok = [(c["masked"], -c["recovery"], name) for name, c in res["combos"].items()
          if c["recovery"] is not None and c["forget_progress"] is not None
          and c["recovery"] >= 0.8 and c["forget_progress"] >= 0.5 and not c["collapsed"]]
    return [name for *_, name in sorted(ok)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.demo_settings", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 0],
                    help="the first seed selects, the others report (default 1 0)")
    ap.add_argument("--tiny", action="store_true", help="the CI variant (vit-test, a few combinations)")
    ap.add_argument("--patterns", nargs="+", choices=tuple(PATTERNS), default=None,
                    help=f"the masked kernels to try (default all: {', '.join(PATTERNS)})")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from zkapex_jax.studies.report import run_environment, write_study_record

    cfg = demo_config(args.tiny)
    patterns = tuple(args.patterns) if args.patterns else (tuple(PATTERNS)[:1] if args.tiny else tuple(PATTERNS))
    grid = dict(patterns=patterns, fractions=FRACTIONS[:1] if args.tiny else FRACTIONS, methods=METHODS[:1] if args.tiny else METHODS,
                kinds=("empirical", "layer_inputs") if args.tiny else KINDS, alphas=ALPHAS[:2] if args.tiny else ALPHAS)
    t0 = time.perf_counter()
    per_seed = [run_seed(cfg, s, **grid) for s in args.seeds]
    chosen = select(per_seed[0])
    out = {"pipeline": cfg.to_dict(), "seeds": args.seeds, "selection_seed": args.seeds[0],
           "grid": {k: list(v) for k, v in grid.items()}, "per_seed": per_seed, "meets_targets_on_selection_seed": chosen,
           "chosen": chosen[0] if chosen else None, "seconds": round(time.perf_counter() - t0, 1),
           "environment": run_environment()}
    write_study_record(args.out, "demo_settings", out)
    names = list(per_seed[0]["combos"])
    print(f"{'combination':<48}" + "".join(f"{'s' + str(s) + ' rec':>9}{'fprog':>7}{'pers':>7}{'forget':>7}"
                                          for s in args.seeds))
    for n in names:
        line = f"{n:<48}"
        for r in per_seed:
            c = r["combos"][n]
            f = lambda v: "   n/a" if v is None else f"{v:6.2f}"  # noqa: E731
            line += f"{f(c['recovery']):>9}{f(c['forget_progress']):>7}{c['eval']['personal_acc']:>7.3f}" \
                    f"{c['eval']['forget_acc']:>7.3f}"
        print(line + ("  *" if n in chosen[:1] else ""))
    for r in per_seed:
        print(f"seed {r['seed']}: personalized personal {r['rows']['personalized']['personal_acc']:.3f} forget "
              f"{r['rows']['personalized']['forget_acc']:.3f}; retrain personal {r['rows']['retrain']['personal_acc']:.3f} "
              f"forget {r['rows']['retrain']['forget_acc']:.3f}")
    print(json.dumps({"chosen": out["chosen"], "seconds": out["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
