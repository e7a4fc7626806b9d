#!/usr/bin/env bash
# The run the notebooks open in the tests (scripts/test.sh, scripts/notebooks-in-browser.sh):
# IP-IRM on 512 Fashion-MNIST images, 2 epochs, the kNN monitor after epoch 1, in the store
# $IPIRM_NOTEBOOK_STORE (default target/notebook-store). A cache hit when the store holds it.
# Needs the release binary (scripts/setup.sh builds it). Prints the store's folder.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
store="$(realpath -m "${IPIRM_NOTEBOOK_STORE:-$IPIRM_ROOT/target/notebook-store}")"
cd "$IPIRM_ROOT"
echo "== the notebooks' run (store $store)" >&2
target/release/ipirm run --device cpu --store "$store" --preset fmnist-ipirm-quick \
  --set data.train_limit=512 --set data.bank_limit=500 --set data.test_limit=200 \
  --set train.epochs=2 --set ipirm.maximize_iter=1 --set maximize.max_epoch=5 \
  --set knn.k=20 --set linear.epochs=1 --set train.knn_every=1 >/dev/null
echo "$store"
