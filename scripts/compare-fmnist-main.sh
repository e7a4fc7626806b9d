#!/usr/bin/env bash
# IP-IRM and IP-IRM + MixUp against SimCLR at the main job's budget (docs/RESULTS.md): the
# presets `fmnist-quick` (SimCLR), `fmnist-ipirm-quick` (the main job) and
# `fmnist-ipirm-mixup-quick` as they are (ResNet-18 width 16, 10,240 training images, 15 epochs,
# crops of 28 from 0.2 of the image; they differ in the method, the maximize settings and, for
# MixUp, its minimize step and τ 0.2), and IP-IRM at τ 0.2 without MixUp (what separates the
# MixUp step from its τ); every arm's kNN at τ 0.5 (it follows `train.temperature` unless set),
# so that the kNN columns compare. 3 seeds each, the arms side by side on one thread each (about
# 3 hours on 2 cores; each seed's digits depend on the thread count, so keep it at one); then
# `ipirm compare` of the pairs. Killed, the same command resumes where it stopped.
# Usage: scripts/compare-fmnist-main.sh [STORE] [OUT]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$IPIRM_ROOT"
store=${1:-artifacts/compare-fmnist-main}
out=${2:-target/compare-fmnist-main}
ipirm=${IPIRM_BIN:-target/release/ipirm}
mkdir -p "$out"
arm() { # NAME PRESET [--set …]: the arm's three seeds, its log in OUT/NAME.log
  local name=$1 preset=$2
  shift 2
  OMP_NUM_THREADS=1 "$ipirm" run --preset "$preset" --name "$name" --out "$out/$name" \
    --device cpu --seeds 3 --store "$store" --set knn.temperature=0.5 "$@" >"$out/$name.log" 2>&1
}
declare -A pids
arm main-simclr fmnist-quick & pids[main-simclr]=$!
arm main-ipirm fmnist-ipirm-quick & pids[main-ipirm]=$!
arm main-ipirm-tau02 fmnist-ipirm-quick --set train.temperature=0.2 & pids[main-ipirm-tau02]=$!
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
compare main-ipirm main-ipirm-tau02 tau02-vs-ipirm
compare main-ipirm-tau02 main-ipirm-mixup mixup-vs-tau02
