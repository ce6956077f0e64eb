#!/usr/bin/env bash
# The official-SDK suite (tests/sdk: opensandbox==1.1.1 driving the real release binary) and the
# OpenAPI contract check (scripts/contract-test.sh). Makes .venv with the pinned packages of
# tests/sdk/requirements.txt (reinstalls only when that file changes) and uses the static release
# binary of scripts/build-static.sh (or EXECD_BIN). Exits non-zero on any failure, including a run
# that collects no test.
#
#   SDK_VIA_PROXY=0   skip the second pass of the SDK suite through /proxy/<port> (default: run it)
#   SDK_CONTRACT=0    skip the contract check
#   PYTEST_ARGS=...   extra pytest arguments for the SDK suite (e.g. "-k sessions -x")
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# shellcheck source=tests/sdk/venv.sh
. tests/sdk/venv.sh

start=$(date +%s)
run_suite() {
  local label=$1 t0
  shift
  echo "sdk-test: $label"
  t0=$(date +%s)
  set +e
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pytest tests/sdk -p no:cacheprovider "$@" ${PYTEST_ARGS:-}
  local rc=$?
  set -e
  echo "ci-time: sdk-suite ($label) $(( $(date +%s) - t0 ))s" >&2
  if [ "$rc" -eq 5 ]; then
    echo "sdk-test: $label collected no test" >&2
    return 1
  fi
  return "$rc"
}

status=0
run_suite "SDK suite, direct" || status=1
if [ "${SDK_VIA_PROXY:-1}" != 0 ]; then
  EXECD_SDK_BASE_PATH='/proxy/{port}' run_suite "SDK suite through /proxy/<port>" || status=1
fi
echo "sdk-test: SDK suite took $(( $(date +%s) - start ))s"
if [ "${SDK_CONTRACT:-1}" != 0 ]; then
  contract_t0=$(date +%s)
  "$root/scripts/contract-test.sh" || status=1
  echo "ci-time: contract-test $(( $(date +%s) - contract_t0 ))s" >&2
fi
exit "$status"
