"""Shared fixtures: dtype-promotion and precision contexts for the oracle tests, and the
session's shared zero-knowledge cache."""

import functools
import os

import jax  # XLA reads its flags when the backend starts (the first computation), after configure
import pytest


def pytest_configure(config):
    """The default (fast) run: the tests' shapes are tiny, so XLA's compile time, not run time,
    dominates them, and without backend optimizations compilation is ~30 % cheaper (results agree
    within the oracle tests' tolerances). Runs that include the slow tests (CI, `-m slow`) keep
    XLA's defaults: the study smoke tests train models, and their outcomes depend on the exact
    floating-point program (measured: the tiny pretrained study's personalization check fails
    at optimization level 0 and passes at the default). ZKAPEX_TEST_XLA_OPT=1 keeps the defaults
    always; a user's own XLA_FLAGS setting of the level is kept."""
    if (config.getoption("markexpr", "") == "not slow" and os.environ.get("ZKAPEX_TEST_XLA_OPT", "0") != "1"
            and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


#: measured seconds per test file in the default run (`--durations=0`, 2 workers, 2026-12-06):
#: xdist's ``loadfile`` hands files out in collection order, so the heaviest go first and the
#: short ones fill the workers' tails (longest-processing-time first); unlisted files keep their order
FILE_SECONDS = {
    "tests/test_adversarial.py": 81.2,
    "tests/test_stages.py": 67.9,
    "tests/test_user_data.py": 45.1,
    "tests/test_fisher.py": 43.4,
    "tests/test_models.py": 43.0,
    "tests/test_code_data.py": 11.0,  # 31.2 before its larger corpora moved to the slow set
    "tests/test_train.py": 28.3,
    "tests/test_obs.py": 27.6,
    "tests/test_curvature.py": 27.5,
    "tests/test_protocol.py": 25.5,
    "tests/test_api.py": 24.7,
    "tests/test_audit.py": 12.0,  # measured alone (keys built); ~3 s beside test_api's keys
    "tests/test_seed_runner.py": 20.0,  # one vit-test seed through every stage (compiles dominate)
    "tests/test_circuit.py": 22.1,
    "tests/test_column_ranges.py": 30.1,  # measured alone, keys built (2026-12-07)
    "tests/test_efficientnet.py": 16.5,
    "tests/test_pipeline.py": 16.0,
    "tests/test_baselines.py": 15.9,
    "tests/test_protected.py": 14.9,
    "tests/test_cli.py": 14.5,
    "tests/test_e2e_smoke.py": 13.5,
    "tests/test_fuzz_cli.py": 12.7,
    "tests/test_forget_aware.py": 10.1,
    "tests/test_mask.py": 5.2,
    "tests/test_config.py": 5.1,
}


def pytest_collection_modifyitems(session, config, items):
    """Heaviest files first (see :data:`FILE_SECONDS`), the order within a file kept."""
    if not FILE_SECONDS:
        return
    rank = {}
    for i, it in enumerate(items):
        rank.setdefault(it.nodeid.split("::")[0], i)
    items.sort(key=lambda it: (-FILE_SECONDS.get(it.nodeid.split("::")[0], 0.0), rank[it.nodeid.split("::")[0]]))


@pytest.fixture
def x64():
    """float64 enabled and strict dtype promotion: compare against float64 numpy oracles."""
    with jax.enable_x64(True), jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture
def strict():
    """Strict dtype promotion (no implicit int/float or width mixing)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


def rewrite_statement(bundle, edit):
    """Edit a bundle's statement (``edit(body)`` in place) and re-hash it, as an attacker would."""
    import json

    from zkapex_jax.protocol import artifacts
    from zkapex_jax.protocol.prover import STATEMENT_FORMAT, VERSION

    doc = json.loads((bundle / "statement.json").read_text())
    body = {k: v for k, v in doc.items() if k not in ("format", "version", "sha256")}
    edit(body)
    artifacts.write_json_artifact(bundle / "statement.json", STATEMENT_FORMAT, VERSION, body)


def empirical_fisher(rng, nb, B, n, damping, spread=(1.0, 1.0)):
    """(nb,B,B) empirical Fisher of n random per-example gradients per block plus damping·I
    (n < B leaves flat directions at the damping); ``spread`` scales the coordinates."""
    import numpy as np

    g = rng.normal(size=(nb, n, B)) * np.linspace(*spread, B)
    return np.einsum("kni,knj->kij", g, g) / n + damping * np.eye(B)


def _shared_dir(config, basetemp):
    """One directory for the whole session, the same in every xdist worker (their base temps are
    siblings under the session's)."""
    return basetemp.parent if hasattr(config, "workerinput") else basetemp


@pytest.fixture(scope="session", autouse=True)
def zk_shared(request, tmp_path_factory):
    """The session's zero-knowledge cache, shared by every test file and worker: one SRS per
    logrows and one client key store (``$ZKAPEX_CACHE``, the default), plus one provider key
    store (``provider``), each circuit keyed once under the stages' file locks. A provider store
    apart from the client's keeps the verifier on keys it derived itself; tests about the key
    store itself (fresh, corrupted, another SRS) use their own directories."""
    from pathlib import Path

    root = Path(_shared_dir(request.config, tmp_path_factory.getbasetemp())) / "zk-shared"
    for d in ("cache", "provider"):
        (root / d).mkdir(parents=True, exist_ok=True)
    old = os.environ.get("ZKAPEX_CACHE")
    os.environ["ZKAPEX_CACHE"] = str(root / "cache")
    yield {"cache": root / "cache", "provider": root / "provider"}
    if old is None:
        os.environ.pop("ZKAPEX_CACHE", None)
    else:
        os.environ["ZKAPEX_CACHE"] = old


def jit_per_example_grads(loss, params, data, **kw):
    """``per_example_grads`` under one ``jax.jit`` (the library leaves jit to the caller; run
    eagerly, a model's vmapped gradient dispatches op by op and takes ~6× longer)."""
    from zkapex_jax.core.fisher import per_example_grads

    return jax.jit(functools.partial(per_example_grads, loss, **kw))(params, data)


def _build_model(name, **kw):
    """The library's own build_model: ``zkapex_jax.models.build_model`` is bound at import and
    never patched (zk_models patches the ``hf`` module's attribute that Family.init reads)."""
    from zkapex_jax.models import build_model

    return build_model(name, **kw)


@functools.lru_cache(maxsize=None)
def _built(name, seed, overrides):
    return _build_model(name, seed=seed, **dict(overrides))


def build_model_cached(name, *, seed: int = 0, **overrides):
    """``build_model`` of a named config, built once per test process (an eager random init costs
    4–8 s on 2 cores): the arrays are immutable and shared, the dict containers fresh copies, so
    a test that edits its params cannot touch another's. Family.init goes through it too (the
    ``zk_models`` fixture); tests of build_model itself call the library directly."""
    if not isinstance(name, str):
        return _build_model(name, seed=seed, **overrides)
    model, params = _built(name, seed, tuple(sorted(overrides.items())))
    return model, jax.tree.map(lambda x: x, params)


@pytest.fixture(scope="session", autouse=True)
def zk_models():
    """Family.init (hf.build_model) memoized per process, see :func:`build_model_cached`."""
    from zkapex_jax.models import hf

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf, "build_model", build_model_cached)
        yield
