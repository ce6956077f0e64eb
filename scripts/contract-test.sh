#!/usr/bin/env bash
# OpenAPI contract check: schemathesis (tests/contract) against the live release binary, using
# ../shared/spec/execd-api.yaml (EXECD_SPEC overrides). Bounded: CONTRACT_MAX_EXAMPLES per
# operation (default 60). Exits non-zero on any failure or when no test was collected.
set -euo pipefail
spec_default="$(cd "$(dirname "$0")" && pwd)/../../shared/spec/execd-api.yaml"
cd "$(dirname "$0")/.."
export EXECD_SPEC=${EXECD_SPEC:-$spec_default}
if [ ! -f "$EXECD_SPEC" ]; then
  echo "contract-test: spec not found at $EXECD_SPEC" >&2
  exit 1
fi
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
