#!/usr/bin/env bash
# Proxy benchmark (not part of the test suite): download throughput (curl, median of RUNS, default
# 3, of 4 GiB each) and request latency (median of 1000 keep-alive GETs) through execd's
# /proxy/{port}/… next to the same requests sent directly to the upstream (the floor), as ratios;
# plus execd proxying to itself (/proxy/<own port>/ping vs /ping). The upstream is
# scripts/bench/proxy-upstream, built like execd (static musl, release profile).
#
#   scripts/bench/proxy.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}

execd=$(scripts/build-static.sh)
target=$(basename "$(dirname "$(dirname "$execd")")")
(cd scripts/bench/proxy-upstream \
  && CARGO_TARGET_DIR="$PWD/../../../target/bench-proxy-upstream" \
    cargo build --release --locked --target "$target" >&2)
upstream="$PWD/target/bench-proxy-upstream/$target/release/proxy-upstream"
echo "machine: $(nproc) cores, $(uname -sr); execd $("$execd" --version | cut -d' ' -f2); target $target; $(curl --version | head -1 | cut -d' ' -f1-2)"
python3 scripts/bench/proxy_bench.py "$execd" "$upstream" "$runs"
