#!/usr/bin/env bash
# The browser terminal (`GET /terminal`, EXTENSIONS X70) end to end: tests/browser drives Debian's
# chromium (headless, --no-sandbox) with playwright-core against the real execd binary. Installs the
# locked packages with `npm ci` into tests/browser/node_modules (again only when package-lock.json
# or the Node version changes; playwright-core downloads no browser) and uses EXECD_BIN, else the
# static release binary of scripts/build-static.sh (which embeds xterm.js). Exits non-zero on any
# failure, including a run in which no test ran. Without node/npm (or Node < 20) or chromium it
# skips with a message, except under CI=true, where that is a failure.
#
#   NODE_TEST_ARGS=...  extra `node --test` arguments (e.g. "--test-name-pattern=x70_reload")
#   CHROMIUM_PATH=...   the browser (default /usr/bin/chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/browser

missing() {
  if [ "${CI:-}" = true ]; then
    echo "browser-test: $1 (required under CI=true)" >&2
    exit 1
  fi
  echo "browser-test: $1; skipping the browser tests" >&2
  exit 0
}
command -v node >/dev/null 2>&1 || missing "node is not installed"
command -v npm >/dev/null 2>&1 || missing "npm is not installed"
node_version=$(node -p 'process.versions.node')
[ "${node_version%%.*}" -ge 20 ] || missing "Node.js $node_version is older than 20"
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing "${CHROMIUM_PATH:-/usr/bin/chromium} is not installed (Debian: apt-get install chromium)"

stamp="$dir/node_modules/.execd-lock.sha256"
want="$(sha256sum <"$dir/package-lock.json" | cut -d' ' -f1) node-$node_version"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "browser-test: npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  echo "$want" >"$stamp"
fi

if [ -z "${EXECD_BIN:-}" ]; then
  EXECD_BIN=$(scripts/build-static.sh)
fi
export EXECD_BIN

tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
start=$(date +%s)
set +e
# spec for people, TAP into a file for the counts below.
# shellcheck disable=SC2086
(cd "$dir" && node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" ${NODE_TEST_ARGS:-} terminal.test.mjs)
rc=$?
set -e
pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" | tail -n1)
if [ "$rc" -eq 0 ] && [ "${pass:-0}" -eq 0 ]; then
  echo "browser-test: no test ran" >&2
  rc=1
fi
echo "browser-test: took $(($(date +%s) - start))s"
exit "$rc"
