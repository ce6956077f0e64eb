#!/usr/bin/env bash
# The project's test command (README): unit and integration tests against the real binary, then
# the official-SDK suite and the OpenAPI contract check when their scripts exist.
set -euo pipefail
cd "$(dirname "$0")/.."
# Per-phase wall time on stderr ("ci-time: <phase> <seconds>s").
timed() {
  local label=$1 t0
  shift
  t0=$(date +%s)
  "$@" || { local rc=$?; echo "ci-time: $label $(( $(date +%s) - t0 ))s (failed: $rc)" >&2; return "$rc"; }
  echo "ci-time: $label $(( $(date +%s) - t0 ))s" >&2
}
timed install-test-deps scripts/install-test-deps.sh
# The /code Jupyter tests need the venv. In CI (CI=true or 1) a missing venv fails the run (a
# missing install step must never pass as green); locally the tests skip and say so.
if ! timed jupyter-venv scripts/jupyter-test-env.sh >/dev/null; then
  case "${CI:-}" in
    [Tt][Rr][Uu][Ee] | 1)
      echo "test.sh: the Jupyter venv cannot be made (scripts/jupyter-test-env.sh failed) and CI is set: failing" >&2
      exit 1
      ;;
  esac
  echo "test.sh: no Jupyter venv; the /code Jupyter tests will print SKIPPED" >&2
fi
# The static release binary (after the venv check, so CI fails fast without the venv):
# tests/image.rs runs it in a busybox-only chroot.
timed build-static scripts/build-static.sh >/dev/null
timed test-build cargo test --locked --all-targets --no-run
timed test-run cargo test --locked --all-targets -- ${CARGO_TEST_ARGS:-}
if [ -x scripts/sdk-test.sh ]; then
  timed sdk-test scripts/sdk-test.sh
fi
