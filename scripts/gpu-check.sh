#!/usr/bin/env bash
# Every check that needs a GPU, in one run sized for 8 minutes on one H200. Prints `FIG name value
# unit` lines and one `PASS`/`FAIL`/`SKIP name (seconds): why` line per check, then a summary;
# exits 1 when a check failed. Each check's whole output is in OUT/<check>.log.
#
#   bash scripts/gpu-check.sh [--out DIR] [--ref IP-IRM_CHECKOUT] [--budget SECONDS]
#
# --out     where logs, stores and figures go (default target/gpu-check; emptied first)
# --ref     a checkout of Wangt-CN/IP-IRM (never commit it): the reference's own benchmark
#           (../shared/bench/ref_bench.py, or IPIRM_REF_BENCH) runs right before ours, and the
#           two are printed side by side (scripts/bench-vs-ref.sh's table)
# --budget  seconds the whole script may take (default 480); a check that would not fit in what
#           is left is skipped and says so
# Env: IPIRM_BIN (default target/release/ipirm), IPIRM_FMNIST (Fashion-MNIST's folder, default
# Debian's /usr/share/datasets/fashion-mnist), IPIRM_PY (python with torch for the reference and
# for reading JSON; default python3). Where the binary does not find libtorch (a machine other
# than the one that built it), torch's lib folder of that python is put on LD_LIBRARY_PATH.
#
# The checks, most informative first:
#   nccl-one-rank   a group of one with NCCL (`--rank 0 --world-size 1 --dist-backend nccl`)
#                   trains 2 IP-IRM epochs on Fashion-MNIST: NCCL's collectives on a GPU
#   gloo-two-ranks  two ranks sharing the GPU over Gloo (`--world-size 2 --dist-backend gloo`; gradients
#                   in DDP's buckets, c10d's Reducer on CUDA tensors)
#   bench           `ipirm bench` on STL-10-sized data at the resolved GPU defaults, against the
#                   targets: minimize with augmentation >= 4,000 img/s, extraction >= 10,000
#                   img/s, offline maximize <= 0.5 s/epoch at N = 105,000, a 400-epoch STL-10
#                   run estimated <= 3 h
#   kill-resume     a short Fashion-MNIST IP-IRM run in fp32 (TF32 off), killed with SIGKILL after its second
#                   epoch, then the same command again: it must resume from a stored checkpoint
#                   and finish
#   bf16-vs-fp32    the same run in bf16 (same seed): trained kNN top-1 within 0.5 point of fp32
#   notebook-00     notebook 00 on the GPU's machine, where evcxr_jupyter and cargo are installed
#   ref-bench       the reference's benchmark on the same GPU (with --ref)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="$root/target/gpu-check"
ref=""
budget=480
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --ref) ref="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    *) echo "gpu-check: unknown argument $1 (expected --out, --ref or --budget)" >&2; exit 2 ;;
  esac
done
bin="${IPIRM_BIN:-$root/target/release/ipirm}"
fmnist="${IPIRM_FMNIST:-/usr/share/datasets/fashion-mnist}"
py="${IPIRM_PY:-python3}"
[ -x "$bin" ] || { echo "gpu-check: no binary at $bin (cargo build --release, or IPIRM_BIN)" >&2; exit 2; }
if ldd "$bin" 2>/dev/null | grep -q 'libtorch.*not found'; then
  tlib="$("$py" -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib" ||
    { echo "gpu-check: $bin finds no libtorch and $py has no torch" >&2; exit 2; }
  export LD_LIBRARY_PATH="$tlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
rm -rf "$out"
mkdir -p "$out"
start=$SECONDS
passed=0 failed=0 skipped=0

