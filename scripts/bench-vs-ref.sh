#!/usr/bin/env bash
# The reference's benchmark (shared/bench/ref_bench.py on the authors' code), then `ipirm bench`
# with the same workload, one right after the other on the same machine, then both side by side.
#
#   bash scripts/bench-vs-ref.sh REF_CHECKOUT OUT_DIR [--small] [ipirm bench options...]
#
# REF_CHECKOUT: a checkout of Wangt-CN/IP-IRM (never commit it). --small: the CPU smoke sizes of
# both. On a GPU both run at their full sizes (batch 256) unless --small is given. The venv's
# python needs opencv-python-headless and tqdm for the reference's imports. Extra options go to
# `ipirm bench` (e.g. --set train.precision=fp32).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
ref="${1:?usage: bench-vs-ref.sh REF_CHECKOUT OUT_DIR [--small] [ipirm bench options]}"
out="${2:?usage: bench-vs-ref.sh REF_CHECKOUT OUT_DIR [--small] [ipirm bench options]}"
shift 2
small=()
if [ "${1:-}" = "--small" ]; then
  small=(--small)
  shift
fi
mkdir -p "$out"
bench_py="${IPIRM_REF_BENCH:-$IPIRM_ROOT/../shared/bench/ref_bench.py}"
py="${IPIRM_PY:-python3}"

echo "== reference: $bench_py" >&2
"$py" "$bench_py" --ref "$ref" "${small[@]}" --out "$out" 2>&1 | grep -E '^(FIG|FAILED|done)' | tee "$out/ref_bench.txt"
# The reference runs one model on one device (nn.DataParallel over one GPU splits nothing), so
# BatchNorm normalises the whole batch: model.bn_splits=1.
echo "== ipirm bench" >&2
"$IPIRM_ROOT/target/release/ipirm" bench --preset stl10-ipirm --set model.bn_splits=1 \
  "${small[@]}" --json "$out/ipirm_bench.json" "$@" | tee "$out/ipirm_bench.txt"

"$py" "$here/bench_table.py" "$out/ref_bench.json" "$out/ipirm_bench.json"
