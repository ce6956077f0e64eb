#!/usr/bin/env bash
# The official-SDK suite (tests/sdk: opensandbox==1.1.1 driving the real release binary) and the
# OpenAPI contract check (scripts/contract-test.sh). Makes .venv with the pinned packages of
# tests/sdk/requirements.txt (reinstalls only when that file changes) and uses the static release
# binary of scripts/build-static.sh (or EXECD_BIN). Exits non-zero on any failure, including a run
# that collects no test.
#
# The direct pass, the pass through /proxy/<port> and the contract check run side by side: each
# starts its own execd (own port, state directory, cwd, HOME and TMPDIR: tests/sdk/execd_server.py)
# and they mostly wait on sockets. Each one's output is printed whole when it ends.
#
#   SDK_VIA_PROXY=0   skip the second pass of the SDK suite through /proxy/<port> (default: run it)
#   SDK_CONTRACT=0    skip the contract check
#   SDK_PARALLEL=0    run the passes one after the other, output streamed (default: side by side)
#   PYTEST_ARGS=...   extra pytest arguments for the SDK suite (e.g. "-k sessions -x")
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# shellcheck source=tests/sdk/venv.sh
. tests/sdk/venv.sh

start=$(date +%s)
run_suite() {
  local label=$1 t0 rc
  shift
  echo "sdk-test: $label"
  t0=$(date +%s)
  set +e
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pytest tests/sdk -p no:cacheprovider "$@" ${PYTEST_ARGS:-}
  rc=$?
  set -e
  echo "ci-time: sdk-suite ($label) $(( $(date +%s) - t0 ))s" >&2
  if [ "$rc" -eq 5 ]; then
    echo "sdk-test: $label collected no test" >&2
    return 1
  fi
  return "$rc"
}
run_contract() {
  local t0 rc=0
  t0=$(date +%s)
  "$root/scripts/contract-test.sh" || rc=$?
  echo "ci-time: contract-test $(( $(date +%s) - t0 ))s" >&2
  return "$rc"
}

passes=(direct)
[ "${SDK_VIA_PROXY:-1}" != 0 ] && passes+=(proxy)
[ "${SDK_CONTRACT:-1}" != 0 ] && passes+=(contract)
run_pass() {
  case $1 in
  direct) run_suite "SDK suite, direct" ;;
  proxy) EXECD_SDK_BASE_PATH='/proxy/{port}' run_suite "SDK suite through /proxy/<port>" ;;
  contract) run_contract ;;
  esac
}

status=0
if [ "${SDK_PARALLEL:-1}" = 0 ]; then
  for pass in "${passes[@]}"; do
    run_pass "$pass" || status=1
  done
else
  logdir=$(mktemp -d "${TMPDIR:-/tmp}/execd-sdk-test.XXXXXX")
  trap 'rm -rf "$logdir"' EXIT
  declare -A pids
  for pass in "${passes[@]}"; do
    run_pass "$pass" >"$logdir/$pass.log" 2>&1 &
    pids[$pass]=$!
  done
  for pass in "${passes[@]}"; do
    rc=0
    wait "${pids[$pass]}" || rc=$?
    echo "==== sdk-test: $pass (exit $rc) ===="
    cat "$logdir/$pass.log"
    [ "$rc" -eq 0 ] || status=1
  done
fi
echo "sdk-test: took $(( $(date +%s) - start ))s"
exit "$status"
