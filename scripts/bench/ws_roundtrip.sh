#!/usr/bin/env bash
# WebSocket exec round-trip benchmark (EXTENSIONS X15; not part of the test suite). Prints a
# markdown table: one line through `cat` over `GET /command/ws` vs a local pipe, p50/p99, ratio.
#
#   scripts/bench/ws_roundtrip.sh [N]                         # N turns (default 2000)
#   EXECD_BENCH_BIN=/path/to/execd scripts/bench/ws_roundtrip.sh   # measure another execd binary
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-2000}
execd=${EXECD_BENCH_BIN:-$(scripts/build-static.sh)}
python3 scripts/bench/ws_roundtrip.py "$n" "$execd"
