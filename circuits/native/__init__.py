"""Native KZG column commitments: ``Com(v) = Z + Σ_i v_i·L_i`` over the SRS's Lagrange-basis points
(``bn254_commit.c``), the same points ``ezkl.kzg_commit`` uses — about 100× faster at small logrows
and without ezkl's per-call setup, so committing θp and every column of Â costs milliseconds.

The C source is compiled on first use with the system C compiler (``cc``/``gcc``, installed by
scripts/setup.sh) into ``$ZKAPEX_CACHE/native/`` (file name keyed by the source's hash, written
atomically); :func:`available` is False when no compiler is found and callers fall back to ezkl.
The SRS file (halo2 ``ParamsKZG``, raw format: ``k`` as u32, then 2^k monomial and 2^k Lagrange
G1 points, each x‖y as 4+4 little-endian Montgomery limbs) is read as a memory map; its layout is
checked (size, the first point is the generator) before use.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

FQ = 21888242871839275222246405745257275088696311157297823662689037894645226208583
_R = pow(2, 256, FQ)
_RINV = pow(_R, -1, FQ)
_SRC = Path(__file__).with_name("bn254_commit.c")


def _cache_dir() -> Path:
    return Path(os.environ.get("ZKAPEX_CACHE") or Path.home() / ".cache" / "zkapex") / "native"


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


@lru_cache(maxsize=None)
def _lib():
    src = _SRC.read_bytes()
    out = _cache_dir() / f"bn254_commit-{hashlib.sha256(src).hexdigest()[:16]}.so"
    if not out.is_file():
        cc = _compiler()
        if cc is None:
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(_SRC)], check=True,
                           capture_output=True, timeout=120)
            os.replace(tmp, out)
        except (subprocess.SubprocessError, OSError):
            Path(tmp).unlink(missing_ok=True)
            return None
    lib = ctypes.CDLL(str(out))
    p = ctypes.POINTER
    lib.commit_columns.argtypes = [p(ctypes.c_uint64), ctypes.c_int64, p(ctypes.c_int64), ctypes.c_int64,
                                   ctypes.c_int64, p(ctypes.c_uint64), ctypes.c_int, p(ctypes.c_uint64)]
    lib.commit_columns.restype = ctypes.c_int
    lib.commit_columns_method.argtypes = lib.commit_columns.argtypes + [ctypes.c_int]
    lib.commit_columns_method.restype = ctypes.c_int
    return lib


def available() -> bool:
    """Whether the native kernel could be built and loaded here."""
    return _lib() is not None


@lru_cache(maxsize=8)
def lagrange_points(srs_path: str, mtime_ns: int = 0) -> np.ndarray:
    """The 2^k Lagrange-basis points of an SRS file, ``(2^k, 8)`` uint64 (x‖y Montgomery limbs)."""
    raw = np.memmap(srs_path, dtype=np.uint8, mode="r")
    k = int(np.frombuffer(raw[:4].tobytes(), "<u4")[0])
    n = 1 << k
    if not 1 <= k <= 28 or raw.size < 4 + 2 * n * 64:
        raise ValueError(f"{srs_path}: not a raw halo2 KZG parameter file")
    g0 = np.frombuffer(raw[4:68].tobytes(), "<u8")
    if _from_mont(g0[:4]) != 1 or _from_mont(g0[4:]) != 2:
        raise ValueError(f"{srs_path}: the first point is not the BN254 generator (unexpected SRS layout)")
    # a view of the mapped file (unaligned: callers copy the rows they use into a contiguous array)
    return np.memmap(srs_path, dtype="<u8", mode="r", offset=4 + n * 64, shape=(n, 8))


def srs_supported(srs_path) -> bool:
    """Whether ``srs_path`` has the raw layout this kernel reads (else callers use ezkl, which
    reads every layout it writes)."""
    try:
        lagrange_points(os.fspath(srs_path), os.stat(srs_path).st_mtime_ns)
        return True
    except (OSError, ValueError):
        return False


def _from_mont(limbs) -> int:
    v = sum(int(x) << (64 * i) for i, x in enumerate(limbs))
    return v * _RINV % FQ


def _to_mont(v: int) -> list[int]:
    m = v * _R % FQ
    return [(m >> (64 * i)) & (2 ** 64 - 1) for i in range(4)]


METHODS = {"auto": 1, "straus": 0}


def commit(srs_path, vectors, zero_point: tuple[int, int] | None, *, method: str = "auto") -> list[tuple[int, int]]:
    """``Z + Σ_i v_i·L_i`` for each integer vector (rows padded with zeros; |v_i| < 2^63) as
    affine ``(x, y)`` integers; ``zero_point`` is Z (None: the point at infinity). ``method``:
    ``"auto"`` (Pippenger's buckets over the entries of columns of ≥ 64 values, Straus over the
    rest) or ``"straus"`` (Straus over everything: the previous kernel, for benchmarks)."""
    lib = _lib()
    if lib is None:
        raise RuntimeError("the native commitment kernel is not available (no C compiler)")
    vectors = vectors if isinstance(vectors, list) else list(vectors)
    if not vectors:
        return []
    srs_path = os.fspath(srs_path)
    bases = lagrange_points(srs_path, os.stat(srs_path).st_mtime_ns)
    width = max(1, max(len(v) for v in vectors))
    if width > bases.shape[0]:
        raise ValueError(f"a vector of {width} values exceeds the SRS's {bases.shape[0]} points")
    s = np.zeros((len(vectors), width), dtype=np.int64)
    for i, v in enumerate(vectors):
        s[i, :len(v)] = v   # OverflowError beyond int64
    b = np.require(bases[:width], dtype=np.uint64, requirements=["C", "A"])   # aligned copy of the rows used
    z = np.array(_to_mont(zero_point[0]) + _to_mont(zero_point[1]) if zero_point else [0] * 8, dtype=np.uint64)
    out = np.zeros((len(vectors), 8), dtype=np.uint64)
    P = ctypes.POINTER
    rc = lib.commit_columns_method(b.ctypes.data_as(P(ctypes.c_uint64)), b.shape[0],
                                   s.ctypes.data_as(P(ctypes.c_int64)), width, len(vectors),
                                   z.ctypes.data_as(P(ctypes.c_uint64)), int(zero_point is None),
                                   out.ctypes.data_as(P(ctypes.c_uint64)), METHODS[method])
    if rc != 0:
        raise ValueError("native commitment failed")
    return [(sum(int(o[j]) << (64 * j) for j in range(4)), sum(int(o[4 + j]) << (64 * j) for j in range(4)))
            for o in out]
