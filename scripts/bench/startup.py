#!/usr/bin/env python3
"""Startup benchmark driver (scripts/bench/startup.sh builds the binaries and calls this).

For each server binary: file size, exec -> first successful `GET /ping` (median and p90 of N
runs), and resident memory (VmRSS) SETTLE_S after that first ping (execd prepares its cgroup
placement 20 ms after the start, off the path to the first answer: that memory is counted).
Each binary is first dropped from the page cache and started once uncounted (see `evict`). The
floor row is the same binary run with `--version`-style no-op arguments measured exec -> exit,
i.e. what the kernel and the loader cost before any server code runs.

usage: startup.py RUNS NAME=BINARY[,ENV=VAL...] ...   (the first server is the subject; the last is
the reference the ratios are taken against)
"""
import os
import socket
import statistics
import subprocess
import sys
import time

DEADLINE_S = 10.0
SETTLE_S = 0.1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port):
    """One HTTP/1.1 GET /ping; True on a 200 status line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_start(binary, env):
    port = free_port()
    e = dict(os.environ)
    e.update(env)
    e["PORT"] = str(port)  # minimal-axum
    e["EXECD_PORT"] = str(port)  # execd
    e["EXECD_BIND"] = "127.0.0.1"
    t0 = time.perf_counter()
    p = subprocess.Popen([binary], env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        while not ping(port):
            if p.poll() is not None:
                raise RuntimeError(f"{binary} exited with {p.returncode}")
            if time.perf_counter() - t0 > DEADLINE_S:
                raise RuntimeError(f"{binary}: no /ping within {DEADLINE_S}s")
            time.sleep(0.0002)
        t1 = time.perf_counter()
        time.sleep(SETTLE_S)
        rss = rss_kib(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return (t1 - t0) * 1000.0, rss


def evict(binary):
    """Drops the binary's pages from the page cache (written back first), so that the runs map it
    as a container's first exec does: the kernel reads it in as the faults and readahead ask.
    A file the linker or `cp` just wrote sits in the cache in the pieces it was written in, and
    the same bytes were then measured 0.3 MiB apart in resident code from one copy to another
    (2026-12-05: 992 vs 1 328 kB)."""
    fd = os.open(binary, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def exec_floor(binary, runs):
    """exec -> exit of `binary --version`: process creation + loading, no server."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([binary, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main():
    runs = int(sys.argv[1])
    rows = []
    for spec in sys.argv[2:]:
        parts = spec.split(",")
        name, binary = parts[0].split("=", 1)
        env = dict(kv.split("=", 1) for kv in parts[1:])
        # Read in by an exec, then a start not counted (the one that reads the file from disk).
        evict(binary)
        one_start(binary, env)
        samples = [one_start(binary, env) for _ in range(runs)]
        times = sorted(s[0] for s in samples)
        rss = statistics.median(s[1] for s in samples)
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        rows.append((name, binary, os.path.getsize(binary), statistics.median(times), p90, rss))
    floor = exec_floor(rows[0][1], runs)
    ref = rows[-1]
    print(f"runs per binary: {runs}; exec floor ({rows[0][0]} --version, exec -> exit): {floor:.2f} ms")
    print()
    print("| binary | size | idle RSS after 1st /ping | exec -> 1st /ping (median) | p90 |")
    print("|---|---|---|---|---|")
    for name, _, size, med, p90, rss in rows:
        print(f"| {name} | {size / 1024 / 1024:.2f} MiB | {rss / 1024:.1f} MiB | {med:.2f} ms | {p90:.2f} ms |")
    if len(rows) > 1:
        subj = rows[0]
        print()
        print(f"| ratio {subj[0]} / {ref[0]} | size x{subj[2] / ref[2]:.2f} | RSS x{subj[5] / ref[5]:.2f} "
              f"| startup x{subj[3] / ref[3]:.2f} | p90 x{subj[4] / ref[4]:.2f} |")


if __name__ == "__main__":
    main()
