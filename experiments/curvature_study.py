"""Which curvature makes the compensation work? Every curvature family of
``zkapex_jax.core.curvature`` on one image study's models, the damping chosen on the client's
validation images, recovery and forget progress reported on the test set.

Per seed (global and retrain models cached like the image study's, same keys): personalize,
publish the mask, then for each curvature family and each relative damping α the Group-OBS
update; α is picked by the personal validation accuracy (never the test split); the row reports
test accuracies, recovery = (compensated − mask-only)/(personalized − mask-only), forget
progress = (personalized − model)/(personalized − retrain) on forget accuracy, a collapse flag
(other-class or retain accuracy below half the personalized model's), and the curvature's
selectivity measures: trace over the masked blocks, mean effective rank tr(C)²/tr(C²) of the
masked blocks (undamped), the client's training loss at θp, and the largest move of a weight
relative to its block's removed weights (the compensation bound ρ of docs/PROOFS.md).

With ``--bias-correction`` every layer-input family (``layer_inputs``, ``layer_covariance``) gets
a second row ``<kind>+bias``: the same updates with each masked kernel's bias shifted by
``δb = −μᵀδW`` (``zkapex_jax.protocol.client.bias_corrected``; μ the mean input on the client's
training images), α chosen again on validation. Float only: relation v7 binds biases unchanged.

With ``--sequential`` a row ``layer_inputs@seq``: the masked layers unlearned one after the other in
network order, each with the layer-input curvature of *its* inputs at the model whose earlier layers
are already unlearned (the OBC / SparseGPT order), α chosen on validation. Float only and **not
certifiable**: that curvature depends on the mask (through the earlier layers' updates), so it
cannot be committed before the request exists. It measures how much of the recovery the
commit-before-the-mask rule costs.

Command line::

    python -m experiments.curvature_study --config effnet --seeds 0 1 2 3 4 --cache-dir /tmp/zk_effnet_cache \\
        --out experiments/results/curvature_effnet.json
    python -m experiments.curvature_study --config effnet --seeds 0 --kinds layer_inputs layer_covariance \
        --bias-correction --cache-dir /tmp/zk_effnet_cache --out experiments/results/bias_effnet_s0.json
    python -m experiments.curvature_study --config effnet --seeds 0 --kinds layer_inputs --block-size 576 \
        --cache-dir /tmp/zk_effnet_cache --out experiments/results/frontier_effnet_b576_s0.json
    python -m experiments.curvature_study --merge experiments/results/curvature_effnet_s0.json \
        experiments/results/curvature_effnet_s1-4.json --out experiments/results/curvature_effnet.json
    python -m experiments.curvature_study --config effnet --seeds 1 --kinds layer_inputs \
        --alphas 1e-6 1e-5 1e-4 1e-3 1e-2 --cache-dir /tmp/zk_effnet_cache --out experiments/results/alpha_effnet_s1.json
    python -m experiments.curvature_study --config effnet --seeds 0 --kinds layer_inputs --sequential \
        --alphas 1e-6 1e-4 1e-2 --cache-dir /tmp/zk_effnet_cache --out /tmp/seq/seq_effnet_s0.json
    python -m experiments.curvature_study --config tiny --seeds 0 --out /tmp/curv_tiny.json       # CI smoke
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from experiments.delta_bound import _pipeline

from zkapex_jax._errors import SingularBlockError
from zkapex_jax.core.curvature import CURVATURES as KINDS, LAYER_KINDS
from zkapex_jax.studies.metrics import max_move_ratio
ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _selectivity(fisher_undamped, mask_blocks) -> dict:
    c = np.asarray(fisher_undamped, dtype=np.float64)[np.asarray(mask_blocks).any(axis=1)]
    tr = np.trace(c, axis1=1, axis2=2)
    tr2 = np.einsum("bij,bji->b", c, c)
    eff = np.where(tr2 > 0, tr ** 2 / np.maximum(tr2, 1e-300), 0.0)
    return {"trace_masked": float(tr.sum()), "eff_rank_masked": float(eff.mean()) if eff.size else 0.0}


def residual_share(curvature, theta_b, mask_blocks) -> float:
    """What the quadratic model says Group-OBS cannot compensate: over the masked blocks,
    Σ_b min_{δ: δ_S = −θ_S} δᵀC_bδ / Σ_b θ_Sᵀ C_b[S,S] θ_S — the loss left after the optimal update
    over the loss of the mask alone (0: fully compensable; 1: the free weights cannot help). For the
    layer inputs C = XXᵀ it is the share of the masked layers' output change on the client's inputs
    that no change of the block's free weights can undo. ``curvature``: damped ``(nb, B, B)``."""
    c = np.asarray(curvature, dtype=np.float64)
    th = np.asarray(theta_b, dtype=np.float64)
    left = total = 0.0
    for b in np.flatnonzero(np.asarray(mask_blocks).any(axis=1)):
        s = np.flatnonzero(mask_blocks[b])
        ts = th[b, s]
        a_ss = np.linalg.inv(c[b])[np.ix_(s, s)]
        left += float(ts @ np.linalg.solve(a_ss, ts))
        total += float(ts @ c[b][np.ix_(s, s)] @ ts)
    return left / total if total > 0 else float("nan")


