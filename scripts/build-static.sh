#!/usr/bin/env bash
# Builds the fully static execd release binary and prints its path on stdout (logs go to stderr).
#
#   scripts/build-static.sh            # <arch>-unknown-linux-musl, --locked, [profile.release]
#   EXECD_STATIC_TARGET=... scripts/build-static.sh   # another musl target
#
# The binary must run in any image (glibc, musl, or neither: execd-reference.md §1.5), so the
# script checks that it has no program interpreter and no shared-library dependencies, and that
# it is at most 8 MiB; it fails otherwise. One dependency is C: zstd (libzstd, for `tar.zst`
# archives, X30/X31) is compiled by zstd-sys, so the musl target needs a musl C compiler:
# Debian's musl-tools (`<arch>-linux-musl-gcc`, installed by scripts/install-test-deps.sh).
#
# When the musl target cannot be installed, it falls back to a glibc `crt-static` build and says
# so loudly: that binary is static too, but glibc's static NSS (getpwnam & co.) does not work,
# which execd does not use (it reads /etc/passwd and /etc/group itself, DECISIONS D16).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BYTES=$((8 * 1024 * 1024))
arch=$(uname -m)
target=${EXECD_STATIC_TARGET:-${arch}-unknown-linux-musl}

log() { echo "build-static: $*" >&2; }

# Whether the standard library for target $1 is installed in the active toolchain.
have_target() {
  local sysroot
  sysroot=$(rustc --print sysroot) || return 1
  [ -d "$sysroot/lib/rustlib/$1/lib" ]
}

rustflags=${RUSTFLAGS:-}
if ! have_target "$target"; then
  log "installing the $target target"
  if ! { command -v rustup >/dev/null 2>&1 && rustup target add "$target" >&2 && have_target "$target"; }; then
    fallback=${arch}-unknown-linux-gnu
    log "################################################################################"
    log "WARNING: the $target target is not available."
    log "WARNING: falling back to a glibc crt-static build for $fallback."
    log "WARNING: the binary is static, but this is not the supported release build."
    log "################################################################################"
    target=$fallback
    rustflags="$rustflags -C target-feature=+crt-static"
  fi
fi

# zstd-sys compiles C for the target: point cc-rs at musl's gcc wrapper unless the caller chose.
cc_var="CC_${target//-/_}"
if [[ $target == *-musl ]] && [ -z "${!cc_var:-}" ]; then
  for cc in "${arch}-linux-musl-gcc" musl-gcc; do
    if command -v "$cc" >/dev/null 2>&1; then
      export "$cc_var=$cc"
      break
    fi
  done
  [ -n "${!cc_var:-}" ] || { log "FAIL: no musl C compiler (install musl-tools) for zstd-sys"; exit 1; }
fi

# xterm.js for GET /terminal (X70), embedded by build.rs; without it the binary still builds.
if ! scripts/fetch-xterm.sh >&2; then
  [ "${CI:-}" != true ] || { log "FAIL: scripts/fetch-xterm.sh failed (required under CI=true)"; exit 1; }
  log "WARNING: no xterm.js: this binary's GET /terminal will answer 404"
fi

log "cargo build --release --locked --target $target"
# --target keeps RUSTFLAGS away from build scripts and proc-macros (they stay dynamic host code).
RUSTFLAGS=$rustflags cargo build --release --locked --target "$target" --bin execd >&2

target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-$PWD/target}/$target/release/execd"
[ -x "$bin" ] || { log "FAIL: $bin was not produced"; exit 1; }

# Static: no PT_INTERP and no DT_NEEDED (a static-pie binary still has a DYNAMIC segment).
if command -v readelf >/dev/null 2>&1; then
  if readelf -lW "$bin" | grep -q 'Requesting program interpreter\|INTERP'; then
    log "FAIL: $bin has a program interpreter (dynamically linked)"
    exit 1
  fi
  if readelf -dW "$bin" 2>/dev/null | grep -q '(NEEDED)'; then
    log "FAIL: $bin needs shared libraries:"
    readelf -dW "$bin" | grep '(NEEDED)' >&2
    exit 1
  fi
elif command -v ldd >/dev/null 2>&1; then
  out=$(ldd "$bin" 2>&1 || true)
  case "$out" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *)
    log "FAIL: ldd reports dependencies: $out"
    exit 1
    ;;
  esac
else
  log "FAIL: neither readelf (binutils) nor ldd is installed; cannot verify that $bin is static"
  exit 1
fi
if command -v file >/dev/null 2>&1; then
  log "$(file -b "$bin")"
fi

size=$(stat -c %s "$bin")
if [ "$size" -gt "$MAX_BYTES" ]; then
  log "FAIL: $bin is $size bytes, more than 8 MiB ($MAX_BYTES)"
  exit 1
fi
log "OK: static, $size bytes ($(( (size + 1023) / 1024 )) KiB), target $target"
"$bin" --version >&2
echo "$bin"
