#!/usr/bin/env bash
# The project's test command (README): unit and integration tests against the real binary, then
# the official-SDK suite and the OpenAPI contract check when their scripts exist.
#
# The slow steps overlap, because much of the work waits on the network or on sockets and cargo
# leaves a core idle in its serial steps (fat LTO, linking):
#
#   install-test-deps (apt, rustup; foreground, so nothing below runs apt or rustup at once)
#   ├─ jupyter-venv   pip, in the background
#   ├─ sdk-venv       pip, in the background
#   ├─ build-static   the one static release binary of this run, in the background (it locks
#   │                 target/<musl>/release and target/release, the test build target/debug)
#   ├─ build-aarch64  the static aarch64 binary (X55), in the background once build-static is
#   │                 done, at nice 19: it takes the CPU the test build and the tests leave idle
#   └─ test-build     cargo test --no-run, in the foreground
#      └─ test-run    cargo test, once jupyter-venv, sdk-venv and build-static are done
#         └─ sdk      scripts/sdk-test.sh, scripts/sdk-js-test.sh and scripts/browser-test.sh, side
#                     by side, after the cargo tests (not beside them: timing-sensitive tests
#                     flake on 2 cores), and beside them the aarch64 test (tests/integration/
#                     aarch64.rs, under qemu-user) once build-aarch64 is done: test-run skips it
#
# The tests (tests/integration/image.rs), the SDK and the contract suites all use the binary build-static
# made (EXECD_STATIC_BIN, EXECD_BIN). A background step's output goes to target/test-logs/<step>.log
# and is printed whole when the script collects it; every step's failure fails the script.
# "ci-time: <step> <wall>s wall, <cpu>s cpu" lines on stderr say where the time went.
set -euo pipefail
cd "$(dirname "$0")/.."

# timed STEP CMD...: runs CMD and prints "ci-time: STEP <wall>s wall, <cpu>s cpu" on stderr. The CPU
# seconds (user + sys of the processes CMD waited for) hardly depend on what else the machine
# runs; the wall time does.
cpu_file=$(mktemp)
# Sets CPU to the user + sys seconds of this shell's reaped children. `times` runs in this shell
# (in a $(...) subshell it would count that subshell's children).
children_cpu() {
  times >"$cpu_file"
  CPU=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } printf "%d", s }' "$cpu_file")
}
timed() {
  local label=$1 t0 c0 rc=0
  shift
  t0=$(date +%s)
  children_cpu
  c0=$CPU
  "$@" || rc=$?
  children_cpu
  echo "ci-time: $label $(( $(date +%s) - t0 ))s wall, $(( CPU - c0 ))s cpu$([ "$rc" = 0 ] || echo " (failed: $rc)")" >&2
  return "$rc"
}

logs=$PWD/target/test-logs
rm -rf "$logs"
mkdir -p "$logs"
# start STEP CMD...: runs CMD in the background, output in $logs/STEP.log; its exit status lands in
# $logs/STEP.rc when it ends (also when it fails).
start() {
  local step=$1
  shift
  ( set +e; timed "$step" "$@" >"$logs/$step.log" 2>&1; echo $? >"$logs/$step.rc.tmp"; mv "$logs/$step.rc.tmp" "$logs/$step.rc" ) &
}
# await STEP: waits until STEP has ended and returns its exit status (the log is not printed).
await() {
  until [ -f "$logs/$1.rc" ]; do sleep 1; done
  return "$(cat "$logs/$1.rc")"
}
# collect STEP: awaits STEP, prints its log once, and returns its exit status.
collect() {
  local rc=0
  await "$1" || rc=$?
  if [ ! -f "$logs/$1.printed" ]; then
    touch "$logs/$1.printed"
    echo "==== test.sh: $1 (exit $rc) ===="
    cat "$logs/$1.log"
    echo "==== test.sh: end of $1 ===="
  fi
  return "$rc"
}
# Background steps still running when the script exits early (a failure) are stopped.
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -f "$cpu_file"' EXIT

