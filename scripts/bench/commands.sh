#!/usr/bin/env bash
# /command benchmarks (release build) against physical floors measured in the same run: spawn
# latency vs `bash -c true`, streamed throughput vs a plain pipe and vs a minimal axum SSE server
# (scripts/bench/commands-sse-floor) streaming the same events, and 200 concurrent commands.
# Not part of the test suite. Prints a markdown table (see BENCHMARKS.md, "Commands").
#
#   scripts/bench/commands.sh [RUNS]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-200}
# EXECD_BENCH_BIN: the binary to measure (scripts/bench/all.sh passes the static one).
execd=${EXECD_BENCH_BIN:-}
if [ -z "$execd" ]; then
  cargo build --release --locked >&2
  execd=target/release/execd
fi
(cd scripts/bench/commands-client && CARGO_TARGET_DIR="$PWD/../../../target/bench-commands" \
  cargo build --release --offline >&2)
echo "machine: $(nproc) cores, $(uname -sr), $(bash --version | head -1)"
(cd scripts/bench/commands-sse-floor && CARGO_TARGET_DIR="$PWD/../../../target/bench-commands" \
  cargo build --release --offline >&2)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 scripts/bench/commands.py "$execd" target/bench-commands/release/commands-bench "$runs" \
  target/bench-commands/release/commands-sse-floor
