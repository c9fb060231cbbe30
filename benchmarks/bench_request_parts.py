"""Where an amortized request proof's cost sits: the ``Gather`` that reads D = Â[S,S].

A request circuit of an ``amortized`` commitment (``CommitSpec.column_range``: Â's range checks in
column range proofs, not in the request) reads the k×k masked sub-matrix D = Â[S,S] that the
invertibility certificate needs through one ``Gather`` of rows S of the committed columns — a
*dynamic* lookup whose table is every entry of Â[:,S] (K·B·k values). To measure its share, this
script proves the same witness with two circuits, back to back, one prover each:

* ``gather``: the relation as built (circuits/relation.py);
* ``slice``: the same graph with the Gather replaced by a Slice of rows 0..k−1 — equal to the
  Gather for the mask S = {0, …, k−1} used here, so the same witness satisfies both. **A
  measurement probe only, not a sound circuit** (it reads the wrong rows for any other mask).

The block: ``--block-size`` weights of random-init θp, a Fisher of 480 synthetic gradients
(``bench_proof.synthetic_block_fisher``), the first ``--k`` weights masked; ``--blocks`` such
blocks per proof. Reports ezkl's rows, dynamic-lookup table size, key setup, proving CPU-s and
peak RSS (the prover in a child process), verification.

    python benchmarks/bench_request_parts.py --block-size 576 --k 24 --blocks 2 --tag b576_
    python benchmarks/bench_request_parts.py --block-size 16 --k 4 --logrows 11 --wrap 4   # a quick look

Results: benchmarks/results/request_parts_<tag><time>.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GATHER = '''    ass = node("Reshape", [node("Gather", [node("Reshape", [cols, const("shape_KBk", [K * B, k], i64)]), gidx], axis=0),
                           const("shape_kkk", [K, k, k], i64)])'''
SLICE = '''    ass = node("Slice", [cols, "zero_i", const("kk_end", [k], i64), "axis1"])'''


def slice_probe(relation):
    """``build_relation`` with the Gather of D replaced by a Slice of the first k rows (probe only)."""
    src = inspect.getsource(relation.build_relation)
    if GATHER not in src:
        raise SystemExit("the relation's Gather of D changed: update bench_request_parts.GATHER")
    ns = dict(relation.__dict__)
    exec(src.replace(GATHER, SLICE).replace("def build_relation(", "def build_probe("), ns)  # noqa: S102
    return ns["build_probe"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block-size", type=int, default=576)
    ap.add_argument("--k", type=int, default=24, help="masked weights per block (the first k)")
    ap.add_argument("--blocks", type=int, default=2, help="blocks per proof")
    ap.add_argument("--logrows", type=int, default=15)
    ap.add_argument("--wrap", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="prover threads (RAYON_NUM_THREADS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="key/SRS cache (default: one under /tmp per shape)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    B, k, K = a.block_size, a.k, a.blocks
    if not 1 <= k <= B:
        ap.error("--k must be in [1, block size]")
    os.environ["ZKAPEX_CACHE"] = a.cache or f"/tmp/zkapex-bench-parts-{B}-{a.logrows}-w{a.wrap}"
    import ezkl

    from bench_proof import synthetic_block_fisher
    from zkapex_jax import protocol as P
    from zkapex_jax.protocol import prover
    from zkapex_jax.protocol._circuits import relation, stages
    from zkapex_jax.protocol.statement import statement_core

    rng = np.random.default_rng(a.seed)
    theta = rng.normal(size=(K, B)) * 0.02
    fisher = synthetic_block_fisher(rng, K, B, 480, 1e-4)
    mask = np.zeros((K, B), bool)
    mask[:, :k] = True
    cs = P.CommitSpec(block_size=B, logrows=a.logrows, wrap=a.wrap, column_range="amortized")
    ks = P.KeyStore()
    com, sec = P.commit_personalization(theta, fisher, cs, client_id="bench", keystore=ks)
    u = P.unlearn_committed(theta, fisher, mask, com, sec, keystore=ks)
    spec = relation.CircuitSpec(cs, kmax=u.plan[0][0].kmax, chunk_blocks=K)
    u.plan = [(spec, list(range(K)))]
    core = statement_core(client_id="bench", request_id="r", mask_digest=P.mask_digest(mask),
                          commitment_sha256=com.sha256, spec=cs.to_dict(), theta_exp=com.theta_exp, n_chunks=1)
    inputs = prover.build_tasks(u, com, sec, core, ks)[0][2]
    srs, _ = stages.ensure_srs(a.logrows)
    res = {"argv": sys.argv[1:], "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "block_size": B, "k": k, "blocks_per_proof": K, "kmax": spec.kmax, "logrows": a.logrows, "wrap": a.wrap,
           "threads": a.threads, "circuits": {},
           "note": "'slice' is a measurement probe, not a sound circuit (it reads rows 0..k-1 whatever the mask)"}
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"request_parts_{a.tag}{time.strftime('%Y%m%d_%H%M%S')}.json"
    for name, build in (("gather", relation.build_relation), ("slice", slice_probe(relation))):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "m.onnx").write_bytes(build(spec).SerializeToString())
            ezkl.gen_settings(f"{d}/m.onnx", f"{d}/s.json", py_run_args=stages._run_args(spec, a.logrows))
            s = json.loads((Path(d) / "s.json").read_text())
            ezkl.compile_circuit(f"{d}/m.onnx", f"{d}/c", f"{d}/s.json")
            t0 = time.perf_counter()
            ezkl.setup(f"{d}/c", f"{d}/vk", f"{d}/pk", srs_path=str(srs))
            setup_s = time.perf_counter() - t0
            (Path(d) / "in.json").write_text(json.dumps({"input_data": [[float(x) for x in v] for v in inputs]}))
            ezkl.gen_witness(f"{d}/in.json", f"{d}/c", f"{d}/w.json", vk_path=f"{d}/vk", srs_path=str(srs))
            code = ("import ezkl, resource, time; c = time.process_time(); "
                    f"ezkl.prove('{d}/w.json', '{d}/c', '{d}/pk', '{d}/p.json', srs_path='{srs}'); "
                    "print(time.process_time() - c, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={**os.environ, "RAYON_NUM_THREADS": str(a.threads)})
            wall = time.perf_counter() - t0
            cpu, rss = map(float, r.stdout.split()[-2:])
            ok = bool(ezkl.verify(f"{d}/p.json", f"{d}/s.json", f"{d}/vk", srs_path=str(srs)))
            res["circuits"][name] = {
                "num_rows": s["num_rows"], "dynamic_lookup_table": s.get("total_dynamic_col_size"),
                "constants": s.get("total_const_size"), "setup_s": round(setup_s, 1),
                "prove_cpu_s": round(cpu, 1), "prove_wall_s": round(wall, 1),
                "prove_cpu_s_per_block": round(cpu / K, 1), "peak_rss_mb": round(rss), "verified": ok}
        print(name, res["circuits"][name], flush=True)
        out_path.write_text(json.dumps(res, indent=1))
    g, p = res["circuits"]["gather"], res["circuits"]["slice"]
    res["gather_share_of_proving"] = round(1 - p["prove_cpu_s"] / g["prove_cpu_s"], 3)
    out_path.write_text(json.dumps(res, indent=1))
    print(f"the Gather of D: {res['gather_share_of_proving']:.0%} of the request's proving → {out_path}")
    return out_path


if __name__ == "__main__":
    main()
