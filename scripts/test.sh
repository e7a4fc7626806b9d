#!/usr/bin/env bash
# README command two: set-up, then every test: the formatting and lint checks, the notebooks,
# executed headless with the evcxr kernel (first the runner's verdicts on three one-cell notebooks)
# against a small cached run and then on a store without it (each must stop at its first data
# cell saying why), then `cargo test --release` (the numerical tests run real training steps, and
# one build serves the binary and the tests).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup.sh"
bash "$here/setup-notebooks.sh"
source "$here/env.sh"
cd "$IPIRM_ROOT"

echo "== cargo fmt --check; cargo clippy, cargo doc (warnings are errors)" >&2
cargo fmt --check
cargo clippy --release --all-targets --quiet -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --lib --quiet

# The run the notebooks open: a tiny IP-IRM run (a cache hit when the store already holds it).
export IPIRM_NOTEBOOK_STORE="$IPIRM_ROOT/target/notebook-store"
bash "$here/notebook-store.sh" >/dev/null
echo "== the notebook runner's verdicts (a late error, progress lines)" >&2
bash "$here/check-notebook-runner.sh"
echo "== notebooks" >&2
# A progress line every second (where a fast machine writes none): the runner must tell them
# from errors on any machine, and this makes every run check that it does.
IPIRM_LOG_EVERY=1 bash "$here/run-notebooks.sh"
echo "== notebooks on a store without their run" >&2
bash "$here/notebooks-empty-store.sh"

echo "== cargo test --release" >&2
cargo test --release "$@"
