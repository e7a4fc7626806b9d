#!/usr/bin/env bash
# README command two: set-up, then every test: the notebooks, executed headless with the evcxr
# kernel against a small cached run, the formatting and lint checks, then `cargo test --release`
# (the numerical tests run real training steps, and one build serves the binary and the tests).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup.sh"
bash "$here/setup-notebooks.sh"
source "$here/env.sh"
cd "$IPIRM_ROOT"

echo "== cargo fmt --check; cargo clippy (warnings are errors)" >&2
cargo fmt --check
cargo clippy --release --all-targets --quiet -- -D warnings

# The run the notebooks open: IP-IRM on 512 Fashion-MNIST images, 2 epochs, the kNN monitor after
# epoch 1 (a cache hit when the store already holds it).
export IPIRM_NOTEBOOK_STORE="$IPIRM_ROOT/target/notebook-store"
echo "== the notebooks' run (store $IPIRM_NOTEBOOK_STORE)" >&2
target/release/ipirm run --device cpu --store "$IPIRM_NOTEBOOK_STORE" --preset fmnist-ipirm-quick \
  --set data.train_limit=512 --set data.bank_limit=500 --set data.test_limit=200 \
  --set train.epochs=2 --set ipirm.maximize_iter=1 --set maximize.max_epoch=5 \
  --set knn.k=20 --set linear.epochs=1 --set train.knn_every=1 >/dev/null
echo "== notebooks" >&2
bash "$here/run-notebooks.sh"

echo "== cargo test --release" >&2
cargo test --release "$@"
