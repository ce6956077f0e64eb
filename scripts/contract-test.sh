#!/usr/bin/env bash
# OpenAPI contract check: schemathesis (tests/contract) against the live release binary, using
# execd's own document as that binary serves it (GET /openapi.json = docs/openapi.json), after
# validating it as OpenAPI 3.1. Bounded: CONTRACT_MAX_EXAMPLES per operation (default 60).
# Exits non-zero on any failure or when no test was collected.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/sdk/venv.sh
. tests/sdk/venv.sh
start=$(date +%s)
set +e
"$VENV/bin/python" -m pytest tests/contract -p no:cacheprovider
rc=$?
set -e
echo "contract-test: took $(( $(date +%s) - start ))s"
if [ "$rc" -eq 5 ]; then
  echo "contract-test: no test collected" >&2
  exit 1
fi
exit "$rc"
