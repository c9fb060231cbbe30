"""The client's prove stage of a finished demo run, re-run side by side under prover settings.

Reads a ``zkapex demo --out DIR`` folder (personalized checkpoint, commitment and secrets, mask),
and re-runs the client's certified update and proving (``api.unlearn`` + ``api.prove``, a process
pool of ``--jobs`` provers) once per configuration and repeat, configurations alternating so that
a machine's drift hits all of them alike. Each run is its own interpreter (the prover threads are
read from the environment when the pool starts). Configurations:

- ``shared``: this version's default — each prover gets ``cpus // jobs`` Rayon threads
  (``prover.worker_threads``);
- ``rayon``: every prover with Rayon's default of one thread per CPU (``RAYON_NUM_THREADS`` =
  the CPU count: what earlier versions ran);
- with ``--cold``, each configuration also runs with an empty key store (``cold_*``): the bucket
  circuits keyed inside the stage, as a first request without ``zkapex keys`` would.

Per run: the stage's wall seconds, the prover's wall and summed per-proof seconds, and the peak RSS
of the stage's process and of its largest prover process. Results go to
``benchmarks/results/prove_stage_<tag><time>.json``.

    zkapex demo --out /tmp/demo_bench --jobs 2 --executor process
    python benchmarks/bench_prove_stage.py --demo /tmp/demo_bench --repeat 3 --cold --tag 2core_
    (with ``--cache DIR`` when the demo ran with ``--cache DIR``)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _child(demo: Path, keystore: Path, jobs: int, out: Path) -> dict:
    from zkapex_jax.core.mask import Mask
    from zkapex_jax.models.train import load_checkpoint
    from zkapex_jax.protocol import KeyStore, api, load_commitment, load_secrets

    theta_p = load_checkpoint(demo / "personalized")[0]
    com = load_commitment(demo / "commitment.npz")
    sec = load_secrets(demo / "commitment-secrets.npz", com)
    mask = Mask.load(demo / "mask.json")
    ks = KeyStore(keystore)
    t0 = time.perf_counter()
    _, u = api.unlearn(theta_p, mask, com, sec, keystore=ks)
    bundle = api.prove(theta_p, mask, com, sec, request_id="bench", out_dir=out / "bundle", unlearned=u,
                       keystore=ks, jobs=jobs, executor="process", opening_out=out / "opening.npz")
    wall = time.perf_counter() - t0
    st = json.loads((bundle / "statement.json").read_text())["prover"]
    return {"stage_s": round(wall, 2), "prover_wall_s": st["wall_s"], "prove_s_summed": st["prove_s"],
            "proofs": st["n_proofs"], "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_rss_prover_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, required=True, help="a finished `zkapex demo --out DIR` folder")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also run every configuration with an empty key store")
    ap.add_argument("--cache", type=Path, default=None,
                    help="the key/SRS cache the demo ran with (its --cache; default $ZKAPEX_CACHE or ~/.cache/zkapex)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--child", nargs=3, metavar=("KEYSTORE", "JOBS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        ks, jobs, out = args.child
        print(json.dumps(_child(args.demo, Path(ks), int(jobs), Path(out))))
        return 0
    for f in ("personalized", "commitment.npz", "commitment-secrets.npz", "mask.json"):
        if not (args.demo / f).exists():
            ap.error(f"{args.demo / f} is missing: run `zkapex demo --out {args.demo}` first")
    from zkapex_jax.protocol import KeyStore, load_commitment, prepare_keys
    from zkapex_jax.studies.report import run_environment

    if args.cache is not None:
        os.environ["ZKAPEX_CACHE"] = str(args.cache)   # the SRS of the commitment; children inherit it
    warm = KeyStore().root
    cspec = load_commitment(args.demo / "commitment.npz").spec
    prepare_keys(cspec, KeyStore(warm), jobs=args.jobs)   # the warm store holds every bucket's keys
    cpus = os.cpu_count() or 1
    configs = [("shared", None), ("rayon", str(cpus))]
    if args.cold:
        configs += [("cold_shared", None), ("cold_rayon", str(cpus))]
    runs = {name: [] for name, _ in configs}
    for rep in range(args.repeat):
        for name, threads in configs:
            env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
            if threads:
                env["RAYON_NUM_THREADS"] = threads
            with tempfile.TemporaryDirectory() as td:
                ks = warm
                if name.startswith("cold"):  # the SRS and row counts kept, no circuit keyed
                    ks = Path(td) / "ks"
                    (ks / "rows").mkdir(parents=True)
                    for p in (Path(warm) / "rows").glob("*.json"):
                        shutil.copy(p, ks / "rows" / p.name)
                r = subprocess.run([sys.executable, __file__, "--demo", str(args.demo), "--child", str(ks),
                                    str(args.jobs), td], env=env, capture_output=True, text=True, check=False)
                if r.returncode:
                    sys.stderr.write(r.stderr[-3000:])
                    raise SystemExit(f"run {name} #{rep} failed")
                rec = json.loads(r.stdout.strip().splitlines()[-1])
            runs[name].append(rec)
            print(name, rep, json.dumps(rec), flush=True)
    summary = {}
    for name, recs in runs.items():
        xs = sorted(r["stage_s"] for r in recs)
        summary[name] = {"stage_s_median": xs[len(xs) // 2], "stage_s_min": xs[0], "stage_s_max": xs[-1],
                         "peak_rss_prover_mb_max": max(r["peak_rss_prover_mb"] for r in recs),
                         "peak_rss_mb_max": max(r["peak_rss_mb"] for r in recs)}
    base = summary["rayon"]["stage_s_median"]
    for name in summary:
        ref = summary["cold_rayon" if name.startswith("cold") else "rayon"]["stage_s_median"]
        summary[name]["vs_rayon_default"] = round(summary[name]["stage_s_median"] / ref, 3)
    out = {"demo": str(args.demo), "jobs": args.jobs, "cpus": cpus, "repeat": args.repeat, "runs": runs,
           "summary": summary, "baseline_stage_s": base, "environment": run_environment()}
    dest = ROOT / "benchmarks" / "results" / f"prove_stage_{args.tag}{time.strftime('%Y%m%d_%H%M%S')}.json"
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"written: {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
