#!/usr/bin/env bash
# Builds the fully static execd release binary and prints its path on stdout (logs go to stderr).
#
#   scripts/build-static.sh                    # <host arch>-unknown-linux-musl, --locked, [profile.release]
#   scripts/build-static.sh --target aarch64   # aarch64-unknown-linux-musl, cross-compiled (X55)
#   EXECD_STATIC_TARGET=... scripts/build-static.sh   # another musl target (a triple or an arch)
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
#
# Cross builds (a target arch other than the host's; aarch64 on x86_64 is the tested one): Debian
# has no musl cross compiler, so unless `<arch>-linux-musl-gcc` exists, libzstd is compiled by
# Debian's glibc cross gcc (`gcc-aarch64-linux-gnu`) as freestanding-enough C (no _FORTIFY_SOURCE,
# whose `__*_chk` calls only glibc has; no outline atomics, whose helpers live in libgcc), and the
# same gcc links with Rust's self-contained musl (crt objects, libc.a and libunwind.a ship in the
# target's rust-std; rustc adds them itself with -nostartfiles -nodefaultlibs, so nothing of
# glibc is linked). The script then checks the C archives for glibc-only symbols and, when
# qemu-user is installed, runs the binary's --version under it. The variables are set here only, not in .cargo/config, so that native
# builds are unchanged. No glibc fallback for a cross target: it fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BYTES=$((8 * 1024 * 1024))
host_arch=$(uname -m)
target=${EXECD_STATIC_TARGET:-}
while [ $# -gt 0 ]; do
  case "$1" in
  --target) target=${2:?--target needs an arch or a triple}; shift 2 ;;
  --target=*) target=${1#--target=}; shift ;;
  *) echo "build-static: unknown argument: $1 (usage: $0 [--target ARCH|TRIPLE])" >&2; exit 2 ;;
  esac
