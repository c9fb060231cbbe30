"""Proof costs of the ZK-APEX chunk relation (ezkl/Halo2, KZG), measured, and an extrapolation.

For each circuit shape (B = block size, K = blocks per proof) in a fresh cache: settings+compile,
setup (keys; the SRS is generated once per logrows and timed separately), witness, prove and
verify of one honest chunk (random SPD Fisher blocks, ~``--mask`` fraction masked), proof and
key bytes, rows/logrows and the peak RSS of the process that did it (one subprocess per shape).
Then: the whole demo statement (vit-demo fc1, B=16) from the per-chunk cost, and the paper's
ViT-B/16 statement (fc1 of 12 layers, 3072×768, B=576) extrapolated from a fit of prove time
and memory against 2^logrows, with the row count for B=576 taken from ezkl's own layout
(``gen_settings``, no keys). Everything is written to benchmarks/results/proof_*.json.

    python benchmarks/bench_proof.py                   # default grid (a few minutes on 2 cores)
    python benchmarks/bench_proof.py --grid 4x2,16x1   # custom B×K grid
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _measure(B: int, K: int, mask_frac: float, cache: str, seed: int, q):
    os.environ["ZKAPEX_CACHE"] = cache
    from circuits import relation, stages
    from zkapex_jax import quant
    import ezkl  # noqa: F401

    spec = relation.CircuitSpec(block_size=B, chunk_blocks=K)
    out = {"B": B, "K": K, "spec_key": spec.key, "tau": spec.tau, "s_c": spec.s_c}
    t0 = time.perf_counter()
    # SRS first (cached across shapes, timed on its own)
    art_rows = None
    art = stages.ensure_circuit(spec)
    out["setup_total_s"] = time.perf_counter() - t0
    out.update({k: v for k, v in art.meta["timings"].items()})
    out.update(logrows=art.logrows, num_rows=art.num_rows, vk_bytes=art.meta["vk_bytes"], pk_bytes=art.meta["pk_bytes"])
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(K, 3 * B, B))
    fisher = np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-3 * np.eye(B)
    theta = rng.normal(size=(K, B)) * 0.05
    mask = rng.random((K, B)) < mask_frac
    mask[:, 0] = True
    s_t = quant.theta_exponent(theta)
    tq = quant.quantize_theta(theta, s_t)
    cq = quant.quantize_fisher(fisher, quant.fisher_block_exponents(fisher), spec.s_c)
    w = quant.quantize_unlearning(tq, cq, mask, spec.s_c)
    R = spec.n_blind
    bl = [int(x) for x in rng.integers(-2 ** 23, 2 ** 23, R)]
    inputs = [tq.ravel().tolist() + bl, cq.ravel().tolist() + bl, w.theta_u.ravel().tolist() + bl,
              w.lam.ravel().tolist() + bl, list(range(spec.n_ctx)) + mask.astype(int).ravel().tolist()]
    with tempfile.TemporaryDirectory() as td:
        t0 = time.perf_counter()
        com = stages.commit_columns(art, inputs[1])
        out["commit_fisher_s"] = time.perf_counter() - t0
        r = stages.prove_chunk(art, inputs, Path(td) / "proof.json")
        out.update(witness_s=r["witness_s"], prove_s=r["prove_s"], proof_file_bytes=r["proof_file_bytes"])
        proof = json.loads((Path(td) / "proof.json").read_text())
        out["proof_bytes"] = len(proof["proof"])
        out["instances"] = sum(len(c) for c in proof["instances"])
        t0 = time.perf_counter()
        ok = stages.verify_chunk(Path(td) / "proof.json", art.settings, art.vk, art.srs)
        out["verify_s"] = time.perf_counter() - t0
        out["verified"] = ok
        inst, coms = stages.proof_public(proof)
        out["checks"] = inst[-3:]
        out["fisher_commitment_matches"] = coms[1] == com
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["params_certified"] = K * B
    out["prove_s_per_param"] = out["prove_s"] / (K * B)
    q.put(out)


def measure_shape(B, K, mask_frac, cache, seed=0):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(B, K, mask_frac, cache, seed, q))
    p.start()
    res = q.get()
    p.join()
    return res


def rows_only(B: int, K: int) -> dict:
    """Rows/logrows of a shape from ezkl's layout (gen_settings), no keys: for shapes too big to prove here."""
    import ezkl
    from circuits import relation, stages

    spec = relation.CircuitSpec(block_size=B, chunk_blocks=K)
    with tempfile.TemporaryDirectory() as td:
        onnx_p = Path(td) / "r.onnx"
        onnx_p.write_bytes(relation.build_relation(spec).SerializeToString())
        lr = spec.logrows_min
        for _ in range(8):
            t0 = time.perf_counter()
            ezkl.gen_settings(str(onnx_p), str(Path(td) / "s.json"), py_run_args=stages._run_args(spec, lr))
            rows = json.loads((Path(td) / "s.json").read_text())["num_rows"]
            need = max(spec.logrows_min, math.ceil(math.log2(rows + 64)))
            if need == lr:
                break
            lr = need
    return {"B": B, "K": K, "num_rows": rows, "logrows": lr, "gen_settings_s": time.perf_counter() - t0}


