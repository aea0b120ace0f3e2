#!/usr/bin/env bash
# Runs the window tests (tests/tests/app_window.rs) N times in a row on this machine and counts
# the green runs: the check that they are deterministic. Not for CI (it takes N times as long).
#   scripts/repeat-window-tests.sh 20
# Builds first (UI and workspace, as `cargo xtask test` does); failure screenshots of each run
# are kept under tests/artifacts/repeat/<run>/.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doorstep/target}"
cargo xtask build-ui >/dev/null
cargo build --workspace --all-targets --locked --quiet
green=0
for i in $(seq 1 "$runs"); do
  dir="$PWD/tests/artifacts/repeat/$i"
  mkdir -p "$dir"
  started=$(date +%s)
  if DOORSTEP_E2E_REQUIRED=1 DOORSTEP_TEST_ARTIFACTS="$dir" xvfb-run -a -s "-screen 0 1280x1400x24" \
      cargo test --workspace --locked --quiet --test app_window \
      >"$dir/output.txt" 2>&1; then
    green=$((green + 1))
    echo "run $i: green ($(( $(date +%s) - started )) s)"
  else
    echo "run $i: FAILED ($(( $(date +%s) - started )) s), see $dir/output.txt"
  fi
done
echo "$green of $runs green"
[ "$green" -eq "$runs" ]
