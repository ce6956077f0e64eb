#!/usr/bin/env bash
# OpenTelemetry export cost (X60, issue #21; not part of the test suite): the same static binary
# with export off, on (to the project's OTLP receiver, tests/otel/receiver.py, which decodes every
# payload), and on to a collector that accepts connections and never answers. For each:
# `POST /command {"command":"true"}` to its terminal event (the commands bench client, keep-alive),
# a 1 GiB `GET /files/download`, and VmRSS after the first /ping and after the workload. Rounds
# are interleaved so all three see the same machine load. Prints a markdown table.
#
#   scripts/bench/otel.sh [RUNS]   (latency calls per round, default 300; 7 rounds)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-300}
execd=$(scripts/build-static.sh)
(cd scripts/bench/commands-client && CARGO_TARGET_DIR="$PWD/../../../target/bench-commands" \
  cargo build --release --offline >&2)
bash tests/sdk/venv.sh >&2
echo "machine: $(nproc) cores, $(uname -sr); load: $(cut -d' ' -f1-3 /proc/loadavg)"
.venv/bin/python scripts/bench/otel_bench.py "$execd" target/bench-commands/release/commands-bench "$runs"
