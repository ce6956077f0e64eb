#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with Rust, idempotently:
# Debian packages (busybox-static for the image/chroot test, nginx for benchmarks) and the
# musl target for the static build. Python packages live in a venv made by scripts/sdk-test.sh.
set -euo pipefail
need=()
command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ] || need+=(busybox-static)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install-test-deps: missing ${need[*]} and not root; tests needing them will skip" >&2
  fi
fi
rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl \
  || rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 \
  || echo "install-test-deps: musl target unavailable; static build checks will use glibc crt-static" >&2
