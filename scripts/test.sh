#!/usr/bin/env bash
# The project's test command (README): unit and integration tests against the real binary, then
# the official-SDK suite and the OpenAPI contract check when their scripts exist.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# The static release binary first: tests/image.rs runs it in a busybox-only chroot.
scripts/build-static.sh >/dev/null
scripts/jupyter-test-env.sh >/dev/null || echo "test.sh: no Jupyter venv; the /code Jupyter tests will skip" >&2
cargo test --locked --all-targets -- ${CARGO_TEST_ARGS:-}
if [ -x scripts/sdk-test.sh ]; then
  scripts/sdk-test.sh
fi