timed install-test-deps scripts/install-test-deps.sh
# xterm.js for GET /terminal (X70), before either build embeds it (build.rs).
timed fetch-xterm scripts/fetch-xterm.sh
start jupyter-venv scripts/jupyter-test-env.sh
start sdk-venv bash tests/sdk/venv.sh
start build-static sh -c 'scripts/build-static.sh >"$0"' "$logs/static-bin.path"
# After build-static (both lock target/release, where their shared build scripts and proc-macros
# go; started together, the niced one could take the lock first and hold up the other) and niced:
# nothing waits for it until the SDK phase, which mostly waits on sockets.
build_aarch64() {
  await build-static || true
  nice -n 19 scripts/build-static.sh --target aarch64 >"$logs/aarch64-bin.path"
}
start build-aarch64 build_aarch64
# The X55 test, run by sdk_suites rather than test-run (the aarch64 build may still be going then).
aarch64_test=aarch64::x55_aarch64_static_binary_runs_under_qemu

# The suites that need only the static binary and the SDK venv. Another suite of that kind (e.g.
# the JS SDK, scripts/sdk-js-test.sh) is one more line in sdk_suites.
sdk_suites() {
  await build-static && await sdk-venv || { echo "test.sh: no static binary or SDK venv; SDK suites not run" >&2; return 1; }
  EXECD_BIN=$(cat "$logs/static-bin.path")
  export EXECD_BIN
  local rc=0 js_pid=''
  if [ -x scripts/sdk-js-test.sh ]; then
    timed sdk-js-test scripts/sdk-js-test.sh >"$logs/sdk-js.log" 2>&1 &
    js_pid=$!
  fi
  # The static aarch64 binary under qemu-user (X55); its build's log is printed with the test's.
  (
    collect build-aarch64 || exit 1
    EXECD_AARCH64_BIN=$(cat "$logs/aarch64-bin.path")
    export EXECD_AARCH64_BIN
    timed aarch64-test cargo test --locked --test integration -- --exact "$aarch64_test"
  ) >"$logs/aarch64-test.log" 2>&1 &
  local arm_pid=$!
  local browser_pid=''
  if [ -x scripts/browser-test.sh ]; then
    timed browser-test scripts/browser-test.sh >"$logs/browser.log" 2>&1 &
    browser_pid=$!
  fi
  if [ -x scripts/sdk-test.sh ]; then
    timed sdk-test scripts/sdk-test.sh || rc=1
  fi
  if [ -n "$browser_pid" ]; then
    local browser=0
    wait "$browser_pid" || browser=$?
    echo "==== test.sh: browser (exit $browser) ===="
    cat "$logs/browser.log"
    [ "$browser" -eq 0 ] || rc=1
  fi
  local arm=0
  wait "$arm_pid" || arm=$?
  echo "==== test.sh: aarch64-test (exit $arm) ===="
  cat "$logs/aarch64-test.log"
  [ "$arm" -eq 0 ] || rc=1
  if [ -n "$js_pid" ]; then
    local js=0
    wait "$js_pid" || js=$?
    echo "==== test.sh: sdk-js (exit $js) ===="
    cat "$logs/sdk-js.log"
    [ "$js" -eq 0 ] || rc=1
  fi
  return "$rc"
}

timed test-build cargo test --locked --all-targets --no-run

# The /code Jupyter tests need the venv. In CI (CI=true or 1) a missing venv fails the run (a
# missing install step must never pass as green); locally the tests skip and say so.
if ! collect jupyter-venv; then
  case "${CI:-}" in
    [Tt][Rr][Uu][Ee] | 1)
      echo "test.sh: the Jupyter venv cannot be made (scripts/jupyter-test-env.sh failed) and CI is set: failing" >&2
      exit 1
      ;;
  esac
  echo "test.sh: no Jupyter venv; the /code Jupyter tests will print SKIPPED" >&2
fi
# tests/integration/image.rs runs the static binary in a busybox-only chroot.
collect build-static
EXECD_STATIC_BIN=$(cat "$logs/static-bin.path")
export EXECD_STATIC_BIN
status=0
# tests/integration/otel.rs decodes OTLP with the SDK venv's opentelemetry-proto (tests/otel).
collect sdk-venv || status=1
timed test-run cargo test --locked --all-targets -- --skip "$aarch64_test" ${CARGO_TEST_ARGS:-} || status=1
# The SDK suites run after the cargo tests, not beside them: on two cores, three SDK passes and
# the contract check next to the timing-sensitive cargo tests (deadlines, CPU limits, stalls) make
# those flaky. Among themselves they run side by side.
collect sdk-venv || status=1
timed sdk sdk_suites || status=1
exit "$status"
