"""Column commitments, side by side in one run: ``ezkl.kzg_commit`` (batched, what v0.2 used) vs
the native sparse MSM over the SRS's Lagrange points (``circuits/native``: Pippenger's buckets, and
the previous Straus-only kernel beside it), on the same columns —
B values of a fixed-point inverse-Fisher column plus 8 blinders — at the logrows the protocol
uses (13: the demo's B = 16; 15: B = 64; 19: B = 576). Checks that both give the same points.

    python benchmarks/bench_commit.py --logrows 13 15 --columns 400 --tag cpu2_

Writes benchmarks/results/commit_<tag><time>.json: ms per column of each backend, the ratio,
peak RSS, and the paper's ViT-B/16 commitment (12 × 3072 × 768 weights, B + 1 columns per block
of B) extrapolated (marked) from the native per-column time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BLOCK_OF = {13: 16, 14: 16, 15: 64, 16: 64, 17: 144, 18: 144, 19: 576}


def _keyed(d: Path, logrows: int):
    """The artifacts of a keyed circuit directory (settings, vk and the SRS it names)."""
    from zkapex_jax.protocol._circuits import relation, stages

    meta = json.loads((d / "meta-local.json").read_text())
    if int(meta["logrows"]) != logrows:
        raise SystemExit(f"{d}: logrows {meta['logrows']}, not {logrows}")
    srs = d.parents[1] / "srs" / f"kzg{logrows}.srs"
    spec = relation.CircuitSpec.__new__(relation.CircuitSpec)   # only its paths are read here
    return stages._artifacts(spec, d, meta, srs, True, "local")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logrows", type=int, nargs="+", default=[13, 15])
    ap.add_argument("--columns", type=int, default=400, help="columns per backend and logrows")
    ap.add_argument("--ezkl-columns", type=int, default=None, help="fewer columns for ezkl (slow at large logrows)")
    ap.add_argument("--circuit-dir", default=None,
                    help="reuse an already keyed commit circuit of the (single) --logrows, e.g. an earlier run's "
                         "cache/circuits/B576_k1_K1_L19_*: native commitments depend on logrows and the SRS only, "
                         "and keying logrows 19 takes ~13 min")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    os.environ.setdefault("ZKAPEX_CACHE", "/tmp/zkapex-bench-commit-cache")
    from circuits import native
    from zkapex_jax.protocol import KeyStore, CommitSpec
    from zkapex_jax.protocol._circuits import stages
    from zkapex_jax.protocol.commitments import commit_circuit

    res = {"argv": sys.argv[1:], "cpus": os.cpu_count(), "native_available": native.available(), "runs": []}
    out = Path(a.out) / f"commit_{a.tag}{time.strftime('%Y%m%d_%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for lr in a.logrows:
        B = BLOCK_OF.get(lr, 16)
        t0 = time.perf_counter()
        if a.circuit_dir:
            art = _keyed(Path(a.circuit_dir), lr)
        else:
            art = KeyStore().ensure(commit_circuit(CommitSpec(block_size=B, logrows=lr)))
        setup_s = time.perf_counter() - t0
        cols = [[int(x) for x in rng.integers(-2 ** 23, 2 ** 23, B)] + [int(x) for x in rng.integers(-2 ** 51, 2 ** 51, 8)]
                for _ in range(a.columns)]
        ne = min(a.columns, a.ezkl_columns or a.columns)
        stages.zero_commitment(art)   # one ezkl call, once per process
        native.commit(art.srs, cols[:1], stages.zero_commitment(art))   # map the SRS, build the kernel
        t0, c0 = time.perf_counter(), time.process_time()
        nat = stages.commit_vectors(art, cols, backend="native")
        tn, cn = time.perf_counter() - t0, time.process_time() - c0
        # the previous kernel (Straus over every value) on the same columns, in the same run
        t0, c0 = time.perf_counter(), time.process_time()
        st = stages.commit_vectors(art, cols, backend="native", native_method="straus")
        ts, cs_ = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        ez = stages.commit_vectors(art, cols[:ne], backend="ezkl")
        te, ce = time.perf_counter() - t0, time.process_time() - c0
        r = {"logrows": lr, "block_size": B, "columns_native": len(cols), "columns_ezkl": ne,
             "keys_and_srs_s": round(setup_s, 2), "equal": nat[:ne] == ez and st == nat,
             "native_straus_ms_per_column": round(1e3 * ts / len(cols), 4),
             "native_straus_cpu_ms_per_column": round(1e3 * cs_ / len(cols), 4),
             "pippenger_vs_straus_cpu": round(cs_ / cn, 2),
             "native_ms_per_column": round(1e3 * tn / len(cols), 4), "native_cpu_ms_per_column": round(1e3 * cn / len(cols), 4),
             "ezkl_ms_per_column": round(1e3 * te / ne, 3), "ezkl_cpu_ms_per_column": round(1e3 * ce / ne, 3),
             "speedup_wall": round((te / ne) / (tn / len(cols)), 1),
             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        n_cols_vit = 12 * 3072 * 768 // B * (B + 1)
        r["vit_b16_commitment_cpu_h_native_EXTRAPOLATED"] = round(n_cols_vit * r["native_cpu_ms_per_column"] / 3.6e6, 2)
        r["vit_b16_commitment_cpu_h_ezkl_EXTRAPOLATED"] = round(n_cols_vit * r["ezkl_cpu_ms_per_column"] / 3.6e6, 1)
        res["runs"].append(r)
        print(json.dumps(r), flush=True)
        out.write_text(json.dumps(res, indent=1))
    print(f"→ {out}")


if __name__ == "__main__":
    main()
