#!/usr/bin/env bash
# Every benchmark in scripts/bench, each with its floor in the same sitting, then the summary
# table of BENCHMARKS.md (execd, floor, ratio, goal ✓/✗) built from their outputs
# (scripts/bench/summary.py). Not part of the test suite.
#
#   scripts/bench/all.sh [OUT_DIR]     # default target/bench-all/<UTC date-time>
#   EXECD_BENCH_QUICK=0 scripts/bench/all.sh   # the scripts' own (longer) run counts
#
# Run counts are cut so the whole sitting stays under 10 minutes on a 2-core machine once the
# comparison binaries are built (the first run builds them: minimal axum, the SSE floor, the
# proxy upstream, the upload baseline). Each bench's full output is kept in OUT_DIR/<name>.md,
# its wall time in OUT_DIR/times.txt; the summary is printed and written to OUT_DIR/summary.md.
# Not here: scripts/bench/ab.sh (it compares two execd binaries, not execd with a floor).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench-all/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
quick=${EXECD_BENCH_QUICK:-1}

execd=$(scripts/build-static.sh)
export EXECD_BENCH_BIN=$execd
: > "$out/times.txt"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(uname -sr); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "execd: $execd ($(stat -c %s "$execd") bytes, $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
} > "$out/machine.txt"

# name, then the command line with quick run counts (the scripts' defaults otherwise).
run() {
  local name=$1
  shift
  local args=("$@")
  [ "$quick" = 1 ] || args=("${args[0]}")
  local start=$SECONDS status=0
  echo "== $name: ${args[*]}" >&2
  "${args[@]}" > "$out/$name.md" 2> "$out/$name.err" || status=$?
  echo "$name $((SECONDS - start)) s exit $status" | tee -a "$out/times.txt" >&2
}

run startup scripts/bench/startup.sh 10
run memory python3 scripts/bench/rss_after_load.py "$execd"
run commands scripts/bench/commands.sh 200
run session scripts/bench/session.sh 200
run placement env SPACED_OLD_ARGS="--cgroup-root none" python3 scripts/bench/spaced.py "$execd" "$execd" 200 0.05
run isolated scripts/bench/isolated.sh "$execd" 100 10 5
run metrics scripts/bench/metrics.sh 500
run proxy scripts/bench/proxy.sh 1
run fs scripts/bench/fs.sh 3
run tus scripts/bench/tus.sh 3
run grep scripts/bench/grep.sh 3
run archive scripts/bench/archive.sh 1
run watch scripts/bench/watch.sh 300
run ws_roundtrip scripts/bench/ws_roundtrip.sh 1000
run otel scripts/bench/otel.sh 150

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine.txt"
python3 scripts/bench/summary.py "$out" | tee "$out/summary.md"
