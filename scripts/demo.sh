#!/usr/bin/env bash
# Set up (idempotent) and run the end-to-end ZK-APEX demo on the embedded default data
# (Fashion-MNIST from Debian's dataset-fashion-mnist; scikit-learn's digits if that is absent).
# Extra args go to `zkapex demo`; the default output folder is runs/demo.
#   bash scripts/demo.sh                    # the demo (vit-demo, every fc1 block proven)
#   bash scripts/demo.sh --out runs/big --big   # a bigger statement
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
case " $* " in
  *" --out "*|*" --out="*|*" -h "*|*" --help "*) exec .venv/bin/zkapex demo "$@" ;;
  *) exec .venv/bin/zkapex demo --out runs/demo --jobs 2 "$@" ;;
esac
