#!/usr/bin/env bash
# The notebooks opened on a store without their run (a fresh clone's artifacts/): each of
# notebooks 01-04, executed headless (scripts/run-notebooks.sh) with IPIRM_NOTEBOOK_STORE naming a
# folder that is not there, must stop at its first data cell, the one that opens the store, with
# the library's message in the cell (which store, that it is not there, the command that makes
# the run), and no panic. The cells before it must have run cleanly, the cells after it not at
# all. scripts/test.sh runs it; executed copies in target/notebook-empty-store/.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
cd "$IPIRM_ROOT"
work="$IPIRM_ROOT/target/notebook-empty-store"
rm -rf "$work"
mkdir -p "$work/out"
notebooks=(notebooks/01_*.ipynb notebooks/02_*.ipynb notebooks/03_*.ipynb notebooks/04_*.ipynb)
# run-notebooks.sh must fail every one of them.
if IPIRM_NOTEBOOK_STORE="$work/store" IPIRM_NB_OUT="$work/out" \
  bash "$here/run-notebooks.sh" "${notebooks[@]}" >"$work/run.log" 2>&1; then
  echo "notebooks-empty-store: the notebooks passed on a store that is not there (log: $work/run.log)" >&2
  exit 1
fi
"$IPIRM_PY" - "$work/store" "$work/out" "${notebooks[@]}" <<'PY'
import json, os, sys
store, out, names = sys.argv[1], sys.argv[2], [os.path.basename(n) for n in sys.argv[3:]]
bad = []
for name in names:
    path = os.path.join(out, name)
    before = len(bad)
    if not os.path.exists(path):
        bad.append(f"{name}: no executed copy"); continue
    cells = [c for c in json.load(open(path))["cells"] if c["cell_type"] == "code"]
    first = next((i for i, c in enumerate(cells)
                  if "notebook_store()" in "".join(c["source"])), None)
    if first is None:
        bad.append(f"{name}: no cell opens the store with ipirm::replay::notebook_store()"); continue
    def stderr(c):
        return "".join("".join(o["text"]) for o in c.get("outputs", [])
                       if o["output_type"] == "stream" and o.get("name") == "stderr")
    def errors(c):
        return [o for o in c.get("outputs", []) if o["output_type"] == "error"]
    for i, c in enumerate(cells[:first]):
        if stderr(c) or errors(c) or c.get("execution_count") is None:
            bad.append(f"{name}: code cell {i}, before the store is opened, did not run cleanly")
    shown = stderr(cells[first])
    want = [f"the notebooks' store {store} ($IPIRM_NOTEBOOK_STORE) is not there",
            "target/release/ipirm run --preset fmnist-ipirm-quick"]
    missing = [w for w in want if w not in shown]
    if missing or "panicked" in shown or errors(cells[first]):
        bad.append(f"{name}: its first data cell (code cell {first}) shows {shown!r}, "
                   f"errors {errors(cells[first])}; wanted the text {missing} and no panic")
    ran_after = [i for i, c in enumerate(cells) if i > first and c.get("execution_count") is not None]
    if ran_after:
        bad.append(f"{name}: code cells {ran_after} ran after the failing one")
    if len(bad) == before:
        print(f"   {name}: code cell {first} says: {shown.strip()[:100]}…", file=sys.stderr)
if os.path.exists(store):
    bad.append(f"the notebooks created {store}")
for b in bad:
    print("notebooks-empty-store: " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
echo "notebooks-empty-store: ok, ${#notebooks[@]} notebooks stop at their first data cell saying why"
