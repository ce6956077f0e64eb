#!/usr/bin/env bash
# Fetches xterm.js for the `GET /terminal` page (EXTENSIONS X70) from the npm registry and writes
# the files build.rs embeds into the binary:
#
#   assets/terminal/vendor/{xterm.js,addon-fit.js,xterm.css,LICENSE.txt}.gz   (gitignored)
#
# The versions are pinned by assets/terminal/package.json and package-lock.json (integrity hashes
# checked by `npm ci`). npm runs in target/xterm-npm (no install scripts); only the minified
# browser bundles and the licence texts are copied, gzipped (-9 -n: the bytes depend on the input
# only), so the binary carries them compressed and execd serves them with `Content-Encoding: gzip`.
# Nothing is done when vendor/ already matches the lockfile. Rebuild execd afterwards (cargo
# notices the new files). A build without vendor/ compiles; its `/terminal` answers 404 and says
# to run this script.
set -euo pipefail
cd "$(dirname "$0")/.."
src=assets/terminal
out=$src/vendor
work=${CARGO_TARGET_DIR:-target}/xterm-npm
files=(xterm.js addon-fit.js xterm.css LICENSE.txt)

log() { echo "fetch-xterm: $*" >&2; }

want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)"
up_to_date() {
  [ "$(cat "$out/.lock.sha256" 2>/dev/null)" = "$want" ] || return 1
  local f
  for f in "${files[@]}"; do [ -s "$out/$f.gz" ] || return 1; done
}
if up_to_date; then
  log "$out is up to date"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { log "npm is not installed (Debian: apt-get install npm)"; exit 1; }

rm -rf "$work"
mkdir -p "$work"
cp "$src/package.json" "$src/package-lock.json" "$work/"
log "npm ci in $work"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)

m=$work/node_modules/@xterm
tmp=$(mktemp -d "$src/.vendor.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gzip -9 -n -c "$m/xterm/lib/xterm.js" >"$tmp/xterm.js.gz"
gzip -9 -n -c "$m/addon-fit/lib/addon-fit.js" >"$tmp/addon-fit.js.gz"
gzip -9 -n -c "$m/xterm/css/xterm.css" >"$tmp/xterm.css.gz"
{
  for p in xterm addon-fit; do
    echo "@xterm/$p $(node -p "require('./$m/$p/package.json').version")"
    echo
    cat "$m/$p/LICENSE"
    echo
  done
} | gzip -9 -n -c >"$tmp/LICENSE.txt.gz"
echo "$want" >"$tmp/.lock.sha256"
# Replace vendor/ in one rename, so a build running beside this never sees half of it.
rm -rf "$out.old"
[ ! -e "$out" ] || mv "$out" "$out.old"
chmod 755 "$tmp"
mv "$tmp" "$out"
rm -rf "$out.old"
trap - EXIT
log "wrote $out: $(cd "$out" && du -cb ./*.gz | tail -n1 | cut -f1) bytes gzipped"
