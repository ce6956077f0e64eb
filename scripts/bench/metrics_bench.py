"""Driver for scripts/bench/metrics.sh: starts EXECD on a free loopback port with a temporary
state directory, times GET /ping and GET /metrics over one keep-alive connection, prints a
markdown table.

    python3 metrics_bench.py EXECD RUNS
"""
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(execd, state):
    port = free_port()
    proc = subprocess.Popen(
        [execd, "--port", str(port), "--bind", "127.0.0.1", "--state-dir", state],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "EXECD_ACCESS_TOKEN"})
    end = time.time() + 20
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/ping")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return proc, c
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("execd did not answer /ping")


def call(conn, path):
    t = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    dt = time.perf_counter() - t
    assert r.status == 200, (path, r.status, body)
    return dt, body


def stats(samples):
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


def main():
    execd, runs = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as state:
        # First call of a fresh daemon, five fresh daemons.
        firsts = []
        for _ in range(5):
            proc, conn = start(execd, state)
            dt, body = call(conn, "/metrics")
            json.loads(body)
            firsts.append(dt)
            proc.terminate()
            proc.wait(timeout=20)
        proc, conn = start(execd, state)
        try:
            for _ in range(50):  # warm-up
                call(conn, "/ping")
                call(conn, "/metrics")
            ping, metrics = [], []
            # Interleaved blocks so both see the same machine load.
            for _ in range(10):
                ping += [call(conn, "/ping")[0] for _ in range(runs // 10)]
                metrics += [call(conn, "/metrics")[0] for _ in range(runs // 10)]
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    pm, p99 = stats(ping)
    mm, m99 = stats(metrics)
    us = lambda s: f"{s * 1e6:.0f} µs"
    print()
    print(f"| request ({len(ping)} calls each, keep-alive) | median | p99 | median ratio to /ping |")
    print("|---|---|---|---|")
    print(f"| GET /ping (floor) | {us(pm)} | {us(p99)} | 1.00 |")
    print(f"| GET /metrics | {us(mm)} | {us(m99)} | {mm / pm:.2f} |")
    print(f"| GET /metrics, first call of a fresh daemon (median of 5) | {us(statistics.median(firsts))} | max {us(max(firsts))} | {statistics.median(firsts) / pm:.2f} |")
    print("| upstream Go execd GET /metrics (blocking 1 s CPU window, §8.1) | ~1 000 000 µs | | |")


if __name__ == "__main__":
    main()
