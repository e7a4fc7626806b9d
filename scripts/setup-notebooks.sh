#!/usr/bin/env bash
# Idempotent set-up for the Rust notebooks, after scripts/setup.sh (which makes the venv): the
# evcxr Jupyter kernel from crates.io, JupyterLab (to open the notebooks: scripts/lab.sh) and
# nbconvert/nbclient (to run them headless) in the project venv, and the kernel registered in that
# venv with libtorch in its environment. Fast when done; the first `cargo install` takes about
# 11 minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$IPIRM_ROOT"

EVCXR_VERSION="0.22.0"  # builds with rustc 1.95
# The headless runner's packages and JupyterLab, installed in one pip call (one resolution).
JUPYTER_PKGS="nbconvert==7.17.2 nbclient==0.11.0 nbformat==5.11.1 jupyter-client==8.10.0 jupyter-core==5.9.1 jupyterlab==4.6.6"

step() { printf '\n== %s\n' "$*" >&2; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [ ! -x "$IPIRM_PY" ] || [ ! -d "$LIBTORCH/lib" ]; then
  echo "setup-notebooks: no venv with torch at $IPIRM_VENV; run scripts/setup.sh first" >&2
  exit 1
fi

# The kernel. Its own target dir, not the project's (CARGO_TARGET_DIR would keep ~1 GB around).
# (evcxr_jupyter has no --version; cargo's list of installed crates says which one is there.)
if ! { command -v evcxr_jupyter >/dev/null && cargo install --list | grep -qx "evcxr_jupyter v$EVCXR_VERSION:"; }; then
  step "installing evcxr_jupyter $EVCXR_VERSION (cargo install, ~11 min on 2 cores)"
  env -u CARGO_TARGET_DIR cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked --quiet
fi

# Jupyter's notebook runner and JupyterLab. (JupyterLab brings ipykernel, Python's kernel; the
# notebooks use only evcxr's.)
stamp="$IPIRM_VENV/.ipirm-notebooks"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$JUPYTER_PKGS" ] || [ ! -x "$IPIRM_VENV/bin/jupyter-lab" ]; then
  step "installing $JUPYTER_PKGS into $IPIRM_VENV"
  # shellcheck disable=SC2086  # a list of packages, split into words on purpose
  "$IPIRM_PY" -m pip install -q --disable-pip-version-check $JUPYTER_PKGS
  echo "$JUPYTER_PKGS" >"$stamp"
fi

# Register the kernel as `rust` in the venv (<venv>/share/jupyter/kernels/rust, which the venv's
# jupyter searches), not per user: its kernel.json names this venv's libtorch, which the kernel
# needs to build tch (LIBTORCH) and to load it (LD_LIBRARY_PATH: a crate evcxr builds gets no
# rpath to libtorch). scripts/run-notebooks.sh exports the same variables, so a headless run also
# works if another `rust` kernelspec shadows this one.
kernel_dir="$IPIRM_VENV/share/jupyter/kernels/rust"
JUPYTER_PATH="$IPIRM_VENV/share/jupyter" evcxr_jupyter --install >/dev/null
"$IPIRM_PY" - "$kernel_dir/kernel.json" "$LIBTORCH" <<'EOF'
import json, sys
path, libtorch = sys.argv[1], sys.argv[2]
with open(path) as f:
    spec = json.load(f)
spec["env"] = {"LIBTORCH": libtorch, "LIBTORCH_CXX11_ABI": "1", "LD_LIBRARY_PATH": libtorch + "/lib"}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
EOF

found="$("$IPIRM_VENV/bin/jupyter" kernelspec list --json 2>/dev/null | "$IPIRM_PY" -c \
  'import json,sys; print(json.load(sys.stdin)["kernelspecs"].get("rust", {}).get("resource_dir", ""))')"
if [ -z "$found" ]; then
  echo "setup-notebooks: the venv's jupyter does not find the rust kernel in $kernel_dir" >&2
  exit 1
elif [ "$(realpath "$found")" != "$(realpath "$kernel_dir")" ]; then
  echo "setup-notebooks: note: jupyter picks the rust kernelspec in $found, not $kernel_dir;" \
    "scripts/run-notebooks.sh still sets libtorch's variables itself" >&2
fi
