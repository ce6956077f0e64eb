# Sourced by scripts/sdk-test.sh and scripts/contract-test.sh: makes $VENV (default .venv) with the
# pinned Python packages and exports EXECD_BIN: the static release binary of
# scripts/build-static.sh (or `cargo build --release --locked` without it) unless already set.
# Installs python3-venv with apt-get when the venv module is missing.
#
# Run directly (`bash tests/sdk/venv.sh`), it only makes the venv and builds nothing:
# scripts/test.sh does that while cargo compiles.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/../.."
fi
VENV=${VENV:-$PWD/.venv}
req=tests/sdk/requirements.txt
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "sdk venv: python3 venv/ensurepip missing and cannot install python3-venv" >&2
    exit 1
  fi
fi
stamp="$VENV/.requirements.sha256"
want="$(sha256sum <"$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "sdk venv: installing pinned Python packages into $VENV"
  venv_t0=$(date +%s)
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
  echo "ci-time: sdk-venv $(( $(date +%s) - venv_t0 ))s" >&2
fi
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  exit 0
fi
if [ -z "${EXECD_BIN:-}" ]; then
  if [ -x scripts/build-static.sh ]; then
    # The binary we ship (static, release profile); scripts/test.sh has usually just built it.
    EXECD_BIN=$(scripts/build-static.sh)
  else
    cargo build --release --locked --bin execd
    EXECD_BIN=$PWD/target/release/execd
  fi
fi
export EXECD_BIN
# Hypothesis (schemathesis) keeps its files here rather than in the repository root.
export HYPOTHESIS_STORAGE_DIRECTORY="$VENV/.hypothesis"
