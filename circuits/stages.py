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

from .relation import CircuitSpec, CommitSpec, build_relation

#: BN254 scalar field modulus (ezkl's field).
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617


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
    d.mkdir(parents=True, exist_ok=True)
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


_SRS_DIGESTS: dict = {}


def _srs_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SRS_DIGESTS:
        _SRS_DIGESTS[key] = sha256_file(path)
    return _SRS_DIGESTS[key]


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
    ra.decomp_base, ra.decomp_legs = spec.decomposition  # a column range circuit has its own
    ra.disable_freivalds = True
    # ezkl never range-checks polycommit inputs (../shared/EZKL.md); every bound the soundness
    # argument uses is an explicit Abs node in the graph, so the flag would only add rows.
    ra.ignore_range_check_inputs_outputs = True
    ra.check_mode = "safe"
    ra.logrows = int(logrows)
    return ra


def _rows_cached(spec: CircuitSpec, root=None) -> int | None:
    """ezkl's row count of ``spec`` (gen_settings only: no keys), or None when ezkl cannot lay the
    circuit out at its logrows at all (e.g. "too many values to flush for this column size": a
    structure that does not wrap); cached by spec key, failures too."""
    base = cache_dir(root) / "rows"
    base.mkdir(parents=True, exist_ok=True)
    p = base / f"{spec.key}.json"
    if p.is_file():
        try:
            got = json.loads(p.read_text())["num_rows"]
            return None if got is None else int(got)
        except (ValueError, KeyError, TypeError):
            pass
    err = None
    with tempfile.TemporaryDirectory(dir=base) as td:
        onnx_p = Path(td) / "relation.onnx"
        onnx_p.write_bytes(build_relation(spec).SerializeToString())
        try:
            _stage("gen_settings", _ezkl().gen_settings, str(onnx_p), str(Path(td) / "s.json"),
                   py_run_args=_run_args(spec, spec.commit.logrows))
            rows = int(json.loads((Path(td) / "s.json").read_text())["num_rows"])
        except EzklError as e:
            rows, err = None, str(e)[:300]
    t = _tmp(p)
    t.write_text(json.dumps({"num_rows": rows, "error": err, "spec": spec.to_dict()}))
    os.replace(t, p)
    return rows


def circuit_rows(spec: CircuitSpec, *, root=None) -> int:
    """ezkl's row count of ``spec`` (gen_settings only: no keys), cached by spec key. EzklError if
    ezkl cannot lay it out at the commitment's logrows."""
    rows = _rows_cached(spec, root)
    if rows is None:
        raise EzklError(f"ezkl cannot lay circuit {spec.key} out at logrows {spec.commit.logrows}")
    return rows


def fits(spec: CircuitSpec, *, root=None) -> bool:
    """Whether ``spec`` fits its commitment's rows: ``wrap`` sets of 2^logrows, less ezkl's
    blinding rows (:attr:`CommitSpec.max_rows`), and ezkl can lay it out at all."""
    rows = _rows_cached(spec, root)
    return rows is not None and rows <= spec.commit.max_rows


def _srs_tag(srs_path) -> str:
    return "local" if srs_path is None else hashlib.sha256(str(Path(srs_path).resolve()).encode()).hexdigest()[:8]


def _cached_artifacts(spec: CircuitSpec, base: Path, srs_path, srs_tag: str) -> "CircuitArtifacts | None":
    """The cached, intact artifacts of ``spec`` for this SRS, or None (missing, damaged, keyed
    with another SRS, or a vk/settings file changed on disk: all rebuilt by ensure_circuit)."""
    meta_p = base / f"meta-{srs_tag}.json"
    if not meta_p.is_file():
        return None
    try:
        meta = json.loads(meta_p.read_text())
        cached = meta["logrows"] == spec.commit.logrows and all(
            (base / n).is_file() for n in ("relation.compiled", "settings.json", f"vk-{srs_tag}.key",
                                           f"pk-{srs_tag}.key"))
    except (ValueError, KeyError, TypeError):
        return None
    if not cached:
        return None
    srs, insecure = ensure_srs(meta["logrows"], srs_path)
    if (meta.get("srs_sha256") == _srs_digest(srs)
            and meta.get("vk_sha256") == sha256_file(base / f"vk-{srs_tag}.key")
            and meta.get("settings_sha256") == sha256_file(base / "settings.json")):
        return _artifacts(spec, base, meta, srs, insecure, srs_tag)
    return None


def is_keyed(spec: CircuitSpec, *, srs_path=None, root=None) -> bool:
    """Whether :func:`ensure_circuit` would return ``spec`` from the cache without building it."""
    base = cache_dir(root) / "circuits" / spec.key
    return _cached_artifacts(spec, base, srs_path, _srs_tag(srs_path)) is not None


def srs_sha256(logrows: int, srs_path=None) -> str:
    """sha256 of the SRS the key store uses at ``logrows`` (generated locally if missing)."""
    return _srs_digest(ensure_srs(logrows, srs_path)[0])