left() { echo $((budget - (SECONDS - start))); }
result() { # result STATUS NAME SECONDS WHY
  echo "$1 $2 ($3 s): $4"
  case "$1" in PASS) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; *) skipped=$((skipped + 1)) ;; esac
}
fits() { # fits NAME SECONDS: whether a check of that length fits in what is left
  if [ "$(left)" -lt "$2" ]; then
    result SKIP "$1" 0 "needs about $2 s, $(left) s of the budget left"
    return 1
  fi
}
figs() { grep -h '^FIG ' "$@" || true; }
json() { "$py" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

echo "gpu-check: $(date -u +%FT%TZ), $("$bin" --version), budget ${budget} s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
fm=(--data-dir "$fmnist" --device cuda)
short=(--set train.epochs=2 --set ipirm.maximize_iter=1 --set train.knn_every=0)

# --- NCCL: a group of one on the GPU.
if fits nccl-one-rank 90; then
  t=$SECONDS
  port=$((20000 + RANDOM % 20000))
  timeout 150 "$bin" train --store "$out/store-nccl" --preset fmnist-ipirm-quick "${fm[@]}" "${short[@]}" \
    --rank 0 --world-size 1 --master "127.0.0.1:$port" --dist-backend nccl --dist-timeout 60 \
    --out "$out/nccl" >"$out/nccl-one-rank.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q 'joined.*nccl' "$out/nccl-one-rank.log"; then
    result PASS nccl-one-rank $((SECONDS - t)) "$(grep -m1 'joined' "$out/nccl-one-rank.log")"
  else
    result FAIL nccl-one-rank $((SECONDS - t)) "exit $rc: $(tail -n 3 "$out/nccl-one-rank.log" | tr '\n' ' ')"
  fi
fi

# --- Gloo: two ranks on the one GPU.
if fits gloo-two-ranks 120; then
  t=$SECONDS
  timeout 200 "$bin" train --store "$out/store-gloo" --preset fmnist-ipirm-quick "${fm[@]}" "${short[@]}" \
    --world-size 2 --dist-backend gloo --dist-timeout 60 --out "$out/gloo" >"$out/gloo-two-ranks.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    result PASS gloo-two-ranks $((SECONDS - t)) "$(grep -m1 'joined' "$out/gloo-two-ranks.log")"
  else
    result FAIL gloo-two-ranks $((SECONDS - t)) "exit $rc: $(tail -n 3 "$out/gloo-two-ranks.log" | tr '\n' ' ')"
  fi
fi

# --- Throughput on STL-10-sized data against the targets.
if fits bench 150; then
  t=$SECONDS
  timeout 300 "$bin" bench --device cuda --preset stl10-ipirm --set model.bn_splits=1 --side 96 \
    --iters 20 --maximize-n 105000 --json "$out/ipirm_bench.json" >"$out/bench.log" 2>&1
  rc=$?
  figs "$out/bench.log"
  if [ $rc -ne 0 ]; then
    result FAIL bench $((SECONDS - t)) "exit $rc: $(tail -n 3 "$out/bench.log" | tr '\n' ' ')"
  else
    # name, figure, comparison, target
    verdicts="$("$py" - "$out/ipirm_bench.json" <<'EOF'
import json, sys
f = {k: v[0] for k, v in json.load(open(sys.argv[1]))["figures"].items()}
aug = f["minimize_img_per_s_augmented"]
hours = 400 * 105_000 / aug / 3600 + 9 * f.get("maximize_s_full_estimate_61_epochs", 0) / 3600
print(f"FIG stl10_400_epochs_estimate_h {hours:.3g} h")
checks = [("minimize-augmented", aug, ">=", 4000, "img/s"),
          ("extract", f["extract_img_per_s"], ">=", 10000, "img/s"),
          ("maximize-epoch", f.get("maximize_s_per_epoch_N105k", float("inf")), "<=", 0.5, "s"),
          ("stl10-400-epochs", hours, "<=", 3, "h")]
for name, v, op, target, unit in checks:
    ok = v >= target if op == ">=" else v <= target
    print(f"{'PASS' if ok else 'FAIL'} target-{name} {v:.4g} {unit} (target {op} {target:g})")
EOF
)"
    echo "$verdicts" | grep '^FIG'
    misses="$(echo "$verdicts" | grep -c '^FAIL')"
    echo "$verdicts" | grep -v '^FIG' | sed 's/^/  /'
    if [ "$misses" -eq 0 ]; then
      result PASS bench $((SECONDS - t)) "every target met"
    else
      result FAIL bench $((SECONDS - t)) "$misses of 4 targets missed (lines above)"
    fi
  fi
fi

# --- A short Fashion-MNIST IP-IRM run: fp32 killed and resumed, then bf16 beside it.
run=(--preset fmnist-ipirm-full "${fm[@]}" --set train.epochs=3 --set ipirm.maximize_iter=2
     --set train.knn_every=0 --set linear.epochs=1 --set store.checkpoint_every=1)
