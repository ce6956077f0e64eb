#!/usr/bin/env python3
"""`POST /command {"command":"true"}` with a pause before each call, as an agent's commands come
(not back to back as in ab.sh): two execd binaries side by side, taking turns, and the floor
(spawning `bash -c true` with pipes, after the same pause) in the same loop. Not part of the test
suite. On cgroup v1 a migration into a cgroup after a quiet moment waits for an RCU grace period
(see BENCHMARKS.md, "Commands spaced apart"); back-to-back calls hide that.

    scripts/bench/spaced.py OLD_EXECD NEW_EXECD [CALLS] [PAUSE_S]   (default 60 calls, 0.05 s)
    SPACED_OLD_ARGS="--cgroup-root none" scripts/bench/spaced.py EXECD EXECD   (the cost of a leaf)

SPACED_OLD_ARGS / SPACED_NEW_ARGS add execd arguments to one side (as ab.sh's AB_*_ARGS). The
rows are `floor`, `old` and `new`, each with its binary and arguments.
"""
import os
import http.client
import statistics
import subprocess
import sys
import tempfile
import time

from benchnet import start_execd


def main():
    bins = sys.argv[1:3]
    args = [os.environ.get("SPACED_OLD_ARGS", "").split(), os.environ.get("SPACED_NEW_ARGS", "").split()]
    labels = [f"{side} ({' '.join([b, *a])})" for side, b, a in zip(["old", "new"], bins, args)]
    calls = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    servers = []
    try:
        for b, a in zip(bins, args):
            proc, port = start_execd(b, tempfile.mkdtemp(prefix="execd-spaced-"), *a)
            servers.append((proc, http.client.HTTPConnection("127.0.0.1", port, timeout=30)))
        res = {name: [] for name in ["floor", *labels]}
        for _ in range(calls):
            for b, (_, conn) in zip(labels, servers):
                time.sleep(pause)
                t0 = time.perf_counter()
                conn.request("POST", "/command", body=b'{"command":"true"}',
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                res[b].append((time.perf_counter() - t0) * 1e3)
                if resp.status != 200 or b"execution_complete" not in body:
                    raise SystemExit(f"{b}: {resp.status} {body[-300:]!r}")
            time.sleep(pause)
            t0 = time.perf_counter()
            subprocess.run(["bash", "-c", "true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
            res["floor"].append((time.perf_counter() - t0) * 1e3)
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait()
    floor = statistics.median(res["floor"])
    print(f"{calls} calls each, {pause * 1000:.0f} ms pause before each\n")
    print("| | p50 | p90 | p50 / floor |")
    print("|---|---|---|---|")
    for name, v in res.items():
        v = sorted(v)
        p50 = statistics.median(v)
        print(f"| {name} | {p50:.2f} ms | {v[int(len(v) * 0.9)]:.2f} ms | {p50 / floor:.2f}× |")


if __name__ == "__main__":
    main()
