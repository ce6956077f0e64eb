#!/usr/bin/env python3
"""Driver of scripts/bench/isolated.sh: isolated sessions (/v1/isolated, issue #23) against the
namespace floor and plain commands, in interleaved rounds on one execd. Prints markdown tables.

    isolated.py EXECD [RUNS] [CREATES] [ROUNDS]
    EXECD_BENCH_ARGS="--cgroup-root none" isolated.py …   # extra execd flags

Per round (same machine load for every row):
  (a) POST /v1/isolated/session, then the first `run true` until its terminal event (then DELETE,
      not timed), CREATES times;
  (b) `run true` in one existing session until its terminal event, RUNS times (`true` is a bash
      builtin: no process is started, the session's shell answers itself);
  (b') `run /bin/true` the same way: one fork and exec inside the session's namespaces;
  (c) `unshare -m -p -f --mount-proc true` spawned with piped stdout/stderr, read to EOF, waited;
  (d) `POST /command {"command":"true"}` until its terminal event, RUNS times;
  (e) `bash -c true` spawned the same way as (c) (the usual floor).
Every HTTP call goes over one kept-alive loopback connection with a 30 s socket timeout; every
loop has a fixed count.
"""
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnet import start_execd  # noqa: E402

TERMINAL = ("execution_complete", "error")
WARMUP = 10


def request(conn, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    return conn.getresponse()


def until_terminal(resp):
    """Reads a bare-JSON event stream (frames separated by a blank line) until the terminal
    event; returns it (None if the stream ended without one)."""
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            return None
        buf += chunk
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            frame = frame.strip()
            if frame:
                ev = json.loads(frame)
                if ev.get("type") in TERMINAL:
                    return ev


def stream(conn, path, body):
    """Seconds from sending POST PATH BODY to reading its terminal event (which must be
    execution_complete)."""
    t0 = time.perf_counter()
    resp = request(conn, "POST", path, body)
    if resp.status != 200:
        raise SystemExit(f"{path}: {resp.status} {resp.read()!r}")
    ev = until_terminal(resp)
    dt = time.perf_counter() - t0
    resp.read()  # the stream ends right after its terminal event
    if not ev or ev["type"] != "execution_complete":
        raise SystemExit(f"{path}: no execution_complete: {ev}")
    return dt


def create(conn, workspace):
    resp = request(conn, "POST", "/v1/isolated/session", {"workspace": {"path": workspace}})
    body = resp.read()
    if resp.status != 201:
        raise SystemExit(f"create: {resp.status} {body!r}")
    return json.loads(body)["session_id"]


def delete(conn, sid):
    resp = request(conn, "DELETE", f"/v1/isolated/session/{sid}")
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"delete {sid}: {resp.status}")


def run_true(conn, sid, code="true"):
    return stream(conn, f"/v1/isolated/session/{sid}/run", {"code": code})


def create_and_first_run(conn, workspace, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sid = create(conn, workspace)
        run_true(conn, sid)
        out.append(time.perf_counter() - t0)
        delete(conn, sid)
    return out


def spawn(argv, env, n):
    def once():
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env)
        out = p.stdout.read()
        if p.wait(timeout=30) != 0:
            raise SystemExit(f"{argv} failed: {out!r}")
        return time.perf_counter() - t0
    return [once() for _ in range(n)]


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


ROWS = [
    ("a", "(a) isolated: create → first `run true` terminal event"),
    ("b", "(b) isolated: `run true` in an existing session (builtin)"),
    ("b'", "(b′) isolated: `run /bin/true` in an existing session"),
    ("c", "(c) `unshare -m -p -f --mount-proc true`, piped"),
    ("d", "(d) `POST /command true` → terminal event"),
    ("e", "(e) floor: `bash -c true`, piped"),
]


def main():
    execd = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    creates = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 9
    env = {k: v for k, v in os.environ.items() if k not in ("EXECD_ACCESS_TOKEN", "EXECD_ENVS")}
    unshare = ["unshare", "-m", "-p", "-f", "--mount-proc", "true"]
    samples = {k: [] for k, _ in ROWS}  # one (p50, p99) per round
    with tempfile.TemporaryDirectory(prefix="execd-isobench-") as work:
        state = os.path.join(work, "state")
        ws = os.path.join(work, "ws")
        os.mkdir(state)
        os.mkdir(ws)
        proc, port = start_execd(execd, state, *os.environ.get("EXECD_BENCH_ARGS", "").split())
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            resp = request(conn, "GET", "/v1/isolated/capabilities")
            caps = json.loads(resp.read())
            if caps.get("available") is not True:
                raise SystemExit(f"isolation unavailable: {caps}")
            sid = create(conn, ws)
            # Warm-up of every path.
            create_and_first_run(conn, ws, 3)
            for _ in range(WARMUP):
                run_true(conn, sid)
                run_true(conn, sid, "/bin/true")
                stream(conn, "/command", {"command": "true"})
            spawn(unshare, env, WARMUP)
            spawn(["bash", "-c", "true"], env, WARMUP)
            for _ in range(rounds):
                got = {
                    "a": create_and_first_run(conn, ws, creates),
                    "b": [run_true(conn, sid) for _ in range(runs)],
                    "b'": [run_true(conn, sid, "/bin/true") for _ in range(runs)],
                    "c": spawn(unshare, env, runs),
                    "d": [stream(conn, "/command", {"command": "true"}) for _ in range(runs)],
                    "e": spawn(["bash", "-c", "true"], env, runs),
                }
                for k, v in got.items():
                    samples[k].append((statistics.median(v) * 1000, pct(v, 0.99) * 1000))
            delete(conn, sid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{rounds} interleaved rounds: {creates} creates for (a), {runs} calls each for (b)–(e)")
    for label, pick in (("median of the rounds", statistics.median), ("best round", min)):
        p50 = {k: pick(r[0] for r in v) for k, v in samples.items()}
        p99 = {k: pick(r[1] for r in v) for k, v in samples.items()}
        print()
        print(f"{label}:")
        print()
        print("| | p50 | p99 | p50 / (e) floor |")
        print("|---|---|---|---|")
        for k, name in ROWS:
            print(f"| {name} | {p50[k]:.3f} ms | {p99[k]:.3f} ms | {p50[k] / p50['e']:.2f}× |")
        print()
        print("| ratio | p50 | p99 |")
        print("|---|---|---|")
        for a, b in (("b", "d"), ("b'", "d"), ("b", "c"), ("b'", "c"), ("a", "c")):
            print(f"| ({a}) / ({b}) | {p50[a] / p50[b]:.2f}× | {p99[a] / p99[b]:.2f}× |")
        for a in ("b", "b'"):
            print(f"| ({a}) − (d), isolation overhead per run | {p50[a] - p50['d']:+.3f} ms | {p99[a] - p99['d']:+.3f} ms |")


if __name__ == "__main__":
    main()
