"""Reporting for the studies: the results JSON (atomic writer, validated
loader), mean ± std aggregation over seeds, markdown tables and matplotlib plots.

Results file shape (both studies)::

    {"study": str, "seeds": [int], "methods": {name: {metric: {"mean": float, "std": float}}},
     "recovery": {"mean": float, "std": float}, ...extra keys (settings, wall_time, sweeps)...,
     "format": "zkapex.results", "version": 1, "sha256": <hash of the rest>}

``std`` is the population standard deviation over seeds (ddof=0). A metric that is undefined
for some seed (e.g. recovery when masking did not hurt) is left out of that seed's statistics;
if it is undefined for every seed, mean and std are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import ArtifactError
from .._io import atomic_write_bytes, atomic_write_text, content_digest, read_json_artifact, write_json_artifact

RESULTS_FORMAT = "zkapex.results"
RESULTS_VERSION = 1

__all__ = [
    "aggregate",
    "mean_std",
    "bootstrap_ci95",
    "t_ci95",
    "run_environment",
    "write_results",
    "load_results",
    "validate_results",
    "markdown_table",
    "plot_sweep",
    "fmt_pm",
]


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def bootstrap_ci95(values: Sequence[float], *, n_boot: int = 10_000, seed: int = 0) -> list | None:
    """95% percentile-bootstrap interval ``[lo, hi]`` of the mean over the finite ``values`` (seeds
    resampled with replacement, ``n_boot`` times, a fixed PRNG seed so the file is reproducible);
    ``None`` with fewer than 2 finite values."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    ok = a[np.isfinite(a)]
    if ok.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = ok[rng.integers(0, ok.size, size=(n_boot, ok.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def t_ci95(values: Sequence[float]) -> list | None:
    """95% Student-t interval ``[lo, hi]`` of the mean over the finite ``values``:
    mean ± t(0.975, n−1)·s/√n with the sample standard deviation s (ddof 1). With 5 seeds the
    percentile bootstrap under-covers (it ignores that s itself is estimated from 5 values);
    ``None`` below 2 values."""
    from scipy.stats import t

    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    ok = a[np.isfinite(a)]
    if ok.size < 2:
        return None
    half = float(t.ppf(0.975, ok.size - 1) * ok.std(ddof=1) / np.sqrt(ok.size))
    return [float(ok.mean() - half), float(ok.mean() + half)]


def mean_std(values: Sequence[float]) -> dict:
    """{"mean", "std", "ci95", "ci95_bootstrap", "n"} over the finite values (population std;
    ``ci95`` the Student-t interval of the mean over seeds, ``ci95_bootstrap`` the percentile
    bootstrap kept for comparison; None below 2 values); None/None if none is finite."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    ok = a[np.isfinite(a)]
    if ok.size == 0:
        return {"mean": None, "std": None, "ci95": None, "ci95_bootstrap": None, "n": 0}
    return {"mean": float(ok.mean()), "std": float(ok.std()), "ci95": t_ci95(ok),
            "ci95_bootstrap": bootstrap_ci95(ok), "n": int(ok.size)}


def aggregate(per_seed: Sequence[Mapping[str, Mapping[str, float]]]) -> dict:
    """[{method: {metric: value}} per seed] -> {method: {metric: {"mean", "std"}}}."""
    methods: dict[str, dict[str, list]] = {}
    for run in per_seed:
        for m, metrics in run.items():
            for k, v in metrics.items():
                methods.setdefault(m, {}).setdefault(k, []).append(v)
    return {m: {k: mean_std(v) for k, v in ms.items()} for m, ms in methods.items()}


def validate_results(obj: Any, *, where: str = "results") -> dict:
    """Check the results shape; raise ArtifactError naming the problem."""
    if not isinstance(obj, Mapping):
        raise ArtifactError(f"{where}: top level is not an object")
    for key, typ in (("study", str), ("seeds", list), ("methods", Mapping), ("recovery", Mapping)):
        if not isinstance(obj.get(key), typ):
            raise ArtifactError(f"{where}: missing or malformed key {key!r}")
    if not all(isinstance(s, int) for s in obj["seeds"]):
        raise ArtifactError(f"{where}: seeds must be integers")
    for m, metrics in obj["methods"].items():
        if not isinstance(metrics, Mapping):
            raise ArtifactError(f"{where}: method {m!r} is not an object")
        for k, st in metrics.items():
            if not (isinstance(st, Mapping) and "mean" in st and "std" in st):
                raise ArtifactError(f"{where}: methods[{m!r}][{k!r}] lacks mean/std")
    if not ("mean" in obj["recovery"] and "std" in obj["recovery"]):
        raise ArtifactError(f"{where}: recovery lacks mean/std")
    if "sha256" in obj and obj["sha256"] != content_digest(obj):
        raise ArtifactError(f"{where}: content hash mismatch (file edited or corrupted)")
    return dict(obj)


def save_figure(fig, path: str | os.PathLike) -> None:
    """``fig.tight_layout()``, PNG bytes, one atomic write; closes the figure."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


_ENV_VARS = ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
             "MKL_NUM_THREADS", "JAX_ENABLE_X64", "JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")


#: the vector extensions XLA's CPU code generation follows (the trained models differ with them)
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu_info() -> dict:
    """The CPU model and its vector extensions (Linux ``/proc/cpuinfo``; else what ``platform``
    knows). The same seed trains a different model under other vector extensions: the demo's
    personalized model reaches forget accuracy 0.550 with XLA held to SSE4.2, 0.454 to AVX, 0.330
    with AVX-512 on one machine (docs/RESULTS.md, experiments/demo_robustness.py), so results record it."""
    import platform

    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    return {"model": model or platform.processor() or None, "isa": [f for f in _ISA_FLAGS if f in flags]}


def run_environment() -> dict:
    """What a seed's numbers depend on besides the seed: library versions, the device and thread
    settings (XLA flags, BLAS threads), the CPU and its vector extensions, the CPU count and the
    source revision. Stamped into every results file (a seed re-run with other threads measured
    recovery −0.35 instead of 0.59; other vector extensions train another model)."""
    import platform
    import subprocess
    from importlib import metadata

    import jax

    def ver(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__)).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    try:
        from threadpoolctl import threadpool_info
        blas = [{k: i.get(k) for k in ("internal_api", "num_threads", "version")} for i in threadpool_info()]
    except Exception:  # noqa: BLE001 — informational only
        blas = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_info(),
            "cpu_count": os.cpu_count(),
            "versions": {n: ver(n) for n in ("jax", "jaxlib", "flax", "optax", "numpy", "transformers", "ezkl")},
            "devices": [str(d) for d in jax.devices()], "env": {k: os.environ.get(k) for k in _ENV_VARS},
            "blas": blas, "git": rev}


