"""Column wrapping measured side by side: the same B-weight blocks (same seed: same θp, Fisher and
mask) proven under several (logrows, wrap) commitments, one ``bench_proof.py`` process per
configuration, run back to back in this one invocation. Per configuration: CPU-s per block slot
of a proof circuit (a K-block circuit costs the same filled or padded), peak RSS of the prover,
proof bytes per block, key size; and each ratio to the first configuration (the unwrapped one).

    python benchmarks/bench_wrap.py --block-size 576 --blocks 1 --configs 19:1 15:8 --max-chunk-blocks 1 --tag b576_
    python benchmarks/bench_wrap.py --block-size 64 --blocks 8 --configs 15:1 13:4 --tag b64_

Results: benchmarks/results/wrap_<tag><time>.json (the per-configuration bench_proof files beside it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _config(s: str) -> tuple[int, int]:
    lr, sep, w = s.partition(":")
    if not (sep and lr.isdigit() and w.isdigit()):
        raise argparse.ArgumentTypeError(f"expected LOGROWS:WRAP, got {s!r}")
    return int(lr), int(w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--block-size", type=int, required=True)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--configs", type=_config, nargs="+", required=True, metavar="LOGROWS:WRAP")
    ap.add_argument("--fraction", type=float, default=0.04)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--max-chunk-blocks", type=int, default=None,
                    help="cap blocks per proof (e.g. 1 at B = 576: a 2-block logrows-19 proof needs > 23 GB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    from zkapex_jax.studies.report import frontier_point

    stamp = time.strftime("%Y%m%d_%H%M%S")
    rows = []
    for lr, wrap in a.configs:
        tag = f"wrap_{a.tag}L{lr}w{wrap}_"
        t0 = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_proof.py"), "--blocks", str(a.blocks), "--block-size",
               str(a.block_size), "--logrows", str(lr), "--wrap", str(wrap), "--jobs", str(a.jobs), "--seed", str(a.seed),
               "--fraction", str(a.fraction), "--tag", tag,
               *(["--max-chunk-blocks", str(a.max_chunk_blocks)] if a.max_chunk_blocks else []), "--out", a.out]
        print("$", " ".join(cmd[1:]), flush=True)
        proc = subprocess.run(cmd, cwd=ROOT)
        wall = time.perf_counter() - t0
        found = sorted(Path(a.out).glob(f"proof_slice_{tag}*.json"))
        if proc.returncode != 0 or not found:
            rows.append({"logrows": lr, "wrap": wrap, "failed": f"exit {proc.returncode}", "wall_s": round(wall, 1)})
            continue
        res = json.loads(found[-1].read_text())
        p = frontier_point(res)
        keys = res["variants"]["protect_0"].get("keys", {})
        rows.append({"logrows": lr, "wrap": wrap, "file": found[-1].name, "wall_s": round(wall, 1),
                     "cpu_s_per_block": round(p["prove_cpu_s_per_block"], 2), "peak_rss_mb": p["peak_rss_mb"],
                     "proof_bytes_per_block": round(p["proof_bytes_per_block"]), "all_verified": p["all_verified"],
                     "keys": {k: {f: v[f] for f in ("kmax", "chunk_blocks", "num_rows", "setup_s", "pk_mb")}
                              for k, v in keys.items()},
                     "commit_ms_per_column": round(p.get("commit_cpu_ms_per_column", float("nan")), 3)})
    base = next((r for r in rows if "failed" not in r), None)
    for r in rows:
        if base is not None and "failed" not in r:
            r["cpu_ratio_to_first"] = round(r["cpu_s_per_block"] / base["cpu_s_per_block"], 3)
            r["rss_ratio_to_first"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 3)
    out = {"block_size": a.block_size, "blocks": a.blocks, "fraction": a.fraction, "seed": a.seed, "jobs": a.jobs, "argv": sys.argv[1:],
           "configs": rows, "note": "measured back to back in one invocation on this machine"}
    path = Path(a.out) / f"wrap_{a.tag}{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{'logrows':>8}{'wrap':>6}{'CPU-s/block':>13}{'ratio':>8}{'peak MB':>9}{'proof B/blk':>12}{'verified':>10}")
    for r in rows:
        if "failed" in r:
            print(f"{r['logrows']:>8}{r['wrap']:>6}  FAILED ({r['failed']})")
            continue
        print(f"{r['logrows']:>8}{r['wrap']:>6}{r['cpu_s_per_block']:>13.2f}{r.get('cpu_ratio_to_first', 1.0):>8.3f}"
              f"{r['peak_rss_mb']:>9.0f}{r['proof_bytes_per_block']:>12}{str(r['all_verified']):>10}")
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
