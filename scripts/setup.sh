#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned packages, the project in editable mode,
# and the Debian packages that carry the data (where apt is available). Sourced by demo.sh / test.sh.
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
# Debian packages that carry the data (nothing is downloaded at run time):
#   dataset-fashion-mnist  Fashion-MNIST (the image studies and the demo)
#   rust-src, golang-src, openjdk-17-source  Rust, Go and Java sources of the code study
#   gcc, libc6-dev  the C compiler that builds the native KZG commitment kernel (circuits/native;
#                   without it commitments fall back to ezkl.kzg_commit, ~50x slower)
DEBS="dataset-fashion-mnist rust-src golang-src openjdk-17-source gcc libc6-dev"
missing=""
for pkg in $DEBS; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $pkg"
  fi
done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing) \
      || echo "setup: could not install$missing; the demo falls back to scikit-learn's digits without Fashion-MNIST, and the code study names what it lacks" >&2
  else
    echo "setup: apt-get unavailable (or not root); install$missing (the demo falls back to scikit-learn's digits without Fashion-MNIST; the code study needs the source packages)" >&2
  fi
fi
