#!/usr/bin/env bash
# File watch latency benchmark (EXTENSIONS X41; not part of the test suite). Prints a markdown
# table (see BENCHMARKS.md, "File watch").
#
#   scripts/bench/watch.sh [WRITES]    # default 500 writes
#   EXECD_BENCH_BIN=/path/to/execd scripts/bench/watch.sh 500   # measure another execd binary
#
# From close() of a written file to its event: execd's `modify` on the SSE stream of a watch
# (GET /files/watches/{id}/events) against `inotifywait -m -e close_write` (the floor: the kernel
# event read by a process on the same machine) watching the same directory and seeing the same
# writes, both listening at once.
set -euo pipefail
cd "$(dirname "$0")/../.."
writes=${1:-500}
execd=${EXECD_BENCH_BIN:-$(scripts/build-static.sh)}
command -v inotifywait >/dev/null || { echo "inotifywait is needed: apt-get install inotify-tools" >&2; exit 1; }
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg); execd $("$execd" --version | cut -d' ' -f2); $(inotifywait --help 2>&1 | head -1)"
python3 scripts/bench/watch_bench.py "$writes" "$execd"
