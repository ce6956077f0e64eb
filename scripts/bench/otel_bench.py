"""Driver for scripts/bench/otel.sh: three execd processes from one binary (OTel export off, on to
the decoding OTLP receiver, on to a collector that never answers), measured in interleaved rounds.

    python otel_bench.py EXECD COMMANDS_CLIENT RUNS
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnet import free_port, start_execd  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ROUNDS = 7
GIB = 1 << 30


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def client(exe, *args):
    out = subprocess.run([exe, *map(str, args)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def download_s(port, path):
    """Seconds to fetch PATH whole through GET /files/download (curl, output discarded)."""
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
         f"http://127.0.0.1:{port}/files/download?path={path}"],
        check=True, capture_output=True, text=True).stdout.split()
    assert int(out[1]) == GIB, out
    return float(out[0])


def ping(port):
    subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", f"http://127.0.0.1:{port}/ping"], check=True)


def main():
    execd, exe, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    work = tempfile.mkdtemp(prefix="otel-bench-")
    big = os.path.join(work, "big.bin")
    with open(big, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(1024):
            f.write(chunk)
    recv_out = os.path.join(work, "otlp.jsonl")
    receiver = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/otel/receiver.py"), recv_out],
                                stdout=subprocess.PIPE, text=True)
    recv_port = int(receiver.stdout.readline().strip())
    # A collector that accepts (the kernel's backlog) and never reads or answers.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    hung_port = hung.getsockname()[1]

    base_env = dict(os.environ)
    variants = [("off", {}),
                ("on (receiver)", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{recv_port}"}),
                ("on (collector hangs)", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hung_port}"})]
    procs = []
    try:
        for name, extra in variants:
            state = tempfile.mkdtemp(dir=work)
            os.environ.clear()
            os.environ.update(base_env)
            os.environ.update(extra)
            proc, port = start_execd(execd, state)
            ping(port)
            procs.append({"name": name, "proc": proc, "port": port, "idle": rss_kib(proc.pid),
                          "lat": [], "p99": [], "dl": []})
        os.environ.clear()
        os.environ.update(base_env)
        for p in procs:  # warm-up
            client(exe, "latency", f"127.0.0.1:{p['port']}", 50)
        for _ in range(ROUNDS):
            for p in procs:
                r = client(exe, "latency", f"127.0.0.1:{p['port']}", runs)
                p["lat"].append(r["median_ms"])
                p["p99"].append(r["p99_ms"])
            for p in procs:
                p["dl"].append(download_s(p["port"], big))
        for p in procs:
            p["after"] = rss_kib(p["proc"].pid)
        spans = sum(1 for line in open(recv_out) if '"signal": "span"' in line)
    finally:
        for p in procs:
            p["proc"].terminate()
            p["proc"].wait(timeout=20)
        receiver.terminate()
        receiver.wait(timeout=10)
        hung.close()
        subprocess.run(["rm", "-rf", work], check=False)

    print(f"{ROUNDS} interleaved rounds; latency: {runs} sequential `POST /command true` per round; "
          f"download: 1 GiB per round; receiver got {spans} spans")
    # Median over the rounds, and the best round (the least disturbed by other load on the machine).
    for label, pick_lat, pick_dl in (("median of the rounds", statistics.median, statistics.median),
                                     ("best round", min, min)):
        off = procs[0]
        lat_off, p99_off = pick_lat(off["lat"]), pick_lat(off["p99"])
        dl_off = GIB / (1 << 20) / pick_dl(off["dl"])
        print()
        print(f"{label}:")
        print()
        print("| export | `true` → terminal, p50 | p99 | 1 GiB download | idle RSS after /ping | "
              "RSS after the workload |")
        print("|---|---|---|---|---|---|")
        for p in procs:
            lat, p99 = pick_lat(p["lat"]), pick_lat(p["p99"])
            dl = GIB / (1 << 20) / pick_dl(p["dl"])
            print(f"| {p['name']} | {lat:.3f} ms ({lat_off / lat:.2f}×) | {p99:.3f} ms ({p99_off / p99:.2f}×) "
                  f"| {dl:.0f} MiB/s ({dl / dl_off:.2f}×) | {p['idle'] / 1024:.1f} MiB | {p['after'] / 1024:.1f} MiB |")
    print()
    print("Ratios are speed relative to export off (1.00× = same; the goal is ≥ 0.95×).")


if __name__ == "__main__":
    main()
