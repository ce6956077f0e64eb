#!/usr/bin/env bash
# A/B of two execd binaries on `POST /command {"command":"true"}` → terminal event (not part of
# the test suite): both run side by side on loopback, measured in interleaved rounds with the
# floor (spawning `bash -c true` with pipes) in the same rounds, by the commands bench client.
# For a change on the latency path: build the old binary, copy it away, build the new one.
#
#   scripts/bench/ab.sh OLD_EXECD NEW_EXECD [RUNS]   (RUNS per round, default 300; 9 rounds)
#   AB_OLD_ARGS="--cgroup-root none" AB_NEW_ARGS=... scripts/bench/ab.sh ...   (extra execd arguments)
set -euo pipefail
cd "$(dirname "$0")/../.."
old=$1 new=$2 runs=${3:-300}
(cd scripts/bench/commands-client && CARGO_TARGET_DIR="$PWD/../../../target/bench-commands" \
  cargo build --release --offline >&2)
echo "machine: $(nproc) cores, $(uname -sr); load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 scripts/bench/ab_bench.py "$old" "$new" target/bench-commands/release/commands-bench "$runs"
