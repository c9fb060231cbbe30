"""Study 2 — the code language model (the paper's OPT-125M / CodeParrot study, on local code).

Usage::

    python -m experiments.opt_code --config default --seeds 0 1 2 \\
        --out experiments/results/opt_code.json --figures docs/figures
    python -m experiments.opt_code --config tiny --seeds 0 --out /tmp/opt_code_tiny.json   # CI smoke
    python -m experiments.opt_code --config opt125m --seeds 0 1 2 --out ...                # GPU run
    python -m experiments.opt_code --config layer_inputs --seeds 0 1 2 3 4 --no-sweeps \\
        --cache-dir /tmp/zk_code_cache --out /tmp/opt_code_layer_inputs.json

What one seed runs, the methods and the results' shape: :mod:`zkapex_jax.studies.opt_code`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from experiments.configs.opt_code import get_config  # noqa: E402
from zkapex_jax.studies import opt_code as study  # noqa: E402
from zkapex_jax.studies.report import load_results  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.opt_code", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="default", help="default | tiny | opt125m")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="experiments/results/opt_code.json")
    ap.add_argument("--figures", default=None, help="directory for opt_*.png (e.g. docs/figures)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                    help="override config fields, e.g. --set global_steps=400 fisher_block=64")
    ap.add_argument("--report", default=None, metavar="RESULTS_JSON",
                    help="print markdown tables of an existing results file and exit")
    ap.add_argument("--cache-dir", default=None,
                    help="keep the provider's trained models here and reuse them (keyed by its settings and data)")
    ap.add_argument("--no-sweeps", action="store_true", help="skip the sweeps (normally on the first seed)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="RESULTS_JSON",
                    help="merge results files of the same config run for different seeds into --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if args.merge:
        study.merge_results(args.merge, args.out, args.figures)
        return 0
    if args.report:
        res = load_results(args.report)
        print(study.report_tables(res))
        if args.figures:
            study.make_figures(res, args.figures)
        return 0
    cfg = get_config(args.config)
    kw = {}
    for item in args.set:
        k, _, v = item.partition("=")
        if not hasattr(cfg, k):
            ap.error(f"unknown config field {k!r}")
        val = json.loads(v)
        kw[k] = tuple(val) if isinstance(getattr(cfg, k), tuple) else val
    cfg = cfg.replace(**kw)
    study.run_study(cfg, args.seeds, args.out, args.figures, sweeps=not args.no_sweeps, cache_dir=args.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
