#!/usr/bin/env bash
# Creates (or reuses) the Python venv with a pinned Jupyter server and IPython kernel that the
# /code tests (tests/code.rs) run against, registers a kernelspec named `python` (as the
# code-interpreter image does; execd skips `python3`, reference §6.3), and prints the path of the
# venv's `jupyter` binary on stdout. Progress goes to stderr. Exit status non-zero = unavailable.
#
# Venv: $EXECD_JUPYTER_VENV, default <repo>/.venv-jupyter. Reuse is keyed on the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EXECD_JUPYTER_VENV:-$PWD/.venv-jupyter}"
PINS=(jupyter_server==2.16.0 ipykernel==6.29.5)
STAMP="$VENV/.execd-jupyter-ready"
want="${PINS[*]}"

if [ -x "$VENV/bin/jupyter" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "$VENV/bin/jupyter"
  exit 0
fi

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || { echo "jupyter-test-env: $PY not found" >&2; exit 1; }
echo "jupyter-test-env: creating $VENV with ${want}" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" >&2
"$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name python --display-name "Python (execd tests)" >&2
echo "$want" >"$STAMP"
echo "$VENV/bin/jupyter"
