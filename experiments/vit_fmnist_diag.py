"""Study 1 diagnosis (seed 0): personalization lr x mask-score convention x mask fraction.

Measures, on the cached seed-0 global model of the ``default`` config, for each personalization
lr: the personalized model's accuracies, then mask-only accuracies (mask scored on the GLOBAL
model, applied to θp) at 4 / 10 / 20 % of fc1 for several score conventions:

- ``as_stated``   PAPER.md's second-order neg: ``(g_f w - h F_f w²) / (r (g_r w - h F_r w²) + 1e-12)``
                  (``zkapex_jax.core.mask.score_second_order_neg``, what the study uses);
- ``loglik_grad`` the same with g read as the log-likelihood gradient (g -> -g);
- ``abs_dL_ratio`` ``|ΔL_f| / (r |ΔL_r| + 1e-12)`` with the second-order Taylor change of the loss
                  when a weight is zeroed, ``ΔL = -g w + ½ F w²``;
- ``dL_forget``   ``ΔL_f`` alone (no retain term);
- ``salun``       ``|g_f|``;  ``ssd``  ``F_f / F_r``.

Also: ZK-APEX (Group-OBS) with the ``as_stated`` and ``dL_forget`` masks; ``FW`` = share of forget-class test
images predicted as ANY forget class (footwear kept as a group); overlap of the top-4 % masks
with ``as_stated``'s, and the size of the gradient term relative to the curvature term. Prints a log; writes nothing else::

    python -m experiments.vit_fmnist_diag --cache-dir /tmp/zk_vit_cache --lrs 1e-4 3e-4 8e-4
    python -m experiments.vit_fmnist_diag --cache-dir /tmp/zk_vit_cache --lrs 1e-4 --global-train 20000 --global-epochs 10
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from zkapex_jax.studies import vit_fmnist as V
from experiments.configs import vit_fmnist as C
from zkapex_jax.studies import image as P
from zkapex_jax.core.fisher import grad_moments
from zkapex_jax.core.mask import Mask
from zkapex_jax.core.obs import factorize
from zkapex_jax.core.params import flatten_params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.vit_fmnist_diag")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 8e-4])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.04, 0.1, 0.2, 0.7])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--global-train", type=int, default=None, help="override max_global_train (stronger global model)")
    ap.add_argument("--global-epochs", type=int, default=None, help="override global_epochs")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)

    cfg, seed = C.DEFAULT.pipeline, args.seed
    if args.global_train is not None:
        cfg = cfg.replace(max_global_train=args.global_train)
    if args.global_epochs is not None:
        cfg = cfg.replace(global_epochs=args.global_epochs)
    log(f"global model: {cfg.max_global_train} images x {cfg.global_epochs} epochs")
    k_glob, _k_ret, k_pers, *_ = jax.random.split(jax.random.PRNGKey(seed), 7)
    data = P.load_data(cfg, seed)
    theta_g, secs, cached = V._global_model(cfg, data, seed, k_glob, exclude_forget=False, cache_dir=args.cache_dir)
    log(f"global model ready (cached {cached}, trained in {secs:.0f}s)")

    fw_classes = np.asarray(cfg.forget_classes)

    def ev(p):
        r = P.evaluate(cfg, p, data, mia=False, seed=seed)
        pred = P.predict_logits(cfg, p, data.forget_test.x).argmax(-1)
        r["forget_as_footwear"] = float(np.mean(np.isin(pred, fw_classes)))  # any forget class predicted
        return r

    def fmt(r):
        return (f"P={r['personal_acc']:.3f} (orig {r['personal_acc_orig']:.3f} shift {r['personal_acc_shift']:.3f}) "
                f"F={r['forget_acc']:.3f} O={r['other_acc']:.3f} FW={r['forget_as_footwear']:.3f}")

    log(f"global: {fmt(ev(theta_g))}")
    fns = P.model_fns(cfg.model)
    forget = P._subsample(data.forget_train, cfg.n_mask_forget, seed)
    retain = P._subsample(data.retain_train, cfg.n_mask_retain, seed + 1)
    gf, sf = grad_moments(fns.loss, theta_g, (forget.x, forget.y), wrt=cfg.mask_pattern, chunk_size=cfg.fisher_chunk)
    gr, sr = grad_moments(fns.loss, theta_g, (retain.x, retain.y), wrt=cfg.mask_pattern, chunk_size=cfg.fisher_chunk)
    W = flatten_params(theta_g)
    h, r, d = cfg.mask_h, cfg.mask_r, cfg.mask_damping

    def score(fn):
        return {p: fn(np.asarray(W[p], np.float64), np.asarray(gf[p], np.float64), np.asarray(sf[p], np.float64) + d,
                      np.asarray(gr[p], np.float64), np.asarray(sr[p], np.float64) + d) for p in gf}

    scores = {
        "as_stated": score(lambda w, g, F, g2, F2: (g * w - h * F * w * w) / (r * (g2 * w - h * F2 * w * w) + 1e-12)),
        "loglik_grad": score(lambda w, g, F, g2, F2: (-g * w - h * F * w * w) / (r * (-g2 * w - h * F2 * w * w) + 1e-12)),
        "abs_dL_ratio": score(lambda w, g, F, g2, F2: np.abs(-g * w + 0.5 * F * w * w)
                              / (r * np.abs(-g2 * w + 0.5 * F2 * w * w) + 1e-12)),
        "dL_forget": score(lambda w, g, F, g2, F2: -g * w + 0.5 * F * w * w),
        "salun": score(lambda w, g, F, g2, F2: np.abs(g)),
        "ssd": score(lambda w, g, F, g2, F2: F / (F2 + 1e-12)),
    }
    gw = np.concatenate([np.abs(np.asarray(gf[p]) * np.asarray(W[p])).ravel() for p in gf])
    fw = np.concatenate([(h * (np.asarray(sf[p]) + d) * np.asarray(W[p]) ** 2).ravel() for p in gf])
    log(f"forget: median |g w| = {np.median(gw):.3e}, median h F w^2 = {np.median(fw):.3e}, "
        f"share of weights with |g w| > h F w^2: {np.mean(gw > fw):.3f}")
    masks4 = {k: Mask.from_scores(v, 0.04, scope="global", method=k) for k, v in scores.items()}
    ref = {(p, int(i)) for p, ix in masks4["as_stated"].indices.items() for i in np.asarray(ix)}
    for k, m in masks4.items():
        got = {(p, int(i)) for p, ix in m.indices.items() for i in np.asarray(ix)}
        log(f"top-4% overlap with as_stated: {k:13s} {len(got & ref) / len(ref):.3f}")
    for lr in args.lrs:
        theta_p, _ = P.personalize(cfg.replace(pers_lr=lr), theta_g, data, key=k_pers)
        log(f"lr {lr:g} personalized: {fmt(ev(theta_p))}")
        for name, sc in scores.items():
            cells = []
            for f in args.fractions:
                rr = ev(P.mask_only(theta_p, Mask.from_scores(sc, f, scope="global", method=name)))
                cells.append(f"{f:g}: P={rr['personal_acc']:.3f} F={rr['forget_acc']:.3f} O={rr['other_acc']:.3f} "
                             f"FW={rr['forget_as_footwear']:.3f}")
            log(f"  lr {lr:g} mask-only {name:13s} " + " | ".join(cells))
        # ZK-APEX (Group-OBS with the client Fisher, the study's B / damping / m) with the as-stated mask
        layout = P.block_layout(cfg, theta_p)
        factor = factorize(P.client_fisher(cfg, theta_p, data, layout, seed=seed))
        for name in ("as_stated", "dL_forget"):
            cells = []
            for f in args.fractions:
                m = Mask.from_scores(scores[name], f, scope="global", method=name)
                rr = ev(P.unlearn(theta_p, factor, m, layout)[0])
                cells.append(f"{f:g}: P={rr['personal_acc']:.3f} F={rr['forget_acc']:.3f} O={rr['other_acc']:.3f} "
                             f"FW={rr['forget_as_footwear']:.3f}")
            log(f"  lr {lr:g} zkapex    {name:13s} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
