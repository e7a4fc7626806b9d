#!/usr/bin/env bash
# IP-IRM against SimCLR at the main job's budget (docs/RESULTS.md): the presets
# `fmnist-ipirm-quick` (the main job) and `fmnist-quick` as they are (ResNet-18 width 16, 10,240
# training images, 15 epochs, crops of 28 from 0.2 of the image; they differ in the method and
# the maximize settings only), 3 seeds each, the two arms side by side on one thread each (about
# 80 minutes on 2 cores); then `ipirm compare`. Killed, the same command resumes where it stopped.
# Usage: scripts/compare-fmnist-main.sh [STORE] [OUT]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$IPIRM_ROOT"
store=${1:-artifacts/compare-fmnist-main}
out=${2:-target/compare-fmnist-main}
ipirm=${IPIRM_BIN:-target/release/ipirm}
mkdir -p "$out"
arm() { # NAME PRESET: the arm's three seeds, its log in OUT/NAME.log
  OMP_NUM_THREADS=1 "$ipirm" run --preset "$2" --name "$1" --out "$out/$1" --device cpu \
    --seeds 3 --store "$store" >"$out/$1.log" 2>&1
}
arm main-simclr fmnist-quick &
simclr=$!
arm main-ipirm fmnist-ipirm-quick &
ipirm_arm=$!
failed=0
wait "$simclr" || { echo "main-simclr failed: see $out/main-simclr.log" >&2; failed=1; }
wait "$ipirm_arm" || { echo "main-ipirm failed: see $out/main-ipirm.log" >&2; failed=1; }
[ "$failed" = 0 ]
"$ipirm" compare --store "$store" main-simclr main-ipirm --out "$out/ipirm-vs-simclr"
