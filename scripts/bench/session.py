#!/usr/bin/env python3
"""Bash session run latency: median time of POST /session/{id}/run {"command":"true"} until the
terminal event, next to the physical floor measured in the same run: spawning `bash -c true` with
piped stdout/stderr and waiting for it (what any run must pay at least). Prints a markdown table.

    session.py EXECD_BINARY [RUNS]

Starts EXECD_BINARY itself on a free loopback port with a temporary state directory, and stops it.
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


def wait_ping(port, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ping")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit("execd did not answer /ping")


def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn.getresponse()


def run_once(conn, sid, command):
    """Returns (seconds until the terminal event was read, terminal event)."""
    t0 = time.perf_counter()
    conn.request("POST", f"/session/{sid}/run", body=json.dumps({"command": command}).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"run failed: {resp.status} {resp.read()!r}")
    buf = b""
    terminal = None
    while terminal is None:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            line, buf = buf.split(b"\n\n", 1)
            ev = json.loads(line)
            if ev["type"] in ("execution_complete", "error"):
                terminal = ev
    elapsed = time.perf_counter() - t0
    resp.read()  # the stream ends right after the terminal event
    return elapsed, terminal


def session_latency(port, runs, setup=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sid = json.loads(post(conn, "/session", {}).read())["session_id"]
    if setup:
        _, ev = run_once(conn, sid, setup)
        assert ev["type"] == "execution_complete", ev
    for _ in range(10):  # warm-up
        run_once(conn, sid, "true")
    samples = []
    for _ in range(runs):
        dt, ev = run_once(conn, sid, "true")
        assert ev["type"] == "execution_complete", ev
        samples.append(dt)
    return samples


def spawn_floor(runs, env):
    def once():
        t0 = time.perf_counter()
        p = subprocess.Popen(["bash", "-c", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env)
        p.stdout.read()
        p.wait()
        return time.perf_counter() - t0
    for _ in range(10):
        once()
    return [once() for _ in range(runs)]


def ms(samples):
    return statistics.median(samples) * 1000


def main():
    binary = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    port = free_port()
    state = tempfile.mkdtemp(prefix="execd-bench-")
    env = {k: v for k, v in os.environ.items() if k not in ("EXECD_ACCESS_TOKEN", "EXECD_ENVS")}
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--state-dir", state]
                            + os.environ.get("EXECD_BENCH_ARGS", "").split(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ping(port)
        # Interleave the floor with the runs so both see the same machine load.
        floor, plain, heavy = [], [], []
        heavy_setup = "".join(f"v{i}='value number {i}'\n" for i in range(200))
        heavy_setup += "".join(f"f{i}() {{ echo {i}; }}\n" for i in range(50))
        heavy_setup += "".join(f"alias a{i}='echo {i}'\n" for i in range(20))
        rounds = 4
        for _ in range(rounds):
            floor += spawn_floor(runs // rounds, env)
            plain += session_latency(port, runs // rounds)
            heavy += session_latency(port, runs // rounds, heavy_setup)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", state], check=False)
    f = ms(floor)
    print(f"| measurement (median of {len(floor)}) | ms | ratio to floor |")
    print("|---|---:|---:|")
    print(f"| floor: spawn `bash -c true`, piped stdio, wait | {f:.2f} | 1.00 |")
    print(f"| session run `true` to terminal event (new session) | {ms(plain):.2f} | {ms(plain) / f:.2f} |")
    print(f"| same, session holding 200 variables, 50 functions, 20 aliases | {ms(heavy):.2f} | {ms(heavy) / f:.2f} |")


if __name__ == "__main__":
    main()
