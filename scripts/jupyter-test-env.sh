#!/usr/bin/env bash
# Creates (or reuses) the Python venv with a pinned Jupyter server and IPython kernel that the
# /code tests (tests/integration/code.rs) run against, registers a kernelspec named `python` (as the
# code-interpreter image does; execd skips `python3`, reference §6.3), and prints the path of the
# venv's `jupyter` binary on stdout. Progress goes to stderr. Exit status non-zero = unavailable.
#
# It also registers `execd-tslab-like` (language `typescript`): a tiny wrapper kernel on
# ipykernel's `Kernel` base class that fails the way tslab does for `throw new Error("x")`: the
# error text on stderr and an `execute_reply` with status `error` and no `ename`/`evalue`/
# `traceback` at all (tslab's jupyter.ts sends only `status` and `execution_count`). Real tslab
# needs Node and npm; this reproduces its wire behaviour with what the venv already has.
#
# Venv: $EXECD_JUPYTER_VENV, default <repo>/.venv-jupyter. Reuse is keyed on the pinned versions;
# the wrapper kernel is (re)written on every call (cheap, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EXECD_JUPYTER_VENV:-$PWD/.venv-jupyter}"
PINS=(jupyter_server==2.16.0 ipykernel==6.29.5)
STAMP="$VENV/.execd-jupyter-ready"
want="${PINS[*]}"

# Writes the tslab-like kernelspec into the venv (idempotent; each file is replaced atomically, so
# a kernel starting meanwhile never reads half a file).
register_tslab_like() {
  local dir="$VENV/share/jupyter/kernels/execd-tslab-like"
  mkdir -p "$dir"
  cat >"$dir/tslab_like.py.tmp" <<'PY'
"""A wrapper kernel that answers like tslab (TypeScript) does; used only by execd's tests.

Code starting with `throw` fails as tslab reports an uncaught exception: the message and stack on
stderr, then an execute_reply {"status": "error", "execution_count": n} with no ename, evalue or
traceback. Any other code succeeds and echoes itself on stdout.
"""
from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel


class TslabLike(Kernel):
    implementation = "execd-tslab-like"
    implementation_version = "1.0"
    banner = "tslab-like test kernel"
    language_info = {"name": "typescript", "mimetype": "text/typescript", "file_extension": ".ts"}

    def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False):
        self.execution_count += 1
        if code.lstrip().startswith("throw"):
            if not silent:
                stack = "Error: x\n    at <anonymous>:1:7\n"
                self.send_response(self.iopub_socket, "stream", {"name": "stderr", "text": stack})
            return {"status": "error", "execution_count": self.execution_count}
        if not silent:
            self.send_response(self.iopub_socket, "stream", {"name": "stdout", "text": code + "\n"})
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=TslabLike)
PY
  cat >"$dir/kernel.json.tmp" <<JSON
{
  "argv": ["$VENV/bin/python", "$dir/tslab_like.py", "-f", "{connection_file}"],
  "display_name": "TypeScript (tslab-like, execd tests)",
  "language": "typescript"
}
JSON
  mv -f "$dir/tslab_like.py.tmp" "$dir/tslab_like.py"
  mv -f "$dir/kernel.json.tmp" "$dir/kernel.json"
}

if [ -x "$VENV/bin/jupyter" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  register_tslab_like
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
register_tslab_like
echo "$want" >"$STAMP"
echo "$VENV/bin/jupyter"
