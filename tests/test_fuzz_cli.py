"""Fuzzing the CLI through its artifacts, the way a careless user or an attacker would.

Every artifact a command reads (commitment, secrets, mask, Fisher, the bundle's statement and
proof files) is mutated at the byte level (truncation, byte flips), at the JSON level (type
changes, huge integers, duplicate keys, deep nesting) and replaced by special files (a FIFO, a
directory, a symlink to /dev/zero, a dangling symlink). For each mutation the command must:
exit with 0, 1 or 2; never raise (no traceback); never hang (SIGALRM guard); write nothing when
it fails; and never accept a changed statement (verify exit 0 only for an unchanged bundle).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat

import numpy as np
import pytest

from zkapex_jax import cli
from zkapex_jax.protocol.api import Curvature
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.mask import Mask
from zkapex_jax.core.params import get_paths, set_paths
from zkapex_jax.models.train import save_checkpoint

from conftest import build_model_cached

PATH = "vit/encoder/layer/0/attention/attention/query/bias"  # 16 weights of vit-test: 4 blocks of 4
HANG_S = 120


@contextlib.contextmanager
def no_hang(seconds=HANG_S):
    def boom(*_):
        raise TimeoutError(f"command still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def listing(d):
    out = {}
    for root, dirs, files in os.walk(d):
        for f in files + dirs:
            p = os.path.join(root, f)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size if stat.S_ISREG(st.st_mode) else 0, st.st_mtime_ns)
    return out


def run(*args):
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def honest(tmp_path_factory, zk_shared):
    d = tmp_path_factory.mktemp("fuzz")
    _, params = build_model_cached("vit-test", seed=0)
    rng = np.random.default_rng(0)
    flat = get_paths(params, [PATH])
    params = set_paths(params, {PATH: np.asarray(rng.normal(size=flat[PATH].shape) * 0.05, dtype=np.float32)})
    save_checkpoint(d / "pers", params)
    layout = BlockLayout.from_params(params, PATH, 4)
    g = rng.normal(size=(layout.num_blocks, 12, 4))
    Curvature(np.einsum("kni,knj->kij", g, g) / 12 + 1e-3 * np.eye(4), layout).save(d / "fisher.npz")
    m = np.zeros(16, dtype=bool)
    m[[1, 6, 7, 12]] = True
    Mask.from_dense({PATH: m}, fraction=0.25, method="test").save(d / "mask.json")
    assert run("commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "alice",
               "--out", d / "com.npz", "--secrets", d / "sec.npz", "--logrows", 11) == 0
    return d


# ----------------------------------------------------------------------------- mutations
def byte_mutations(raw: bytes, rng):
    yield "empty", b""
    yield "half", raw[: len(raw) // 2]
    yield "one byte short", raw[:-1]
    for i in range(4):
        b = bytearray(raw)
        pos = int(rng.integers(0, len(b)))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        yield f"bit flip {pos}", bytes(b)
    yield "trailing garbage", raw + b"\x00garbage"


def json_mutations(doc: dict, rng):
    keys = [k for k in doc if k != "sha256"]
    for k in keys[:12]:
        for name, v in (("string", "x"), ("bool", True), ("float", 4.0), ("null", None), ("list", [1]),
                        ("huge int", HUGE), ("negative", -1), ("nested", {"a": {"b": [[[]]]}})):
            d = dict(doc)
            d[k] = v
            yield f"{k} -> {name}", d
    yield "deep nesting", "[" * 200000 + "]" * 200000
    yield "duplicate key", None  # built textually below


HUGE = "__a 5000-digit integer__"


def dumps(doc):
    if isinstance(doc, str):
        return doc.encode()
    return json.dumps(doc, default=str).replace(json.dumps(HUGE), "9" * 5000).encode()


def special_files(path):
    """Replace ``path`` by special files, one at a time (context managers restoring it)."""

    @contextlib.contextmanager
    def replace(kind):
        backup = str(path) + ".orig"
        os.replace(path, backup)
        try:
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "directory":
                os.mkdir(path)
            elif kind == "dev/zero":
                os.symlink("/dev/zero", path)
            elif kind == "dangling symlink":
                os.symlink(str(path) + ".nowhere", path)
            yield kind
        finally:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            os.replace(backup, path)

    return [replace(k) for k in ("fifo", "directory", "dev/zero", "dangling symlink")]


@contextlib.contextmanager
def mutated(path, data: bytes):
    backup = str(path) + ".orig"
    shutil.copy2(path, backup)
    try:
        with open(path, "wb") as f:
            f.write(data)
        yield
    finally:
        os.replace(backup, path)


def check(argv, d, capsys, *, may_succeed=False):
    """Run, and assert: exit in {0,1,2}; no exception; no hang; nothing written on failure."""
    before = listing(d)
    with no_hang():
        rc = run(*argv)
    err = capsys.readouterr().err
    assert rc in (0, 1, 2), (argv, rc)
    assert "Traceback" not in err
    if rc != 0:
        after = listing(d)
        new = sorted(set(after) - set(before))
        changed = sorted(p for p in before if p in after and after[p] != before[p])
        assert not new and not changed, f"{argv} failed (rc {rc}) but wrote {new + changed}"
    else:
        assert may_succeed, f"{argv} accepted a mutated input"
    return rc


def content_of(path):
    """What a loader makes of an artifact (its hashed content), or None if it does not load."""
    from zkapex_jax.protocol.artifacts import load_arrays

    try:
        if str(path).endswith("mask.json"):
            return Mask.load(path).content()
        if str(path).endswith(".json"):
            from zkapex_jax._io import loads_strict

            return loads_strict(open(path, "rb").read())
        arrs, meta = load_arrays(path, json.loads(bytes(np.load(path)["__header__"]))["format"], (1, 2, 3))
        return json.dumps(meta, sort_keys=True), {k: v.tobytes() for k, v in arrs.items()}
    except Exception:  # noqa: BLE001
        return None


def unlearn_argv(d, out):
    return ["unlearn", "--params", d / "pers", "--fisher", d / "fisher.npz", "--commitment", d / "com.npz",
            "--secrets", d / "sec.npz", "--mask", d / "mask.json", "--out", out]


@pytest.mark.parametrize("target", ["com.npz", "sec.npz", "fisher.npz", "mask.json"])
def test_fuzz_unlearn_inputs(honest, capsys, target):
    """unlearn reads all four client artifacts: every mutation fails cleanly (exit 2, nothing
    written), or — for the mask, whose hash covers its content — is refused as well."""
    d = honest
    rng = np.random.default_rng(hash(target) % 2**32)
    raw = (d / target).read_bytes()
    cases = list(byte_mutations(raw, rng))
    if target.endswith(".json"):
        doc = json.loads(raw)
        cases += [(n, dumps(m)) for n, m in json_mutations(doc, rng) if m is not None]
        text = raw.decode()
        cases.append(("duplicate key", text.replace("{", '{"format": "x", ', 1).encode()))
    n = 0
    original = content_of(d / target)
    for name, data in cases:
        with mutated(d / target, data):
            if check(unlearn_argv(d, d / "u-out"), d, capsys, may_succeed=True) == 0:
                # accepted only if the bytes changed but the content did not (e.g. a zip header
                # field outside the hashed arrays): the same artifact
                assert content_of(d / target) == original, f"{target}: {name} accepted with changed content"
                shutil.rmtree(d / "u-out")
            n += 1
    for ctx in special_files(d / target):
        with ctx:
            check(unlearn_argv(d, d / "u-out"), d, capsys)
            n += 1
    assert n >= 12


def test_fuzz_cli_arguments(honest, capsys):
    """Careless command lines: bad numbers, empty ids, equal or existing outputs, NUL bytes."""
    d = honest
    c = ["--cache", os.environ["ZKAPEX_CACHE"]]  # the session's shared cache (conftest.zk_shared)
    bad = [
        ["keys", "--block-size", "0"], ["keys", "--block-size", "-3"], ["keys", "--block-size", str(2**40)],
        ["keys", "--block-size", "4", "--logrows", "0"], ["keys", "--block-size", "4", "--srs", d / "missing-srs"],
        ["keys", "--block-size", "4", "--srs", d],
        ["mask", "--global", d / "pers", "--out", d / "m.json", "--fraction", "1.5"],
        ["mask", "--global", d / "pers", "--out", d / "m.json", "--fraction", "nan"],
        ["mask", "--global", d / "pers", "--out", d / "m.json", "--fraction", "0"],
        ["mask", "--global", d / "pers", "--out", d / "mask.json"],  # exists
        ["mask", "--global", d / "pers", "--out", d / "m.json", "--model", "vit-tiny"],  # wrong model
        ["fisher", "--params", d / "pers", "--out", d / "f.npz", "--damping", "-1"],
        ["fisher", "--params", d / "pers", "--out", d / "f.npz", "--damping", "inf"],
        ["fisher", "--params", d / "pers", "--out", d / "f.npz", "--model", "vit-tiny"],
        ["commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "", "--out", d / "c2.npz",
         "--secrets", d / "s2.npz"],
        ["commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "a", "--out", d / "c2.npz",
         "--secrets", d / "c2.npz"],  # equal outputs
        ["commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "a", "--out", d / "com.npz",
         "--secrets", d / "s2.npz"],  # existing output
        ["commit", "--params", d / "pers", "--fisher", d / "fisher.npz", "--client-id", "a", "--out", d / "c2.npz",
         "--secrets", d / "fisher.npz", "--force"],  # an input as output, even with --force
        unlearn_argv(d, d / "pers"),  # existing output without --force
        unlearn_argv(d, d / "fisher.npz") + ["--force"],  # an input
        unlearn_argv(d, d),  # the user's folder
        unlearn_argv(d, d) + ["--force"],  # the user's folder, --force: not our checkpoint, refused
        ["prove", "--params", d / "pers", "--fisher", d / "fisher.npz", "--commitment", d / "com.npz", "--secrets",
         d / "sec.npz", "--mask", d / "mask.json", "--out", d / "b", "--request-id", ""],
        ["prove", "--params", d / "pers", "--fisher", d / "fisher.npz", "--commitment", d / "com.npz", "--secrets",
         d / "sec.npz", "--mask", d / "mask.json", "--out", d / "b", "--request-id", "r", "--jobs", "0"],
        ["verify", d / "no-bundle", "--commitment", d / "com.npz", "--mask", d / "mask.json"],
        ["verify", "bad\x00path", "--commitment", d / "com.npz", "--mask", d / "mask.json"],
        ["demo", "--out", d, "--quick"],  # non-empty folder
        ["demo", "--out", d / "demo", "--quick", "--block-size", "7"],
        ["demo", "--out", d / "demo", "--quick", "--pattern", "no/such/*"],
        ["demo", "--out", d / "demo", "--quick", "--logrows", "40"],
        # a trailing slash (or a final '.') names a directory, not the file the option wants
        ["mask", "--global", d / "pers", "--out", f"{d}/m.json/"],
        ["fisher", "--params", d / "pers", "--out", f"{d}/f.npz/"],
        ["verify", d / "b", "--commitment", f"{d}/com.npz/", "--mask", d / "mask.json"],
        ["verify", d / "b", "--commitment", d / "com.npz", "--mask", f"{d}/."],
        ["mask", "--global", d / "pers", "--out", d / "m.json", "--protect", "-1"],
    ]
    for argv in bad:
        before = listing(d)
        with no_hang():
            rc = run(*argv, *c)
        err = capsys.readouterr().err
        assert rc == 2, (argv, rc, err)
        assert "Traceback" not in err and err.strip(), argv
        assert listing(d) == before, f"{argv} wrote or changed files"


@pytest.mark.slow
def test_fuzz_verify_bundle(honest, capsys):
    """An honest bundle, then every mutation of its statement, proofs, the commitment and the mask:
    verify exits 1 or 2 (never 0), never raises, never hangs, writes nothing into the inputs."""
    d = honest
    assert run("prove", "--params", d / "pers", "--fisher", d / "fisher.npz", "--commitment", d / "com.npz",
               "--secrets", d / "sec.npz", "--mask", d / "mask.json", "--out", d / "bundle", "--request-id", "r1",
               "--executor", "process") == 0
    argv = ["verify", d / "bundle", "--commitment", d / "com.npz", "--mask", d / "mask.json",
            "--keystore", d / "provider-ks"]
    assert run(*argv) == 0
    capsys.readouterr()
    st = json.loads((d / "bundle" / "statement.json").read_text())
    rng = np.random.default_rng(7)
    targets = ["bundle/statement.json", "com.npz", "mask.json"] + [f"bundle/{c['proof']}" for c in st["proofs"]]
    n = 0
    for target in targets:
        raw = (d / target).read_bytes()
        cases = list(byte_mutations(raw, rng))
        if target.endswith(".json"):
            doc = json.loads(raw)
            cases += [(nm, dumps(m)) for nm, m in json_mutations(doc, rng) if m is not None]
            cases.append(("duplicate key", raw.decode().replace("{", '{"request_id": "r2", ', 1).encode()))
        original = content_of(d / target)
        for name, data in cases:
            if data == raw:
                continue
            with mutated(d / target, data):
                rc = check(argv, d / "bundle", capsys, may_succeed=True)
                # VALID only if the bytes changed but not what they say (a trailing newline, a zip
                # header field outside the hashed arrays)
                assert rc in (1, 2) or content_of(d / target) == original, (target, name)
                n += 1
        for ctx in special_files(d / target):
            with ctx:
                assert check(argv, d / "bundle", capsys) in (1, 2)
                n += 1
    assert n >= 100
    assert run(*argv) == 0  # and the honest bundle still verifies
