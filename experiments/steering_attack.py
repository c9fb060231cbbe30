"""Threat model, measured: how much forget accuracy can a malicious client keep under VALID by
committing, before any mask exists, a curvature chosen to steer the certified Group-OBS update?

Each curvature is a block Fisher of the personalized model θp, damped like the client's, on other
data than the client's own (the protocol cannot see the data, so each is committable):

* ``honest``       the client's personalization set (the protocol's intent);
* ``forget_data``  images of the forget classes (the attacker guessed them and kept some data);
* ``global_data``  the global training distribution (mask unknown: "preserve everything").

For each, the float Group-OBS update for the provider's mask (the certified fixed-point model is
within 1.25 units of 2^-sθ of it) is evaluated, and whether every block satisfies the public
compensation bound ρ (``circuits/relation.py``: a block over the bound cannot be certified, so
the attack would need a larger damping). Writes the per-seed table and a summary.

Command line::

    python -m experiments.steering_attack --config demo --seeds 0 1 2 --out experiments/results/steering_demo.json
    python -m experiments.steering_attack --config tiny --seeds 0 --out /tmp/steer_tiny.json      # CI smoke
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from experiments.delta_bound import _pipeline

ATTACKS = ("honest", "forget_data", "global_data")


def _ratio(theta_p, theta_u, mask, layout) -> float:
    from zkapex_jax.protocol.api import statement_blocks

    tp, tu = statement_blocks(theta_p, layout), statement_blocks(theta_u, layout)
    mb = np.asarray(mask.to_blocks(layout), dtype=bool)
    rows = np.flatnonzero(mb.any(axis=1))
    removed = np.sum(np.abs(tp) * mb, axis=1)[rows]
    return float(np.max(np.max(np.abs(tu - tp)[rows], axis=1) / removed))


def run_seed(cfg, seed: int, rho: int) -> dict:
    import jax

    from zkapex_jax.studies import image as pl

    k_glob, k_pers = jax.random.split(jax.random.PRNGKey(seed))
    data = pl.load_data(cfg, seed)
    theta_g, _ = pl.train_global(cfg, data, key=k_glob)
    theta_p, _ = pl.personalize(cfg, theta_g, data, key=k_pers)
    layout = pl.block_layout(cfg, theta_p)
    mask = pl.provider_mask(cfg, theta_g, data, seed=seed)
    n = len(data.personal_train.y)
    splits = {"honest": data.personal_train, "forget_data": data.forget_train, "global_data": data.global_train}
    rows = {"personalized": pl.evaluate(cfg, theta_p, data, mia=False),
            "mask_only": pl.evaluate(cfg, pl.mask_only(theta_p, mask), data, mia=False)}
    ratios = {}
    for name in ATTACKS:
        fisher = pl.client_fisher_on(cfg, theta_p, splits[name], layout, n_samples=n, seed=seed)
        theta_u, _ = pl.unlearn(theta_p, np.asarray(fisher, dtype=np.float64), mask, layout)
        rows[name] = pl.evaluate(cfg, theta_u, data, mia=False)
        ratios[name] = _ratio(theta_p, theta_u, mask, layout)
    keep = ("personal_acc", "forget_acc", "other_acc")
    return {"seed": seed, "n_fisher": n,
            "accuracy": {k: {m: round(float(v[m]), 4) for m in keep} for k, v in rows.items()},
            "max_ratio_to_removed": ratios, "certifiable_under_rho": {k: r <= rho for k, r in ratios.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.steering_attack", description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("demo", "tiny", "vit"), default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from zkapex_jax.protocol._circuits import relation
    from zkapex_jax.studies.report import mean_std, run_environment, write_study_record

    cfg = _pipeline(args.config)
    rho = relation.DEFAULT_DELTA_RATIO
    t0 = time.perf_counter()
    per_seed = []
    for s in args.seeds:
        per_seed.append(run_seed(cfg, s, rho))
        print(json.dumps(per_seed[-1]["accuracy"]), flush=True)
    models = list(per_seed[0]["accuracy"])
    summary = {m: {k: mean_std([p["accuracy"][m][k] for p in per_seed])
                   for k in ("personal_acc", "forget_acc", "other_acc")} for m in models}
    out = {"config": args.config, "pipeline": cfg.to_dict(), "rho": rho, "seeds": args.seeds, "summary": summary,
           "per_seed": per_seed, "seconds": round(time.perf_counter() - t0, 1),
           "environment": run_environment()}
    write_study_record(args.out, "steering", out)
    print(f"{'model':<14}{'personal':>10}{'forget':>10}{'other':>10}")
    for m in models:
        print(f"{m:<14}" + "".join(f"{summary[m][k]['mean']:>10.3f}" for k in ("personal_acc", "forget_acc", "other_acc")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
