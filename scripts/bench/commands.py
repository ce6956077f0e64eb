#!/usr/bin/env python3
"""Driver of scripts/bench/commands.sh: starts execd, runs the Rust client (commands-client) for
each measurement and its floor, prints a markdown table with ratios.

usage: commands.py EXECD CLIENT RUNS [SSE_FLOOR]

SSE_FLOOR (commands-sse-floor) is a minimal axum server streaming the same generator's stdout as
the same bare events; the streaming rows then also report execd / minimal-axum-SSE ratios.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20
LINE = "a" * 99  # + "\n" = 100-byte lines
LINES_CMD = f"yes {LINE} | head -c {200 * MIB}"
RAW_CMD = f"head -c {200 * MIB} /dev/zero | tr '\\0' x"
EACH_BYTES = 52428 * 100  # 5 MiB rounded down to whole 100-byte lines
EACH_CMD = f"yes {LINE} | head -c {EACH_BYTES}"
CONCURRENT = 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class Execd:
    def __init__(self, binary, state_root=None, *extra):
        self.state = tempfile.mkdtemp(prefix="execd-bench-", dir=state_root)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--state-dir", self.state, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("execd did not start")

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", self.state])


class SseFloor(Execd):
    """The minimal axum SSE server (scripts/bench/commands-sse-floor), same client protocol."""

    def __init__(self, binary):
        self.state = tempfile.mkdtemp(prefix="sse-floor-")
        self.port = free_port()
        self.proc = subprocess.Popen([binary, str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("commands-sse-floor did not start")


def client(exe, *args):
    out = subprocess.run([exe, *map(str, args)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    execd_bin, exe, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    floor_bin = sys.argv[4] if len(sys.argv) > 4 else None
    rows = []
    axum = {}
    if floor_bin:
        f = SseFloor(floor_bin)
        try:
            for mode, cmd in (("lines", LINES_CMD), ("raw", RAW_CMD)):
                st = client(exe, "stream", f.addr, cmd, mode)
                assert st["bytes"] == 200 * MIB and st["terminal"] == "execution_complete", st
                axum[mode] = st["mib_s"]
            conc = client(exe, "concurrent", f.addr, CONCURRENT, EACH_CMD)
            assert conc["bytes"] == CONCURRENT * EACH_BYTES and conc["complete"] == CONCURRENT, conc
            axum["concurrent"] = conc["wall_s"]
        finally:
            f.stop()
    d = Execd(execd_bin)
    try:
        floor = client(exe, "floor-spawn", runs)
        lat = client(exe, "latency", d.addr, runs)
        rows.append(("`true` → terminal event, median of %d" % runs, f"{lat['median_ms']:.2f} ms",
                     f"{floor['median_ms']:.2f} ms (spawn `bash -c true`, piped)",
                     f"{lat['median_ms'] / floor['median_ms']:.2f}×"))
        rows.append(("  same, p99", f"{lat['p99_ms']:.2f} ms", f"{floor['p99_ms']:.2f} ms",
                     f"{lat['p99_ms'] / floor['p99_ms']:.2f}×"))
        # What the row's setting adds that is the host's: the same binary with its state on tmpfs
        # (this host's ext4 has no journal, so every file created scans for recently deleted
        # inodes) and no cgroup leaf (cgroup v1 here); and what any HTTP endpoint costs: the
        # minimal axum SSE server running the same `true` (no journal, no record, no leaf).
        refs = [("  same, state on tmpfs and no cgroup leaf",
                 lambda: Execd(execd_bin, "/dev/shm" if os.path.isdir("/dev/shm") else None, "--cgroup-root", "none"))]
        if floor_bin:
            refs.append(("  same through a minimal axum SSE endpoint", lambda: SseFloor(floor_bin)))
        for label, start in refs:
            server = start()
            try:
                client(exe, "latency", server.addr, 20)
                ref = client(exe, "latency", server.addr, runs)
            finally:
                server.stop()
            rows.append((label, f"{ref['median_ms']:.2f} ms", f"{floor['median_ms']:.2f} ms",
                         f"{ref['median_ms'] / floor['median_ms']:.2f}×"))
        for name, cmd, mode in (("100-byte lines, 200 MiB", LINES_CMD, "lines"),
                                ("no newlines (1 MiB events), 200 MiB", RAW_CMD, "raw")):
            fl = client(exe, "floor-pipe", cmd)
            st = client(exe, "stream", d.addr, cmd, mode)
            assert st["bytes"] == 200 * MIB, st
            assert st["terminal"] == "execution_complete", st
            rows.append((f"stream {name}", f"{st['mib_s']:.0f} MiB/s", f"{fl['mib_s']:.0f} MiB/s (pipe)",
                         f"{st['mib_s'] / fl['mib_s']:.2f}×"))
            if mode in axum:
                rows.append(("  same vs minimal axum SSE", f"{st['mib_s']:.0f} MiB/s",
                             f"{axum[mode]:.0f} MiB/s (minimal axum SSE)", f"{st['mib_s'] / axum[mode]:.2f}×"))
    finally:
        d.stop()
    d = Execd(execd_bin)
    try:
        idle = status_kib(d.proc.pid, "VmRSS:")
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], status_kib(d.proc.pid, "VmRSS:"))
                except OSError:
                    pass
                time.sleep(0.02)

        t = threading.Thread(target=sample)
        t.start()
        conc = client(exe, "concurrent", d.addr, CONCURRENT, EACH_CMD)
        done.set()
        t.join()
        hwm = status_kib(d.proc.pid, "VmHWM:")
        want = CONCURRENT * EACH_BYTES
        assert conc["bytes"] == want and conc["complete"] == CONCURRENT, conc
        one = client(exe, "floor-pipe", f"for i in $(seq {CONCURRENT}); do {EACH_CMD} & done; wait")
        rows.append((f"{CONCURRENT} concurrent × 5 MiB: all bytes delivered", f"{conc['bytes'] // MIB} MiB in {conc['wall_s']:.1f} s",
                     f"{one['secs']:.1f} s (same {CONCURRENT} generators into pipes)",
                     f"{conc['wall_s'] / one['secs']:.2f}×"))
        if "concurrent" in axum:
            rows.append(("  same vs minimal axum SSE", f"{conc['wall_s']:.1f} s",
                         f"{axum['concurrent']:.1f} s (minimal axum SSE)", f"{conc['wall_s'] / axum['concurrent']:.2f}×"))
        rows.append(("  time to terminal event p50 / p99", f"{conc['p50_s']:.2f} s / {conc['p99_s']:.2f} s", "", ""))
        rows.append(("  execd RSS idle / peak (VmHWM)", f"{idle / 1024:.1f} MiB / {max(hwm, peak[0]) / 1024:.1f} MiB", "", ""))
    finally:
        d.stop()
    print("| measurement | execd | floor | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
