#!/usr/bin/env bash
# The project's test command (README): unit and integration tests against the real binary, then
# the official-SDK suite and the OpenAPI contract check when their scripts exist.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --locked --all-targets -- ${CARGO_TEST_ARGS:-}
if [ -x scripts/sdk-test.sh ]; then
  scripts/sdk-test.sh
fi
