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
exec .venv/bin/python -m pytest -n "${ZKAPEX_TEST_WORKERS:-auto}" --dist loadfile --durations=15 "$@"
