#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned packages, the project in editable mode,
# and Debian's dataset-fashion-mnist where apt is available. Sourced by demo.sh / test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.zkapex-installed
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$STAMP"
fi
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ] && [ -z "${ZKAPEX_FMNIST_DIR:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      || echo "setup: could not install dataset-fashion-mnist; the demo falls back to scikit-learn's digits" >&2
  else
    echo "setup: apt-get unavailable (or not root); install 'dataset-fashion-mnist' for Fashion-MNIST, falling back to scikit-learn's digits" >&2
  fi
fi
