#!/usr/bin/env bash
# Isolated sessions (/v1/isolated, issue #23) against `unshare -m -p -f --mount-proc true`, plain
# `POST /command true` and the `bash -c true` floor, in interleaved rounds on one execd (needs
# root: namespaces and overlayfs). Not part of the test suite. Prints markdown tables (see
# BENCHMARKS.md, "Isolated sessions").
#
#   scripts/bench/isolated.sh [EXECD] [RUNS] [CREATES] [ROUNDS]
#   EXECD_BENCH_ARGS="--cgroup-root none" scripts/bench/isolated.sh …   # extra execd flags
#     EXECD    binary to measure (default: build the static release binary, scripts/build-static.sh)
#     RUNS     calls per round for (b), (b′), (c), (d), (e) (default 200), CREATES creates per round for (a)
#              (default 20), ROUNDS (default 9)
set -euo pipefail
cd "$(dirname "$0")/../.."
execd=${1:-}
if [[ -z $execd ]]; then
  execd=$(scripts/build-static.sh)
fi
echo "machine: $(nproc) cores, $(uname -sr), $(bash --version | head -1); $(unshare --version)"
echo "binary: $execd ($(stat -c %s "$execd") bytes); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 scripts/bench/isolated.py "$execd" "${2:-200}" "${3:-20}" "${4:-9}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
