#!/usr/bin/env bash
# Set up (idempotent) and run the default (fast) test suite. Extra args go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the slow tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Tests run in parallel (pytest-xdist, one worker per core; ZKAPEX_TEST_WORKERS=0 runs them in one
# process), a file's tests on one worker so its shared keys and circuits are built once;
# --durations lists the slowest tests.
# The workers share one JAX persistent compilation cache, fresh for this run (the same small
# models are compiled in many files and in both workers; a cache hit skips XLA's compile, not the
# tracing); a JAX_COMPILATION_CACHE_DIR of the caller's own is used as it is and kept.
if [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
  JAX_COMPILATION_CACHE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/zkapex-jax-cache.XXXXXX")"
  trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
fi
export JAX_COMPILATION_CACHE_DIR
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.1}"
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="${JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES:-0}"
.venv/bin/python -m pytest -n "${ZKAPEX_TEST_WORKERS:-auto}" --dist loadfile --durations=15 "$@"
