#!/usr/bin/env bash
# Resumable (tus, EXTENSIONS X33) upload benchmark (not part of the test suite). Prints a markdown
# table (see BENCHMARKS.md, "Filesystem API").
#
#   scripts/bench/tus.sh [RUNS] [CHUNK_MIB]   # median of RUNS (default 5); chunks of CHUNK_MIB (8)
#   EXECD_BENCH_BIN=/path/to/execd scripts/bench/tus.sh 5   # measure another execd binary
#   EXECD_BENCH_BEFORE=/path/to/old/execd scripts/bench/tus.sh 5   # its tus upload too, same rounds
#
# 1 GiB (in the page cache) uploaded to execd with tus (POST /files/tus, then PATCH chunks of
# 8 MiB over one keep-alive connection, bodies sent with sendfile; client in Python:
# scripts/bench/tus_bench.py) against the
# multipart upload of the same file (`curl -F`, the SDK layout, as scripts/bench/fs.sh measures
# it), the two taking turns, targets on the same disk filesystem as the source (/var/tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
chunk=${2:-8}

execd=${EXECD_BENCH_BIN:-$(scripts/build-static.sh)}
work=$(mktemp -d /var/tmp/execd-tus-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg); execd $("$execd" --version | cut -d' ' -f2); $(df -T "$work" | awk 'NR==2 {print $2}') at $work"
python3 scripts/bench/tus_bench.py "$runs" "$work" "$execd" "$chunk" ${EXECD_BENCH_BEFORE:-}
