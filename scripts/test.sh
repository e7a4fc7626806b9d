#!/usr/bin/env bash
# README command two: set-up, then every test (release profile: the numerical tests run real
# training steps, and one build serves the binary and the tests).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup.sh"
source "$here/env.sh"
cd "$IPIRM_ROOT"
echo "== cargo test --release" >&2
cargo test --release "$@"
