#!/usr/bin/env bash
# Opens the notebooks in JupyterLab: sets up what is missing (scripts/setup-notebooks.sh, after
# scripts/setup.sh), then serves notebooks/ on 127.0.0.1 with a token and prints the address to
# open. The notebooks read the store $IPIRM_NOTEBOOK_STORE, by default the project's artifacts/
# (where `ipirm run` writes); a store without their run says so in their first data cell.
#
#   bash scripts/lab.sh                # port 8888, or the next free one
#   bash scripts/lab.sh --port 9000    # that port (an error when it is taken)
#   IPIRM_NOTEBOOK_STORE=target/notebook-store bash scripts/lab.sh
#   bash scripts/lab.sh -- --ServerApp.log_level=WARN   # after --: arguments for `jupyter lab`
#
# Env: IPIRM_LAB_PORT (as --port); JUPYTER_TOKEN (default: a new random token); EVCXR_TMPDIR: a
# build folder for the kernels (default: a fresh one per kernel, so each notebook's first cell
# compiles tch and ipirm; `EVCXR_TMPDIR=target/evcxr` reuses the headless runner's build, for
# one notebook at a time: two kernels in one folder overwrite each other's code).
# Ctrl-C twice stops the server and its kernels.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"

port="${IPIRM_LAB_PORT:-}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) [ $# -ge 2 ] || { echo "lab: --port needs a number" >&2; exit 2; }; port="$2"; shift 2 ;;
    --port=*) port="${1#--port=}"; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "lab: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done
if [ -n "$port" ] && ! [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]]; then
  echo "lab: the port must be a number from 1 to 65535, not '$port'" >&2
  exit 2
fi
# Relative to where the command was given, so resolved before leaving that folder.
store="$(realpath -m "${IPIRM_NOTEBOOK_STORE:-$IPIRM_ROOT/artifacts}")"

bash "$here/setup-notebooks.sh"
cd "$IPIRM_ROOT"
# The kernel runs cargo and rustc (it compiles each cell), builds tch against LIBTORCH (env.sh)
# and loads libtorch; set here too, in case another `rust` kernelspec shadows the venv's.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export IPIRM_NOTEBOOK_STORE="$store"

# A port: the one asked for, else the first free one from 8888 (JupyterLab's own default).
free_port() {
  "$IPIRM_PY" - "$@" <<'EOF'
import socket, sys
for port in range(int(sys.argv[1]), 65536):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
EOF
}
[ -n "$port" ] || port="$(free_port 8888)"
# The token reaches the server through its environment, not its command line (`ps` shows that).
if [ -z "${JUPYTER_TOKEN:-}" ]; then
  JUPYTER_TOKEN="$("$IPIRM_PY" -c 'import secrets; print(secrets.token_hex(24))')"
fi
export JUPYTER_TOKEN

args=(--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port="$port" --ServerApp.port_retries=0
  --ServerApp.root_dir="$IPIRM_ROOT/notebooks" --MappingKernelManager.default_kernel_name=rust)
if [ "$(id -u)" -eq 0 ]; then
  # JupyterLab will not start as root without it: every notebook's code would run as root. On
  # containers and many lab machines root is the only user there is.
  echo "lab: running as root, so passing --allow-root (JupyterLab refuses root without it; the" \
    "notebooks' code runs as root too)" >&2
  args+=(--allow-root)
fi

if [ ! -d "$store/index" ]; then
  echo "lab: note: $store holds no runs yet; the notebooks will say so. Make their run with:" >&2
  echo "  target/release/ipirm run --preset fmnist-ipirm-quick --set train.knn_every=1 --store $store" >&2
fi
cat >&2 <<EOF

== JupyterLab on notebooks/, the notebooks reading the store $store
== open  http://127.0.0.1:$port/lab?token=$JUPYTER_TOKEN
== (from another machine: ssh -L $port:127.0.0.1:$port THIS_HOST, then the same address)
== pick the kernel "Rust" if asked; the first cell compiles tch and ipirm (minutes)

EOF
exec "$IPIRM_VENV/bin/jupyter" lab "${args[@]}" "${extra[@]}"