done
target=${target:-$host_arch}
# A bare arch (aarch64, x86_64) means its musl target.
[[ $target == *-* ]] || target=${target}-unknown-linux-musl
arch=${target%%-*}
cross=false
[ "$arch" = "$host_arch" ] || cross=true

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
    if $cross; then
      log "FAIL: the $target target is not available (rustup target add $target)"
      exit 1
    fi
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
  # musl-gcc (musl-tools' wrapper around the host gcc) compiles for the host arch only.
  cands=("${arch}-linux-musl-gcc")
  $cross || cands+=(musl-gcc)
  for cc in "${cands[@]}"; do
    if command -v "$cc" >/dev/null 2>&1; then
      export "$cc_var=$cc"
      break
    fi
  done
  if [ -z "${!cc_var:-}" ] && $cross && command -v "${arch}-linux-gnu-gcc" >/dev/null 2>&1; then
    # Debian's glibc cross gcc, for C that links against Rust's self-contained musl (see above).
    gnu_cc=${arch}-linux-gnu-gcc
    export "$cc_var=$gnu_cc"
    cflags_var="CFLAGS_${target//-/_}"
    cflags="-U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=0 -fno-stack-protector"
    [ "$arch" != aarch64 ] || cflags="$cflags -mno-outline-atomics"
    export "$cflags_var=$cflags ${!cflags_var:-}"
    linker_var="CARGO_TARGET_$(echo "${target//-/_}" | tr '[:lower:]' '[:upper:]')_LINKER"
    [ -n "${!linker_var:-}" ] || export "$linker_var=$gnu_cc"
    ar_var="AR_${target//-/_}"
    [ -n "${!ar_var:-}" ] || ! command -v "${arch}-linux-gnu-ar" >/dev/null 2>&1 || export "$ar_var=${arch}-linux-gnu-ar"
    log "cross: C with $gnu_cc (${!cflags_var}), linked by ${!linker_var} with Rust's self-contained musl"
  fi
  if [ -z "${!cc_var:-}" ]; then
    if $cross; then
      log "FAIL: no C compiler for $target (install gcc-${arch}-linux-gnu) for zstd-sys"
    else
      log "FAIL: no musl C compiler (install musl-tools) for zstd-sys"
    fi
    exit 1
  fi
fi

# Relative relocations in the compact RELR format (DT_RELR; GNU ld >= 2.38, musl >= 1.2.4, which
# Rust's self-contained musl is): a static-pie binary relocates itself at start, and its 16 700
# relocations as 24-byte RELA entries were 402 288 bytes of the file; as RELR they are 4 976
# (7 988 728 bytes instead of 8 385 960, measured 2026-12-04). An older ld warns and ignores it.
if [[ $target == *-musl ]]; then
  rustflags="$rustflags -C link-arg=-Wl,-z,pack-relative-relocs"
fi

# Native musl builds are linked by the toolchain's own lld (rust-lld, through its gcc-ld wrapper)
# with the functions laid out in the order scripts/link-order.txt gives: those that run from
# exec to the first /ping first, then those of a command, then the other common routes
# (learned by scripts/link-order.sh). The kernel maps a file's pages 64 KiB or a large folio at
# a time, so code that runs together in few places is less memory and fewer faults: idle RSS
# 5.0 -> 3.1 MiB (BENCHMARKS.md, "Code laid out in the order it runs"). A name the file lists that
# the build does not have is ignored, so a stale order costs only that gain. The release
# profile's own strip is off here (it changes every symbol's hash through the profile's part in
# `-C metadata`, and the order's names must be the training build's): the binary is stripped
# below instead, or kept whole with EXECD_STATIC_KEEP_SYMBOLS=1 (scripts/link-order.sh).
keep_symbols=${EXECD_STATIC_KEEP_SYMBOLS:-0}
if [[ $target == *-musl ]] && ! $cross; then
  export CARGO_PROFILE_RELEASE_STRIP=false
  gcc_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
  if [ -x "$gcc_ld/ld.lld" ]; then
    rustflags="$rustflags -C link-arg=-fuse-ld=lld -C link-arg=-B$gcc_ld"
    if [ -s scripts/link-order.txt ] && [ "${EXECD_LINK_ORDER:-1}" != 0 ]; then
      rustflags="$rustflags -C link-arg=-Wl,--symbol-ordering-file=$PWD/scripts/link-order.txt"
      rustflags="$rustflags -C link-arg=-Wl,--no-warn-symbol-ordering"
    fi
  else
    log "WARNING: no rust-lld in the toolchain ($gcc_ld): linked by the system linker, in no learned order"
  fi
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
size_of=$bin
if [ "${CARGO_PROFILE_RELEASE_STRIP:-}" = false ]; then
  strip_bin=$(command -v strip || echo "$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-objcopy")
  if [ "$keep_symbols" = 1 ]; then
    # The size limit is the stripped binary's.
    size_of=$(mktemp)
    trap 'rm -f "$size_of"' EXIT
    cp "$bin" "$size_of"
    "$strip_bin" --strip-all "$size_of" || { log "FAIL: $strip_bin could not strip a copy of $bin"; exit 1; }
  else
    "$strip_bin" --strip-all "$bin" || { log "FAIL: $strip_bin could not strip $bin"; exit 1; }
  fi
fi

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

size=$(stat -c %s "$size_of")
if [ "$size" -gt "$MAX_BYTES" ]; then
  log "FAIL: $bin is $size bytes, more than 8 MiB ($MAX_BYTES)"
  exit 1
fi
nm_bin=$(command -v "${arch}-linux-gnu-nm" || command -v nm || true)
if [ -n "${gnu_cc:-}" ] && [ -n "$nm_bin" ]; then
  # The C compiled against glibc's headers must not call what only glibc has (fortified `__*_chk`,
  # C99 scanf `__isoc99_*`): musl's libc.a would not resolve them. The binary is stripped, so this
  # looks at the C archives the build scripts left.
  glibc_only=$(find "${target_dir:-$PWD/target}/$target/release/build" -name '*.a' \
    -exec "$nm_bin" -u {} + 2>/dev/null | grep -E '__[a-z0-9_]+_chk$|__isoc(99|23)_' | sort -u || true)
  if [ -n "$glibc_only" ]; then
    log "FAIL: the C code compiled by $gnu_cc calls glibc-only functions:"
    echo "$glibc_only" >&2
    exit 1
  fi
fi
log "OK: static, $size bytes ($(( (size + 1023) / 1024 )) KiB), target $target"
if ! $cross; then
  "$bin" --version >&2
elif command -v "qemu-${arch}-static" >/dev/null 2>&1; then
  "qemu-${arch}-static" "$bin" --version >&2
elif command -v "qemu-${arch}" >/dev/null 2>&1; then
  "qemu-${arch}" "$bin" --version >&2
else
  log "no qemu-${arch}: $bin not run"
fi
echo "$bin"
