#!/usr/bin/env bash
# Directory archive benchmark (EXTENSIONS X30, X31; not part of the test suite). Prints a
# markdown table (see BENCHMARKS.md, "Archives").
#
#   scripts/bench/archive.sh [RUNS] [TREE]    # median of RUNS (default 3) per measurement
#   EXECD_BENCH_BIN=/path/to/execd scripts/bench/archive.sh 3   # measure another execd binary
#
# GET /files/archive (tar, tar.zst) against GNU `tar -c` (and `tar --zstd`) on the same tree,
# POST /files/archive (tar) against `tar -x` of the same archive. TREE defaults to a generated
# 100 000-file tree (1 000 directories of 100 files of 1–8 KiB, made once under /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
tree=${2:-}

execd=${EXECD_BENCH_BIN:-$(scripts/build-static.sh)}
tar --zstd --version >/dev/null 2>&1 || { echo "GNU tar with zstd is needed: apt-get install tar zstd" >&2; exit 1; }

if [ -z "$tree" ]; then
  tree=/var/tmp/execd-archive-bench-tree
  if [ ! -d "$tree" ]; then
    python3 - "$tree.tmp" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(8)) for _ in range(512)]
for d in range(1000):
    p = os.path.join(root, f"d{d // 100}", f"d{d}")
    os.makedirs(p, exist_ok=True)
    for f in range(100):
        n = rng.randint(128, 1024)
        with open(os.path.join(p, f"f{f}.txt"), "wb") as fh:
            fh.write(b"".join(rng.choice(words) for _ in range(n)))
EOF
    mv "$tree.tmp" "$tree"
  fi
fi
files=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg); execd $("$execd" --version | cut -d' ' -f2); $(tar --version | head -1)"
echo "tree: $tree, $files files, $((bytes / 1024 / 1024)) MiB"
python3 scripts/bench/archive_bench.py "$runs" "$tree" "$execd"
