# Sourced by the other scripts: where the project's Python venv and libtorch live.
# shellcheck shell=bash
IPIRM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export IPIRM_ROOT
export IPIRM_VENV="${IPIRM_VENV:-$IPIRM_ROOT/.venv}"
export IPIRM_PY="$IPIRM_VENV/bin/python"
export LIBTORCH="$IPIRM_VENV/lib/python3.11/site-packages/torch"
export LIBTORCH_CXX11_ABI=1
