"""The selectivity figure of docs/RESULTS*.md: ZK-APEX's forget progress and recovery per seed
against the share of the forget set's curvature inside the client's Fisher subspace, for the
image studies' results files.

Usage::

    python -m experiments.plot_selectivity --out docs/figures/selectivity.png \\
        ViT=experiments/results/vit_fmnist_5seeds.json \\
        EfficientNet-Lite0=experiments/results/effnet_fmnist.json
"""

from __future__ import annotations

import argparse

from zkapex_jax.studies.report import load_results, plot_selectivity, selectivity_points


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.plot_selectivity", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", metavar="LABEL=RESULTS_JSON")
    ap.add_argument("--out", required=True, help="the PNG to write")
    args = ap.parse_args(argv)
    studies = {}
    for item in args.results:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            ap.error(f"expected LABEL=RESULTS_JSON, got {item!r}")
        studies[label] = load_results(path)
    plot_selectivity(args.out, studies)
    for label, res in studies.items():
        for p in selectivity_points(res):
            print(f"{label} seed {p['seed']}: " + ", ".join(
                f"{k} {'n/a' if p[k] is None else format(p[k], '.3f')}"
                for k in ("subspace_overlap", "forget_progress", "recovery")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
