"""Driver for scripts/bench/watch.sh: the latency from close() of a written file to its event, on
execd's watch SSE stream (X41) and on `inotifywait -m` watching the same directory at the same time.

    python3 watch_bench.py WRITES EXECD

WRITES files are made first (no create event during the timed part); then, one at a time, each is
opened, written and closed, and the writer waits until both watchers have reported that path (a
deadline of 5 s each) before the next write. Distinct files, so execd's 50 ms modify coalescing
(per path) never holds an event back. Prints p50/p99 of both and their ratio.
"""
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchnet import start_execd


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    writes, execd = int(sys.argv[1]), sys.argv[2]
    work = tempfile.mkdtemp(prefix="execd-watch-bench-", dir="/var/tmp")
    state = os.path.join(work, "state")
    os.mkdir(state, 0o700)
    tree = os.path.join(work, "tree")
    os.mkdir(tree)
    names = [f"f{i}.txt" for i in range(writes)]
    for n in names:
        open(os.path.join(tree, n), "wb").close()

    proc, port = start_execd(execd, state)
    inw = None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/files/watches", json.dumps({"path": tree, "recursive": True}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 201:
            raise SystemExit(f"create watch: {resp.status} {body!r}")
        wid = json.loads(body)["id"]

        seen = {"execd": {}, "inotifywait": {}}
        cond = threading.Condition()

        def record(who, path):
            now = time.perf_counter()
            with cond:
                seen[who].setdefault(os.path.basename(path), now)
                cond.notify_all()

        sse = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sse.request("GET", f"/files/watches/{wid}/events")
        stream = sse.getresponse()
        if stream.status != 200:
            raise SystemExit(f"events: {stream.status}")

        def read_sse():
            for line in stream:
                if line.startswith(b"data:"):
                    ev = json.loads(line[5:])
                    if ev.get("type") == "modify":
                        record("execd", ev["path"])

        inw = subprocess.Popen(["inotifywait", "-m", "-q", "-e", "close_write", "--format", "%w%f", tree],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # inotifywait prints "Watches established." on stderr once it listens (even with -q
        # only errors are quiet in some versions); wait for its watch by a probe write instead.

        def read_inw():
            for line in inw.stdout:
                record("inotifywait", line.decode().rstrip("\n"))

        threading.Thread(target=read_sse, daemon=True).start()
        threading.Thread(target=read_inw, daemon=True).start()

        # Probe until both report: both are listening before the timed writes start.
        probe = os.path.join(tree, "probe")
        deadline = time.time() + 10
        while True:
            with open(probe, "wb") as fh:
                fh.write(b"x")
            with cond:
                cond.wait_for(lambda: "probe" in seen["execd"] and "probe" in seen["inotifywait"], 0.2)
                if "probe" in seen["execd"] and "probe" in seen["inotifywait"]:
                    break
            if time.time() > deadline:
                raise SystemExit("watchers did not report the probe write within 10 s")
            time.sleep(0.06)  # past the coalescing window of the probe path

        lat = {"execd": [], "inotifywait": []}
        for n in names:
            fh = open(os.path.join(tree, n), "wb")
            fh.write(b"hello\n")
            fh.flush()
            # From the close() call: the watchers' threads may see the event before close()
            # returns to this one.
            closed = time.perf_counter()
            fh.close()
            with cond:
                ok = cond.wait_for(lambda: n in seen["execd"] and n in seen["inotifywait"], 5.0)
            if not ok:
                raise SystemExit(f"no event for {n} within 5 s: {[w for w in seen if n not in seen[w]]}")
            for who in lat:
                lat[who].append((seen[who][n] - closed) * 1e6)

        print(f"{writes} writes, close() → event, microseconds")
        print()
        print("| watcher | p50 (µs) | p99 (µs) | mean (µs) |")
        print("|---|---|---|---|")
        for who in ("inotifywait", "execd"):
            xs = lat[who]
            print(f"| {who} | {percentile(xs, 0.5):.0f} | {percentile(xs, 0.99):.0f} | {statistics.mean(xs):.0f} |")
        p50 = percentile(lat["execd"], 0.5) / percentile(lat["inotifywait"], 0.5)
        p99 = percentile(lat["execd"], 0.99) / percentile(lat["inotifywait"], 0.99)
        print()
        print(f"execd / inotifywait: p50 {p50:.2f}×, p99 {p99:.2f}×")
    finally:
        if inw:
            inw.kill()
            inw.wait()
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
