"""The block-size frontier a provider chooses on: for each block size B, the proving cost per
certified parameter (``benchmarks/bench_proof.py`` slices, relation as built) next to recovery
and forget progress of the same B on an image study (``experiments/curvature_study.py
--block-size B``). One plot and one JSON table.

Command line (the inputs first, then the frontier)::

    python benchmarks/bench_proof.py --blocks 16 --block-size 64 --logrows 15 --tag frontier_b64_
    python benchmarks/bench_proof.py --blocks 4 --block-size 144 --logrows 17 --tag frontier_b144_
    python benchmarks/bench_proof.py --blocks 1 --block-size 576 --logrows 19 --jobs 1 --tag frontier_b576_
    python -m experiments.curvature_study --config effnet --seeds 0 --kinds layer_inputs --block-size 144 \\
        --cache-dir /tmp/zk_effnet_cache --out experiments/results/frontier_effnet_b144_s0.json
    python -m experiments.block_size_frontier --out docs/figures/block_size_frontier.png \\
        --table experiments/results/block_size_frontier.json \\
        64=benchmarks/results/proof_slice_frontier_b64_….json:experiments/results/curvature_effnet_s0.json \\
        144=…  576=…

Each positional argument is ``B=PROOF_SLICE_JSON[:STUDY_JSON]`` (the study optional: cost only).
"""

from __future__ import annotations

import argparse
import json

from zkapex_jax._errors import ArtifactError
from zkapex_jax.studies.report import frontier_point, load_study_record, plot_frontier, write_study_record


def _load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.block_size_frontier", description=__doc__.split("\n\n")[0])
    ap.add_argument("points", nargs="+", metavar="B=PROOF_SLICE[:STUDY]")
    ap.add_argument("--kind", default="layer_inputs", help="the study row to read (default layer_inputs)")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--table", required=True, help="the JSON table to write")
    args = ap.parse_args(argv)
    points = []
    for item in args.points:
        b, sep, rest = item.partition("=")
        if not sep or not b.isdigit() or not rest:
            ap.error(f"expected B=PROOF_SLICE_JSON[:STUDY_JSON], got {item!r}")
        bench, _, study = rest.partition(":")
        try:
            p = frontier_point(_load_json(bench), load_study_record(study) if study else None, kind=args.kind)
        except (OSError, ValueError, KeyError, ArtifactError) as e:
            ap.error(f"{item}: {e}")
        if p["block_size"] != int(b):
            ap.error(f"{item}: the proof slice is for B = {p['block_size']}")
        points.append(p)
    plot_frontier(args.out, points)
    write_study_record(args.table, "block_size_frontier", {"kind": args.kind, "points": points,
                                                           "inputs": list(args.points)})
    hdr = f"{'B':>5}{'CPU-s/block':>13}{'CPU-ms/param':>14}{'peak MB':>9}{'recovery':>10}{'forget_prog':>12}"
    print(hdr)
    for p in sorted(points, key=lambda q: q["block_size"]):
        r = p.get("recovery")
        f = p.get("forget_progress")
        print(f"{p['block_size']:>5}{p['prove_cpu_s_per_block']:>13.2f}{p['prove_cpu_ms_per_param']:>14.3f}"
              f"{p['peak_rss_mb']:>9.0f}{'' if r is None else format(r, '.3f'):>10}{'' if f is None else format(f, '.3f'):>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
