#!/usr/bin/env bash
# Two-rank data-parallel training with the gradients summed in DDP's buckets while backward runs
# (--bucket-cap-mb, c10d's Reducer) against one flat all-reduce after backward (--bucket-cap-mb
# 0), on this machine's CPU over Gloo: the same run, the two alternating ROUNDS times (each in a
# fresh store, so nothing is cached), and the seconds of the training epochs of each.
#
#   bash scripts/bench-grad-sync.sh [ROUNDS] [ipirm train options...]
#
# Default workload: SimCLR on 256 Fashion-MNIST images, ResNet-18 at full width (11.2 M
# parameters, 45 MB of gradients a step), batch 16 (16 steps an epoch, 8 images a rank: the
# gradients' sum weighs most against the compute), 2 epochs, each rank on one thread; extra
# options are appended (e.g. --set model.width=16, --set train.mixup=true). Prints
# `FIG name value unit` lines: each arm's median epoch seconds and img/s, and buckets / flat.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
rounds="${1:-3}"
shift || true
bin="$IPIRM_ROOT/target/release/ipirm"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
args=(--preset fmnist-quick --device cpu
  --set data.train_limit=256 --set data.bank_limit=256 --set data.test_limit=128
  --set model.width=64 --set model.bn_splits=2 --set train.batch_size=16 --set train.epochs=2
  --world-size 2 --name bench "$@")
for r in $(seq 1 "$rounds"); do
  for arm in buckets flat; do
    cap=25
    [ "$arm" = flat ] && cap=0
    OMP_NUM_THREADS=1 "$bin" train --store "$work/$arm-$r" "${args[@]}" --bucket-cap-mb "$cap" \
      >"$work/$arm-$r.log" 2>&1 || { cat "$work/$arm-$r.log" >&2; exit 1; }
    # "epoch 1/2: loss … , 123 img/s, 4.5 s" → "123 4.5"
    grep -E '^epoch [0-9]+/[0-9]+:' "$work/$arm-$r.log" |
      sed -E 's/.*, ([0-9.]+) img\/s, ([0-9.]+) s$/\1 \2/' >"$work/$arm-$r.txt"
    cat "$work/$arm-$r.txt" >>"$work/$arm.txt"
    echo "round $r, $arm: epochs of $(awk '{printf "%s s ", $2}' "$work/$arm-$r.txt")" >&2
  done
done
python3 - "$work" <<'PY'
import statistics, sys
work = sys.argv[1]
med = {}
for arm in ("buckets", "flat"):
    rows = [tuple(map(float, l.split())) for l in open(f"{work}/{arm}.txt") if l.strip()]
    ips, secs = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
    med[arm] = secs
    print(f"FIG grad_sync_{arm}_epoch_s {secs:.2f} s  ({len(rows)} epochs)")
    print(f"FIG grad_sync_{arm}_img_per_s {ips:.1f} img/s")
print(f"FIG grad_sync_buckets_over_flat_time {med['buckets'] / med['flat']:.3f} ratio")
PY
