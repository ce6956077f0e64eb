#!/usr/bin/env bash
# Learns the static binary's function order (scripts/link-order.txt, used by
# scripts/build-static.sh): builds the static binary as build-static.sh does but with its symbols,
# runs scripts/link-order/train.py against it under callgrind, and writes the functions in the
# order of the workload's phases (start to the first /ping, a command, the other common routes).
# Run it again when the order has gone stale (a new dependency version or toolchain renames most
# symbols; BENCHMARKS.md, "Code laid out in the order it runs", says how to tell). Needs valgrind.
#
#   scripts/link-order.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
  || { echo "link-order: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
export CARGO_TARGET_DIR=$PWD/target/link-order
bin=$(EXECD_STATIC_KEEP_SYMBOLS=1 EXECD_LINK_ORDER=0 scripts/build-static.sh | tail -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Three runs: what runs in a phase depends a little on timing (a timer that fired or not, a join
# handle dropped before or after its task ended), and a function one run places late costs a
# 64 KiB window of resident code in the runs where it is early.
for run in 1 2 3; do
  python3 scripts/link-order/train.py "$bin" "$work/cg$run"
done
# Every run's phase 1, every run's phase 2, then the final dumps (cg<run>.<pid>) for phase 3;
# names already placed stay put.
python3 scripts/link-order/order.py --binary "$bin" "$work"/cg?.*.1 "$work"/cg?.*.2 "$work"/cg?.[0-9]* \
  > "$work/order.txt"
mv "$work/order.txt" scripts/link-order.txt
echo "link-order: $(wc -l < scripts/link-order.txt) functions in scripts/link-order.txt" >&2
