"""Forget-aware ZK-APEX vs plain ZK-APEX on the image study (beyond the paper).

Command line::

    python -m experiments.forget_aware --config default --out experiments/results/forget_aware.json \\
        --figures docs/figures --cache-dir /tmp/zk_vit_cache
    python -m experiments.forget_aware --config effnet --out experiments/results/forget_aware_effnet.json \
        --figures docs/figures --cache-dir /tmp/zk_effnet_cache      # the pretrained EfficientNet
    python -m experiments.forget_aware --config effnet --replot experiments/results/forget_aware_effnet.json \
        --baselines experiments/results/effnet_fmnist.json --figures docs/figures   # redraw, with the baselines
    python -m experiments.forget_aware --config tiny --out /tmp/fa_tiny.json          # CI smoke
"""

from __future__ import annotations

import argparse
import logging
import os

from experiments.configs import forget_aware as configs
from zkapex_jax.studies import forget_aware as study
from zkapex_jax.studies import report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.forget_aware", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="default", choices=sorted(configs.CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's seeds")
    ap.add_argument("--out", default="experiments/results/forget_aware.json", help="results JSON to write")
    ap.add_argument("--figures", default=None, help="directory for forget_aware_tradeoff[_<config>].png")
    ap.add_argument("--cache-dir", default=None, help="reuse/save trained global models here")
    ap.add_argument("--baselines", default=None, metavar="RESULTS_JSON",
                    help="the image study's results of the same pipeline: its baselines become points of the plot")
    ap.add_argument("--replot", default=None, metavar="RESULTS_JSON",
                    help="only redraw the figure of an existing results file (with --figures)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    base = report.load_results(args.baselines) if args.baselines else None
    if args.replot:
        res = report.load_results(args.replot)
    else:
        res = report.write_results(args.out, study.run_study(configs.get(args.config), seeds=args.seeds,
                                                             cache_dir=args.cache_dir))
        print(study.tables_markdown(res))
    if args.figures:
        os.makedirs(args.figures, exist_ok=True)
        name = "forget_aware_tradeoff.png" if args.config == "default" else f"forget_aware_tradeoff_{args.config}.png"
        study.plot_tradeoff(res, os.path.join(args.figures, name), baselines=base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
