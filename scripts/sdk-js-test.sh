#!/usr/bin/env bash
# The official JS SDK suite (tests/sdk/js: @alibaba-group/opensandbox 0.1.11 driving the real
# release binary, with node's built-in `node:test` runner). Installs the locked packages with
# `npm ci` into tests/sdk/js/node_modules (again only when package-lock.json or the Node version
# changes) and uses the static release binary of scripts/build-static.sh (or EXECD_BIN). Runs the
# suite twice: direct, and through execd's port proxy (`/proxy/<port>`). Exits non-zero on any
# failure, including a pass in which no test ran. Without node/npm (or Node < 20) it skips with a
# message, except under CI=true, where that is a failure.
#
#   SDK_VIA_PROXY=0     skip the second pass through /proxy/<port> (default: run it)
#   NODE_TEST_ARGS=...  extra `node --test` arguments (e.g. "--test-name-pattern=sdk24")
#   SDK_JS_FILES=...    test files to run, relative to tests/sdk/js (default: *.test.mjs)
#   SDK_JS_CONCURRENCY  test files run at once, each with its own execd (default 3: they mostly wait)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=tests/sdk/js

missing() {
  if [ "${CI:-}" = true ]; then
    echo "sdk-js-test: $1 (required under CI=true)" >&2
    exit 1
  fi
  echo "sdk-js-test: $1; skipping the JS SDK suite" >&2
  exit 0
}
command -v node >/dev/null 2>&1 || missing "node is not installed"
command -v npm >/dev/null 2>&1 || missing "npm is not installed"
node_version=$(node -p 'process.versions.node')
[ "${node_version%%.*}" -ge 20 ] || missing "Node.js $node_version is older than 20"

stamp="$dir/node_modules/.execd-lock.sha256"
want="$(sha256sum <"$dir/package-lock.json" | cut -d' ' -f1) node-$node_version"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "sdk-js-test: npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  echo "$want" >"$stamp"
fi

files=()
while IFS= read -r f; do
  files+=("$f")
done < <(cd "$dir" && for f in ${SDK_JS_FILES:-*.test.mjs}; do [ -f "$f" ] && echo "$f"; done)
if [ "${#files[@]}" -eq 0 ]; then
  echo "sdk-js-test: no test files (${SDK_JS_FILES:-*.test.mjs}) in $dir" >&2
  exit 1
fi

if [ -z "${EXECD_BIN:-}" ]; then
  if [ -x scripts/build-static.sh ]; then
    # The binary we ship (static, release profile); scripts/test.sh has usually just built it.
    EXECD_BIN=$(scripts/build-static.sh)
  else
    cargo build --release --locked --bin execd
    EXECD_BIN=$root/target/release/execd
  fi
fi
export EXECD_BIN

tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
start=$(date +%s)
run_suite() {
  local label=$1
  echo "sdk-js-test: $label"
  : >"$tap"
  set +e
  # spec for people, TAP into a file for the counts below.
  # shellcheck disable=SC2086
  (cd "$dir" && node --test --test-concurrency="${SDK_JS_CONCURRENCY:-3}" --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" ${NODE_TEST_ARGS:-} "${files[@]}")
  local rc=$?
  set -e
  local tests pass
  tests=$(sed -n 's/^# tests \([0-9]*\)$/\1/p' "$tap" | tail -n1)
  pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" | tail -n1)
  if [ "$rc" -eq 0 ] && [ "${pass:-0}" -eq 0 ]; then
    echo "sdk-js-test: $label ran no test (tests=${tests:-none})" >&2
    return 1
  fi
  return "$rc"
}

status=0
run_suite "JS SDK suite, direct" || status=1
if [ "${SDK_VIA_PROXY:-1}" != 0 ]; then
  EXECD_SDK_BASE_PATH='/proxy/{port}' run_suite "JS SDK suite through /proxy/<port>" || status=1
fi
echo "sdk-js-test: JS SDK suite took $(($(date +%s) - start))s"
exit "$status"
