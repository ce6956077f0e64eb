#!/usr/bin/env bash
# Filesystem API benchmark (not part of the test suite). Prints a markdown table.
#
#   scripts/bench/fs.sh [RUNS]          # median of RUNS (default 3) per measurement
#   scripts/bench/fs.sh [RUNS] search   # only the search rows (no nginx, no baseline build)
#   EXECD_BENCH_BIN=/path/to/execd scripts/bench/fs.sh 5 search   # measure another execd binary
#
# - download of a 1 GiB file (page cache) from execd vs nginx with sendfile;
# - multipart upload of 1 GiB to execd vs a minimal axum multipart receiver that streams the part
#   to disk and fsyncs it like execd (scripts/bench/fs-upload-baseline);
# - search of a 100 000-file tree (`*.txt`, 90 000 matches) vs `find -name`, with floors that do
#   the same lstat per hit: `find -printf` with the FileInfo fields, and `find -ls`.
# Floors measured in the same run: `cat` of the cached file (read), `dd conv=fsync` (write).
# execd and the baseline are built like the shipped binary (scripts/build-static.sh: static musl,
# release profile). nginx is installed with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
only=${2:-}

execd=$(scripts/build-static.sh)
target=$(basename "$(dirname "$(dirname "$execd")")")
baseline="$PWD/target/bench-fs-baseline/$target/release/fs-upload-baseline"
if [ "$only" != search ]; then
(cd scripts/bench/fs-upload-baseline \
  && CARGO_TARGET_DIR="$PWD/../../../target/bench-fs-baseline" \
    cargo build --release --locked --target "$target" >&2)
fi

if [ "$only" != search ] && ! command -v nginx >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2
fi

# On disk (not a tmpfs), so uploads really write.
work=$(mktemp -d /var/tmp/execd-fs-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg); execd $("$execd" --version | cut -d' ' -f2); target $target; nginx $(nginx -v 2>&1 | cut -d/ -f2)"
python3 scripts/bench/fs_bench.py "$runs" "$work" "${EXECD_BENCH_BIN:-$execd}" "$baseline" "$(command -v nginx || echo nginx)" $only