def num_rows(spec: CircuitSpec, *, root=None) -> int:
    """ezkl's row count of ``spec`` (0 if ezkl cannot lay it out)."""
    return _rows_cached(spec, root) or 0


def ensure_circuit(spec: CircuitSpec, *, srs_path=None, root=None, progress=None) -> CircuitArtifacts:
    """Build (once) the ONNX relation, settings, compiled circuit and keys of ``spec`` at the
    commitment's logrows; cached under ``circuits/{spec.key}`` of the cache."""
    ezkl = _ezkl()
    base = cache_dir(root) / "circuits" / spec.key
    base.mkdir(parents=True, exist_ok=True)
    lr = spec.commit.logrows
    srs_tag = _srs_tag(srs_path)
    with _lock(base / ".lock"):
        art = _cached_artifacts(spec, base, srs_path, srs_tag)
        if art is not None:
            return art
        meta_p = base / f"meta-{srs_tag}.json"
        timings = {}
        onnx_p = base / "relation.onnx"
        t0 = time.perf_counter()
        model = build_relation(spec)
        t = _tmp(onnx_p)
        t.write_bytes(model.SerializeToString())
        os.replace(t, onnx_p)
        settings_p = base / "settings.json"
        t = _tmp(settings_p)
        _stage("gen_settings", ezkl.gen_settings, str(onnx_p), str(t), py_run_args=_run_args(spec, lr))
        rows = int(json.loads(t.read_text())["num_rows"])
        if rows > spec.commit.max_rows:
            t.unlink()
            raise EzklError(f"circuit {spec.key} needs {rows} rows, more than {spec.commit.wrap} × 2^{lr}: use a "
                            "smaller bucket (kmax, chunk_blocks) or commit with larger logrows or wrap")
        _canonicalize_settings(t)
        os.replace(t, settings_p)
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
                "srs_sha256": _srs_digest(srs), "srs_insecure": insecure}
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


def column_height(art: CircuitArtifacts) -> int:
    """Values per committed column of ``art`` (2^logrows minus ezkl's unusable rows, which depend
    on the circuit): found once by asking ``kzg_commit`` how many columns a vector spans (it returns
    ⌊len/height⌋ + 1 commitments, column j holding values [j·height, (j+1)·height))."""
    p = art.dir / f"column_height-{art.logrows}.json"
    if p.is_file():
        try:
            return int(json.loads(p.read_text())["height"])
        except (ValueError, KeyError, TypeError):
            pass
    one = [int_to_felt(1)]
    lo, hi = 2 ** art.logrows - 64, 2 ** art.logrows  # one column holds lo values, not hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        n = len(_stage("kzg_commit", _ezkl().kzg_commit, one * mid, str(art.vk), str(art.settings), str(art.srs)))
        lo, hi = (mid, hi) if n == 1 else (lo, mid)
    t = _tmp(p)
    t.write_text(json.dumps({"height": lo + 1}))
    os.replace(t, p)
    return lo + 1


#: field elements handed to one ``kzg_commit`` call (each padded column counts in full).
COMMIT_BATCH_FELTS = 1 << 22


_ZERO_COMMITMENTS: dict = {}


def zero_commitment(art: CircuitArtifacts) -> tuple[int, int]:
    """Z = ``ezkl.kzg_commit`` of the all-zero column of ``art`` (ezkl fills a column's unusable
    rows with constants, so Z is not the point at infinity), as affine integers. Asked of ezkl once
    per process and circuit (never read back from disk: nothing in a cache can change it)."""
    key = (str(art.vk), str(art.settings), str(art.srs))
    if key not in _ZERO_COMMITMENTS:
        hx = commit_vectors(art, [[0]], backend="ezkl")[0]
        _ZERO_COMMITMENTS[key] = (int(hx[:64], 16), int(hx[64:], 16))
    return _ZERO_COMMITMENTS[key]


