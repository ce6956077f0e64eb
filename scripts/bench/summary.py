#!/usr/bin/env python3
"""The summary table of BENCHMARKS.md from the outputs of scripts/bench/all.sh.

    python3 scripts/bench/summary.py OUT_DIR

Reads OUT_DIR/<bench>.md (each bench's own markdown output) and OUT_DIR/machine.txt, prints one
table: what, execd, floor (same run), ratio, goal, ✓/✗ ("–" where the goal is only to report).
A bench that failed or printed no table gives a row saying so, never a silent gap.
"""

import os
import re
import sys

OUT = sys.argv[1]
ROWS = []


def text(name):
    try:
        with open(os.path.join(OUT, name + ".md"), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def rows(name):
    """Every markdown table row of a bench's output, as lists of cells."""
    out = []
    for line in text(name).splitlines():
        line = line.strip()
        if line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def row(name, prefix, nth=0):
    """The nth row whose first cell starts with `prefix`."""
    found = [r for r in rows(name) if r and r[0].startswith(prefix)]
    return found[nth] if len(found) > nth else None


def num(cell):
    m = re.search(r"-?\d+(?:\.\d+)?", cell.replace(",", "").replace("\u202f", ""))
    if not m:
        raise ValueError(f"no number in {cell!r}")
    return float(m.group(0))


def verdict(ok):
    return "–" if ok is None else ("✓" if ok else "✗")


def add(what, execd, floor, ratio, goal, ok):
    ROWS.append((what, execd, floor, ratio, goal, verdict(ok)))


def missing(what, bench):
    add(what, f"no result: see {bench}.md / {bench}.err", "", "", "", False)


def section(bench, fn):
    """Runs one bench's extractor; a missing row or number becomes a failed summary row."""
    try:
        fn()
    except (TypeError, ValueError, IndexError, ZeroDivisionError, StopIteration) as e:
        missing(f"{bench} ({e.__class__.__name__}: {e})", bench)


def startup():
    e, m = row("startup", "execd"), row("startup", "minimal-axum")
    size = num(e[1])
    add("static binary size", e[1], f"minimal axum: {m[1]}", f"{size / num(m[1]):.1f}×", "≤ 8 MiB", size <= 8.0)
    rss = num(e[2])
    add("idle RSS after the first `/ping`", e[2], f"minimal axum: {m[2]}", f"{rss / num(m[2]):.1f}×", "≤ 2.5 MiB",
        rss <= 2.5)
    r = num(e[3]) / num(m[3])
    add("exec → first `/ping` (median)", e[3], f"minimal axum: {m[3]}", f"{r:.2f}×", "≤ 1.5×", r <= 1.5)


def memory():
    idle, after = row("memory", "idle"), row("memory", "20 s")
    a, i = num(after[1]), num(idle[1])
    add("RSS 20 s after a mixed workload", f"{after[1]} ({after[2]})", f"idle after the first `/ping`: {idle[1]}",
        f"{a / i:.1f}× idle", "≤ 4 MiB", a <= 4.0)


def commands():
    p50, p99 = row("commands", "`true` → terminal event"), row("commands", "same, p99")
    r50, r99 = num(p50[3]), num(p99[3])
    add("`POST /command true` → terminal event, p50", p50[1], p50[2], p50[3], "≤ 1.15×", r50 <= 1.15)
    add("  same, p99", p99[1], p99[2], p99[3], "≤ 1.3×", r99 <= 1.3)
    for label in ("same, state on tmpfs and no cgroup leaf", "same through a minimal axum SSE endpoint"):
        r = row("commands", label)
        if r:
            add(f"  {label}, p50", r[1], r[2], r[3], "reported", None)
    for label, goal in (("stream 100-byte lines", 0.6), ("stream no newlines", 0.5)):
        pipe = row("commands", label)
        sse = [r for r in rows("commands")]
        i = sse.index(pipe)
        axum = sse[i + 1] if i + 1 < len(sse) and "axum" in sse[i + 1][0] else None
        if axum:
            add(label, axum[1], f"minimal axum SSE: {num(axum[2]):.0f} MiB/s; pipe {num(pipe[2]):.0f} MiB/s",
                axum[3], f"≥ {goal}× of SSE", num(axum[3]) >= goal)
        else:
            add(label, pipe[1], pipe[2], pipe[3], f"≥ {goal}× of SSE (no SSE floor built)", None)
    conc = row("commands", "200 concurrent")
    i = rows("commands").index(conc)
    axum = rows("commands")[i + 1]
    add("200 concurrent commands × 5 MiB, all bytes delivered", conc[1],
        f"minimal axum SSE: {axum[2].split(' (')[0]}; pipes {conc[2].split(' (')[0]}", f"{axum[3]} the time", "≤ 1.2×",
        num(axum[3]) <= 1.2)


def session():
    f, s = row("session", "floor"), row("session", "session run `true`")
    r = num(s[2])
    add("session `run true` → terminal event, p50", f"{s[1]} ms", f"`bash -c true`: {f[1]} ms", f"{r:.2f}×", "≤ 1.5×",
        r <= 1.5)


def placement():
    f, none, leaf = row("placement", "floor"), row("placement", "old"), row("placement", "new")
    r = num(leaf[1]) / num(none[1])
    add("a cgroup leaf per command: `POST /command true` 50 ms apart, p50", f"{leaf[1]} (leaf)",
        f"{none[1]} without one (`--cgroup-root none`); `bash -c true`: {f[1]}", f"{r:.2f}×", "≤ 1.1×", r <= 1.1)


def isolated():
    b = row("isolated", "(b) isolated")
    a = row("isolated", "(a) isolated")
    over = row("isolated", "(b) − (d)")
    add("isolated `run true` in a session / create → first run (p50)", f"{b[1]} / {a[1]}",
        "plain `POST /command true`; `unshare` for create", f"{over[1]} per run", "isolation overhead < 1 ms",
        num(over[1]) < 1.0)


def metrics():
    p, m = row("metrics", "GET /ping"), row("metrics", "GET /metrics |") or row("metrics", "GET /metrics")
    r = num(m[3])
    add("`GET /metrics` (median)", m[1], f"`GET /ping`: {p[1]}", f"{r:.2f}×", "< 1 ms and ≤ 2× ping",
        r <= 2.0 and num(m[1]) < 1000)


def proxy():
    d = row("proxy", "download")
    lat = row("proxy", "GET /small")
    add("download through `/proxy/{port}`", d[3], f"direct: {d[1]}", f"{num(d[4]):.2f}× throughput", "reported", None)
    add("small request through the proxy", lat[3], f"direct: {lat[1]}", f"{num(lat[4]):.2f}× the time", "reported", None)


def fs():
    for prefix, what, goal in (("download 1 GiB", "download 1 GiB (page cache)", 0.8),
                               ("upload 1 GiB", "multipart upload 1 GiB", 0.8),
                               ("search 100 000 files", "search 100 000 files (90 000 hits)", 1.0)):
        r = row("fs", prefix)
        add(what, r[1], f"{r[2]}: {r[3]}", f"{num(r[4]):.2f}×", f"≥ {goal}×", num(r[4]) >= goal)
    numeric = row("fs", "", [r[2] for r in rows("fs")].index("find -printf (lstat fields, numeric ids)"))
    add("  same search", numeric[1], f"{numeric[2]}: {numeric[3]}", f"{num(numeric[4]):.2f}×", "reported", None)


def tus():
    m, t = row("tus", "multipart"), row("tus", "tus,")
    r = num(row("tus", "ratio")[1])
    add("tus upload 1 GiB (8 MiB PATCHes)", t[1], f"multipart upload: {m[1]}", f"{r:.2f}× throughput", "≥ 0.8×",
        r >= 0.8)


def grep():
    cells = [r for r in rows("grep") if r and not r[0].startswith("pattern")]
    worst = max(num(r[5]) for r in cells)
    add(f"grep, {len(cells)} patterns (worst)", ", ".join(r[1] for r in cells),
        "`rg`: " + ", ".join(r[3] for r in cells), f"{worst:.2f}× `rg`", "≤ 1.5× `rg`", worst <= 1.5)


def archive():
    for label, what in (("export tar", "archive export, tar"), ("export tar.zst", "archive export, tar.zst"),
                        ("import tar", "archive import, tar")):
        r = next(r for r in rows("archive") if r[0] == label)
        add(what, f"{r[1]} s", f"GNU tar: {r[2]} s", f"{num(r[3]):.2f}× throughput", "≥ 0.8×", num(r[3]) >= 0.8)


def watch():
    e, i = row("watch", "execd"), row("watch", "inotifywait")
    add("file watch: `close()` → event, p50 / p99", f"{e[1]} / {e[2]} µs", f"`inotifywait -m`: {i[1]} / {i[2]} µs",
        f"{num(e[1]) / num(i[1]):.1f}× p50", "reported", None)


def ws():
    w, p = row("ws_roundtrip", "WebSocket"), row("ws_roundtrip", "local pipe")
    add("one line through `cat` over `/command/ws`, p50 / p99", f"{w[1]} / {w[2]}", f"pipe: {p[1]} / {p[2]}",
        row("ws_roundtrip", "ratio")[1] + " p50", "reported", None)


def otel():
    on = row("otel", "on")
    lat, dl = num(on[1].split("(")[1]), num(on[3].split("(")[1])
    add("OTel export on: `true` p50 / 1 GiB download", f"{on[1]} / {on[3]}", "export off, same binary, same rounds",
        f"{lat:.2f}× / {dl:.2f}×", "≥ 0.95×", lat >= 0.95 and dl >= 0.95)


for bench, fn in (("startup", startup), ("memory", memory), ("commands", commands), ("session", session),
                  ("placement", placement), ("isolated", isolated),
                  ("metrics", metrics), ("proxy", proxy), ("fs", fs), ("tus", tus), ("grep", grep),
                  ("archive", archive), ("watch", watch), ("ws_roundtrip", ws), ("otel", otel)):
    if not rows(bench):
        missing(bench, bench)
        continue
    section(bench, fn)

try:
    with open(os.path.join(OUT, "machine.txt"), encoding="utf-8") as f:
        for line in f:
            print(line.rstrip())
except OSError:
    pass
print()
print("| what | execd | floor (same run) | ratio | goal | |")
print("|---|---|---|---|---|---|")
for r in ROWS:
    print("| " + " | ".join(r) + " |")
met = sum(r[5] == "✓" for r in ROWS)
failed = sum(r[5] == "✗" for r in ROWS)
print(f"\n{met} goals met, {failed} not met, {sum(r[5] == '–' for r in ROWS)} reported without a goal.")