if fits kill-resume 150; then
  t=$SECONDS
  fp32=("$bin" run --store "$out/store-run" "${run[@]}" --set train.precision=fp32
        --set train.tf32=false --name fp32 --out "$out/fp32")
  "${fp32[@]}" >"$out/kill-resume.log" 2>&1 &
  pid=$!
  # Killed once the second epoch's line is out (its checkpoint, or the first's, is stored).
  for _ in $(seq 1 240); do
    grep -q '^epoch 2/' "$out/kill-resume.log" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  echo "=== killed with SIGKILL; the same command again" >>"$out/kill-resume.log"
  timeout 240 "${fp32[@]}" >>"$out/kill-resume.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q 'resuming from the stored checkpoint' "$out/kill-resume.log" &&
    [ -f "$out/fp32/report.json" ]; then
    result PASS kill-resume $((SECONDS - t)) "$(grep -m1 'resuming from' "$out/kill-resume.log")"
  else
    result FAIL kill-resume $((SECONDS - t)) "exit $rc: $(tail -n 3 "$out/kill-resume.log" | tr '\n' ' ')"
  fi
fi
if [ -f "$out/fp32/report.json" ] && fits bf16-vs-fp32 100; then
  t=$SECONDS
  timeout 240 "$bin" run --store "$out/store-run" "${run[@]}" --set train.precision=bf16 --name bf16 \
    --out "$out/bf16" >"$out/bf16-vs-fp32.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    a="$(json "$out/fp32/report.json" 'd["trained_knn"]["top1"]')"
    b="$(json "$out/bf16/report.json" 'd["trained_knn"]["top1"]')"
    for p in fp32 bf16; do
      json "$out/$p/report.json" "'\\n'.join('FIG fmnist_${p}_epoch%d %.0f img/s' % (e['epoch'], e['images_per_sec']) for e in d['epochs'])"
    done
    echo "FIG fmnist_knn_top1_fp32 $a %"
    echo "FIG fmnist_knn_top1_bf16 $b %"
    if "$py" -c "import sys; sys.exit(abs($a - $b) > 0.5)"; then
      result PASS bf16-vs-fp32 $((SECONDS - t)) "kNN top-1 $b (bf16) against $a (fp32)"
    else
      result FAIL bf16-vs-fp32 $((SECONDS - t)) "kNN top-1 $b (bf16) against $a (fp32): more than 0.5 apart"
    fi
  else
    result FAIL bf16-vs-fp32 $((SECONDS - t)) "exit $rc: $(tail -n 3 "$out/bf16-vs-fp32.log" | tr '\n' ' ')"
  fi
fi

# --- Notebook 00 with the GPU in view: needs evcxr (a Rust toolchain) on this machine.
if ! command -v cargo >/dev/null || ! command -v evcxr_jupyter >/dev/null; then
  result SKIP notebook-00 0 "no cargo or evcxr_jupyter here (evcxr compiles each cell with rustc)"
elif fits notebook-00 200; then
  t=$SECONDS
  if timeout 400 bash "$here/run-notebooks.sh" "$root/notebooks/00_smoke.ipynb" >"$out/notebook-00.log" 2>&1 &&
    grep -q 'GPU' "$root/target/notebooks/00_smoke.ipynb"; then
    result PASS notebook-00 $((SECONDS - t)) "$(grep -m1 -o 'CUDA[^"]*' "$root/target/notebooks/00_smoke.ipynb")"
  else
    result FAIL notebook-00 $((SECONDS - t)) "$(tail -n 2 "$out/notebook-00.log" | tr '\n' ' ')"
  fi
fi

# --- The reference's benchmark on the same GPU, beside ours.
if [ -z "$ref" ]; then
  result SKIP ref-bench 0 "no --ref checkout of Wangt-CN/IP-IRM given"
elif [ -f "$out/ipirm_bench.json" ] && fits ref-bench 150; then
  t=$SECONDS
  bench_py="${IPIRM_REF_BENCH:-$root/../shared/bench/ref_bench.py}"
  mkdir -p "$out/ref"
  timeout "$(left)" "$py" "$bench_py" --ref "$ref" --out "$out/ref" >"$out/ref-bench.log" 2>&1
  rc=$?
  figs "$out/ref-bench.log" | sed 's/^FIG /FIG ref_/'
  if [ $rc -eq 0 ]; then
    "$py" "$here/bench_table.py" "$out/ref/ref_bench.json" "$out/ipirm_bench.json"
    result PASS ref-bench $((SECONDS - t)) "reference measured after ours, same GPU"
  else
    result FAIL ref-bench $((SECONDS - t)) "exit $rc: $(tail -n 3 "$out/ref-bench.log" | tr '\n' ' ')"
  fi
fi

echo "gpu-check: $passed passed, $failed failed, $skipped skipped in $((SECONDS - start)) s (logs in $out)"
[ "$failed" -eq 0 ]
