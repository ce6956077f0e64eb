#!/usr/bin/env bash
# The static binary's size by feature (issue #15: "size per feature reported"; not part of the
# test suite, nor of all.sh, whose 10 minutes a second link does not fit): builds the release
# binary and the same link with its symbols (in target/link-order, as scripts/link-order.sh
# does), then prints scripts/bench/size.py's table (BENCHMARKS.md, "Size per feature").
#
#   scripts/bench/size.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
stripped=$(scripts/build-static.sh | tail -1)
unstripped=$(CARGO_TARGET_DIR=$PWD/target/link-order EXECD_STATIC_KEEP_SYMBOLS=1 EXECD_LINK_ORDER=0 \
  scripts/build-static.sh | tail -1)
python3 scripts/bench/size.py "$unstripped" "$stripped"