def write_results(path: str | os.PathLike, results: Mapping) -> dict:
    """Validate, stamp format/version/sha256 (and :func:`run_environment`, unless the results
    carry one) and write atomically (temp file + os.replace)."""
    obj = _clean(dict(results))
    obj.setdefault("environment", run_environment())
    obj["format"] = RESULTS_FORMAT
    obj["version"] = RESULTS_VERSION
    obj.pop("sha256", None)
    obj["sha256"] = content_digest(obj)
    validate_results(obj, where=str(path))
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")
    return obj


STUDY_RECORD_FORMAT = "zkapex.study-record"
STUDY_RECORD_VERSION = 1


def write_study_record(path: str | os.PathLike, study: str, record: Mapping) -> dict:
    """The side studies' output (threat model, curvature, bound, probes: any JSON object) as a
    JSON artifact (:func:`zkapex_jax._io.write_json_artifact`: ``format``, ``version``, ``sha256``
    over the rest, written atomically) with ``study`` and the run's :func:`run_environment` unless
    it carries one. Non-finite numbers become null (as in results files). Returns the written
    object."""
    if not isinstance(study, str) or not study:
        raise ValueError("study must be a non-empty name")
    obj = _clean(dict(record))
    obj.setdefault("environment", run_environment())
    for k in ("format", "version", "sha256"):
        obj.pop(k, None)
    obj["study"] = study
    digest = write_json_artifact(path, STUDY_RECORD_FORMAT, STUDY_RECORD_VERSION, obj)
    return {"format": STUDY_RECORD_FORMAT, "version": STUDY_RECORD_VERSION, **obj, "sha256": digest}


