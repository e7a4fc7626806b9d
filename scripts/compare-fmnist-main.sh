#!/usr/bin/env bash
# IP-IRM and IP-IRM + MixUp against SimCLR at the main job's budget (docs/RESULTS.md): the
# presets `fmnist-quick` (SimCLR), `fmnist-ipirm-quick` (the main job) and
# `fmnist-ipirm-mixup-quick` as they are (ResNet-18 width 16, 10,240 training images, 15 epochs,
# crops of 28 from 0.2 of the image; they differ in the method, the maximize settings and, for
# MixUp, its minimize step and τ 0.2), 3 seeds each, the arms side by side on one thread each
# (about 2.5 hours on 2 cores; each seed's digits depend on the thread count, so keep it at one);
# then `ipirm compare` of each pair. Killed, the same command resumes where it stopped.
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
declare -A pids
arm main-simclr fmnist-quick & pids[main-simclr]=$!
arm main-ipirm fmnist-ipirm-quick & pids[main-ipirm]=$!
arm main-ipirm-mixup fmnist-ipirm-mixup-quick & pids[main-ipirm-mixup]=$!
failed=0
for name in "${!pids[@]}"; do
  wait "${pids[$name]}" || { echo "$name failed: see $out/$name.log" >&2; failed=1; }
done
[ "$failed" = 0 ]
compare() { "$ipirm" compare --store "$store" "$1" "$2" --out "$out/$3"; }
compare main-simclr main-ipirm ipirm-vs-simclr
compare main-ipirm main-ipirm-mixup mixup-vs-ipirm
compare main-simclr main-ipirm-mixup mixup-vs-simclr
