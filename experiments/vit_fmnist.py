"""Study 1 — personalized unlearning of a ViT on Fashion-MNIST (ZK-APEX's image study, scaled).

Command line::

    python -m experiments.vit_fmnist --config default --seeds 0 1 2 \\
        --out experiments/results/vit_fmnist.json --figures docs/figures [--sweeps all|none|fraction,block,damping,rel_damping,nfisher,pattern]
    python -m experiments.vit_fmnist --config tiny --out /tmp/vit_tiny.json --sweeps none   # CI smoke

What one seed runs, the methods and the results' shape: :mod:`zkapex_jax.studies.vit_fmnist`.
"""

from __future__ import annotations

import argparse
import logging

from experiments.configs import vit_fmnist as configs
from zkapex_jax.studies import report
from zkapex_jax.studies import vit_fmnist as study_mod
from zkapex_jax.studies.vit_fmnist import SWEEPS

_LOG = logging.getLogger("zkapex_jax.studies")


def main(argv=None, *, configs=configs, prog="python -m experiments.vit_fmnist", description=None) -> int:
    """The command line of the image studies (this one and ``experiments/effnet_fmnist.py``)."""
    ap = argparse.ArgumentParser(prog=prog, description=description or __doc__.split("\n")[0])
    ap.add_argument("--config", default="default", choices=sorted(configs.CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's seeds")
    ap.add_argument("--out", default=f"experiments/results/{configs.DEFAULT.study}.json", help="results JSON to write")
    ap.add_argument("--figures", default=None, help="directory for the PNG plots (default: none)")
    ap.add_argument("--sweeps", default="all", help="all, none, or a comma list of " + ",".join(SWEEPS))
    ap.add_argument("--sweep-seeds", type=int, nargs="+", default=None, help="seeds to sweep (default: config's)")
    ap.add_argument("--cache-dir", default=None, help="reuse/save trained global models here (orbax checkpoints)")
    ap.add_argument("--rederive", default=None, metavar="RESULTS_JSON",
                    help="recompute derived metrics of an existing results file (no training), write --out")
    ap.add_argument("--ablation", default=None, metavar="RESULTS_JSON",
                    help="with --rederive: attach this run's sweeps as 'ablations'")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    study = configs.get(args.config)
    if args.rederive:
        res = study_mod.rederive(report.load_results(args.rederive), study,
                                 ablation=report.load_results(args.ablation) if args.ablation else None)
        report.write_results(args.out, res)
        _LOG.info("wrote %s (derived metrics recomputed from %s)", args.out, args.rederive)
        if args.figures:
            for p in study_mod.make_figures(res, args.figures):
                _LOG.info("wrote %s", p)
        return 0
    if args.sweep_seeds is not None:
        study = study.replace(sweep_seeds=tuple(args.sweep_seeds))
    sweeps = () if args.sweeps == "none" else SWEEPS if args.sweeps == "all" else tuple(args.sweeps.split(","))
    bad = [s for s in sweeps if s not in SWEEPS]
    if bad:
        ap.error(f"unknown sweep(s) {bad}; choose from {SWEEPS}")

    def partial(res):
        report.write_results(args.out + ".partial", res)
        _LOG.info("wrote partial results to %s.partial", args.out)

    results = study_mod.run_study(study, seeds=args.seeds, sweeps=sweeps, cache_dir=args.cache_dir, on_seed=partial)
    report.write_results(args.out, results)
    _LOG.info("wrote %s (wall time %.0fs)", args.out, results["wall_time_s"])
    if args.figures:
        for p in study_mod.make_figures(results, args.figures):
            _LOG.info("wrote %s", p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