def load_study_record(path: str | os.PathLike, study: str | None = None) -> dict:
    """Read a :func:`write_study_record` file (:func:`zkapex_jax._io.read_json_artifact`: regular
    file, strict JSON, format, version, hash) and check ``study`` if given; ``ArtifactError``
    naming the file otherwise."""
    obj = read_json_artifact(path, STUDY_RECORD_FORMAT, (STUDY_RECORD_VERSION,))
    if study is not None and obj.get("study") != study:
        raise ArtifactError(f"{path}: a {obj.get('study')!r} record, expected {study!r}")
    return obj


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a results file (format, version, hash, shape)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: cannot read results JSON ({e})") from e
    if obj.get("format") != RESULTS_FORMAT or obj.get("version") != RESULTS_VERSION:
        raise ArtifactError(f"{path}: not a {RESULTS_FORMAT} v{RESULTS_VERSION} file")
    return validate_results(obj, where=str(path))


def fmt_pm(stat: Mapping | None, *, digits: int = 3, scale: float = 1.0) -> str:
    """'0.912 ± 0.004' (or 'n/a')."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean'] * scale:.{digits}f} ± {(stat.get('std') or 0.0) * scale:.{digits}f}"


def markdown_table(methods: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str], *,
                   digits: int = 3) -> str:
    """A markdown table: one row per method, one column per metric, 'mean ± std' cells."""
    head = "| method | " + " | ".join(metrics) + " |"
    sep = "|---|" + "|".join("---" for _ in metrics) + "|"
    rows = [f"| {m} | " + " | ".join(fmt_pm(ms.get(k), digits=digits) for k in metrics) + " |"
            for m, ms in methods.items()]
    return "\n".join([head, sep, *rows])


def plot_sweep(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, tuple[Sequence, Sequence]], *,
               xlabel: str, ylabel: str, title: str = "", logx: bool = False,
               hlines: Mapping[str, float] | None = None) -> None:
    """Line plot with ±std bands. ``series``: {label: (means, stds)} over ``x``;
    ``hlines``: {label: y} reference lines (e.g. retrain). Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=120)
    xs = np.asarray(x, dtype=float)
    for label, (mu, sd) in series.items():
        mu = np.asarray([np.nan if v is None else v for v in mu], float)
        sd = np.asarray([0.0 if v is None else v for v in sd], float)
        ax.plot(xs, mu, marker="o", label=label)
        ax.fill_between(xs, mu - sd, mu + sd, alpha=0.2)
    for i, (label, y) in enumerate((hlines or {}).items()):
        if y is not None:
            ax.axhline(y, ls="--", lw=1, color=f"C{(len(series) + i) % 10}", label=label)
    if logx:
        ax.set_xscale("log")
    _finish(fig, ax, path, xlabel, ylabel, title)


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_tradeoff(path: str | os.PathLike, curves: Mapping[str, tuple[Sequence, Sequence, Sequence]], *,
                  points: Mapping[str, tuple[float, float]] | None = None, labels: Sequence | None = None,
                  xlabel: str, ylabel: str, title: str = "") -> None:
    """Trade-off scatter-lines: ``curves`` {label: (x_means, y_means, y_stds)} drawn as lines with
    y error bars, points annotated with ``labels`` (e.g. the mask fractions); ``points``
    {label: (x, y)} are single reference markers (e.g. personalized, retrain). Atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.0), dpi=120)
    for label, (xs, ys, sd) in curves.items():
        xs = np.asarray([np.nan if v is None else v for v in xs], float)
        ys = np.asarray([np.nan if v is None else v for v in ys], float)
        sd = np.asarray([0.0 if v is None else v for v in sd], float)
        ax.errorbar(xs, ys, yerr=sd, marker="o", ms=4, capsize=2, label=label)
        for i, t in enumerate(labels or ()):
            if i < len(xs) and np.isfinite(xs[i]) and np.isfinite(ys[i]):
                ax.annotate(f"{t:g}", (xs[i], ys[i]), textcoords="offset points", xytext=(3, 3), fontsize=6)
    for i, (label, (x, y)) in enumerate((points or {}).items()):
        if x is not None and y is not None:
            ax.plot([x], [y], marker="*", ms=12, ls="none", color=f"C{(len(curves) + i) % 10}", label=label)
    _finish(fig, ax, path, xlabel, ylabel, title)


def selectivity_points(results: Mapping, method: str = "zkapex") -> list[dict]:
    """Per seed of an image-study results object: the selectivity measures next to what
    ``method`` reached (``subspace_overlap``, ``fisher_ratio_at_mask``, ``recovery``,
    ``forget_progress``). Seeds without selectivity measures are left out."""
    out = []
    for run in results.get("per_seed", []):
        t = run.get("timings") or {}
        if "selectivity_subspace_overlap" not in t:
            continue
        m = run["metrics"].get(method, {})
        out.append({"seed": run["seed"], "subspace_overlap": t["selectivity_subspace_overlap"],
                    "fisher_ratio_at_mask": t.get("selectivity_fisher_ratio_at_mask"),
                    "recovery": m.get("recovery"), "forget_progress": m.get("forget_progress")})
    return out


def plot_selectivity(path: str | os.PathLike, studies: Mapping[str, Mapping], *, method: str = "zkapex") -> None:
    """Two panels, one marker per seed and study: ZK-APEX's forget progress and its recovery
    against the share of the forget set's curvature inside the client's Fisher subspace
    (``studies``: {label: image-study results object}). Atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=120)
    for i, (label, res) in enumerate(studies.items()):
        pts = selectivity_points(res, method)
        if not pts:
            raise ValueError(f"{label}: the results carry no per-seed selectivity measures")
        x = [p["subspace_overlap"] for p in pts]
        for ax, key in zip(axes, ("forget_progress", "recovery")):
            y = [np.nan if p[key] is None else p[key] for p in pts]
            ax.plot(x, y, marker="os^D"[i % 4], ls="none", ms=7, color=f"C{i}", label=f"{label} ({len(pts)} seeds)")
    for ax, ylabel in zip(axes, ("forget progress of ZK-APEX (0 personalized, 1 retrain)",
                                  "recovery of ZK-APEX (personal accuracy)")):
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("forget curvature inside the client's Fisher subspace", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("ZK-APEX per seed against the share of the forget set's curvature inside the client's\n"
                 "Fisher subspace (high share: Group-OBS rebuilds what the mask removed, for the forget set too)",
                 fontsize=9)
    save_figure(fig, path)


def frontier_point(proof_slice: Mapping, study: Mapping | None = None, *, kind: str = "layer_inputs",
                   variant: str = "protect_0") -> dict:
    """One block size of the cost–fidelity frontier: from a ``benchmarks/bench_proof.py`` result
    (``proof_slice``) the measured proving CPU-s, peak RSS and proof bytes per block slot of a proof
    circuit (a K-block circuit costs the same filled or padded) and per certified parameter (a block
    certifies all its B weights: masked ones zero, the others compensated), and,
    from a curvature-study record at the same B (``study``, optional), the mean recovery and forget
    progress of ``kind``. Refuses a study whose block size is not the bench's."""
    B = int(proof_slice["block_size"])
    v = proof_slice.get("variants", {}).get(variant) or proof_slice  # older files: proofs at the top
    proofs = v.get("proofs") or []
    if not proofs:
        raise ValueError(f"the B = {B} proof slice holds no proofs (variant {variant!r})")
    blocks = sum(p["blocks"] for p in proofs)
    # a proof costs its circuit's K block slots, filled or padded (the full statement fills them)
    slots = sum(p.get("chunk_blocks", p["blocks"]) for p in proofs)
    cpu = sum(p["cpu_s"] for p in proofs)
    out = {"block_size": B, "logrows": proof_slice.get("logrows"), "wrap": proof_slice.get("wrap", 1),
           "blocks_proven": blocks, "block_slots": slots, "all_verified": all(p.get("verified") for p in proofs),
           "prove_cpu_s_per_block": cpu / slots, "prove_cpu_ms_per_param": 1e3 * cpu / slots / B,
           "peak_rss_mb": max(p["peak_rss_mb"] for p in proofs),
           "proof_bytes_per_block": sum(p["proof_bytes"] for p in proofs) / slots,
           "masked_per_block": float(np.mean(proof_slice["stages"]["data"]["masked_per_block"]))}
    commit = proof_slice["stages"].get("commit", {})
    if commit.get("columns"):
        out["commit_cpu_ms_per_column"] = 1e3 * commit["cpu_s"] / commit["columns"]
    if study is not None:
        sb = int(study["pipeline"]["block_size"])
        if sb != B:
            raise ValueError(f"the study's blocks are B = {sb}, the proof slice's B = {B}")
        row = study["table"].get(kind)
        if row is None:
            raise ValueError(f"the study has no {kind!r} row (it has {sorted(study['table'])})")
        out.update({"seeds": list(study["seeds"]), "recovery": row["recovery"]["mean"],
                    "forget_progress": row["forget_progress"]["mean"], "personal_acc": row["personal_acc"]["mean"],
                    "collapsed_seeds": row.get("collapsed_seeds")})
    return out


def plot_frontier(path: str | os.PathLike, points: Sequence[Mapping], *, title: str = "") -> None:
    """The block-size frontier: proving CPU-ms per certified parameter (log x) against recovery and
    forget progress, one labelled marker per block size. Atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(points, key=lambda p: p["block_size"])
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    x = [p["prove_cpu_ms_per_param"] for p in pts]
    for key, marker, label in (("recovery", "o", "recovery (personal accuracy)"),
                               ("forget_progress", "s", "forget progress (0 personalized, 1 retrain)")):
        y = [np.nan if p.get(key) is None else p[key] for p in pts]
        ax.plot(x, y, marker=marker, ms=7, label=label)
        for xi, yi, p in zip(x, y, pts):  # one label per block size, under its recovery marker
            if key == "recovery" and np.isfinite(yi):
                ax.annotate(f"B={p['block_size']}", (xi, yi), textcoords="offset points", xytext=(4, -13), fontsize=7)
    for xi, p in zip(x, pts):  # a block size measured for cost only: a marked line, no outcome drawn
        if p.get("recovery") is None and p.get("forget_progress") is None:
            ax.axvline(xi, ls=":", color="grey")
            ax.annotate(f"B={p['block_size']} (cost only)", (xi, 0.02), textcoords="offset points", xytext=(3, 0),
                        fontsize=7, rotation=90, color="grey")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xscale("log")
    ax.set_xlabel("proving CPU-ms per certified parameter (measured, single-process prover)", fontsize=8)
    ax.set_ylabel("outcome on the study's test split", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "block size: proving cost against fidelity", fontsize=9)
    save_figure(fig, path)


def load_seed_records(paths: Sequence, study: str, same: Sequence[str]) -> tuple[list, list]:
    """The per-seed records of one study run as separate processes, for merging: each loaded
    (:func:`load_study_record` of ``study``), the settings ``same`` checked equal to the first's,
    their ``per_seed`` entries sorted by seed, a seed given twice refused (``ArtifactError`` naming
    the files). Returns ``(records, per_seed)``."""
    recs = [load_study_record(p, study) for p in paths]
    for p, r in zip(paths[1:], recs[1:]):
        for k in same:
            if r.get(k) != recs[0].get(k):
                raise ArtifactError(f"{p}: {k!r} differs from {paths[0]}'s: these runs are not one study")
    per_seed = sorted((s for r in recs for s in r["per_seed"]), key=lambda s: s["seed"])
    seeds = [s["seed"] for s in per_seed]
    if len(set(seeds)) != len(seeds):
        raise ArtifactError(f"seed given twice among {[str(p) for p in paths]}: {seeds}")
    return recs, per_seed


def merge_command(parser, merge, paths: Sequence, out_path, show) -> int:
    """A study entry point's ``--merge``: ``show(merge(paths, out_path)["table"])``; a missing,
    unreadable or mismatched record ends the command with ``parser.error`` (exit 2, the problem
    named, nothing written). Returns 0."""
    try:
        show(merge(paths, out_path)["table"])
    except (ArtifactError, OSError) as e:
        parser.error(str(e))
    return 0


def merged_from(paths: Sequence, recs: Sequence[Mapping]) -> list[dict]:
    """What a merged record keeps of each source: path, sha256, seeds, seconds, environment."""
    return [{"path": str(p), "sha256": r["sha256"], "seeds": r["seeds"], "seconds": r["seconds"],
             "environment": r["environment"]} for p, r in zip(paths, recs)]
