"""ezkl stages for the chunk relation, with an on-disk cache.

Cache layout (root: ``$ZKAPEX_CACHE`` or ``~/.cache/zkapex``)::

    srs/kzg{logrows}.srs (+ .json: how it was made; locally generated = INSECURE, test only)
    circuits/{spec.key}/relation.onnx settings.json relation.compiled vk.key pk.key meta.json
    ezkl/   (EZKL_REPO_PATH: ezkl's lookup-table cache)

Every stage writes to a temporary name and ``os.replace``-s it; key creation is serialized by a
file lock so parallel prover processes share one set of keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .relation import CircuitSpec, build_relation

#: BN254 scalar field modulus (ezkl's field).
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617
N_INPUTS = 5
COMMITTED_INPUTS = ("theta_p", "fisher", "theta_u", "lam", "public")


class EzklError(RuntimeError):
    """An ezkl stage failed (message names the stage and ezkl's reason)."""


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    p = Path(root or os.environ.get("ZKAPEX_CACHE") or Path.home() / ".cache" / "zkapex")
    p.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EZKL_REPO_PATH", str(p / "ezkl"))
    return p


def _ezkl():
    import ezkl  # imported lazily: heavy, and only the proof half needs it

    return ezkl


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tmp(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _stage(name, fn, *args, **kw):
    try:
        out = fn(*args, **kw)
    except Exception as e:  # ezkl raises RuntimeError/ValueError/BaseException subclasses
        raise EzklError(f"ezkl {name} failed: {e}") from e
    return out


def ensure_srs(logrows: int, srs_path: str | os.PathLike | None = None, *, root=None) -> tuple[Path, bool]:
    """``(path, insecure)``. A user-supplied ceremony file is used as is (secure); otherwise a
    KZG SRS of ``2**logrows`` is generated locally with ``ezkl.gen_srs`` — whoever ran it knows
    the trapdoor, so it is labelled insecure (test only) — and cached by logrows."""
    if srs_path is not None:
        p = Path(srs_path)
        if not p.is_file():
            raise FileNotFoundError(f"SRS file {p} does not exist")
        return p, False
    d = cache_dir(root) / "srs"
    p = d / f"kzg{logrows}.srs"
    with _lock(d / f".kzg{logrows}.lock"):
        if not p.is_file():
            t = _tmp(p)
            t0 = time.perf_counter()
            _stage("gen_srs", _ezkl().gen_srs, str(t), int(logrows))
            os.replace(t, p)
            (d / f"kzg{logrows}.json").write_text(json.dumps({
                "logrows": logrows, "source": "ezkl.gen_srs (local)", "insecure": True,
                "seconds": round(time.perf_counter() - t0, 3), "sha256": sha256_file(p)}))
    return p, True


@dataclass(frozen=True)
class CircuitArtifacts:
    """Paths of one compiled, keyed circuit shape."""

    spec: CircuitSpec
    dir: Path
    onnx: Path
    settings: Path
    compiled: Path
    vk: Path
    pk: Path
    srs: Path
    srs_insecure: bool
    logrows: int
    num_rows: int
    meta: dict


def _run_args(spec: CircuitSpec, logrows: int):
    ra = _ezkl().PyRunArgs()
    ra.input_scale = 0
    ra.param_scale = 0
    ra.input_visibility = "polycommit"
    ra.param_visibility = "fixed"
    ra.output_visibility = "public"
    ra.decomp_base = spec.decomp_base
    ra.decomp_legs = spec.decomp_legs
    ra.disable_freivalds = True
    ra.ignore_range_check_inputs_outputs = False  # keep: the range checks carry the soundness argument
    ra.check_mode = "safe"
    ra.logrows = int(logrows)
    return ra


def ensure_circuit(spec: CircuitSpec, *, srs_path=None, root=None, logrows: int | None = None,
                   progress=None) -> CircuitArtifacts:
    """Build (once) the ONNX relation, settings, compiled circuit and keys of ``spec``; cached
    under ``circuits/{spec.key}`` of the cache. ``logrows`` defaults to the smallest that fits."""
    ezkl = _ezkl()
    base = cache_dir(root) / "circuits" / spec.key
    base.mkdir(parents=True, exist_ok=True)
    srs_tag = "local" if srs_path is None else hashlib.sha256(str(Path(srs_path).resolve()).encode()).hexdigest()[:8]
    with _lock(base / ".lock"):
        meta_p = base / f"meta-{srs_tag}.json"
        if meta_p.is_file():
            try:
                meta = json.loads(meta_p.read_text())
                cached = (logrows is None or meta["logrows"] == logrows) and all(
                    (base / n).is_file() for n in ("relation.compiled", "settings.json", f"vk-{srs_tag}.key",
                                                   f"pk-{srs_tag}.key"))
            except (ValueError, KeyError, TypeError):
                cached = False  # a damaged cache entry is rebuilt
            if cached:
                srs, insecure = ensure_srs(meta["logrows"], srs_path)
                return _artifacts(spec, base, meta, srs, insecure, srs_tag)
        timings = {}
        onnx_p = base / "relation.onnx"
        t0 = time.perf_counter()
        model = build_relation(spec)
        t = _tmp(onnx_p)
        t.write_bytes(model.SerializeToString())
        os.replace(t, onnx_p)
        settings_p = base / "settings.json"
        lr = logrows or spec.logrows_min
        for _ in range(6):  # gen_settings → count rows → smallest logrows that fits
            t = _tmp(settings_p)
            _stage("gen_settings", ezkl.gen_settings, str(onnx_p), str(t), py_run_args=_run_args(spec, lr))
            s = json.loads(t.read_text())
            rows = int(s["num_rows"])
            need = max(spec.logrows_min, math.ceil(math.log2(rows + 64)))
            if logrows is not None or need == lr:
                _canonicalize_settings(t)
                os.replace(t, settings_p)
                break
            t.unlink()
            lr = need
        else:
            raise EzklError("could not settle logrows")
        timings["settings_s"] = time.perf_counter() - t0
        compiled_p = base / "relation.compiled"
        t0 = time.perf_counter()
        t = _tmp(compiled_p)
        _stage("compile_circuit", ezkl.compile_circuit, str(onnx_p), str(t), str(settings_p))
        os.replace(t, compiled_p)
        timings["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        srs, insecure = ensure_srs(lr, srs_path)
        timings["srs_s"] = time.perf_counter() - t0
        vk_p, pk_p = base / f"vk-{srs_tag}.key", base / f"pk-{srs_tag}.key"
        tv, tpk = _tmp(vk_p), _tmp(pk_p)
        t0 = time.perf_counter()
        _stage("setup", ezkl.setup, str(compiled_p), str(tv), str(tpk), srs_path=str(srs))
        timings["setup_s"] = time.perf_counter() - t0
        os.replace(tv, vk_p)
        os.replace(tpk, pk_p)
        meta = {"spec": spec.to_dict(), "logrows": lr, "num_rows": rows, "timings": timings,
                "vk_bytes": vk_p.stat().st_size, "pk_bytes": pk_p.stat().st_size,
                "vk_sha256": sha256_file(vk_p), "settings_sha256": sha256_file(settings_p),
                "srs_sha256": sha256_file(srs), "srs_insecure": insecure}
        t = _tmp(meta_p)
        t.write_text(json.dumps(meta, indent=1))
        os.replace(t, meta_p)
        return _artifacts(spec, base, meta, srs, insecure, srs_tag)


def _canonicalize_settings(path: Path):
    """ezkl lists the required range checks / lookups in hash-map order, which varies between
    runs and changes the circuit layout (so the vk). Sort them (and drop the timestamp) so every
    party derives the same keys from the same public spec."""
    s = json.loads(path.read_text())
    for k in ("required_range_checks", "required_lookups"):
        if isinstance(s.get(k), list):
            s[k] = sorted(s[k], key=lambda x: json.dumps(x, sort_keys=True))
    if "timestamp" in s:
        s["timestamp"] = 0
    path.write_text(json.dumps(s, sort_keys=True))


def _artifacts(spec, base, meta, srs, insecure, srs_tag) -> CircuitArtifacts:
    return CircuitArtifacts(spec=spec, dir=base, onnx=base / "relation.onnx", settings=base / "settings.json",
                            compiled=base / "relation.compiled", vk=base / f"vk-{srs_tag}.key",
                            pk=base / f"pk-{srs_tag}.key", srs=srs, srs_insecure=insecure,
                            logrows=int(meta["logrows"]), num_rows=int(meta["num_rows"]), meta=meta)


# ---------------------------------------------------------------- field elements and points

def int_to_felt(v: int) -> str:
    """ezkl's field-element string (32 bytes little-endian hex) of a signed integer."""
    return (int(v) % FIELD_MODULUS).to_bytes(32, "little").hex()


def felt_to_int(h: str) -> int:
    """Inverse of :func:`int_to_felt` (values above p/2 read as negative)."""
    v = int.from_bytes(bytes.fromhex(h.removeprefix("0x")), "little")
    if v >= FIELD_MODULUS:
        raise ValueError("not a canonical field element")
    return v - FIELD_MODULUS if v > FIELD_MODULUS // 2 else v


def point_hex(p) -> str:
    """A PyG1Affine as 128 hex chars: big-endian x ‖ big-endian y (the proof's own encoding)."""
    return bytes.fromhex(p.x)[::-1].hex() + bytes.fromhex(p.y)[::-1].hex()


def commit_columns(art: CircuitArtifacts, values: list[int]) -> str:
    """KZG commitment (as :func:`point_hex`) of one committed input column of ``art``.

    Raises if the input spans more than one column (then the blinders would not blind all of it)."""
    felts = [int_to_felt(v) for v in values]
    pts = _stage("kzg_commit", _ezkl().kzg_commit, felts, str(art.vk), str(art.settings), str(art.srs))
    if len(pts) != 1:
        raise EzklError(f"input of {len(values)} values spans {len(pts)} columns; raise logrows")
    return point_hex(pts[0])


# ---------------------------------------------------------------- prove / verify

def prove_chunk(art: CircuitArtifacts, inputs: list[list[int]], out_proof: str | os.PathLike,
                *, workdir: str | os.PathLike | None = None) -> dict:
    """Witness + proof of one chunk. ``inputs``: the five integer input vectors in
    :data:`COMMITTED_INPUTS` order. Writes ``out_proof`` atomically; returns timings and sizes."""
    ezkl = _ezkl()
    lens = art.spec.input_lengths()
    if [len(v) for v in inputs] != list(lens):
        raise ValueError(f"chunk inputs have lengths {[len(v) for v in inputs]}, expected {list(lens)}")
    bound = art.spec.input_bound
    for name, v in zip(COMMITTED_INPUTS, inputs):
        bad = [x for x in v if abs(int(x)) > bound]
        if bad:
            raise ValueError(f"input {name} holds {len(bad)} values outside ±{bound} (e.g. {bad[0]})")
    out_proof = Path(out_proof)
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        td = Path(td)
        (td / "input.json").write_text(json.dumps({"input_data": [[float(int(x)) for x in v] for v in inputs]}))
        t0 = time.perf_counter()
        _stage("gen_witness", ezkl.gen_witness, str(td / "input.json"), str(art.compiled), str(td / "witness.json"),
               vk_path=str(art.vk), srs_path=str(art.srs))
        t1 = time.perf_counter()
        _stage("prove", ezkl.prove, str(td / "witness.json"), str(art.compiled), str(art.pk), str(td / "proof.json"),
               srs_path=str(art.srs))
        t2 = time.perf_counter()
        tmp = _tmp(out_proof)
        os.replace(td / "proof.json", tmp)
        os.replace(tmp, out_proof)
    return {"witness_s": t1 - t0, "prove_s": t2 - t1, "proof_file_bytes": out_proof.stat().st_size}


def verify_chunk(proof_path, settings_path, vk_path, srs_path) -> bool:
    """``ezkl.verify`` of one proof against the given (trusted) vk; False on any failure."""
    try:
        return bool(_ezkl().verify(str(proof_path), str(settings_path), str(vk_path), srs_path=str(srs_path)))
    except BaseException as e:  # noqa: BLE001 — ezkl panics surface as pyo3 PanicException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def proof_public(proof: dict, n_inputs: int = N_INPUTS) -> tuple[list[int], list[str]]:
    """(instances as signed ints, embedded input commitments as :func:`point_hex`) of a proof dict."""
    inst = proof["instances"]
    flat = [felt_to_int(x) for col in inst for x in col]
    raw = bytes(proof["proof"]) if proof.get("proof") is not None else bytes.fromhex(proof["hex_proof"][2:])
    if len(raw) < 64 * n_inputs:
        raise ValueError("proof too short")
    coms = [raw[64 * i:64 * (i + 1)].hex() for i in range(n_inputs)]
    return flat, coms
