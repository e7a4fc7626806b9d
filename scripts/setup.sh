#!/usr/bin/env bash
# Idempotent set-up for a fresh machine (Rust toolchain, Python 3.11, apt): Fashion-MNIST and
# Gloo's headers from Debian, a project-local venv with torch==2.11.0 from PyPI, and the release
# build. Fast when done.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$IPIRM_ROOT"

step() { printf '\n== %s\n' "$*" >&2; }

# Debian packages: Fashion-MNIST (the default dataset) and Gloo's headers (libtorch's c10d
# process group includes them; build.rs compiles src/distributed/c10d.cpp against them).
debs=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || debs+=(dataset-fashion-mnist)
[ -f /usr/include/gloo/context.h ] || [ -n "${GLOO_INCLUDE:-}" ] || debs+=(libgloo-dev)
if [ ${#debs[@]} -gt 0 ]; then
  step "installing Debian's ${debs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${debs[@]}" >/dev/null
fi

# The venv: torch for libtorch (the crate links against it), numpy/torchvision/safetensors for the
# fixture scripts and the PyTorch oracles the tests compare with, and the two CUDA 13.0 header
# packages NCCL's process group needs to compile (nccl.h comes with torch's nvidia-nccl wheel;
# build.rs compiles src/distributed/c10d.cpp with NCCL when all are there, GPU or not).
want="torch==2.11.0 torchvision==0.26.0 numpy safetensors nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85"
stamp="$IPIRM_VENV/.ipirm-setup"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step "creating the Python venv at $IPIRM_VENV ($want)"
  # pip's peak on a fresh machine, measured 2026-12-05: 7.4 GB while it unpacks (4.8 GB after),
  # without its download cache (which would keep ~3 GB more). Say so plainly, not pip's Errno 28.
  need_mb=8000
  mkdir -p "$(dirname "$IPIRM_VENV")"
  free_mb=$(df --output=avail -BM "$(dirname "$IPIRM_VENV")" | tail -1 | tr -dc 0-9)
  if [ "$free_mb" -lt "$need_mb" ]; then
    echo "setup: the venv needs about $need_mb MB free while pip installs torch; $(dirname "$IPIRM_VENV") has $free_mb MB (free some, or set IPIRM_VENV to a folder on a larger disk)" >&2
    exit 1
  fi
  [ -x "$IPIRM_PY" ] || python3.11 -m venv "$IPIRM_VENV" 2>/dev/null || python3 -m venv "$IPIRM_VENV"
  "$IPIRM_PY" -m pip install -q --no-cache-dir --disable-pip-version-check $want
  echo "$want" >"$stamp"
fi

step "building ipirm (release)"
cargo build --release --quiet --bins
