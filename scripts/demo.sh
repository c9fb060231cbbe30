#!/usr/bin/env bash
# Set up (idempotent) and run the end-to-end ZK-APEX demo on the embedded default data.
# Extra args go to `zkapex demo`, e.g. `bash scripts/demo.sh --out runs/demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/zkapex demo "$@"
