#!/usr/bin/env bash
# The four-arm comparison of docs/RESULTS.md on Fashion-MNIST (about an hour on one core; set
# OMP_NUM_THREADS=1 to keep to one):
# SimCLR, IP-IRM, SimCLR + MixUp, IP-IRM + MixUp with the same encoder (ResNet-18 width 16),
# 2,048 training images, 8 epochs at batch 64, the same augmentation, kNN bank (5,000) and probe,
# 3 seeds each; then
# `ipirm compare` of each method against its baseline. Each arm takes its method's settings from
# the reference's scripts (the presets) and nothing is tuned per arm. Killed, the same command
# resumes where it stopped. Usage: scripts/compare-fmnist.sh [STORE] [OUT]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$IPIRM_ROOT"
store=${1:-artifacts/compare-fmnist}
out=${2:-target/compare-fmnist}
ipirm=${IPIRM_BIN:-target/release/ipirm}
# The reference's crops (32 pixels from 0.08 of the image), as the table was measured: the
# Fashion-MNIST presets crop at 28 from 0.2 since 2026-12-04.
size=(--set data.train_limit=2048 --set data.bank_limit=5000 --set train.epochs=8 --device cpu
  --set data.crop_size=32 --set 'data.crop_scale=[0.08,1.0]' --seeds 3 --store "$store")
arm() { # NAME PRESET [--set …]
  local name=$1 preset=$2
  shift 2
  "$ipirm" run --preset "$preset" --name "$name" --out "$out/$name" "${size[@]}" "$@"
}
arm cmp-simclr fmnist-quick
arm cmp-ipirm fmnist-ipirm-quick
arm cmp-simclr-mixup fmnist-quick --set train.mixup=true
arm cmp-ipirm-mixup fmnist-ipirm-mixup-quick
"$ipirm" compare --store "$store" cmp-simclr cmp-ipirm --out "$out/ipirm-vs-simclr"
"$ipirm" compare --store "$store" cmp-simclr-mixup cmp-ipirm-mixup --out "$out/mixup"
"$ipirm" compare --store "$store" cmp-simclr cmp-ipirm cmp-simclr-mixup cmp-ipirm-mixup --out "$out/all"
