"""Where an amortized request proof's cost sits: the ``Gather`` that reads D = Â[S,S], the certificate.

A request circuit of an ``amortized`` commitment (``CommitSpec.column_range``: Â's range checks in
column range proofs, not in the request) reads the k×k masked sub-matrix D = Â[S,S] that the
invertibility certificate needs through one ``Gather`` of rows S of the committed columns — a
*dynamic* lookup whose table is every entry of Â[:,S] (K·B·k values). To measure the parts, this
script proves the same witness with these circuits, back to back, one prover each:

* ``gather``: the relation as built (circuits/relation.py);
* ``slice``: the same graph with the Gather replaced by a Slice of rows 0..k−1 — equal to the
  Gather for the mask S = {0, …, k−1} used here, so the same witness satisfies both. **A
  measurement probe only, not a sound circuit** (it reads the wrong rows for any other mask);
* ``request_without_certificate`` and ``certificate_alone``: the relation split in two proofs — the
  request without the invertibility certificate (no D, E, Y checks, asym), and the certificate with
  its Gather over the same committed slot columns (which a verifier would bind to the request by the
  equal published column commitments, as column range proofs are bound). Probes of a design that is
  **not built**: their sum against ``gather`` is what the split would cost;
* ``--freivalds``: instead ``gather`` and ``certificate_alone``, each with and without ezkl's
  Freivalds argument for matrix products (the project's circuits run with it off).

The block: ``--block-size`` weights of random-init θp, a Fisher of 480 synthetic gradients
(``bench_proof.synthetic_block_fisher``), the first ``--k`` weights masked; ``--blocks`` such
blocks per proof. Reports ezkl's rows, dynamic-lookup table size, key setup, proving CPU-s and
peak RSS (the prover in a child process), verification.

    python benchmarks/bench_request_parts.py --block-size 576 --k 24 --blocks 2 --tag split_b576_
    python benchmarks/bench_request_parts.py --block-size 576 --k 24 --blocks 2 --freivalds --tag freivalds_b576_
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


CERT_START = "    # D = Â[S,S] ⊙ (q qᵀ) + 2^(a−1)·diag(1 − q);  E = Y·D − 2^ty·I\n"
CERT_END = "    E = node(\"Sub\", [node(\"MatMul\", [ycert, D]), node(\"Mul\", [eye, const(\"two_ty\", [float(2 ** bd.ty)])])])\n"
CERT_SUMS = ('            abs_sum(pw2(ycert, bd.s - bd.y, "sy")),        # |Y| < 2^y\n',
             '            abs_sum(pw2(E, bd.s - bd.e, "se")),            # |E| < 2^e\n')
ASYM_OUT = '("asym", [K, k, k]),'
SINK_OUT = '("sink", [len(spec.check_groups)])'



def request_without_certificate(relation):
    """``build_relation`` without the invertibility certificate (no D, E, Y checks, asym): the part a
    split design would keep in the request proof (probe only — unsound alone)."""
    src = inspect.getsource(relation.build_relation)
    a, b = src.find(CERT_START), src.find(CERT_END)
    if a < 0 or b < 0 or any(x not in src for x in (*CERT_SUMS, ASYM_OUT, SINK_OUT)):
        raise SystemExit("the relation's certificate changed: update bench_request_parts")
    src = src[:a] + src[b + len(CERT_END):]
    for x in (*CERT_SUMS, ASYM_OUT):
        src = src.replace(x, "")
    src = src.replace(SINK_OUT, '("sink", [len(spec.check_groups) - 2])')
    ns = dict(relation.__dict__)
    exec(src.replace("def build_relation(", "def build_request_only("), ns)  # noqa: S102
    return ns["build_request_only"]


def certificate_graph(spec):
    """The certificate alone, as a split design would prove it beside the request: the K·k committed
    columns (laid out as request slots), Y, public (per block: slot positions, slot used; a 0); D =
    Â[S,S] by the same Gather, E = Y·D − 2^ty·I, |Y| < 2^y, |E| < 2^e, asym = D₀ − D₀ᵀ. Its inputs are
    the request's ``col_*`` and ``ycert`` inputs and :func:`certificate_public`."""
    from onnx import TensorProto

    from circuits.relation import GraphBuilder

    K, B, k, R = spec.chunk_blocks, spec.block_size, spec.kmax, spec.n_blind
    cs, bd = spec.commit, spec.bounds
    i64 = np.int64
    g = GraphBuilder()
    const, node = g.const, g.node

    def head(inp, m, shape):
        return node("Reshape", [node("Slice", [inp, const(f"z_{inp}", [0], i64), const(f"e_{inp}", [m], i64),
                                               const(f"a_{inp}", [1], i64)]), const(f"s_{inp}", shape, i64)])

    def abs_sum(x, c, name):
        return node("Reshape", [node("ReduceSum", [node("Abs", [node("Mul", [x, const(name, [float(2 ** c)])])])],
                                     keepdims=0), const(f"one_{name}", [1], i64)])

    cols = node("Concat", [head(f"col_{j}_{t}", B, [1, B, 1]) for j in range(K) for t in range(k)], axis=0)
    cols = node("Reshape", [node("Transpose", [node("Reshape", [cols, const("skkb", [K, k, B], i64)])], perm=[0, 2, 1]),
                            const("skbk", [K, B, k], i64)])
    ycert = head("ycert", K * k * k, [K, k, k])
    pub = head("public", K * 2 * k, [K, 2 * k])
    idx = node("Slice", [pub, const("i0", [0], i64), const("ik", [k], i64), const("ax1", [1], i64)])
    q = node("Slice", [pub, "ik", const("i2k", [2 * k], i64), "ax1"])
    zero = node("Slice", ["public", const("zb", [K * 2 * k], i64), const("ze", [K * 2 * k + 1], i64), "ax1"])
    offs = const("row_offs", (np.arange(K) * B)[:, None].astype(np.float64))
    gidx = node("Cast", [node("Reshape", [node("Add", [idx, offs]), const("sKk", [K * k], i64)])], to=TensorProto.INT64)
    ass = node("Reshape", [node("Gather", [node("Reshape", [cols, const("sKBk", [K * B, k], i64)]), gidx], axis=0),
                           const("skkk", [K, k, k], i64)])
    qq = node("Mul", [node("Reshape", [q, const("skc", [K, k, 1], i64)]), node("Reshape", [q, const("skr", [K, 1, k], i64)])])
    eye = const("eye", np.eye(k, dtype=np.float64)[None])
    pad = node("Mul", [node("Mul", [node("Sub", [const("one", [1.0]), node("Reshape", [q, "skc"])]), eye]),
                       const("pad_c", [float(2 ** (cs.a_bits - 1))])])
    d0 = node("Mul", [ass, qq])
    node("Sub", [d0, node("Transpose", [d0], perm=[0, 2, 1])], "asym")
    E = node("Sub", [node("MatMul", [ycert, node("Add", [d0, pad])]), node("Mul", [eye, const("two_ty", [float(2 ** bd.ty)])])])
    sums = node("Concat", [abs_sum(ycert, bd.s - bd.y, "sy"), abs_sum(E, bd.s - bd.e, "se")], axis=0)
    node("Mul", [sums, node("Reshape", [zero, const("s1", [1], i64)])], "sink")
    names = [f"col_{j}_{t}" for j in range(K) for t in range(k)] + ["ycert", "public"]
    lens = [B + R] * (K * k) + [K * k * k + R, K * 2 * k + 1]
    return g.model("zkapex_certificate_probe", [(a, [1, m]) for a, m in zip(names, lens)],
                   [("asym", [K, k, k]), ("sink", [2])])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block-size", type=int, default=576)
    ap.add_argument("--k", type=int, default=24, help="masked weights per block (the first k)")
    ap.add_argument("--blocks", type=int, default=2, help="blocks per proof")
    ap.add_argument("--logrows", type=int, default=15)
    ap.add_argument("--wrap", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="prover threads (RAYON_NUM_THREADS)")
    ap.add_argument("--freivalds", action="store_true",
                    help="instead: the full request and the certificate alone, each with and without ezkl's "
                         "Freivalds argument for matrix products")
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
    res = {"argv": sys.argv[1:], "freivalds": a.freivalds, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "block_size": B, "k": k, "blocks_per_proof": K, "kmax": spec.kmax, "logrows": a.logrows, "wrap": a.wrap,
           "threads": a.threads, "circuits": {},
           "note": "'slice' is a measurement probe, not a sound circuit (it reads rows 0..k-1 whatever the mask)"}
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"request_parts_{a.tag}{time.strftime('%Y%m%d_%H%M%S')}.json"
    # the certificate's own inputs: the slot columns, Y, and (per block) slot positions and slot used, a 0
    cert_public = [int(x) for b in range(K) for x in list(u.witnesses[b].idx) + list(u.witnesses[b].q)] + [0]
    cert_inputs = inputs[2 * K:2 * K + K * spec.kmax] + [inputs[-2], cert_public]
    variants = (("gather", relation.build_relation, inputs, False), ("slice", slice_probe(relation), inputs, False),
                ("request_without_certificate", request_without_certificate(relation), inputs, False),
                ("certificate_alone", certificate_graph, cert_inputs, False))
    if a.freivalds:   # ezkl's Freivalds argument for matrix products (the circuits' default: off), side by side
        variants = tuple((f"{name}{'_freivalds' * fr}", build, inp, fr) for name, build, inp, _ in variants
                         if name in ("gather", "certificate_alone") for fr in (False, True))
    for name, build, inp, freivalds in variants:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "m.onnx").write_bytes(build(spec).SerializeToString())
            run_args = stages._run_args(spec, a.logrows)
            run_args.disable_freivalds = not freivalds
            ezkl.gen_settings(f"{d}/m.onnx", f"{d}/s.json", py_run_args=run_args)
            s = json.loads((Path(d) / "s.json").read_text())
            ezkl.compile_circuit(f"{d}/m.onnx", f"{d}/c", f"{d}/s.json")
            t0 = time.perf_counter()
            ezkl.setup(f"{d}/c", f"{d}/vk", f"{d}/pk", srs_path=str(srs))
            setup_s = time.perf_counter() - t0
            (Path(d) / "in.json").write_text(json.dumps({"input_data": [[float(x) for x in v] for v in inp]}))
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
    c = {name: v["prove_cpu_s"] for name, v in res["circuits"].items()}
    if a.freivalds:
        print(f"→ {out_path}")
        return out_path
    res["gather_share_of_proving"] = round(1 - c["slice"] / c["gather"], 3)
    res["split_over_one_proof"] = round((c["request_without_certificate"] + c["certificate_alone"]) / c["gather"], 3)
    out_path.write_text(json.dumps(res, indent=1))
    print(f"the Gather of D: {res['gather_share_of_proving']:.0%} of the request's proving; the certificate in a "
          f"proof of its own: {res['split_over_one_proof']:.2f} of one proof → {out_path}")
    return out_path


if __name__ == "__main__":
    main()
