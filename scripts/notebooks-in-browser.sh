#!/usr/bin/env bash
# The notebooks as a person runs them: JupyterLab (scripts/lab.sh) on a free local port, headless
# Chromium driven by Selenium opening each notebook, Run > Run All Cells from the menu bar, then
# a wait for the kernel to go idle and a check that every code cell ran, has output and shows no
# error (scripts/notebooks-in-browser.py says what counts). A screenshot of each whole notebook
# after its run goes to target/notebooks/NAME.png. Installs what it needs: Debian's `chromium`
# and `chromium-driver` (apt, when missing), Selenium in the venv, JupyterLab and the kernel
# (scripts/setup-notebooks.sh). Whatever happens, the server it started and its kernels are
# stopped when it ends.
#
#   bash scripts/notebooks-in-browser.sh                 # 00_smoke and 01_resume_and_replay
#   bash scripts/notebooks-in-browser.sh notebooks/02_maximize_step.ipynb [...]
#
# The store: $IPIRM_NOTEBOOK_STORE, else the tests' tiny run in target/notebook-store (made with
# scripts/notebook-store.sh, a cache hit when there). The kernels build in target/evcxr (as
# scripts/run-notebooks.sh, taking turns with it), so after a headless run only the cells compile.
# Env: IPIRM_NB_TIMEOUT, seconds one notebook may take to run (default 1800). Server log, lab
# settings: target/notebooks-in-browser/. Exits 1 naming the failing notebooks and cells.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

names=()
for nb in "$@"; do
  [ -f "$nb" ] || { echo "notebooks-in-browser: no notebook $nb" >&2; exit 2; }
  [ "$(dirname "$(realpath "$nb")")" = "$IPIRM_ROOT/notebooks" ] \
    || { echo "notebooks-in-browser: $nb is not in notebooks/" >&2; exit 2; }
  names+=("$(basename "$nb")")
done
[ ${#names[@]} -gt 0 ] || names=(00_smoke.ipynb 01_resume_and_replay.ipynb)
cd "$IPIRM_ROOT"
work="$IPIRM_ROOT/target/notebooks-in-browser"
out="$IPIRM_ROOT/target/notebooks"
mkdir -p "$work" "$out"
step() { printf '== %s\n' "$*" >&2; }
start=$SECONDS

# The browser and its driver, from Debian.
debs=()
command -v chromium >/dev/null || debs+=(chromium)
command -v chromedriver >/dev/null || debs+=(chromium-driver)
if [ ${#debs[@]} -gt 0 ]; then
  step "installing Debian's ${debs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${debs[@]}" >/dev/null
fi
bash "$here/setup-notebooks.sh"
want="selenium==4.51.0"
stamp="$IPIRM_VENV/.ipirm-browser"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step "installing $want into $IPIRM_VENV"
  "$IPIRM_PY" -m pip install -q --disable-pip-version-check "$want"
  echo "$want" >"$stamp"
fi

if [ -z "${IPIRM_NOTEBOOK_STORE:-}" ]; then
  export IPIRM_NOTEBOOK_STORE="$IPIRM_ROOT/target/notebook-store"
  [ -x target/release/ipirm ] || cargo build --release --quiet --bins
  bash "$here/notebook-store.sh" >/dev/null
fi

# One evcxr at a time in the build folder (the lock scripts/run-notebooks.sh takes), from the
# project's lock file.
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-$IPIRM_ROOT/target/evcxr}"
mkdir -p "$EVCXR_TMPDIR"
exec 9>"$EVCXR_TMPDIR.lock"
if ! flock -n 9; then
  step "waiting for another run to release $EVCXR_TMPDIR"
  flock 9
fi
cp Cargo.lock "$EVCXR_TMPDIR/Cargo.lock"

# JupyterLab's settings, workspaces and checkpoints of this check only: no autosave and the
# checkpoints under target/ (notebooks/ stays as it is), every cell drawn and no blank space
# after the last (the screenshot shows the whole notebook), no news or update notices over it.
settings="$work/settings/@jupyterlab"
rm -rf "$work/workspaces"
mkdir -p "$settings/docmanager-extension" "$settings/notebook-extension" \
  "$settings/apputils-extension" "$work/workspaces"
echo '{"autosave": false}' >"$settings/docmanager-extension/plugin.jupyterlab-settings"
echo '{"windowingMode": "none", "scrollPastEnd": false}' \
  >"$settings/notebook-extension/tracker.jupyterlab-settings"
echo '{"checkForUpdates": false, "fetchNews": "false"}' \
  >"$settings/apputils-extension/notification.jupyterlab-settings"
export JUPYTERLAB_SETTINGS_DIR="$work/settings" JUPYTERLAB_WORKSPACES_DIR="$work/workspaces"

server=""
helper=""
# Stops what this script started: the browser driver (which closes Chromium), then the server,
# which shuts its kernels down on SIGTERM; a kernel still there after it is killed with its
# process group (the server starts each kernel in its own session).
# shellcheck disable=SC2317  # reached through the trap
cleanup() {
  if [ -n "$helper" ] && kill -0 "$helper" 2>/dev/null; then
    kill -TERM "$helper"
    wait "$helper" 2>/dev/null || true
  fi
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    local kernels=() k
    mapfile -t kernels < <(pgrep -P "$server" || true)
    kill -TERM "$server"
    for _ in $(seq 60); do kill -0 "$server" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    for k in "${kernels[@]}"; do
      if kill -0 "$k" 2>/dev/null; then kill -KILL -- "-$k" 2>/dev/null || true; fi
    done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$IPIRM_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
JUPYTER_TOKEN="$("$IPIRM_PY" -c 'import secrets; print(secrets.token_hex(24))')"
export JUPYTER_TOKEN
base="http://127.0.0.1:$port"
step "JupyterLab on $base (log: $work/server.log), the notebooks reading $IPIRM_NOTEBOOK_STORE"
# `window.jupyterapp`: the page's notebook model, which the check reads.
IPIRM_LAB_PORT="$port" bash "$here/lab.sh" -- --LabApp.expose_app_in_browser=True \
  --FileCheckpoints.checkpoint_dir="$work/checkpoints" >"$work/server.log" 2>&1 &
server=$!
server_up() {
  "$IPIRM_PY" -c 'import os, sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/api/status",
    headers={"Authorization": "token " + os.environ["JUPYTER_TOKEN"]}), timeout=2)' "$base" 2>/dev/null
}
for _ in $(seq 240); do
  server_up && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.5
done
if ! server_up; then
  tail -20 "$work/server.log" >&2
  echo "notebooks-in-browser: JupyterLab did not start (log: $work/server.log)" >&2
  exit 1
fi

# What notebooks/ holds, to check that the runs left it as it was.
files() { find notebooks -type f -exec sha256sum {} + | LC_ALL=C sort; }
before="$(files)"
rc=0
"$IPIRM_PY" "$here/notebooks-in-browser.py" "$base" "$out" "${IPIRM_NB_TIMEOUT:-1800}" "${names[@]}" &
helper=$!
wait "$helper" || rc=$?
helper=""
if [ "$(files)" != "$before" ]; then
  echo "notebooks-in-browser: the runs changed notebooks/ (they must leave it as it was):" >&2
  diff <(echo "$before") <(files) >&2 || true
  rc=1
fi
echo "notebooks-in-browser: $([ $rc -eq 0 ] && echo ok || echo FAILED) in $((SECONDS - start)) s" \
  "(screenshots in target/notebooks/)"
exit "$rc"
