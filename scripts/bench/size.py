#!/usr/bin/env python3
"""Size of the static binary by feature (issue #15: "size per feature reported").

    python3 scripts/bench/size.py UNSTRIPPED STRIPPED

UNSTRIPPED is the static binary built with its symbols (`EXECD_STATIC_KEEP_SYMBOLS=1
scripts/build-static.sh`, the same link as the release binary), STRIPPED the release binary
itself. Every sized symbol of `nm -S -C` is put in the first feature whose patterns its
demangled name contains (code and named data); the embedded files (the gzipped OpenAPI
document, the terminal page and its gzipped xterm.js) are counted from their sources, as they are
in the binary; unwind tables and what no symbol names are reported on their own lines. Generic code
is named after the crate that defines it (`tokio::…<execd::fs::tus::…>` counts as the runtime),
so a feature's own row is its own functions and dependencies, not the runtime it drives.
Prints a markdown table, largest first.
"""
import gzip
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

# (feature, patterns): the first feature with a pattern found in a symbol's name takes it.
FEATURES = [
    ("archives (X30, X31): tar, zip, gzip, zstd", [
        "execd::fs::archive", "execd::api::archive", "tar::", "zip::", "flate2::", "miniz_oxide::",
        "zstd", "ZSTD_", "HUF_", "FSE_", "ZDICT_", "COVER_", "POOL_", "XXH", "HIST_", "crc32fast::",
        "ZSTDMT_", "ERR_getErrorString", "divsufsort", "_zstd"]),
    ("content search (X32): ripgrep's crates, encodings", [
        "execd::fs::grep", "execd::api::grep", "grep_", "encoding_rs", "bstr::", "ignore::"]),
    ("OpenTelemetry export (X60)", [
        "opentelemetry", "prost::", "execd::observability::otel", "execd::api::otel_layer"]),
    ("WebSocket: PTY, /command/ws (X15)", [
        "tungstenite", "execd::pty", "execd::api::pty", "execd::api::command_ws", "sha1::", "utf8::"]),
    ("resumable upload (tus, X33)", ["execd::fs::tus", "execd::api::tus", "execd::api::upload_raw"]),
    ("file watch (X40-X42)", ["execd::watch", "execd::api::watch", "inotify"]),
    ("Jupyter code interpreter", ["execd::code", "execd::api::code"]),
    ("isolated sessions (/v1/isolated)", ["execd::isolated", "execd::api::isolated"]),
    ("bash sessions", ["execd::session", "execd::api::session"]),
    ("cgroups (X20-X22)", ["execd::cgroup", "execd::clone3"]),
    ("commands, processes, journal", [
        "execd::command", "execd::process", "execd::api::command", "execd::api::sse", "execd::event",
        "execd::expand", "execd::argv", "json_escape"]),
    ("files API, uploads, search", [
        "execd::fs", "execd::api::files", "execd::api::directories", "multer::", "globset", "walkdir",
        "mime", "form_urlencoded", "percent_encoding", "httpdate"]),
    ("metrics, audit, Prometheus", [
        "execd::metrics", "execd::observability", "execd::api::metrics", "execd::api::prometheus",
        "execd::api::observe", "sysinfo"]),
    ("proxy", ["execd::api::proxy"]),
    ("terminal page (X70): its handlers", ["execd::api::terminal"]),
    ("regex (log scrubber, globs, grep)", ["regex", "aho_corasick", "memchr"]),
    ("logging", ["tracing", "execd::telemetry"]),
    ("route handlers and middleware (axum's futures, each handler's code inlined in them)", [
        "as axum::handler::Handler", "axum::middleware::from_fn"]),
    ("panic backtraces: unwinder, DWARF reader, demangler", [
        "libunwind", "gimli::", "addr2line::", "rustc_demangle", "_Unwind_", "std::backtrace"]),
    ("HTTP: hyper, axum, tower", [
        "hyper", "axum", "tower", "http::", "http_body", "httparse", "matchit", "bytes::", "h2::"]),
    ("async runtime: tokio, futures", ["tokio", "mio::", "futures", "async_stream", "pin_project"]),
    ("JSON, serde", ["serde", "itoa::", "ryu::", "zmij"]),
    ("execd: start, config, API glue, the rest", [
        "execd::", "execd_", "sha2::", "base64::", "uuid::", "rand", "getrandom", "nix::", "rustix::"]),
    ("Rust std, alloc, core", ["std::", "core::", "alloc::", "<std", "<core", "<alloc", "__rust", "rust_"]),
]


def symbols(binary):
    out = subprocess.run(["nm", "-S", "-C", "--defined-only", binary], check=True, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and re.fullmatch(r"[0-9a-f]+", parts[1]):
            yield parts[2], int(parts[1], 16), parts[3]


def sections(binary):
    out = subprocess.run(["size", "-A", binary], check=True, capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def main():
    unstripped, stripped = sys.argv[1], sys.argv[2]
    total = os.path.getsize(stripped)
    sums = {name: 0 for name, _ in FEATURES}
    other = 0
    for kind, size, name in symbols(unstripped):
        if kind.lower() not in "tdrbvw" or size == 0:
            continue
        for feature, patterns in FEATURES:
            if any(p in name for p in patterns):
                sums[feature] += size
                break
        else:
            other += size
    embedded = {
        # build.rs gzips it at the best level, as this does (within a few bytes: another deflater).
        "OpenAPI document, gzipped (`GET /openapi.json`, X1)": len(
            gzip.compress(open(os.path.join(ROOT, "docs/openapi.json"), "rb").read(), 9, mtime=0)),
        "terminal page and xterm.js, gzipped (X70)": sum(
            os.path.getsize(os.path.join(d, f))
            for d, fs in ((os.path.join(ROOT, "assets/terminal"), ("index.html", "terminal.js")),
                          (os.path.join(ROOT, "assets/terminal/vendor"),
                           [f for f in os.listdir(os.path.join(ROOT, "assets/terminal/vendor"))
                            if f.endswith(".gz")] if os.path.isdir(os.path.join(ROOT, "assets/terminal/vendor"))
                           else ()))
            for f in fs if os.path.exists(os.path.join(d, f))),
    }
    sec = sections(stripped)
    unwind = sum(sec.get(s, 0) for s in (".eh_frame", ".eh_frame_hdr", ".gcc_except_table"))
    rows = [(f, b) for f, b in sums.items() if b] + list(embedded.items())
    rows.append(("C library (musl), compiler runtime, unmatched symbols", other))
    rows.append(("unwind tables (`.eh_frame`, `.gcc_except_table`: panic = unwind)", unwind))
    accounted = sum(b for _, b in rows)
    rows.sort(key=lambda r: -r[1])
    rows.append(("the rest: string literals and constants no symbol names, relocations, headers, padding",
                 total - accounted))
    print(f"static binary: {total} bytes ({total / 2**20:.2f} MiB); limit 8 MiB, {8 * 2**20 - total} bytes left")
    print()
    print("| feature | KiB | share |")
    print("|---|---|---|")
    for name, b in rows:
        print(f"| {name} | {b / 1024:.0f} | {100 * b / total:.1f} % |")


if __name__ == "__main__":
    main()
