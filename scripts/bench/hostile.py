#!/usr/bin/env python3
"""Hostile-client figures for RELIABILITY.md (issue #13): what execd holds, and how fast a real
client is served, while many clients misbehave. Loopback only; every loop is bounded.

    hostile.py EXECD_BIN [N]

Phases (N clients each, default 1000):
  slowloris  N connections that send "GET /pi" and stop
  stalled    N downloads of a 64 MiB file whose clients never read
  bodies     N uploads that send their headers and part of the body, then stop
For each: connections execd holds (its socket fds), RSS, threads, the p50/max latency of a real
`POST /command echo` and `GET /files/info` meanwhile, then the same figures once the stall
deadline has passed. Prints a markdown table.
"""
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
STALL = 5  # --stall-timeout for this run, seconds
HEADER = 5  # --header-timeout


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def sockets(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def request(port, raw, timeout=30.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(raw)
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    return out


def timed_real_requests(port, path):
    """p50 and max milliseconds of 20 real requests (a command and a stat)."""
    cmd = json.dumps({"command": "echo ok"}).encode()
    ms = []
    for i in range(20):
        t = time.perf_counter()
        if i % 2 == 0:
            r = request(port, b"POST /command HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(cmd)}\r\n\r\n".encode() + cmd)
            assert b"execution_complete" in r, r[:300]
        else:
            r = request(port, f"GET /files/info?path={path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert r.startswith(b"HTTP/1.1 200"), r[:300]
        ms.append((time.perf_counter() - t) * 1000)
    return statistics.median(ms), max(ms)


def figures(pid, port, path):
    p50, worst = timed_real_requests(port, path)
    return {
        "sockets": sockets(pid),
        "rss_mib": proc_status(pid, "VmRSS") / 1024,
        "threads": proc_status(pid, "Threads"),
        "p50": p50,
        "max": worst,
    }


def open_many(port, first_bytes, read=False):
    conns = []
    for _ in range(N):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(first_bytes)
            conns.append(s)
        except OSError:
            break
    return conns


def main():
    execd = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    work = tempfile.mkdtemp()
    big = os.path.join(work, "big.bin")
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [execd, "--bind", "127.0.0.1", "--port", str(port), "--state-dir", os.path.join(work, "state"),
         f"--stall-timeout={STALL}s", f"--header-timeout={HEADER}s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                request(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                break
            except OSError:
                time.sleep(0.02)
        pid = proc.pid
        rows = [("idle", figures(pid, port, big))]
        phases = [
            ("slowloris", b"GET /pi"),
            ("stalled downloads", f"GET /files/download?path={big} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
            ("stalled uploads", b"POST /files/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                                b"Content-Length: 100000000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n"),
        ]
        for name, first in phases:
            conns = open_many(port, first)
            time.sleep(1)  # let execd pick them up (a measurement, not a test)
            f = figures(pid, port, big)
            f["opened"] = len(conns)
            rows.append((f"{len(conns)} {name}", f))
            time.sleep(max(STALL, HEADER) + 2)
            rows.append((f"  … after the {STALL}s deadline", figures(pid, port, big)))
            for c in conns:
                c.close()
            time.sleep(0.5)
        rows.append(("all closed", figures(pid, port, big)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"execd {execd}; N={N}; --stall-timeout={STALL}s --header-timeout={HEADER}s; {os.cpu_count()} cores")
    print()
    print("| phase | sockets held | RSS MiB | threads | real request p50 / max ms |")
    print("|---|---|---|---|---|")
    for name, f in rows:
        print(f"| {name} | {f['sockets']} | {f['rss_mib']:.1f} | {f['threads']} | {f['p50']:.1f} / {f['max']:.1f} |")


if __name__ == "__main__":
    main()
