"""Proof costs of the inverse-Fisher column certificate on a measured slice of a real-size
statement, and a cost model to the paper's whole ViT-B/16 statement.

The slice: ``--blocks`` blocks of ``--block-size`` weights of a ViT-B/16-config fc1 kernel
(random init: θp ~ N(0, 0.02²)), a client Fisher C = GᵀG/N + damping·mean(diag)·I from N
synthetic per-example gradients per block, and a random ``--fraction`` mask. Stages, each timed
with peak memory: C⁻¹ and quantization; the commitment (θp + every column of Â, batched
``kzg_commit``); the plan and the honest witnesses; keys per bucket; proving (one process per
proof, ``--jobs`` at a time: CPU-s, wall, peak RSS of each); verification. Then the cost model:
per-block CPU-s by bucket × the distribution of masked counts of the full statement (49,152
blocks, a 4% mask), on one 16-core machine and on a Ray cluster of N such machines.

    python benchmarks/bench_proof.py --blocks 32 --block-size 576 --logrows 19 --jobs 2 --tag cpu2_
    python benchmarks/bench_proof.py --blocks 4 --block-size 64 --logrows 15   # a quick look
    python benchmarks/bench_proof.py --blocks 2 --block-size 576 --logrows 15 --wrap 8 --jobs 1 --tag wrap_
                                      # column wrapping: short committed columns, circuits over 8 × 2^15 rows
    python benchmarks/bench_proof.py --blocks 2 --block-size 576 --logrows 15 --wrap 8 --jobs 1 --column-range amortized --tag amort_
                                      # column range proofs apart from the requests (timed apart)
    python benchmarks/bench_proof.py --blocks 24 --block-size 16 --logrows 13 --protect 0 2 4 --tag protect_
                                      # the certified forget-aware request's cost next to the plain one

Results: benchmarks/results/proof_slice_<tag><time>.json (every number measured here, the
extrapolation marked as such).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prove_one(task):
    from zkapex_jax.protocol import prover

    t0 = time.perf_counter()
    idx, raw, timing = prover._prove_task(task)
    return idx, raw, timing, time.perf_counter() - t0


def synthetic_block_fisher(rng, nb, B, n, damping_rel):
    scales = rng.uniform(0.1, 2.0, size=B)
    out = np.empty((nb, B, B))
    for b in range(nb):
        g = rng.normal(size=(n, B)) * scales
        c = g.T @ g / n
        out[b] = c + damping_rel * np.mean(np.diag(c)) * np.eye(B)
    return out


def masked_count_distribution(B, fraction, n_blocks, kmaxes, extra: int = 0):
    """Expected number of blocks per bucket for a uniformly random mask (binomial counts); a block
    with k masked weights needs k + min(extra, B − k) slots (``extra`` protected weights)."""
    from math import comb

    p = fraction
    pk = [comb(B, k) * p ** k * (1 - p) ** (B - k) for k in range(B + 1)]
    out = {}
    for k in range(1, B + 1):
        slots = k + min(extra, B - k)
        kmax = next((x for x in kmaxes if x >= slots), None)
        if kmax is None:
            continue
        out[kmax] = out.get(kmax, 0.0) + n_blocks * pk[k]
    return out, n_blocks * pk[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--block-size", type=int, default=576)
    ap.add_argument("--fraction", type=float, default=0.04)
    ap.add_argument("--logrows", type=int, default=19)
    ap.add_argument("--wrap", type=int, default=1,
                    help="sets of 2^logrows rows a proof circuit may span (ezkl's column wrapping; 1 = none)")
    ap.add_argument("--n-grad", type=int, default=480)
    ap.add_argument("--damping", type=float, default=1e-4, help="relative to the mean Fisher diagonal")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="key/SRS cache (default: a fresh one under /tmp)")
    ap.add_argument("--max-chunk-blocks", type=int, default=None,
                    help="cap blocks per proof (a smaller prover: e.g. 1 to fit B=576 proofs in 24 GB)")
    ap.add_argument("--protect", type=int, nargs="+", default=[0],
                    help="protected weights per masked block, one variant each, side by side on the same slice "
                         "(0 = the paper's plain request); e.g. --protect 0 2 4")
    ap.add_argument("--column-range", choices=("inline", "amortized"), default="inline",
                    help="amortized: the requests skip Â's range checks; column range proofs (timed apart) cover "
                         "the columns read, once per column (docs/PROOFS.md, 'Column range proofs')")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    os.environ["ZKAPEX_CACHE"] = a.cache or f"/tmp/zkapex-bench-cache-{a.block_size}-{a.logrows}-w{a.wrap}"
    from zkapex_jax import protocol as P
    from zkapex_jax.core import quant
    from zkapex_jax.protocol import prover
    from zkapex_jax.protocol._circuits import stages
    from zkapex_jax.protocol.commitments import commit_circuit
    from zkapex_jax.protocol.statement import bucket_sizes, statement_core

    if a.max_chunk_blocks:
        from zkapex_jax.protocol import statement as _statement
        _statement.MAX_CHUNK_BLOCKS = a.max_chunk_blocks
    rng = np.random.default_rng(a.seed)
    nb, B = a.blocks, a.block_size
    res = {"argv": sys.argv[1:], "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "blocks": nb, "block_size": B, "fraction": a.fraction, "logrows": a.logrows, "wrap": a.wrap, "jobs": a.jobs}
    st = res.setdefault("stages", {})

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"proof_slice_{a.tag}{time.strftime('%Y%m%d_%H%M%S')}.json"

    def save():  # after every stage and proof: a run stopped early keeps what it measured
        out_path.write_text(json.dumps(res, indent=1))

    def stage(name, t0, **kw):
        st[name] = {"wall_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(_rss_mb(), 1), **kw}
        print(f"{name}: {st[name]}", flush=True)
        save()

    t0 = time.perf_counter()
    theta = rng.normal(size=(nb, B)) * 0.02
    fisher = synthetic_block_fisher(rng, nb, B, a.n_grad, a.damping)
    mask = rng.random((nb, B)) < a.fraction
    stage("data", t0, masked=int(mask.sum()), masked_per_block=mask.sum(1).tolist())
    cs = P.CommitSpec(block_size=B, logrows=a.logrows, wrap=a.wrap, column_range=a.column_range)
    res["column_range"] = a.column_range
    ks = P.KeyStore()
    t0 = time.perf_counter()
    A = quant.inverse_fisher(fisher)
    stage("inverse_fisher", t0, per_block_s=round((time.perf_counter() - t0) / nb, 4))
    t0 = time.perf_counter()
    ks.ensure(commit_circuit(cs))
    stage("commit_keys_and_srs", t0)
    t0 = time.perf_counter()
    c0 = time.process_time()
    com, sec = P.commit_personalization(theta, fisher, cs, client_id="bench", keystore=ks, inverse=A)
    n_cols = nb * (B + 1)
    stage("commit", t0, columns=n_cols, cpu_s=round(time.process_time() - c0, 2),
          per_column_ms=round(1e3 * (time.perf_counter() - t0) / n_cols, 3))
    com = P.save_commitment(Path(os.environ["ZKAPEX_CACHE"]) / "com.npz", com, sec,
                            Path(os.environ["ZKAPEX_CACHE"]) / "sec.npz")
    res["commitment_bytes"] = (Path(os.environ["ZKAPEX_CACHE"]) / "com.npz").stat().st_size
    def run_variant(r, req, res_v):
        t0 = time.perf_counter()
        u = P.unlearn_committed(theta, fisher, req, com, sec, keystore=ks, inverse=A)
        stage(f"plan_and_witnesses_protect_{r}", t0, proofs=len(u.plan),
              buckets=[[s.kmax, s.chunk_blocks, len(b)] for s, b in u.plan], bound_units=u.bound_units)
        keys = res_v.setdefault("keys", {})
        for spec, _ in u.plan:
            if spec.key in keys:
                continue
            t0 = time.perf_counter()
            art = ks.ensure(spec)
            keys[spec.key] = {"kmax": spec.kmax, "chunk_blocks": spec.chunk_blocks, "num_rows": art.num_rows,
                              "rows_per_block": round(art.num_rows / spec.chunk_blocks),
                              "setup_s": round(time.perf_counter() - t0, 2), "pk_mb": round(art.meta["pk_bytes"] / 1e6, 1),
                              "vk_kb": round(art.meta["vk_bytes"] / 1e3, 1)}
            print(spec.key, keys[spec.key], flush=True)
            save()
        core = statement_core(client_id="bench", request_id="r", mask_digest=P.mask_digest(req),
                              commitment_sha256=com.sha256, spec=cs.to_dict(), theta_exp=com.theta_exp, n_chunks=len(u.plan))
        tasks = prover.build_tasks(u, com, sec, core, ks)
        if a.column_range == "amortized":   # the column range proofs of every column the request reads
            from zkapex_jax.protocol import ranges
            rspec = ranges.range_spec(cs, root=ks.root)
            read = ranges.read_columns(u.plan, req)
            r_tasks, groups = ranges.range_tasks(read, u.inverse_q, sec.blind_columns, rspec, prover._store_args(ks),
                                                 first_index=len(tasks))
            t0 = time.perf_counter()
            art = ks.ensure(rspec)
            res_v["range_keys"] = {"key": rspec.key, "n_columns": rspec.n_columns, "num_rows": art.num_rows,
                                   "rows_per_column": round(art.num_rows / rspec.n_columns),
                                   "setup_s": round(time.perf_counter() - t0, 2), "pk_mb": round(art.meta["pk_bytes"] / 1e6, 1)}
            print(res_v["range_keys"], flush=True)
            t0 = time.perf_counter()
            rproofs = []
            with ProcessPoolExecutor(max_workers=a.jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as ex:
                for (idx, raw, timing, wall), group in zip(ex.map(_prove_one, r_tasks), groups):
                    t1 = time.perf_counter()
                    bad = ranges.check_range_proof(raw, [list(c) for c in group], com, rspec, art)
                    rproofs.append({"index": idx, "columns": len(group), "cpu_s": round(timing["cpu_s"], 2),
                                    "prove_s": round(timing["prove_s"], 2), "wall_s": round(wall, 2),
                                    "peak_rss_mb": round(timing["peak_rss_mb"], 1),
                                    "proof_bytes": len(json.loads(raw)["proof"]), "verified": bad is None,
                                    "verify_s": round(time.perf_counter() - t1, 3)})
                    print(rproofs[-1], flush=True)
                    res_v["range_proofs"] = rproofs
                    save()
            stage(f"range_prove_protect_{r}", t0, proofs=len(rproofs), columns=len(read),
                  cpu_s=round(sum(p["cpu_s"] for p in rproofs), 1),
                  cpu_s_per_column=round(sum(p["cpu_s"] for p in rproofs) / max(1, len(read)), 3))
        t0 = time.perf_counter()
        proofs = []
        with ProcessPoolExecutor(max_workers=a.jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as ex:
            for (idx, raw, timing, wall), (spec, blocks) in zip(ex.map(_prove_one, tasks), u.plan):
                t1 = time.perf_counter()
                art = ks.ensure(spec)
                ok = stages.verify_chunk_bytes(raw, art.settings, art.vk, art.srs)
                vs = time.perf_counter() - t1
                proofs.append({"index": idx, "kmax": spec.kmax, "blocks": len(blocks), "slots": [int((req[b] > 0).sum()) for b in blocks],
                               "cpu_s": round(timing["cpu_s"], 2), "prove_s": round(timing["prove_s"], 2),
                               "witness_s": round(timing["witness_s"], 2), "wall_s": round(wall, 2),
                               "peak_rss_mb": round(timing["peak_rss_mb"], 1), "proof_json_bytes": len(raw),
                               "proof_bytes": len(json.loads(raw)["proof"]), "verified": ok, "verify_s": round(vs, 3)})
                print(proofs[-1], flush=True)
                res_v["proofs"] = proofs
                save()
        stage(f"prove_protect_{r}", t0, proofs=len(proofs), cpu_s=round(sum(p["cpu_s"] for p in proofs), 1))
        res_v["proofs"] = proofs
        # cost model: per-block CPU-s by bucket, applied to the full statement
        # per block of a full chunk: a proof costs its circuit's K block slots whether or not the
        # slice fills them (a small slice pads its last chunk; the full statement does not)
        chunk_of = {v["kmax"]: v["chunk_blocks"] for v in keys.values()}
        per_block = {}
        for p in proofs:
            p["chunk_blocks"] = chunk_of[p["kmax"]]
            per_block.setdefault(p["kmax"], []).append(p["cpu_s"] / p["chunk_blocks"])
        kmaxes = [k for k in bucket_sizes(B)]
        full_blocks = 12 * 3072 * 768 // B
        dist, unmasked = masked_count_distribution(B, a.fraction, full_blocks, kmaxes, extra=r)
        model = {"full_blocks": full_blocks, "unmasked_blocks": round(unmasked), "blocks_per_bucket": {
            str(k): round(v, 1) for k, v in dist.items() if v >= 0.5}}
        measured = {k: float(np.median(v)) for k, v in per_block.items()}
        if measured:
            # buckets not measured here: scale the nearest measured one by rows ∝ kmax (rows ≈ 17·B·kmax)
            def cpu_for(k):
                if k in measured:
                    return measured[k]
                near = min(measured, key=lambda m: abs(m - k))
                return measured[near] * k / near
            total_cpu = sum(cpu_for(k) * n for k, n in dist.items())
            commit_cpu = st["commit"]["cpu_s"] / n_cols * 12 * 3072 * 768 * (B + 1) / B
            if res_v.get("range_proofs"):
                # amortized: a request pays the range proofs of the columns it reads that no earlier
                # request covered; the first request on a commitment pays all of its own (4 % of the
                # weights), a request whose columns are all covered pays none
                # per column slot of a range proof (the whole statement fills them; a slice pads its last)
                per_col = float(np.mean([p["cpu_s"] for p in res_v["range_proofs"]])) / res_v["range_keys"]["n_columns"]
                n_read = a.fraction * 12 * 3072 * 768 + r * (full_blocks - unmasked)
                model.update({"range_cpu_s_per_column": round(per_col, 3),
                              "range_prove_cpu_h_first_request": round(per_col * n_read / 3600, 1),
                              "range_prove_cpu_h_every_column": round(per_col * 12 * 3072 * 768 / 3600, 1),
                              "range_proof_bytes_first_request_est": round(float(np.mean(
                                  [p["proof_bytes"] for p in res_v["range_proofs"]])) * n_read / res_v["range_keys"]["n_columns"]),
                              "first_request_h_one_16core_machine": round((total_cpu + per_col * n_read) / 3600 / 16, 2),
                              "first_request_min_64_machines": round((total_cpu + per_col * n_read) / 60 / 16 / 64, 1)})
            model.update({
                "measured_cpu_s_per_block": {str(k): round(v, 2) for k, v in measured.items()},
                "prove_cpu_h": round(total_cpu / 3600, 1),
                "prove_h_one_16core_machine": round(total_cpu / 3600 / 16, 2),
                "prove_min_64_machines": round(total_cpu / 60 / 16 / 64, 1),
                "commit_cpu_h": round(commit_cpu / 3600, 1),
                "peak_rss_mb_per_prover": max(p["peak_rss_mb"] for p in proofs),
                "proof_bytes_total_est": round(float(np.mean([p["proof_bytes"] / p["chunk_blocks"] for p in proofs]))
                                               * (full_blocks - unmasked)),
                "verify_h_one_core_est": round(float(np.mean([p["verify_s"] / p["chunk_blocks"] for p in proofs]))
                                               * (full_blocks - unmasked) / 3600, 2),
                "note": "EXTRAPOLATED from the measured per-block CPU-s of this slice (single-process provers, "
                        "ideal scaling across cores and machines assumed); proof bytes are ezkl JSON files"})
        res_v["cost_model_vit_b16"] = model
        print(json.dumps(model, indent=1))
        save()

    for r in a.protect:
        req = mask.astype(np.int8)
        if r:  # the certified forget-aware request: r protected weights per masked block (random scores here)
            score = np.where(mask, -np.inf, rng.random((nb, B)))
            top = np.argsort(-score, axis=1)[:, :r]
            for b in np.flatnonzero(mask.any(axis=1)):
                req[b, top[b][~mask[b, top[b]]]] = 2
        v = res.setdefault("variants", {}).setdefault(f"protect_{r}", {"protected": int((req == 2).sum())})
        run_variant(r, req, v)
    save()
    print(f"→ {out_path}")
    return out_path


if __name__ == "__main__":
    main()
