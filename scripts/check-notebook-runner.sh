#!/usr/bin/env bash
# The notebook runner's verdicts, on three one-cell notebooks without `:dep` (seconds each):
# - a cell whose error reaches Jupyter after the cell's reply (a thread writes it 50 ms after the
#   cell returns, as evcxr's output thread can deliver the last line of a fast cell) must fail,
#   showing that error;
# - a cell that writes only a progress line on stderr must pass;
# - a cell that writes an error beside a progress line must fail, showing only the error.
# scripts/test.sh runs it; the notebooks and executed copies are in target/notebook-runner-check/.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
cd "$IPIRM_ROOT"
work="$IPIRM_ROOT/target/notebook-runner-check"
rm -rf "$work"
mkdir -p "$work/out"

"$IPIRM_PY" - "$work" <<'PY'
import sys, nbformat
work = sys.argv[1]
progress = 'eprintln!("epoch 2/2: 7/8, 1m04s elapsed, ~9s left, loss 1.2");'
cells = {
    "late_error": 'std::thread::spawn(|| { std::thread::sleep(std::time::Duration::from_millis(50)); '
                  'eprintln!("Error: written late"); });',
    "progress": progress,
    "progress_and_error": progress + ' eprintln!("Error: beside progress");',
}
for name, source in cells.items():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "rust", "display_name": "Rust", "language": "rust"}
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, f"{work}/{name}.ipynb")
PY

fail() { echo "check-notebook-runner: $*" >&2; exit 1; }
# run NAME: the runner's exit status on notebook NAME; its log in $work/NAME.log.
run() {
  local rc=0
  IPIRM_NB_OUT="$work/out" bash "$here/run-notebooks.sh" "$work/$1.ipynb" >"$work/$1.log" 2>&1 || rc=$?
  echo "$rc"
}
# The error shown for the failing cell: the lines between "---- its error ----" and "----".
shown() { sed -n '/^---- its error ----$/,/^----$/p' "$work/$1.log" | sed '1d;$d'; }

[ "$(run late_error)" = 1 ] || fail "a late error passed (log: $work/late_error.log)"
[ "$(shown late_error)" = "Error: written late" ] ||
  fail "a late error failed without showing it: $(shown late_error) (log: $work/late_error.log)"
[ "$(run progress)" = 0 ] || fail "a progress line failed its cell (log: $work/progress.log)"
[ "$(run progress_and_error)" = 1 ] || fail "an error beside a progress line passed (log: $work/progress_and_error.log)"
[ "$(shown progress_and_error)" = "Error: beside progress" ] ||
  fail "an error beside a progress line showed: $(shown progress_and_error)"
echo "check-notebook-runner: ok, a late error and an error beside progress fail, progress alone passes"
