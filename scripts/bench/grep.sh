#!/usr/bin/env bash
# Content search benchmark (EXTENSIONS X32; not part of the test suite). Prints a markdown table.
#
#   scripts/bench/grep.sh [RUNS] [TREE]    # median of RUNS (default 5) per measurement
#   EXECD_BENCH_BIN=/path/to/execd scripts/bench/grep.sh 5   # measure another execd binary
#
# `GET /files/grep` (whole NDJSON answer read by curl) against `rg` on the same tree with the
# same walk rules (`--no-require-git --no-ignore-global`), both with `rg --json` (the same kind
# of output) and rg's default text output, to /dev/null. TREE defaults to a copy of
# ~/.cargo/registry/src (made once under /var/tmp, on disk, then read from the page cache: a
# warm-up run of each precedes the timed ones).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
tree=${2:-}

execd=${EXECD_BENCH_BIN:-$(scripts/build-static.sh)}
command -v rg >/dev/null || { echo "rg (ripgrep) is needed: apt-get install ripgrep" >&2; exit 1; }

if [ -z "$tree" ]; then
  tree=/var/tmp/execd-grep-bench-tree
  if [ ! -d "$tree" ]; then
    mkdir -p "$tree.tmp"
    cp -a "$HOME/.cargo/registry/src/." "$tree.tmp/"
    mv "$tree.tmp" "$tree"
  fi
fi
files=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg); execd $("$execd" --version | cut -d' ' -f2); $(rg --version | head -1)"
echo "tree: $tree, $files files, $((bytes / 1024 / 1024)) MiB"
python3 scripts/bench/grep_bench.py "$runs" "$tree" "$execd"
