"""How far does an honest Group-OBS update move a block? The measurement behind the in-circuit
compensation bound ``‖δ̂_b‖₂ ≤ ρ·Σ_{j∈S}|θ̂p_j|`` (relation v9; v5–v8 bounded every weight's
move ``|δ̂_i|`` by the same; circuits/relation.py, docs/PROOFS.md).

For each masked block b the ratios ``‖δ_b‖₂ / Σ_{j∈S}|θp_j|`` (the whole block's move, masked
weights included: what the circuit checks) and ``max_{i∉S}|δ_i| / Σ_{j∈S}|θp_j|`` (the largest
free-weight move) of the float Group-OBS update (the client's own curvature, the provider's mask)
are recorded, together with ``max|δ| / max|θp|``; the script prints quantiles and writes them with
the run's settings.

Command line::

    python -m experiments.delta_bound --config demo --seeds 0 1 2 --out experiments/results/delta_bound.json
    python -m experiments.delta_bound --config tiny --seeds 0 --out /tmp/delta_tiny.json        # CI smoke
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

CONFIGS = ("demo", "vit", "effnet", "tiny")


def _pipeline(name):
    from zkapex_jax.studies import image as pl

    if name == "demo":  # exactly the demo's settings and request (zkapex demo)
        from zkapex_jax.studies.demo import demo_config
        return demo_config("vit-demo", 16)
    if name == "tiny":
        return pl.PipelineConfig.tiny()
    if name == "vit":
        from experiments.configs import vit_fmnist
        return vit_fmnist.get("default").pipeline
    from experiments.configs import effnet_fmnist
    return effnet_fmnist.get("default").pipeline


def measure(cfg, seed: int) -> dict:
    """Per-block ratios of one seed's honest float Group-OBS update."""
    import jax

    from zkapex_jax.protocol.api import statement_blocks
    from zkapex_jax.studies import image as pl

    k_glob, k_pers = jax.random.split(jax.random.PRNGKey(seed))
    data = pl.load_data(cfg, seed)
    theta_g, _ = pl.train_global(cfg, data, key=k_glob)
    theta_p, _ = pl.personalize(cfg, theta_g, data, key=k_pers)
    layout = pl.block_layout(cfg, theta_p)
    fisher = np.asarray(pl.client_fisher(cfg, theta_p, data, layout), dtype=np.float64)
    mask = pl.provider_mask(cfg, theta_g, data, seed=seed)
    theta_u, _ = pl.unlearn(theta_p, fisher, mask, layout)
    tp, tu = statement_blocks(theta_p, layout), statement_blocks(theta_u, layout)
    mb = np.asarray(mask.to_blocks(layout), dtype=bool)
    delta = tu - tp
    rows = np.flatnonzero(mb.any(axis=1))
    removed = np.sum(np.abs(tp) * mb, axis=1)
    free_move = np.max(np.abs(delta) * ~mb, axis=1)
    ratio = free_move[rows] / removed[rows]
    l2 = np.linalg.norm(delta, axis=1)[rows] / removed[rows]
    return {"seed": seed, "masked_blocks": int(rows.size), "blocks": int(mb.shape[0]),
            "ratio_to_removed": ratio.tolist(), "l2_ratio_to_removed": l2.tolist(),
            "max_delta_over_max_theta": float(np.max(np.abs(delta)) / np.max(np.abs(tp)))}


def summarize(ratios) -> dict:
    r = np.asarray(ratios, dtype=np.float64)
    q = {f"q{int(p * 1000) / 10:g}": float(np.quantile(r, p)) for p in (0.5, 0.9, 0.99, 0.999)}
    return {"n_blocks": int(r.size), "max": float(r.max()), **q}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.delta_bound", description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=CONFIGS, default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from zkapex_jax.studies.report import run_environment, write_study_record
    cfg = _pipeline(args.config)
    t0 = time.perf_counter()
    per_seed = []
    for s in args.seeds:
        per_seed.append(measure(cfg, s))
        print(f"seed {s}: l2 {summarize(per_seed[-1]['l2_ratio_to_removed'])}; "
              f"largest free move {summarize(per_seed[-1]['ratio_to_removed'])}", flush=True)
    allr = [x for p in per_seed for x in p["ratio_to_removed"]]
    all2 = [x for p in per_seed for x in p["l2_ratio_to_removed"]]
    out = {"config": args.config, "pipeline": cfg.to_dict(), "seeds": args.seeds, "summary": summarize(allr),
           "summary_l2": summarize(all2),
           "per_seed": [{**p, "summary": summarize(p["ratio_to_removed"]),
                         "summary_l2": summarize(p["l2_ratio_to_removed"])} for p in per_seed],
           "seconds": round(time.perf_counter() - t0, 1),
           "environment": run_environment()}
    write_study_record(args.out, "delta_bound", out)
    print(json.dumps({"l2": out["summary_l2"], "largest_free_move": out["summary"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
