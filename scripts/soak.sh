#!/usr/bin/env bash
# Soak test (issue 8, RELIABILITY.md): a bounded mixed load against the static release binary on a
# loopback port, with execd's fds, threads, RSS, children, zombies and state-directory size
# recorded before and after. The driver is the cargo integration test `tests/integration/soak.rs`.
#
#   scripts/soak.sh            # FULL: 10 000 commands, 1 000 uploads + downloads, 100 sessions
#   scripts/soak.sh --short    # SHORT (what CI runs via `cargo test`): 2 000 / 200 / 20
#
# The figures are printed and written to target/soak-report.md. Bounded: every request has a
# deadline in the driver, and the whole run is killed after SOAK_TIMEOUT seconds (default 1200).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
case "${1:-}" in
  --short) mode=short ;;
  "" | --full) ;;
  *) echo "usage: $0 [--short|--full]" >&2; exit 2 ;;
esac

bin=$(scripts/build-static.sh)
report=${SOAK_REPORT:-target/soak-report.md}
echo "soak: mode $mode, binary $bin, report $report" >&2
SOAK_MODE=$mode SOAK_BIN=$bin SOAK_REPORT=$report \
  timeout "${SOAK_TIMEOUT:-1200}" cargo test --locked --test integration soak:: -- --nocapture
cat "$report"
