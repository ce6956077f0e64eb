#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with Rust, idempotently:
# Debian packages (busybox-static for the image/chroot test, python3 with its venv module for the
# Jupyter and SDK venvs, musl-tools for the static build's C dependency, gcc-aarch64-linux-gnu for
# the aarch64 one's) and the musl targets (the host's and aarch64) for the static builds. Python
# packages live in venvs made by scripts/jupyter-test-env.sh and tests/sdk/venv.sh.
# scripts/test.sh runs this first, in the foreground, so that the steps it then runs side by side
# never run apt-get or rustup at once.
set -euo pipefail
need=()
command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ] || need+=(busybox-static)
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
# Oracles the extension tests compare against (clients and tools we did not write): GNU tar,
# unzip and zstd read our archives (X30/X31), `rg --json` is the grep oracle (X32), inotifywait
# the watch floor (X40–X42), Debian's Chromium drives the browser terminal (X70), qemu-user runs
# the aarch64 static binary (X55), GNU time checks the usage figures (X22).
# The static build compiles libzstd (zstd-sys) for the musl target with musl's gcc wrapper.
command -v "$(uname -m)-linux-musl-gcc" >/dev/null 2>&1 || command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
command -v zip >/dev/null 2>&1 || need+=(zip)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v rg >/dev/null 2>&1 || need+=(ripgrep)
command -v inotifywait >/dev/null 2>&1 || need+=(inotify-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# GNU time: the reference the per-command usage (X22) is compared with.
[ -x /usr/bin/time ] || need+=(time)
command -v qemu-aarch64-static >/dev/null 2>&1 || command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user-static)
# The aarch64 static build (X55) cross-compiles libzstd with Debian's glibc cross gcc (see
# scripts/build-static.sh); on an aarch64 host it is the native build.
if [ "$(uname -m)" != aarch64 ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install-test-deps: missing ${need[*]} and not root; tests needing them will skip" >&2
  fi
fi
target="$(uname -m)-unknown-linux-musl"
installed=$(rustup target list --installed 2>/dev/null || true)
grep -qx "$target" <<<"$installed" \
  || rustup target add "$target" >/dev/null 2>&1 \
  || echo "install-test-deps: $target target unavailable; static build checks will use glibc crt-static" >&2
# X55: the aarch64 musl target (no fallback: the aarch64 build and its test fail without it).
grep -qx aarch64-unknown-linux-musl <<<"$installed" \
  || rustup target add aarch64-unknown-linux-musl >/dev/null 2>&1 \
  || echo "install-test-deps: the aarch64-unknown-linux-musl target cannot be added (rustup)" >&2
