#!/usr/bin/env bash
# Metrics benchmark (not part of the test suite): median and p99 latency of GET /metrics over RUNS
# keep-alive calls (default 1000) next to GET /ping on the same server (the floor: routing, auth,
# logging, HTTP), as a ratio; plus the very first /metrics call of a fresh daemon (the sampler
# starts then). Upstream Go execd blocks about 1 s on every /metrics call. Prints a markdown table.
#
#   scripts/bench/metrics.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-1000}

execd=$(scripts/build-static.sh)
echo "machine: $(nproc) cores, $(uname -sr); execd $("$execd" --version | cut -d' ' -f2)"
python3 scripts/bench/metrics_bench.py "$execd" "$runs"
