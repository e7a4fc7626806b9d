#!/usr/bin/env bash
# README command one: set-up, then the main job on the embedded default (Fashion-MNIST):
# the quick CPU preset, or the full preset when a GPU is present. Extra arguments go to
# `ipirm run` (e.g. --set train.epochs=5).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup.sh"
source "$here/env.sh"
cd "$IPIRM_ROOT"
preset="${IPIRM_PRESET:-}"
if [ -z "$preset" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    preset=fmnist-ipirm-full
  else
    preset=fmnist-ipirm-quick
  fi
fi
echo "== ipirm run --preset $preset" >&2
exec target/release/ipirm run --preset "$preset" "$@"
