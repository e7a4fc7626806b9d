#!/usr/bin/env bash
# Executes notebooks headless with the evcxr (Rust) kernel, after scripts/setup-notebooks.sh.
#
#   scripts/run-notebooks.sh                 # every notebooks/*.ipynb, in name order
#   scripts/run-notebooks.sh notebooks/00_smoke.ipynb [...]
#
# Executed copies (with their outputs and charts) go to target/notebooks/. Compiled crates persist
# in target/evcxr/ (evcxr's EVCXR_TMPDIR), so only the first run compiles tch and ipirm; runs take
# turns on it (a lock), since one evcxr at a time may use it. A failing cell (compile error,
# panic, timeout) prints its source and error, the script goes on with the next notebook and
# exits 1 at the end; the last line reads "notebooks: N passed, M failed".
# Env: IPIRM_NB_TIMEOUT, seconds one cell may take (default 1800); EVCXR_TMPDIR, another build
# folder (default target/evcxr); IPIRM_NB_OUT, another folder for the executed copies.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

notebooks=()
for nb in "$@"; do
  [ -f "$nb" ] || { echo "run-notebooks: no notebook $nb" >&2; exit 2; }
  notebooks+=("$(realpath "$nb")")
done
cd "$IPIRM_ROOT"
if [ ${#notebooks[@]} -eq 0 ]; then
  mapfile -t notebooks < <(find "$IPIRM_ROOT/notebooks" -maxdepth 1 -name '*.ipynb' | LC_ALL=C sort)
fi
if ! "$IPIRM_VENV/bin/jupyter" kernelspec list 2>/dev/null | grep -q '^ *rust '; then
  echo "run-notebooks: no rust kernel for $IPIRM_VENV/bin/jupyter; run scripts/setup-notebooks.sh" >&2
  exit 2
fi

out="$(realpath -m "${IPIRM_NB_OUT:-$IPIRM_ROOT/target/notebooks}")"
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-$IPIRM_ROOT/target/evcxr}"
mkdir -p "$out" "$EVCXR_TMPDIR"
# The kernel builds tch (LIBTORCH, from env.sh) and loads libtorch (no rpath in evcxr's crate).
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

exec 9>"$EVCXR_TMPDIR.lock"
if ! flock -n 9; then
  echo "run-notebooks: waiting for another run to release $EVCXR_TMPDIR" >&2
  flock 9
fi
# evcxr's crate (`:dep ipirm = { path = ".." }`) resolves its dependencies afresh; starting from
# the project's lock file gives the notebooks the versions the project builds and tests with.
cp Cargo.lock "$EVCXR_TMPDIR/Cargo.lock"

# Runs one notebook with nbclient (what `jupyter nbconvert --execute` runs), cell by cell, and
# writes the executed copy even when a cell fails. Two evcxr quirks it handles: a compile error's
# text is only in the cell's outputs, not in the reply nbconvert prints (its message would be
# empty), and a cell that fails at run time is reported as success: a panic (caught by evcxr,
# with its default `:preserve_vars_on_panic 1`) and an error returned with `?` (evcxr prints its
# message) both leave only text on stderr. So a cell that writes on stderr (which JupyterLab
# shows on red) counts as failed, progress lines of long work aside (scripts/notebook_errors.py).
runner='
import os, queue, sys, time, nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
sys.path.insert(0, os.path.join(os.environ["IPIRM_ROOT"], "scripts"))
from notebook_errors import ANSI, stderr_errors

path, out, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
nb = nbformat.read(path, as_version=4)

class Panicked(Exception):  # or returned an error: text on stderr
    pass

def text_of(cell):
    parts = []
    for o in cell.get("outputs", []):
        if o.output_type == "error":
            parts += [o.get("evalue", "")] + o.get("traceback", [])
    parts += stderr_errors(cell.get("outputs", []))
    return ANSI.sub("", "\n".join(p.rstrip("\n") for p in parts if p))

# evcxr passes the stdout and stderr of the code it runs on from a thread of its own, so a line
# written just before a cell ends can reach Jupyter after the reply to that cell, which nbclient
# no longer reads (the error of a fast last cell was lost one run in six). Before a cell is
# judged, its late output is collected until the kernel has been quiet for SETTLE seconds.
SETTLE = 0.25
async def collect_late_output(cell, execute_reply):
    msg_id = execute_reply["parent_header"].get("msg_id")
    while True:
        try:
            msg = await client.kc.iopub_channel.get_msg(timeout=SETTLE)
        except queue.Empty:
            return
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            c = msg["content"]
            cell.outputs.append(nbformat.v4.new_output("stream", name=c["name"], text=c["text"]))

started = [time.time()]
def on_cell_start(cell, cell_index):
    started[0] = time.time()
async def on_cell_executed(cell, cell_index, execute_reply):
    print(f"   cell {cell_index}: {time.time() - started[0]:.1f} s", file=sys.stderr, flush=True)
    await collect_late_output(cell, execute_reply)
    if stderr_errors(cell.outputs):
        raise Panicked()

client = NotebookClient(nb, timeout=timeout, kernel_name="rust", coalesce_streams=True,
                        resources={"metadata": {"path": path.rsplit("/", 1)[0]}},
                        on_cell_start=on_cell_start, on_cell_executed=on_cell_executed)
failed = None
try:
    client.execute()
except (CellExecutionError, Panicked) as e:
    failed = next((c for c in nb.cells if c.cell_type == "code" and c.get("outputs") and
                   (any(o.output_type == "error" for o in c.outputs) or stderr_errors(c.outputs))), None)
    print("\n---- failing cell ----", file=sys.stderr)
    print(failed.source if failed else "(unknown)", file=sys.stderr)
    print("---- its error ----", file=sys.stderr)
    print((text_of(failed) if failed else "") or str(e), file=sys.stderr)
    print("----", file=sys.stderr)
    failed = True
except Exception as e:  # a dead kernel, a timeout
    print(f"\n---- {type(e).__name__}: {e}", file=sys.stderr)
    failed = True
nbformat.write(nb, out)
sys.exit(1 if failed else 0)
'

passed=0
failed=()
for nb in "${notebooks[@]}"; do
  name="$(basename "$nb")"
  echo "== $name" >&2
  start=$SECONDS
  # The kernel starts in the notebook's folder (as under nbconvert or Jupyter), so
  # `:dep ipirm = { path = ".." }` and relative paths in cells resolve against notebooks/.
  if "$IPIRM_PY" -c "$runner" "$nb" "$out/$name" "${IPIRM_NB_TIMEOUT:-1800}"; then
    passed=$((passed + 1))
    echo "== $name: ok in $((SECONDS - start)) s -> $out/$name" >&2
  else
    failed+=("$name")
    echo "== $name: FAILED after $((SECONDS - start)) s (error above; what ran: $out/$name)" >&2
  fi
done
echo "notebooks: ${passed} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}" >&2; exit 1; }
