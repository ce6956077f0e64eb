#!/usr/bin/env bash
# Bash session run latency vs the `bash -c true` spawn floor (release build). Not part of the
# test suite. Prints a markdown table (see BENCHMARKS.md, "Bash sessions").
#
#   scripts/bench/session.sh [RUNS]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-200}
# EXECD_BENCH_BIN: the binary to measure (scripts/bench/all.sh passes the static one).
execd=${EXECD_BENCH_BIN:-}
if [ -z "$execd" ]; then
  cargo build --release --locked >&2
  execd=target/release/execd
fi
echo "machine: $(nproc) cores, $(uname -sr), $(bash --version | head -1)"
python3 scripts/bench/session.py "$execd" "$runs"
