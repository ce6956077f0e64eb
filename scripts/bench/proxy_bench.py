"""Driver for scripts/bench/proxy.sh: starts EXECD, UPSTREAM and a raw TCP relay (UPSTREAM with
RELAY_TO) on free loopback ports, measures curl download throughput and keep-alive request latency
directly, through the raw relay (the floor for any user-space proxy) and through /proxy/{port}/,
prints a markdown table with ratios.

    python3 proxy_bench.py EXECD UPSTREAM RUNS
"""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

GIB = 1 << 30
DOWNLOAD = 4 * GIB
LATENCY_CALLS = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    end = time.time() + 20
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}")


def download(url):
    """Bytes per second of one curl download to /dev/null."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                         check=True, capture_output=True, text=True).stdout.split()
    size, secs = int(out[0]), float(out[1])
    assert size == DOWNLOAD, (url, size)
    return size / secs


def cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(port, path):
    """Median seconds of LATENCY_CALLS keep-alive GETs (after a warm-up)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    for i in range(LATENCY_CALLS + 50):
        t = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        dt = time.perf_counter() - t
        assert r.status == 200, (path, r.status)
        if i >= 50:
            samples.append(dt)
    c.close()
    return statistics.median(samples)


def main():
    execd, upstream, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    up_port, ex_port, relay_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as state:
        up = subprocess.Popen([upstream], env={**os.environ, "PORT": str(up_port)})
        relay = subprocess.Popen([upstream], env={**os.environ, "PORT": str(relay_port), "RELAY_TO": str(up_port)})
        ex = subprocess.Popen([execd, "--port", str(ex_port), "--bind", "127.0.0.1", "--state-dir", state],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={k: v for k, v in os.environ.items() if k != "EXECD_ACCESS_TOKEN"})
        try:
            wait_port(up_port, up)
            wait_port(ex_port, ex)
            wait_port(relay_port, relay)
            direct = f"http://127.0.0.1:{up_port}"
            relayed = f"http://127.0.0.1:{relay_port}"
            proxied = f"http://127.0.0.1:{ex_port}/proxy/{up_port}"
            d_tp, r_tp, p_tp = [], [], []
            cpu0 = cpu_seconds(ex.pid)
            for _ in range(runs):  # interleaved so all see the same machine load
                d_tp.append(download(f"{direct}/bytes?n={DOWNLOAD}"))
                r_tp.append(download(f"{relayed}/bytes?n={DOWNLOAD}"))
                p_tp.append(download(f"{proxied}/bytes?n={DOWNLOAD}"))
            execd_cpu_per_gib = (cpu_seconds(ex.pid) - cpu0) / (runs * DOWNLOAD / GIB)
            d_lat = latency(up_port, "/small")
            r_lat = latency(relay_port, "/small")
            p_lat = latency(ex_port, f"/proxy/{up_port}/small")
            ping = latency(ex_port, "/ping")
            self_ping = latency(ex_port, f"/proxy/{ex_port}/ping")
        finally:
            for p in (ex, relay, up):
                p.terminate()
                p.wait(timeout=20)
    d, r, p = statistics.median(d_tp), statistics.median(r_tp), statistics.median(p_tp)
    mib = lambda bps: f"{bps / (1 << 20):.0f} MiB/s"
    us = lambda s: f"{s * 1e6:.0f} µs"
    print()
    print("| measurement | direct | raw TCP relay | execd /proxy | execd / direct | execd / relay |")
    print("|---|---|---|---|---|---|")
    print(f"| download 4 GiB, curl, median of {runs} | {mib(d)} | {mib(r)} | {mib(p)} | {p / d:.2f} | {p / r:.2f} |")
    print(f"| GET /small latency, median of {LATENCY_CALLS} keep-alive | {us(d_lat)} | {us(r_lat)} | {us(p_lat)} | {p_lat / d_lat:.2f} | {p_lat / r_lat:.2f} |")
    print(f"| execd to itself: GET /ping vs /proxy/<own port>/ping, median of {LATENCY_CALLS} | {us(ping)} | | {us(self_ping)} | {self_ping / ping:.2f} | |")
    print(f"\nexecd CPU time per proxied GiB: {execd_cpu_per_gib:.2f} s")


if __name__ == "__main__":
    main()