def visibility_rows(B: int, K: int) -> list[dict]:
    """Rows of the same relation under other ezkl input visibilities / without input range checks."""
    import ezkl
    from circuits import relation, stages

    spec = relation.CircuitSpec(block_size=B, chunk_blocks=K)
    out = []
    with tempfile.TemporaryDirectory() as td:
        onnx_p = Path(td) / "r.onnx"
        onnx_p.write_bytes(relation.build_relation(spec).SerializeToString())
        for vis, ign in (("polycommit", False), ("hashed/public", False), ("private", False), ("polycommit", True)):
            ra = stages._run_args(spec, 17)
            ra.input_visibility = vis
            ra.ignore_range_check_inputs_outputs = ign
            ezkl.gen_settings(str(onnx_p), str(Path(td) / "s.json"), py_run_args=ra)
            rows = json.loads((Path(td) / "s.json").read_text())["num_rows"]
            out.append({"B": B, "K": K, "input_visibility": vis, "ignore_range_check_inputs_outputs": ign,
                        "num_rows": rows})
            print(f"visibility B={B} K={K} inputs={vis:14s} ignore_range_checks={ign!s:5s} rows={rows}", flush=True)
    return out


def fit_loglinear(xs, ys):
    """y ≈ a·x (least squares through the origin) with x = 2^logrows·logrows."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    return float(np.dot(xs, ys) / np.dot(xs, xs))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="4x2,8x2,16x1,16x2,16x4,16x8,32x1,32x2",
                    help="comma-separated BxK shapes to measure")
    ap.add_argument("--mask", type=float, default=0.04, help="masked fraction per block (≥1 per block)")
    ap.add_argument("--demo-blocks", type=int, default=256, help="blocks in the demo statement (vit-demo fc1, B=16)")
    ap.add_argument("--demo-chunk", type=int, default=8, help="K of the demo statement")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="", help="prefix of the result file name (e.g. the machine)")
    ap.add_argument("--keep-cache", default=None, help="cache dir to use (default: a fresh temporary one)")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.grid.split(",")]
    cache = args.keep_cache or tempfile.mkdtemp(prefix="zkapex-bench-")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    stamp = time.strftime('%Y%m%d_%H%M%S')
    partial = out_dir / f"proof_{args.tag}{stamp}_partial.json"
    for B, K in shapes:
        r = measure_shape(B, K, args.mask, cache)
        rows.append(r)
        partial.write_text(json.dumps({"shapes": rows}, indent=1))  # survives a timeout
        print(f"B={B:4d} K={K:3d} rows={r['num_rows']:8d} logrows={r['logrows']:2d} setup={r['setup_s']:7.2f}s "
              f"(srs {r['srs_s']:.1f}s) witness={r['witness_s']:.2f}s prove={r['prove_s']:7.2f}s "
              f"verify={r['verify_s']:.3f}s proof={r['proof_bytes']}B pk={r['pk_bytes'] / 1e6:.1f}MB "
              f"rss={r['peak_rss_mb']:.0f}MB s/param={r['prove_s_per_param']:.4f} ok={r['verified']}", flush=True)
    # fits against 2^logrows·logrows
    xs = [2 ** r["logrows"] * r["logrows"] for r in rows]
    a_prove = fit_loglinear(xs, [r["prove_s"] for r in rows])
    a_setup = fit_loglinear(xs, [r["setup_s"] for r in rows])
    a_rss = fit_loglinear([2 ** r["logrows"] for r in rows], [r["peak_rss_mb"] for r in rows])
    a_pk = fit_loglinear([2 ** r["logrows"] for r in rows], [r["pk_bytes"] for r in rows])
    proof_bytes = max(r["proof_bytes"] for r in rows)
    # demo statement from the measured shape (B=16, K=demo_chunk) if present
    demo = None
    for r in rows:
        if r["B"] == 16 and r["K"] == args.demo_chunk:
            n = math.ceil(args.demo_blocks / args.demo_chunk)
            demo = {"blocks": args.demo_blocks, "B": 16, "K": args.demo_chunk, "chunks": n,
                    "prove_s_total_sequential": n * (r["witness_s"] + r["prove_s"]), "verify_s_total": n * r["verify_s"],
                    "proof_bytes_total": n * r["proof_bytes"], "pk_bytes": r["pk_bytes"], "vk_bytes": r["vk_bytes"],
                    "setup_s": r["setup_s"], "peak_rss_mb_per_prover": r["peak_rss_mb"],
                    "source": "per-chunk measurement × chunks"}
    vis = visibility_rows(16, 1) + visibility_rows(16, 8)
    # ViT-B/16 extrapolation
    big = []
    nb_vit = 12 * 3072 * 768 // 576
    for K in (1,):
        lay = rows_only(576, K)
        n = math.ceil(nb_vit / K)
        x = 2 ** lay["logrows"] * lay["logrows"]
        big.append({**lay, "chunks": n, "prove_s_per_chunk": a_prove * x, "prove_h_total_sequential": n * a_prove * x / 3600,
                    "setup_s": a_setup * x, "peak_rss_gb_per_prover": a_rss * 2 ** lay["logrows"] / 1024,
                    "pk_gb": a_pk * 2 ** lay["logrows"] / 1e9, "proof_mb_total": n * proof_bytes / 1e6,
                    "params_certified": nb_vit * 576})
        print(f"ViT-B/16 (extrapolated) B=576 K={K}: rows={lay['num_rows']} logrows={lay['logrows']} "
              f"chunks={n} prove≈{big[-1]['prove_s_per_chunk']:.0f}s/chunk ≈{big[-1]['prove_h_total_sequential']:.0f} h sequential on this machine, "
              f"RSS≈{big[-1]['peak_rss_gb_per_prover']:.1f}GB/prover, proofs≈{big[-1]['proof_mb_total']:.0f}MB", flush=True)
    res = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
           "command": "python benchmarks/bench_proof.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shapes": rows,
           "fits": {"prove_s_per_row_logrow": a_prove, "setup_s_per_row_logrow": a_setup,
                    "rss_mb_per_row": a_rss, "pk_bytes_per_row": a_pk},
           "visibility_rows": vis, "demo_statement": demo, "vit_b16_extrapolation": big,
           "paper_vit_b16": {"prove_h": 2, "peak_gb": 0.7, "proof_mb": 400}}
    path = out_dir / f"proof_{args.tag}{stamp}.json"
    path.write_text(json.dumps(res, indent=1))
    partial.unlink(missing_ok=True)
    print(f"wrote {path}")
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
