"""Driver for scripts/bench/grep.sh: starts execd on a loopback port, times `GET /files/grep`
(curl reading the whole NDJSON answer) against `rg --json` and plain `rg` on the same tree and
pattern, the three taking turns RUNS times, and prints a markdown table of medians and ratios.

    python3 grep_bench.py RUNS TREE EXECD
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

from benchnet import start_execd

# (label, pattern, regex?, ignore_case?)
CASES = [
    ("literal, no match", "ZQXJ_no_such_text_ZQXJ", False, False),
    ("literal, common (`unsafe`)", "unsafe", False, False),
    ("regex `fn \\w+_test`", r"fn \w+_test", True, False),
    ("literal, ignore_case (`mutex`)", "mutex", False, True),
]
RG_BASE = ["rg", "--no-config", "--no-require-git", "--no-ignore-global"]




def run(cmd):
    start = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed ({out.returncode})")
    return elapsed, out.stdout


def main():
    runs, tree, execd = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    state = tempfile.mkdtemp(prefix="execd-grep-bench-")
    proc, port = start_execd(execd, state)
    rows = []
    try:
        for label, pattern, regex, icase in CASES:
            q = {"path": tree, "pattern": pattern, "max_matches": "1000000000"}
            flags = []
            if regex:
                q["regex"] = "true"
            else:
                flags.append("-F")
            if icase:
                q["ignore_case"] = "true"
                flags.append("-i")
            url = f"http://127.0.0.1:{port}/files/grep?{urllib.parse.urlencode(q)}"
            cmds = [
                ["curl", "-sS", "--fail", url],
                RG_BASE + ["--json"] + flags + ["--regexp", pattern, tree],
                RG_BASE + flags + ["--regexp", pattern, tree],
            ]
            for c in cmds:  # warm the page cache and check both agree on the count
                _, out = run(c)
            _, body = run(cmds[0])
            end = body.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
            times = [[] for _ in cmds]
            for _ in range(runs):
                for i, c in enumerate(cmds):
                    times[i].append(run(c)[0])
            med = [statistics.median(t) for t in times]
            rows.append((label, med, end))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print()
    print("| pattern | execd `/files/grep` | `rg --json` | `rg` | execd / rg --json | execd / rg |")
    print("|---|---|---|---|---|---|")
    for label, (e, rj, r), _ in rows:
        print(f"| {label} | {e:.3f} s | {rj:.3f} s | {r:.3f} s | {e / rj:.2f}× | {e / r:.2f}× |")
    print()
    for label, _, end in rows:
        print(f"- {label}: {end}")
    print(f"\n(median of {runs} runs, the three commands taking turns; time to the last byte)")


if __name__ == "__main__":
    main()
