#!/usr/bin/env python
"""Benchmark: block-wise Fisher + Group-OBS (zkapex_jax, one jit over all blocks) against
straightforward per-block baselines, on one ViT-B/16 fc1-sized kernel.

Problem (defaults = the paper's ViT setting): one fc1 kernel, PyTorch shape (rows=3072, 768) =
Flax (768, 3072), flattened in the paper's "out_in" order and cut into blocks of 576 -> 4096
blocks; N = 480 per-example gradients; a 4% mask (exactly round(0.04 * D) weights, global top-k
of random scores or of the second-order-neg score); damping 1e-6.

The per-example gradients G (N, D) come from a small synthetic model built around the kernel
(x (T, 768) -> gelu(x @ K) -> squared error, T tokens per example) via
``zkapex_jax.per_example_grads``. All methods start from the same G, theta and mask:

  jax        blockwise_fisher(G) -> factorize (Cholesky) -> group_obs  (compile excluded; first call shown too)
  jax_stream accumulate_fisher(loss, params, batch) -- per-example grads + Fisher streamed in chunks
  numpy      per block: F = damping I + G_b^T G_b / N; Finv = np.linalg.inv(F);
             lam_M = np.linalg.solve(Finv[M, M], theta_M); delta = -Finv[:, M] lam_M
  sherman    oBERT-style: per block, Finv = I / damping, then N Sherman-Morrison rank-1 updates
             Finv -= (Finv g)(Finv g)^T / (N + g^T Finv g); then the same OBS formula

Each method runs in its own subprocess so that its peak RSS (VmHWM) is its own. Baselines can run
on an evenly spaced subset of blocks (--baseline-blocks K); their total time is then
EXTRAPOLATED linearly to all blocks and the JSON/print-out says so and records the subset.

Examples (see docs/BENCHMARKS.md):
  python benchmarks/bench_fisher_obs.py --rows 384            # scaled down: 512 blocks (CPU)
  python benchmarks/bench_fisher_obs.py --device gpu          # full size: 4096 blocks
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

IN_DIM = 768  # ViT-B/16 hidden size (fc1 input)


# ---------------------------------------------------------------------------- memory probes
def vm_hwm_bytes() -> int | None:
    """Peak resident set size of this process (Linux VmHWM; reset by exec, unlike ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class RssSampler:
    """psutil RSS sampled every 2 ms in a thread (cross-check of VmHWM on non-Linux)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


# ---------------------------------------------------------------------------- synthetic model
def make_problem(args):
    """Synthetic fc1 layer, its per-example data, and the mask (all deterministic in the seed)."""
    import jax
    import jax.numpy as jnp

    key = jax.random.key(args.seed)
    k_w, k_x, k_t, k_m, k_fx, k_rx = jax.random.split(key, 6)
    kernel = jax.random.normal(k_w, (IN_DIM, args.rows), jnp.float32) * (1.0 / np.sqrt(IN_DIM))
    params = {"fc1": {"kernel": kernel}}
    x = jax.random.normal(k_x, (args.n, args.tokens, IN_DIM), jnp.float32)
    t = jax.random.normal(k_t, (args.n, args.tokens, args.rows), jnp.float32) * 0.5

    def loss(p, ex):
        xi, ti = ex
        return 0.5 * jnp.mean(jnp.square(jax.nn.gelu(xi @ p["fc1"]["kernel"]) - ti))

    return params, (x, t), loss, (k_m, k_fx, k_rx)


def make_mask(args, params, loss, keys, layout):
    import jax
    import jax.numpy as jnp

    from zkapex_jax.core.mask import Mask, compute_scores

    k_m, k_fx, k_rx = keys
    if args.mask == "random":
        scores = {"fc1/kernel": jax.random.uniform(k_m, params["fc1"]["kernel"].shape)}
        method = "random"
    else:  # the paper's score on synthetic forget / retain data
        def data(k):
            kx, kt = jax.random.split(k)
            return (jax.random.normal(kx, (64, args.tokens, IN_DIM), jnp.float32),
                    jax.random.normal(kt, (64, args.tokens, args.rows), jnp.float32))

        scores = compute_scores(loss, params, data(k_fx), data(k_rx), wrt="fc1/kernel", chunk_size=16)
        method = "second_order_neg"
    m = Mask.from_scores(scores, args.fraction, method=method)
    return np.asarray(m.to_blocks(layout)), m.num_masked


# ---------------------------------------------------------------------------- workers
def worker_prepare(args, tmp):
    import jax

    from zkapex_jax.core.blocks import BlockLayout
    from zkapex_jax.core.fisher import per_example_grads

    params, batch, loss, keys = make_problem(args)
    layout = BlockLayout.from_params(params, "fc1/kernel", args.block, "out_in")
    f = jax.jit(lambda p, b: layout.to_blocks_batched(per_example_grads(loss, p, b, wrt="fc1/kernel", chunk_size=args.chunk)))
    t0 = time.perf_counter()
    g = np.asarray(f(params, batch).reshape(args.n, -1))
    t_grads = time.perf_counter() - t0
    theta = np.asarray(layout.to_blocks({"fc1/kernel": params["fc1"]["kernel"]}))
    mask, num_masked = make_mask(args, params, loss, keys, layout)
    np.save(os.path.join(tmp, "G.npy"), g)
    np.save(os.path.join(tmp, "theta.npy"), theta)
    np.save(os.path.join(tmp, "mask.npy"), mask)
    return {
        "per_example_grads_s_incl_compile": t_grads,
        "num_blocks": layout.num_blocks,
        "D": layout.size,
        "num_masked": int(num_masked),
        "masked_per_block": {"min": int(mask.sum(1).min()), "mean": float(mask.sum(1).mean()), "max": int(mask.sum(1).max())},
        "grad_abs_mean": float(np.abs(g).mean()),
    }


def _load(tmp):
    return (np.load(os.path.join(tmp, "G.npy")), np.load(os.path.join(tmp, "theta.npy")),
            np.load(os.path.join(tmp, "mask.npy")))


def _device_peak():
    import jax

    try:
        st = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not all backends implement it
        st = None
    return None if not st else int(st.get("peak_bytes_in_use", 0)) or None


def worker_jax(args, tmp):
    import jax
    import jax.numpy as jnp

    from zkapex_jax.core.fisher import blockwise_fisher
    from zkapex_jax.core.obs import constraint_residual, factorize, group_obs

    g_np, theta_np, mask_np = _load(tmp)
    rss_inputs = rss_bytes()

    def run():
        g = jax.device_put(g_np)
        theta, mask = jax.device_put(theta_np), jax.device_put(mask_np)
        c0, t0 = time.process_time(), time.perf_counter()
        fisher = jax.block_until_ready(blockwise_fisher(g, args.block, damping=args.damping))
        t1 = time.perf_counter()
        del g
        factor = factorize(fisher)
        jax.block_until_ready(factor.chol)
        t2 = time.perf_counter()
        res = group_obs(theta, factor, mask)
        jax.block_until_ready(res.delta)
        t3 = time.perf_counter()
        return res, fisher, (t1 - t0, t2 - t1, t3 - t2, time.process_time() - c0)

    with RssSampler() as s:
        res, fisher, first = run()  # includes compilation
        del fisher
        times = []
        for _ in range(args.repeats):
            del res
            res, fisher, tt = run()
            del fisher
            times.append(tt)
    best = min(times, key=lambda tt: sum(tt[:3]))
    np.save(os.path.join(tmp, "delta_jax.npy"), np.asarray(res.delta))
    lam = np.abs(np.asarray(res.lam)).max(1)
    cons = np.asarray(constraint_residual(theta_np, res.delta, mask_np))
    theta_m = np.where(mask_np, np.abs(theta_np), 0).max(1)
    return {
        "device": str(jax.devices()[0]), "platform": jax.devices()[0].platform,
        "fisher_s": best[0], "factorize_s": best[1], "group_obs_s": best[2], "total_s": sum(best[:3]),
        "total_cpu_s": best[3], "first_call_total_s_incl_compile": sum(first[:3]), "repeats": args.repeats,
        "kkt_residual_rel_max": float(np.max(np.asarray(res.residual) / np.maximum(lam, 1e-30))),
        "constraint_rel_max": float(np.max(cons / np.maximum(theta_m, 1e-30))),
        "peak_rss_bytes": vm_hwm_bytes(), "peak_rss_sampled_bytes": s.peak, "rss_after_inputs_bytes": rss_inputs,
        "device_peak_bytes": _device_peak(),
    }


def worker_jax_stream(args, tmp):
    import jax

    from zkapex_jax.core.blocks import BlockLayout
    from zkapex_jax.core.fisher import accumulate_fisher

    params, batch, loss, _ = make_problem(args)
    layout = BlockLayout.from_params(params, "fc1/kernel", args.block, "out_in")
    rss_inputs = rss_bytes()
    with RssSampler() as s:
        t0 = time.perf_counter()
        jax.block_until_ready(accumulate_fisher(loss, params, batch, layout, damping=args.damping, chunk_size=args.chunk))
        first = time.perf_counter() - t0
        c0, t0 = time.process_time(), time.perf_counter()
        f = jax.block_until_ready(accumulate_fisher(loss, params, batch, layout, damping=args.damping, chunk_size=args.chunk))
        t, c = time.perf_counter() - t0, time.process_time() - c0
    return {
        "device": str(jax.devices()[0]), "chunk_size": args.chunk,
        "accumulate_fisher_s": t, "accumulate_fisher_cpu_s": c, "first_call_s_incl_compile": first, "fisher_shape": list(f.shape),
        "peak_rss_bytes": vm_hwm_bytes(), "peak_rss_sampled_bytes": s.peak, "rss_after_inputs_bytes": rss_inputs,
        "device_peak_bytes": _device_peak(),
    }


def _subset(nb, k):
    if k <= 0 or k >= nb:
        return np.arange(nb)
    return np.unique(np.linspace(0, nb - 1, k).round().astype(np.int64))


def _obs_from_inverse(finv, theta_b, m):
    if not m.any():
        return np.zeros_like(theta_b)
    lam_m = np.linalg.solve(finv[np.ix_(m, m)], theta_b[m])
    return -finv[:, m] @ lam_m


def worker_baseline(args, tmp, kind):
    g_np, theta, mask = _load(tmp)
    n, nb, b = args.n, theta.shape[0], args.block
    g = g_np.reshape(n, nb, b)
    rss_inputs = rss_bytes()
    blocks = _subset(nb, args.baseline_blocks)
    delta = np.zeros((blocks.size, b), theta.dtype)
    eye = np.eye(b, dtype=g.dtype)
    with RssSampler() as s:
        c0, t0 = time.process_time(), time.perf_counter()
        for j, k in enumerate(blocks):
            gb = np.ascontiguousarray(g[:, k, :])
            if kind == "numpy":
                f = gb.T @ gb / np.float32(n) + np.float32(args.damping) * eye
                finv = np.linalg.inv(f)
            else:  # oBERT-style Sherman-Morrison of damping*I + (1/N) sum g g^T
                finv = eye / np.float32(args.damping)
                for i in range(n):
                    u = finv @ gb[i]
                    finv -= np.outer(u, u) / (np.float32(n) + gb[i] @ u)
            delta[j] = _obs_from_inverse(finv, theta[k], mask[k])
        t, c = time.perf_counter() - t0, time.process_time() - c0
    np.save(os.path.join(tmp, f"delta_{kind}.npy"), delta)
    np.save(os.path.join(tmp, f"blocks_{kind}.npy"), blocks)
    return {
        "measured_blocks": int(blocks.size), "measured_s": t, "measured_cpu_s": c,
        "total_s": t * nb / blocks.size, "total_cpu_s": c * nb / blocks.size,
        "extrapolated": bool(blocks.size < nb),
        "extrapolation": (f"linear: measured {blocks.size} of {nb} evenly spaced blocks, total = measured x {nb}/{blocks.size}"
                          if blocks.size < nb else None),
        "peak_rss_bytes": vm_hwm_bytes(), "peak_rss_sampled_bytes": s.peak, "rss_after_inputs_bytes": rss_inputs,
    }


def worker_jax_grouped(args, tmp):
    """fisher_group_obs: gradients -> Fisher -> Cholesky -> Group-OBS, --block-batch blocks at a time."""
    import jax

    from zkapex_jax.core.obs import fisher_group_obs

    theta_np, mask_np = np.load(os.path.join(tmp, "theta.npy")), np.load(os.path.join(tmp, "mask.npy"))
    nb = theta_np.shape[0]
    # the gradients stay on the host (read into memory once, as the other methods hold them);
    # fisher_group_obs sends one group at a time to the device
    g = np.load(os.path.join(tmp, "G.npy")).reshape(args.n, nb, args.block)
    rss_inputs = rss_bytes()
    theta, mask = jax.device_put(theta_np), mask_np

    def run():
        c0, t0 = time.process_time(), time.perf_counter()
        res = fisher_group_obs(g, theta, mask, damping=args.damping, block_batch=args.block_batch)
        jax.block_until_ready(res.delta)
        return res, time.perf_counter() - t0, time.process_time() - c0

    with RssSampler() as s:
        res, first, _ = run()
        times = []
        for _ in range(args.repeats):
            del res
            res, t, c = run()
            times.append((t, c))
    t, c = min(times)
    d = np.asarray(res.delta)
    ref_path = os.path.join(tmp, "delta_jax.npy")
    if os.path.exists(ref_path):
        ref = np.load(ref_path)
        diff = float(np.abs(d - ref).max() / max(np.abs(ref).max(), 1e-30))
    else:  # --skip jax (full size on a small machine): the grouped result is the reference
        np.save(ref_path, d)
        diff = 0.0
    lam = np.abs(np.asarray(res.lam)).max(1)
    return {
        "block_batch": args.block_batch, "total_s": t, "total_cpu_s": c, "first_call_s_incl_compile": first,
        "delta_rel_diff_vs_jax": diff,
        "kkt_residual_rel_max": float(np.max(np.asarray(res.residual) / np.maximum(lam, 1e-30))),
        "peak_rss_bytes": vm_hwm_bytes(), "peak_rss_sampled_bytes": s.peak, "rss_after_inputs_bytes": rss_inputs,
        "device_peak_bytes": _device_peak(),
    }


def worker_sherman_batched(args, tmp, backend):
    """The authors' algorithm as they run it: ONE inverse per block for all blocks at once
    (``(nb, B, B)``), N batched Sherman-Morrison rank-1 updates (einsum / baddbmm style), then
    their per-block compensation loop from the inverse."""
    g_np, theta, mask = _load(tmp)
    n, b = args.n, args.block
    nb_all = theta.shape[0]
    blocks = _subset(nb_all, args.baseline_blocks if backend == "numpy" else 0)
    g = np.ascontiguousarray(g_np.reshape(n, nb_all, b)[:, blocks, :])
    del g_np
    nb = blocks.size
    rss_inputs = rss_bytes()
    if backend == "jax":
        import jax
        import jax.numpy as jnp
        from jax import lax

        @jax.jit
        def inverse(g):
            f0 = jnp.broadcast_to(jnp.eye(b, dtype=g.dtype) / args.damping, (nb, b, b))

            def body(i, f):
                gi = g[i]
                u = jnp.einsum("bij,bj->bi", f, gi, precision=lax.Precision.HIGHEST)
                den = n + jnp.sum(gi * u, axis=-1)
                return f - (u[:, :, None] * u[:, None, :]) / den[:, None, None]

            return lax.fori_loop(0, n, body, f0)

        gj = jax.device_put(g)
        compiled = inverse.lower(gj).compile()  # compilation not timed

        def run_inverse():
            return np.asarray(compiled(gj))
    else:
        def run_inverse():
            finv = np.broadcast_to(np.eye(b, dtype=g.dtype) / np.float32(args.damping), (nb, b, b)).copy()
            for i in range(n):
                gi = g[i]
                u = np.matmul(finv, gi[:, :, None])[..., 0]
                den = np.float32(n) + np.einsum("bi,bi->b", gi, u)
                u /= np.sqrt(den)[:, None]
                finv -= u[:, :, None] * u[:, None, :]
            return finv

    with RssSampler() as s:
        c0, t0 = time.process_time(), time.perf_counter()
        finv = run_inverse()
        t_inv = time.perf_counter() - t0
        delta = np.stack([_obs_from_inverse(finv[j], theta[k], mask[k]) for j, k in enumerate(blocks)])
        t, c = time.perf_counter() - t0, time.process_time() - c0
    kind = f"sherman_batched_{backend}"
    np.save(os.path.join(tmp, f"delta_{kind}.npy"), delta)
    np.save(os.path.join(tmp, f"blocks_{kind}.npy"), blocks)
    return {
        "backend": backend, "inverse_s": t_inv, "compensation_s": t - t_inv,
        "measured_blocks": int(nb), "measured_s": t, "measured_cpu_s": c,
        "total_s": t * nb_all / nb, "total_cpu_s": c * nb_all / nb, "extrapolated": bool(nb < nb_all),
        "extrapolation": (f"linear: measured {nb} of {nb_all} evenly spaced blocks, total = measured x {nb_all}/{nb}"
                          if nb < nb_all else None),
        "peak_rss_bytes": vm_hwm_bytes(), "peak_rss_sampled_bytes": s.peak, "rss_after_inputs_bytes": rss_inputs,
    }


def worker_client_inverse(args, tmp):
    """What the protocol's client computes once before any mask: C (float64) and A = C^-1 for every
    block (zkapex_jax.core.quant.inverse_fisher), from the same gradients."""
    from zkapex_jax.core.quant import inverse_fisher

    g_np, theta, _ = _load(tmp)
    nb = theta.shape[0]
    rss_inputs = rss_bytes()
    with RssSampler() as s:
        c0, t0 = time.process_time(), time.perf_counter()
        g = g_np.reshape(args.n, nb, args.block).astype(np.float64)
        fisher = np.einsum("nbi,nbj->bij", g, g, optimize=True) / args.n + args.damping * np.eye(args.block)
        t1 = time.perf_counter() - t0
        a = inverse_fisher(fisher)
        t, c = time.perf_counter() - t0, time.process_time() - c0
    return {"fisher_f64_s": t1, "inverse_f64_s": t - t1, "total_s": t, "total_cpu_s": c,
            "a_abs_max": float(np.abs(a).max()),
            "peak_rss_bytes": vm_hwm_bytes(), "peak_rss_sampled_bytes": s.peak, "rss_after_inputs_bytes": rss_inputs}


WORKERS = {
    "prepare": worker_prepare,
    "jax": worker_jax,
    "jax_stream": worker_jax_stream,
    "numpy": lambda a, t: worker_baseline(a, t, "numpy"),
    "sherman": lambda a, t: worker_baseline(a, t, "sherman"),
    "jax_grouped": worker_jax_grouped,
    "sherman_batched_jax": lambda a, t: worker_sherman_batched(a, t, "jax"),
    "sherman_batched_numpy": lambda a, t: worker_sherman_batched(a, t, "numpy"),
    "client_inverse": worker_client_inverse,
}


# ---------------------------------------------------------------------------- driver
def run_worker(name, argv, tmp, env):
    out = os.path.join(tmp, f"{name}.json")
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--_worker", name, "--_tmp", tmp]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{proc.stdout}\n{proc.stderr}")
    with open(out) as f:
        res = json.load(f)
    res["wall_s_incl_startup"] = time.perf_counter() - t0
    return res


def gb(x):
    return None if x is None else round(x / 2**30, 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3072, help="fc1 output rows (3072 = full ViT-B/16 fc1; a multiple of 3 for B=576)")
    ap.add_argument("--n", type=int, default=480, help="number of per-example gradients (paper: 480)")
    ap.add_argument("--block", type=int, default=576, help="block size B (paper: 576)")
    ap.add_argument("--fraction", type=float, default=0.04, help="masked fraction (paper: 0.04)")
    ap.add_argument("--mask", choices=("random", "score"), default="random")
    ap.add_argument("--damping", type=float, default=1e-6)
    ap.add_argument("--tokens", type=int, default=4, help="tokens per synthetic example")
    ap.add_argument("--chunk", type=int, default=32, help="chunk size of per-example gradients")
    ap.add_argument("--repeats", type=int, default=2, help="timed jax repeats after the compile call (best kept)")
    ap.add_argument("--baseline-blocks", type=int, default=0, help="run baselines on this many evenly spaced blocks and extrapolate (0 = all)")
    ap.add_argument("--sherman-blocks", type=int, default=None, help="subset for the Sherman-Morrison baseline (default: --baseline-blocks)")
    ap.add_argument("--skip", default="sherman", help="comma list of methods to skip: jax_stream,jax_grouped,sherman_batched_jax,"
                    "sherman_batched_numpy,numpy,sherman,client_inverse (default: the one-thread per-block Sherman-Morrison loop)")
    ap.add_argument("--device", choices=("cpu", "gpu", "tpu", "auto"), default="auto", help="JAX platform for the jax methods")
    ap.add_argument("--threads", type=int, default=2,
                    help="CPU threads for every method (BLAS and XLA:CPU); 0 = library defaults; 1 = one thread")
    ap.add_argument("--block-batch", type=int, default=64, help="blocks per group of the jax_grouped method (bounded memory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/fisher_obs_<rows>x768_<device>.json)")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        if args._worker == "sherman" and args.sherman_blocks is not None:
            args.baseline_blocks = args.sherman_blocks
        res = WORKERS[args._worker](args, args._tmp)
        with open(os.path.join(args._tmp, f"{args._worker}.json"), "w") as f:
            json.dump(res, f)
        return

    if (args.rows * IN_DIM) % args.block:
        ap.error(f"rows * {IN_DIM} = {args.rows * IN_DIM} is not divisible by block {args.block}")
    skip = {s for s in args.skip.split(",") if s}
    env = dict(os.environ)
    if args.threads > 0:
        t = str(args.threads)
        env.update(OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t)
        if args.threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    base_env = dict(env, JAX_PLATFORMS="cpu")  # prepare/baselines do not need the accelerator
    if args.device != "auto":
        env["JAX_PLATFORMS"] = {"gpu": "cuda"}.get(args.device, args.device)
    fwd = [a for a in (argv if argv is not None else sys.argv[1:])]
    nb = args.rows * IN_DIM // args.block
    print(f"fc1 kernel ({args.rows} x {IN_DIM}) = {args.rows * IN_DIM:,} weights, B = {args.block} -> {nb} blocks; "
          f"N = {args.n}; mask {args.fraction:g} ({args.mask}); damping {args.damping:g}", flush=True)
    results: dict = {"config": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench-fisher-obs-") as tmp:
        results["prepare"] = run_worker("prepare", fwd, tmp, base_env)
        print(f"  inputs: G {args.n} x {results['prepare']['D']:,} float32, {results['prepare']['num_masked']:,} masked "
              f"(per block {results['prepare']['masked_per_block']})", flush=True)
        if "jax" not in skip:
            results["jax"] = run_worker("jax", fwd, tmp, env)
            print(f"  jax         {results['jax']['total_s']:9.3f} s  (cpu {results['jax']['total_cpu_s']:.3f} s; fisher {results['jax']['fisher_s']:.3f}, factorize "
                  f"{results['jax']['factorize_s']:.3f}, group_obs {results['jax']['group_obs_s']:.3f}; first call incl. compile "
                  f"{results['jax']['first_call_total_s_incl_compile']:.3f}; KKT rel {results['jax']['kkt_residual_rel_max']:.1e}, "
                  f"constraint rel {results['jax']['constraint_rel_max']:.1e})  peak RSS {gb(results['jax']['peak_rss_bytes'])} GiB"
                  f"  device peak {gb(results['jax']['device_peak_bytes'])} GiB", flush=True)
        if "jax_stream" not in skip:
            results["jax_stream"] = run_worker("jax_stream", fwd, tmp, env)
            r = results["jax_stream"]
            print(f"  jax_stream  {r['accumulate_fisher_s']:9.3f} s  (cpu {r['accumulate_fisher_cpu_s']:.3f} s; per-example grads + Fisher from the loss, chunk {r['chunk_size']})"
                  f"  peak RSS {gb(r['peak_rss_bytes'])} GiB  device peak {gb(r['device_peak_bytes'])} GiB", flush=True)
        if "jax_grouped" not in skip:
            r = results["jax_grouped"] = run_worker("jax_grouped", fwd, tmp, env)
            print(f"  jax_grouped {r['total_s']:9.3f} s  (cpu {r['total_cpu_s']:.3f} s; fisher_group_obs, block_batch {r['block_batch']}; "
                  f"max|delta - delta_jax|/max|delta_jax| = {r['delta_rel_diff_vs_jax']:.1e})  peak RSS {gb(r['peak_rss_bytes'])} GiB"
                  f"  device peak {gb(r['device_peak_bytes'])} GiB", flush=True)
        delta_jax = np.load(os.path.join(tmp, "delta_jax.npy"))  # jax's, or jax_grouped's under --skip jax
        ours = [k for k in ("jax", "jax_grouped") if k in results]
        for kind in ("sherman_batched_jax", "sherman_batched_numpy", "numpy", "sherman"):
            if kind in skip:
                continue
            r = run_worker(kind, fwd, tmp, base_env)
            d = np.load(os.path.join(tmp, f"delta_{kind}.npy"))
            blocks = np.load(os.path.join(tmp, f"blocks_{kind}.npy"))
            ref = delta_jax[blocks]
            r["delta_rel_diff_vs_jax"] = float(np.abs(d - ref).max() / max(np.abs(ref).max(), 1e-30))
            for o in ours:
                r[f"speedup_of_{o}"] = r["total_s"] / results[o]["total_s"]
                r[f"speedup_of_{o}_cpu_time"] = r["total_cpu_s"] / results[o]["total_cpu_s"]
            results[kind] = r
            ex = f"  [EXTRAPOLATED from {r['measured_blocks']} of {nb} blocks]" if r["extrapolated"] else ""
            sp = ", ".join(f"{o} {r[f'speedup_of_{o}']:.1f}x" for o in ours)
            print(f"  {kind:<21} {r['total_s']:9.3f} s  (cpu {r['total_cpu_s']:.3f} s)  -> speed-up of {sp};  peak RSS "
                  f"{gb(r['peak_rss_bytes'])} GiB;  max|delta - delta_jax|/max|delta_jax| = {r['delta_rel_diff_vs_jax']:.2e}{ex}", flush=True)
        if "client_inverse" not in skip:
            r = results["client_inverse"] = run_worker("client_inverse", fwd, tmp, base_env)
            print(f"  client_inverse {r['total_s']:9.3f} s  (C in float64 {r['fisher_f64_s']:.2f} s + A = C^-1 {r['inverse_f64_s']:.2f} s; the "
                  f"protocol's client, once per Fisher)  peak RSS {gb(r['peak_rss_bytes'])} GiB", flush=True)
    import jax

    results["host"] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                       "jax": jax.__version__, "numpy": np.__version__,
                       "loadavg_1_5_15_start": load_start,
                       "loadavg_1_5_15_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"fisher_obs_{args.rows}x{IN_DIM}_{results.get('jax', {}).get('platform', 'cpu')}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmpf = tempfile.mkstemp(dir=os.path.dirname(out), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmpf, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
