#!/usr/bin/env bash
# Startup benchmark: size, idle RSS after the first /ping, and exec -> first /ping time (median of
# RUNS, default 20) of the static execd release binary, next to a minimal axum server built the
# same way (static musl, same release profile: scripts/bench/minimal-axum), as ratios. Not part of
# the test suite. Prints a markdown table.
#
#   scripts/bench/startup.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-20}

execd=$(scripts/build-static.sh)
target=$(basename "$(dirname "$(dirname "$execd")")")
# The comparison crate is its own workspace with its own Cargo.lock; its build output stays under
# the main target/ directory.
(cd scripts/bench/minimal-axum \
  && CARGO_TARGET_DIR="$PWD/../../../target/bench-minimal-axum" \
    cargo build --release --locked --target "$target" >&2)
minimal="$PWD/target/bench-minimal-axum/$target/release/minimal-axum"

state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
echo "machine: $(nproc) cores, $(uname -sr); execd $("$execd" --version | cut -d' ' -f2); target $target"
EXECD_STATE_DIR="$state" python3 scripts/bench/startup.py "$runs" "execd=$execd" "minimal-axum=$minimal"