def _depth_key(path: str):
    """Network order of a kernel path: numeric parts compared as numbers ("blocks/5" < "blocks/10")."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in path.split("/"))


def sequential_layer_inputs(cfg, theta_p, data, layout, mask, alpha: float, *, seed: int):
    """θu with the masked kernels unlearned one at a time in network order (:func:`_depth_key`),
    each by Group-OBS with the layer-input curvature XXᵀ of its inputs at the current model (earlier
    kernels already unlearned), damped by ``alpha`` relative to each block's scale. Not certifiable:
    the curvature depends on the mask."""
    import dataclasses

    from zkapex_jax.core.blocks import BlockLayout
    from zkapex_jax.core.curvature import damp
    from zkapex_jax.studies import image as pl

    theta = theta_p
    kcfg = cfg.replace(curvature="layer_inputs", damping=0.0, damping_relative=False)
    for path in sorted(layout.paths, key=_depth_key):
        idx = np.asarray(mask.indices[path])
        if idx.size == 0:
            continue
        shape = layout.shapes[layout.paths.index(path)]
        one = BlockLayout((path,), (shape,), layout.block_size, layout.order)
        m1 = dataclasses.replace(mask, paths=(path,), shapes=(shape,), indices={path: idx},
                                 protect={path: mask.protect[path]} if path in mask.protect else {})
        raw = pl.client_fisher(kcfg, theta, data, one, seed=seed)
        theta, _ = pl.unlearn(theta, np.asarray(damp(raw, alpha, relative=True), dtype=np.float64), m1, one)
    return theta


def run_seed(cfg, seed: int, *, cache_dir, kinds, alphas, retrain: bool, bias_correction: bool = False,
             augment: int = 0, sequential: bool = False) -> dict:
    import jax

    from zkapex_jax.protocol.api import statement_blocks
    from zkapex_jax.core.curvature import damp, input_means
    from zkapex_jax.protocol import client
    from zkapex_jax.studies import image as pl
    from zkapex_jax.studies.vit_fmnist import _global_model

    k_glob, k_ret, k_pers, k_rpers, *_ = jax.random.split(jax.random.PRNGKey(seed), 7)  # the image study's keys
    data = pl.load_data(cfg, seed)
    theta_g, _, _ = _global_model(cfg, data, seed, k_glob, exclude_forget=False, cache_dir=cache_dir)
    theta_p, _ = pl.personalize(cfg, theta_g, data, key=k_pers)
    rows = {}
    if retrain:
        theta_rg, _, _ = _global_model(cfg, data, seed, k_ret, exclude_forget=True, cache_dir=cache_dir)
        rows["retrain"] = pl.evaluate(cfg, pl.personalize(cfg, theta_rg, data, key=k_rpers)[0], data, mia=False)
    mask = pl.provider_mask(cfg, theta_g, data, seed=seed)
    layout = pl.block_layout(cfg, theta_p)
    mb = np.asarray(mask.to_blocks(layout), dtype=bool)
    fam = pl.model_fns(cfg)
    pt = data.personal_train
    train_loss = float(np.mean(np.asarray(jax.vmap(lambda x, y: fam.loss(theta_p, (x, y)))(pt.x, pt.y))))
    rows["personalized"] = pl.evaluate(cfg, theta_p, data, mia=False)
    rows["mask_only"] = pl.evaluate(cfg, pl.mask_only(theta_p, mask), data, mia=False)
    tp = statement_blocks(theta_p, layout)
    out = {"seed": seed, "client_train_loss": train_loss, "kinds": {}}
    means = None
    if bias_correction and any(k in LAYER_KINDS for k in kinds):
        means = input_means(client.layer_input_statistics(fam, theta_p, (pt.x, pt.y), layout.paths,
                                                          chunk_size=cfg.fisher_chunk))

    def record(row, raw, update, t0, variants=None, quadratic=True, **extra):
        """Row ``row`` (and ``variants``: its ``+bias`` twin): the update ``update(α)`` for every α,
        the one with the best personal validation accuracy kept; ``raw`` (the undamped curvature
        at θp) gives the selectivity measures, and with ``quadratic`` (the update is Group-OBS for
        that curvature) the residual share."""
        variants = variants or [row]
        sel = _selectivity(raw, mb)
        best = dict.fromkeys(variants)
        singular = []
        for a in alphas:
            try:
                theta_u = update(a)
            except SingularBlockError:  # α too small for this family in float32: not a candidate
                singular.append(a)
                continue
            for name in variants:
                model = theta_u if name == row else client.bias_corrected(theta_p, theta_u, means, layout.paths)
                ev = pl.evaluate(cfg, model, data, mia=False)
                val = 0.5 * (ev["personal_val_orig"] + ev["personal_val_shift"])
                if best[name] is None or val > best[name][0]:
                    best[name] = (val, a, ev, theta_u)
        for name in variants:
            if best[name] is None:
                raise SingularBlockError(f"{name}: every damping α in {alphas} leaves a singular block")
            val, a, ev, theta_u = best[name]
            ratio = max_move_ratio(tp, statement_blocks(theta_u, layout), mb)
            share = {"residual_share": residual_share(damp(raw, a, relative=True), tp, mb)} if quadratic else {}
            ok = [x for x in alphas if x not in singular]
            out["kinds"][name] = {"alpha": a, "alpha_at_edge": a in (min(ok), max(ok)), "alphas_singular": singular,
                                  "val_personal": val, "eval": ev, **sel, "max_move_ratio": ratio, **share, **extra,
                                  "seconds": round(time.perf_counter() - t0, 1)}

    def curvature(kind, aug=0):
        return pl.client_fisher(cfg.replace(curvature=kind, damping=0.0, damping_relative=False), theta_p, data,
                                layout, seed=seed, augment=aug)

    layer_inputs_at_theta_p = None  # kept for the sequential row's selectivity (not recomputed)
    runs = [(kind, 0) for kind in kinds] + ([(kind, augment) for kind in kinds] if augment else [])
    for kind, aug in runs:
        t0 = time.perf_counter()
        raw = curvature(kind, aug)
        if sequential and (kind, aug) == ("layer_inputs", 0):
            layer_inputs_at_theta_p = raw
        # the row; with aug, the same family on augmented copies of the client's images (issue 16)
        row = f"{kind}@aug{aug}" if aug else kind
        record(row, raw, lambda a: pl.unlearn(theta_p, np.asarray(damp(raw, a, relative=True), dtype=np.float64),
                                              mask, layout)[0], t0,
               variants=[row] + ([f"{row}+bias"] if means is not None and kind in LAYER_KINDS else []))
    if sequential:  # selectivity of the curvature at θp (the sequential ones differ per layer)
        t0 = time.perf_counter()
        raw = layer_inputs_at_theta_p
        record("layer_inputs@seq", curvature("layer_inputs") if raw is None else raw,
               lambda a: sequential_layer_inputs(cfg, theta_p, data, layout, mask, a, seed=seed), t0,
               quadratic=False, certifiable=False)
    out["rows"] = rows
    return out


def summarize_seed(res: dict) -> dict:
    from zkapex_jax.studies.metrics import unlearning_outcome

    rows = res["rows"]
    out = {}
    for kind, r in res["kinds"].items():
        ev = r["eval"]
        out[kind] = {"personal_acc": ev["personal_acc"], "forget_acc": ev["forget_acc"], "other_acc": ev["other_acc"],
                     **unlearning_outcome(ev, rows["personalized"], rows["mask_only"], rows.get("retrain")),
                     "alpha": r["alpha"], "alpha_at_edge": r.get("alpha_at_edge"), "trace_masked": r["trace_masked"],
                     "eff_rank_masked": r["eff_rank_masked"], "max_move_ratio": r["max_move_ratio"],
                     "residual_share": r.get("residual_share", float("nan"))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.curvature_study", description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("demo", "tiny", "vit", "effnet"), default="effnet")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-retrain", action="store_true", help="skip the retrain baseline (no forget progress)")
    ap.add_argument("--augment", type=int, default=0,
                    help="also every family on this many augmented copies of the client's images (rows KIND@augK)")
    ap.add_argument("--block-size", type=int, default=None,
                    help="weights per block B (default: the config's); the block-size frontier runs B = 64, 144, 576")
    ap.add_argument("--bias-correction", action="store_true",
                    help="add a '<kind>+bias' row for each layer-input family (δb = −μᵀδW; float only)")
    ap.add_argument("--sequential", action="store_true",
                    help="add a 'layer_inputs@seq' row: the masked layers unlearned in network order, each with the "
                         "layer-input curvature at the partly unlearned model (float only, not certifiable)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="RECORD_JSON",
                    help="merge per-seed records of the same settings into --out (no run)")
    ap.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS),
                    help="relative dampings α to choose from on validation (default %(default)s); a choice at the "
                         "grid's edge is flagged (alpha_at_edge): extend the grid")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from zkapex_jax.studies.report import merge_command, run_environment, write_study_record

    if args.merge:
        return merge_command(ap, merge, args.merge, args.out, print_table)
    cfg = _pipeline(args.config)
    if args.block_size is not None:
        if args.block_size < 2:
            ap.error(f"--block-size must be at least 2, got {args.block_size}")
        cfg = cfg.replace(block_size=args.block_size)
    if args.augment < 0:
        ap.error(f"--augment must be 0 or positive, got {args.augment}")
    if any(not (a > 0) for a in args.alphas):
        ap.error(f"--alphas must be positive, got {args.alphas}")
    alphas = tuple(sorted(set(args.alphas)))
    t0 = time.perf_counter()
    per_seed = []
    for s in args.seeds:
        res = run_seed(cfg, s, cache_dir=args.cache_dir, kinds=args.kinds, alphas=alphas, retrain=not args.no_retrain,
                       bias_correction=args.bias_correction, augment=args.augment, sequential=args.sequential)
        res["summary"] = summarize_seed(res)
        per_seed.append(res)
        print(json.dumps({"seed": s, "client_train_loss": res["client_train_loss"], **res["summary"]}), flush=True)
    names = list(per_seed[0]["summary"])
    out = {"config": args.config, "pipeline": cfg.to_dict(), "seeds": args.seeds, "alphas_tried": list(alphas),
           "bias_correction": bool(args.bias_correction), "augment": args.augment, "sequential": args.sequential,
           "table": tabulate(per_seed, names), "per_seed": per_seed, "seconds": round(time.perf_counter() - t0, 1),
           "environment": run_environment()}
    write_study_record(args.out, "curvature", out)
    print_table(out["table"])
    return 0


def tabulate(per_seed, names) -> dict:
    """Mean, std and t-interval over seeds of every row ``names``, with its collapse count and α per seed."""
    from zkapex_jax.studies.report import mean_std

    table = {k: {m: mean_std([p["summary"][k].get(m, float("nan")) for p in per_seed])  # older records lack some
                 for m in ("personal_acc", "forget_acc", "other_acc", "recovery", "forget_progress", "trace_masked",
                           "eff_rank_masked", "max_move_ratio", "residual_share")} for k in names}
    for k in names:
        table[k]["collapsed_seeds"] = sum(p["summary"][k]["collapsed"] for p in per_seed)
        table[k]["alphas"] = [p["summary"][k]["alpha"] for p in per_seed]
    return table


SAME = ("config", "pipeline", "alphas_tried")


def merge(paths, out_path) -> dict:
    """One record from curvature-study records of the same settings (seeds run as separate
    processes), over the rows every record has; each source's sha256 and environment is kept."""
    from zkapex_jax._errors import ArtifactError
    from zkapex_jax.studies.report import load_seed_records, merged_from, run_environment, write_study_record

    recs, per_seed = load_seed_records(paths, "curvature", SAME)
    names = [k for k in per_seed[0]["summary"] if all(k in s["summary"] for s in per_seed)]
    if not names:
        raise ArtifactError(f"no curvature row common to {list(paths)}")
    out = {**{k: recs[0][k] for k in SAME}, "seeds": [s["seed"] for s in per_seed], "table": tabulate(per_seed, names),
           "per_seed": per_seed, "seconds": round(sum(r["seconds"] for r in recs), 1), "environment": run_environment(),
           "merged_from": merged_from(paths, recs)}
    write_study_record(out_path, "curvature", out)
    return out


def print_table(table) -> None:
    print(f"{'curvature':<22}{'recovery':>10}{'forget_prog':>12}{'personal':>10}{'forget':>8}{'other':>8}{'collapsed':>10}")
    for k, t in table.items():
        f = lambda m: t[m]["mean"] if t[m]["mean"] is not None else float("nan")  # noqa: E731
        print(f"{k:<22}{f('recovery'):>10.3f}{f('forget_progress'):>12.3f}{f('personal_acc'):>10.3f}"
              f"{f('forget_acc'):>8.3f}{f('other_acc'):>8.3f}{t['collapsed_seeds']:>10}")


if __name__ == "__main__":
    raise SystemExit(main())
