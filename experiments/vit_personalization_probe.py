"""Does the client's personalization learn the sketch domain on a from-scratch ViT, and does a
wider ViT help? One seed, the image study's default pipeline, a grid of widths × personalization
learning rates × layer decays; writes one JSON row per setting (accuracies of the personal
classes in both domains, the forget and the other classes).

Usage::

    python -m experiments.vit_personalization_probe --widths 64 128 192 --lrs 1e-4 8e-4 3e-3 \\
        --out experiments/results/vit_personalization_probe.json --cache-dir /tmp/zk_vit_cache

The global models are the study's (``--cache-dir`` reuses them: width 64 is the default study's
model, so its cache is the study's); each personalization takes ~10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import time

import jax

from experiments.configs.vit_fmnist import DEFAULT
from zkapex_jax.studies import image as P
from zkapex_jax.studies.report import write_study_record
from zkapex_jax.studies.vit_fmnist import _global_model

KEEP = ("personal_acc_orig", "personal_acc_shift", "forget_acc", "other_acc", "global_acc")


def pipeline(width: int):
    """The default pipeline at ``width`` (MLP 4× wide, 4 heads; the Fisher block = one input row)."""
    if width == 64:
        return DEFAULT.pipeline
    ov = (("hidden_size", width), ("intermediate_size", 4 * width), ("num_attention_heads", 4))
    return DEFAULT.pipeline.replace(model_overrides=ov, block_size=width)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.vit_personalization_probe",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 192])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 8e-4, 3e-3])
    ap.add_argument("--layer-decays", type=float, nargs="+", default=[0.8, 1.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache-dir", default=None, help="reuse/save the global models here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    rows = []
    k_glob, _, k_pers = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    for width in args.widths:
        pc = pipeline(width)
        data = P.load_data(pc, args.seed)
        theta_g, secs, cached = _global_model(pc, data, args.seed, k_glob, exclude_forget=False,
                                              cache_dir=args.cache_dir)

        def ev(params):
            return {k: v for k, v in P.evaluate(pc, params, data, mia=False).items() if k in KEEP}

        g = ev(theta_g)
        rows.append({"width": width, "setting": "global", "global_train_s": secs, "cached": cached, **g})
        print(f"width {width}: global sketch {g['personal_acc_shift']:.3f} (chance 0.25)", flush=True)
        for lr in args.lrs:
            for ld in args.layer_decays:
                t = time.perf_counter()
                theta_p, _ = P.personalize(pc.replace(pers_lr=lr, layer_decay=ld), theta_g, data, key=k_pers)
                r = ev(theta_p)
                rows.append({"width": width, "setting": "personalized", "pers_lr": lr, "layer_decay": ld,
                             "personalize_s": time.perf_counter() - t, **r})
                print(f"width {width} lr {lr:g} ld {ld:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()),
                      flush=True)
    write_study_record(args.out, "vit_personalization_probe", {"seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
