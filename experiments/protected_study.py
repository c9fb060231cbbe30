"""The certified forget-aware request, measured: the provider protects, in every masked block, the
``r′`` unmasked weights the forget set leans on most (``zkapex_jax.core.mask.protect_top``: the
next-highest mask scores); the certificate (relation v6) then proves θu[S] = 0, θu[T] = θp[T] and
Group-OBS for the committed curvature under those constraints. How much personal accuracy does
the compensation still recover, how much forgetting does it keep — and how much forget accuracy
can a malicious client win back under VALID by committing, before the mask, a steering curvature?

Per seed (global and retrain models cached like the image study's, same keys): personalize,
publish the mask, pick the relative damping α of the client's curvature on its validation images
(plain update; never the test split), then evaluate on the test split:

* ``plain``            ZK-APEX (the paper's statement, relation v5/v6 without protection);
* ``protected_r{r}``   the certified forget-aware update, r′ = r protected weights per masked block;
* ``dense_r{r}`` (with ``--dense-ranks``; float only, *not* certifiable by v6): the compensation kept
  orthogonal to the provider's dense rank-r forget subspace per block (``forget_aware_obs``);
* attacks ``{forget_data,global_data}/{plain,protected_r{r},dense_r{r}}``: the same curvature family computed
  on forget-class images or on the global training distribution (committable before the mask: the
  protocol cannot see the data), α chosen by the attacker to *maximize* forget accuracy among the
  updates that satisfy the public compensation bound ρ (the strongest steering we built).

Recovery = (model − mask-only)/(personalized − mask-only) on personal accuracy; forget progress =
(personalized − model)/(personalized − retrain) on forget accuracy; collapse flag as in the
curvature study.

Command line::

    python -m experiments.protected_study --config effnet --seeds 0 --cache-dir /tmp/zk_effnet_cache \\
        --out experiments/results/protected_effnet_s0.json
    python -m experiments.protected_study --config effnet --seeds 0 --ranks 4 --dense-ranks 1 4 \
        --cache-dir /tmp/zk_effnet_cache --out experiments/results/protected_dense_effnet_s0.json
    python -m experiments.protected_study --config tiny --seeds 0 --out /tmp/prot_tiny.json        # CI smoke
    python -m experiments.protected_study --merge experiments/results/protected_effnet_s{0,1,2}.json \
        --out experiments/results/protected_effnet.json      # seeds run as separate processes, one table
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from experiments.delta_bound import _pipeline
from zkapex_jax.core.curvature import CURVATURES
from zkapex_jax.studies.metrics import max_move_ratio

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)
ATTACK_ALPHAS = (1e-3, 1e-2, 1e-1)
ATTACKS = ("forget_data", "global_data")
KEEP = ("personal_acc", "personal_val_orig", "personal_val_shift", "forget_acc", "other_acc", "global_acc")


def run_seed(cfg, seed: int, *, cache_dir, curvature: str, ranks, rho: int, retrain: bool, dense_ranks=()) -> dict:
    import jax

    from zkapex_jax.protocol.api import statement_blocks
    from zkapex_jax.core.curvature import damp
    from zkapex_jax.core.mask import protect_top
    from zkapex_jax.studies import image as pl
    from zkapex_jax.studies.vit_fmnist import _global_model

    cfg = cfg.replace(curvature=curvature)
    k_glob, k_ret, k_pers, k_rpers, *_ = jax.random.split(jax.random.PRNGKey(seed), 7)  # the image study's keys
    data = pl.load_data(cfg, seed)
    theta_g, _, _ = _global_model(cfg, data, seed, k_glob, exclude_forget=False, cache_dir=cache_dir)
    theta_p, _ = pl.personalize(cfg, theta_g, data, key=k_pers)

    def ev(params):
        e = pl.evaluate(cfg, params, data, mia=False)
        return {k: float(e[k]) for k in KEEP}

    rows = {}
    if retrain:
        theta_rg, _, _ = _global_model(cfg, data, seed, k_ret, exclude_forget=True, cache_dir=cache_dir)
        rows["retrain"] = ev(pl.personalize(cfg, theta_rg, data, key=k_rpers)[0])
    layout = pl.block_layout(cfg, theta_p)
    scores = pl.provider_scores(cfg, theta_g, data, seed=seed)
    mask = pl.provider_mask(cfg, theta_g, data, seed=seed, scores=scores)
    requests = {"plain": mask, **{f"protected_r{r}": protect_top(mask, scores, layout, r) for r in ranks}}
    # for comparison (not certified: the dense variant needs every column of Â): the provider's dense
    # per-block forget subspace, the top eigenvectors of the forget set's block Fisher at the global model
    bases = {}
    if dense_ranks:
        from zkapex_jax.protocol import provider

        fg = pl._subsample(data.forget_train, cfg.n_mask_forget, seed)
        full = provider.publish_forget_subspace(pl.model_fns(cfg), theta_g, (fg.x, fg.y), layout, max(dense_ranks),
                                                chunk_size=cfg.fisher_chunk)
        bases = {f"dense_r{r}": np.asarray(full)[:, :, :r] for r in dense_ranks}
    mb = np.asarray(mask.to_blocks(layout), dtype=bool)
    tp = statement_blocks(theta_p, layout)
    rows["personalized"] = ev(theta_p)
    rows["mask_only"] = ev(pl.mask_only(theta_p, mask))
    n = len(data.personal_train.y)
    raw = {"honest": pl.client_fisher(cfg.replace(damping=0.0, damping_relative=False), theta_p, data, layout, seed=seed)}
    for name, split in (("forget_data", data.forget_train), ("global_data", data.global_train)):
        raw[name] = pl.client_fisher_on(cfg.replace(damping=0.0, damping_relative=False), theta_p, split, layout,
                                        n_samples=n, seed=seed)

    def update(kind, alpha, req):
        c = np.asarray(damp(raw[kind], alpha, relative=True), dtype=np.float64)
        if isinstance(req, str):   # a dense forget basis (float only)
            theta_u, _ = pl.unlearn(theta_p, c, mask, layout, forget_basis=bases[req])
        else:
            theta_u, _ = pl.unlearn(theta_p, c, req, layout)
        return theta_u, max_move_ratio(tp, statement_blocks(theta_u, layout), mb)
    requests.update({k: k for k in bases})

    # the honest client's α: best personal validation accuracy of the plain update
    best = None
    for a in ALPHAS:
        theta_u, ratio = update("honest", a, mask)
        e = ev(theta_u)
        val = 0.5 * (e["personal_val_orig"] + e["personal_val_shift"])
        if best is None or val > best[0]:
            best = (val, a, e, ratio)
    alpha = best[1]
    rows["plain"] = {**best[2], "alpha": alpha, "max_move_ratio": best[3]}
    for name, req in requests.items():
        if name == "plain":
            continue
        theta_u, ratio = update("honest", alpha, req)
        rows[name] = {**ev(theta_u), "alpha": alpha, "max_move_ratio": ratio}
    for att in ATTACKS:
        for name, req in requests.items():
            cand = []
            for a in ATTACK_ALPHAS:
                theta_u, ratio = update(att, a, req)
                if ratio <= rho:
                    cand.append({**ev(theta_u), "alpha": a, "max_move_ratio": ratio})
            if cand:
                rows[f"{att}/{name}"] = max(cand, key=lambda r: r["forget_acc"])
    return {"seed": seed, "alpha": alpha, "masked": int(mb.sum()),
            "protected": {k: int(v.num_protected) for k, v in requests.items() if not isinstance(v, str)},
            "rows": rows}


def summarize_seed(res: dict) -> dict:
    from zkapex_jax.studies.metrics import unlearning_outcome

    rows = res["rows"]
    return {name: {"personal_acc": ev["personal_acc"], "forget_acc": ev["forget_acc"], "other_acc": ev["other_acc"],
                   **unlearning_outcome(ev, rows["personalized"], rows["mask_only"], rows.get("retrain")),
                   "alpha": ev["alpha"], "max_move_ratio": ev["max_move_ratio"]}
            for name, ev in rows.items() if name not in ("personalized", "mask_only", "retrain")}


SAME = ("config", "curvature", "ranks", "rho", "pipeline", "alphas", "attack_alphas")


def tabulate(per_seed: list) -> tuple[dict, dict]:
    """(the per-request table, the baselines) over seeds: mean, std and the Student-t ci95."""
    from zkapex_jax.studies.report import mean_std

    names = [k for k in per_seed[0]["summary"] if all(k in p["summary"] for p in per_seed)]
    table = {k: {m: mean_std([p["summary"][k][m] for p in per_seed])
                 for m in ("personal_acc", "forget_acc", "other_acc", "recovery", "forget_progress", "max_move_ratio")}
             for k in names}
    base = {k: {m: mean_std([p["rows"][k][m] for p in per_seed]) for m in ("personal_acc", "forget_acc", "other_acc")}
            for k in ("personalized", "mask_only", "retrain") if all(k in p["rows"] for p in per_seed)}
    return table, base


def merge(paths, out_path) -> dict:
    """One record from per-seed records of the same study settings (seeds run as separate
    processes, possibly on different commits: each source's sha256 and environment is kept)."""
    from zkapex_jax.studies.report import load_seed_records, merged_from, run_environment, write_study_record

    recs, per_seed = load_seed_records(paths, "protected", SAME)
    table, base = tabulate(per_seed)
    out = {**{k: recs[0][k] for k in SAME}, "seeds": [s["seed"] for s in per_seed], "baselines": base, "table": table,
           "per_seed": per_seed, "seconds": round(sum(r["seconds"] for r in recs), 1), "environment": run_environment(),
           "merged_from": merged_from(paths, recs)}
    write_study_record(out_path, "protected", out)
    return out


def print_table(base: dict, table: dict) -> None:
    print(f"{'model':<30}{'personal':>9}{'forget':>8}{'other':>8}{'recovery':>10}{'forget_prog':>12}")
    for k, t in base.items():
        print(f"{k:<30}{t['personal_acc']['mean']:>9.3f}{t['forget_acc']['mean']:>8.3f}{t['other_acc']['mean']:>8.3f}")
    for k, t in table.items():
        f = lambda m: t[m]["mean"] if t[m]["mean"] is not None else float("nan")  # noqa: E731
        print(f"{k:<30}{f('personal_acc'):>9.3f}{f('forget_acc'):>8.3f}{f('other_acc'):>8.3f}{f('recovery'):>10.3f}"
              f"{f('forget_progress'):>12.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.protected_study", description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("demo", "tiny", "vit", "effnet"), default="effnet")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--curvature", default="layer_inputs", choices=CURVATURES)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4], help="protected weights per masked block")
    ap.add_argument("--dense-ranks", type=int, nargs="*", default=[],
                    help="also the (uncertified) dense forget-subspace variant of these ranks, for comparison")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-retrain", action="store_true", help="skip the retrain baseline (no forget progress)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="RECORD",
                    help="instead of running: merge per-seed records of the same settings into --out")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.merge:
        out = merge(args.merge, args.out)
        print_table(out["baselines"], out["table"])
        return 0
    from zkapex_jax.protocol._circuits import relation
    from zkapex_jax.studies.report import run_environment, write_study_record

    cfg = _pipeline(args.config)
    rho = relation.DEFAULT_DELTA_RATIO
    t0 = time.perf_counter()
    per_seed = []
    for s in args.seeds:
        res = run_seed(cfg, s, cache_dir=args.cache_dir, curvature=args.curvature, ranks=args.ranks, rho=rho,
                       retrain=not args.no_retrain, dense_ranks=args.dense_ranks)
        res["summary"] = summarize_seed(res)
        per_seed.append(res)
        print(json.dumps({"seed": s, **res["summary"]}, default=float), flush=True)
    table, base = tabulate(per_seed)
    out = {"config": args.config, "curvature": args.curvature, "ranks": args.ranks, "rho": rho,
           "pipeline": cfg.to_dict(), "seeds": args.seeds, "alphas": list(ALPHAS), "attack_alphas": list(ATTACK_ALPHAS),
           "baselines": base, "table": table, "per_seed": per_seed, "seconds": round(time.perf_counter() - t0, 1),
           "environment": run_environment()}
    write_study_record(args.out, "protected", out)
    print_table(base, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