def commit_vectors(art: CircuitArtifacts, vectors, *, batch: int | None = None, backend: str = "auto",
                   native_method: str = "auto") -> list[str]:
    """KZG commitments (as :func:`point_hex`) of many input columns of ``art``'s logrows.

    ``backend="native"``: Z + Σ_i v_i·L_i over the SRS's Lagrange points (:mod:`circuits.native`,
    Z = :func:`zero_commitment`), milliseconds per column; ``"ezkl"``: batched ``ezkl.kzg_commit``
    calls — each vector padded with zeros to one column's height and up to ``batch`` of them
    (default: as many as fit 2^22 field elements) per call (a commitment is linear in the values,
    so zero padding leaves it as the single-vector one); ``"auto"``: native when a C compiler was
    found, else ezkl. Both are tested equal (tests/test_circuit.py). Each vector must fit one column.
    ``native_method``: the native kernel's algorithm (:data:`circuits.native.METHODS`)."""
    if backend not in ("auto", "native", "ezkl"):
        raise ValueError(f"backend must be auto, native or ezkl, got {backend!r}")
    h = column_height(art)
    if backend != "ezkl":
        from . import native

        if backend == "native" or (native.available() and native.srs_supported(art.srs)):
            vectors = [list(v) for v in vectors]
            for v in vectors:
                if len(v) > h:
                    raise EzklError(f"a vector of {len(v)} values does not fit one column of {h}")
            z = zero_commitment(art)
            return [x.to_bytes(32, "big").hex() + y.to_bytes(32, "big").hex()
                    for x, y in native.commit(art.srs, vectors, z, method=native_method)]
    batch = batch or max(1, COMMIT_BATCH_FELTS // h)  # logrows 13: 512 columns a call; 19: 8
    out = []
    pad = int_to_felt(0)
    vectors = list(vectors)
    for i in range(0, len(vectors), batch):
        felts = []
        group = vectors[i:i + batch]
        for v in group:
            if len(v) > h:
                raise EzklError(f"a vector of {len(v)} values does not fit one column of {h}")
            felts.extend(int_to_felt(x) for x in v)
            felts.extend([pad] * (h - len(v)))
        pts = _stage("kzg_commit", _ezkl().kzg_commit, felts, str(art.vk), str(art.settings), str(art.srs))
        pts = pts[:len(group)]  # a message filling its last column exactly gets one empty column more
        if len(pts) != len(group):
            raise EzklError(f"kzg_commit returned {len(pts)} commitments for {len(group)} columns")
        out.extend(point_hex(p) for p in pts)
    return out


# ---------------------------------------------------------------- prove / verify

def prove_chunk(art: CircuitArtifacts, inputs: list[list[int]], out_proof: str | os.PathLike,
                *, workdir: str | os.PathLike | None = None) -> dict:
    """Witness + proof of one chunk. ``inputs``: the integer input vectors in
    ``spec.input_names()`` order. Writes ``out_proof`` atomically; returns timings and sizes."""
    ezkl = _ezkl()
    lens = art.spec.input_lengths()
    if [len(v) for v in inputs] != list(lens):
        raise ValueError(f"chunk inputs have lengths {[len(v) for v in inputs]}, expected {list(lens)}")
    out_proof = Path(out_proof)
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        td = Path(td)
        (td / "input.json").write_text(json.dumps({"input_data": [[_exact_float(x) for x in v] for v in inputs]}))
        t0 = time.perf_counter()
        c0 = time.process_time()
        _stage("gen_witness", ezkl.gen_witness, str(td / "input.json"), str(art.compiled), str(td / "witness.json"),
               vk_path=str(art.vk), srs_path=str(art.srs))
        t1 = time.perf_counter()
        _stage("prove", ezkl.prove, str(td / "witness.json"), str(art.compiled), str(art.pk), str(td / "proof.json"),
               srs_path=str(art.srs))
        t2 = time.perf_counter()
        tmp = _tmp(out_proof)
        os.replace(td / "proof.json", tmp)
        os.replace(tmp, out_proof)
    import resource

    return {"witness_s": t1 - t0, "prove_s": t2 - t1, "cpu_s": time.process_time() - c0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "proof_file_bytes": out_proof.stat().st_size}


def verify_chunk(proof_path, settings_path, vk_path, srs_path) -> bool:
    """``ezkl.verify`` of one proof against the given (trusted) vk; False on any failure."""
    try:
        return bool(_ezkl().verify(str(proof_path), str(settings_path), str(vk_path), srs_path=str(srs_path)))
    except BaseException as e:  # noqa: BLE001 — ezkl panics surface as pyo3 PanicException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def _exact_float(x) -> float:
    """ezkl reads inputs as f64: refuse integers it would round (|x| > 2^53)."""
    f = float(int(x))
    if int(f) != int(x):
        raise ValueError(f"input value {int(x)} is not exactly representable for ezkl (|x| > 2^53)")
    return f


def proof_public(proof: dict, n_inputs: int) -> tuple[list[int], list[str]]:
    """(instances as signed ints, embedded input commitments as :func:`point_hex`) of a proof dict."""
    inst = proof["instances"]
    flat = [felt_to_int(x) for col in inst for x in col]
    raw = bytes(proof["proof"]) if proof.get("proof") is not None else bytes.fromhex(proof["hex_proof"][2:])
    if len(raw) < 64 * n_inputs:
        raise ValueError("proof too short")
    coms = [raw[64 * i:64 * (i + 1)].hex() for i in range(n_inputs)]
    return flat, coms


def verify_chunk_bytes(raw: bytes, settings_path, vk_path, srs_path) -> bool:
    """:func:`verify_chunk` of exactly these bytes (the ones the caller hashed and parsed)."""
    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "proof.json"
        p.write_bytes(raw)
        return verify_chunk(p, settings_path, vk_path, srs_path)
