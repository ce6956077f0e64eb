#!/usr/bin/env bash
# Fails when a dependency declared in Cargo.toml is never named in the code (issue #14: no declared
# dependency goes unused). The rule is cargo-machete's: a crate counts as used when its name (with
# `-` as `_`) appears as a path (`name::`), in a `use`, or in an `extern crate`, in src/, tests/,
# benches or build.rs. cargo-machete itself (0.9.2, run by hand on 2026-12-03: "didn't find any
# unused dependencies") takes 163 s of CPU to build, more than this project's CI can spend on it.
#
#   scripts/check-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
unused=()
for section in dependencies dev-dependencies build-dependencies; do
  names=$(awk -v s="[$section]" '$0 == s { on = 1; next } /^\[/ { on = 0 } on && /^[A-Za-z0-9_-]+ *=/ { print $1 }' Cargo.toml)
  for name in $names; do
    ident=${name//-/_}
    if ! grep -rqE "(^|[^A-Za-z0-9_])${ident}::|use ${ident}( |;|::)|extern crate ${ident}" \
      src tests build.rs 2>/dev/null; then
      unused+=("$name ($section)")
    fi
  done
done
if [ "${#unused[@]}" -gt 0 ]; then
  printf 'check-deps: declared but never used: %s\n' "${unused[@]}" >&2
  exit 1
fi
echo "check-deps: every declared dependency is used"
