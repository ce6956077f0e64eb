#!/usr/bin/env python3
"""The workload the link order is learned from (scripts/link-order.sh runs it; not a test).

Starts BINARY (unstripped, the same link as the release build) under callgrind and drives it
over loopback in three phases, with a callgrind dump at the end of each:
  1. start until the first `GET /ping` answers (what an orchestrator waits for; the idle memory),
     three more as probes send them (`Connection: close`, closed after the status line), and
     IDLE_S of idling after them;
  2. `POST /command` (the per-command path);
  3. the rest of the common routes (background commands, status, logs, sessions, files, metrics),
     with payloads and clients as agents and SDKs bring them (commands of 133 KB output from five
     clients at once, an 8 MiB upload with a 32-character boundary and `Expect: 100-continue`,
     its download to a client that reads late, a search over a few hundred files: their paths
     differ from those of a few bytes from one client), then SIGTERM.
Writes OUT.<pid>.1, OUT.<pid>.2 and OUT.<pid> (callgrind's own names).

usage: train.py BINARY OUT
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

binary, out = sys.argv[1], sys.argv[2]
# How long the daemon idles after its first /ping before phase 1 ends.
IDLE_S = 2.0
work = tempfile.mkdtemp(prefix="execd-link-order-")
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
argv = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}.%p",
        binary, "--bind", "127.0.0.1", "--port", str(port), "--state-dir", os.path.join(work, "state")]
proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def req(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status >= 400 and not path.startswith("/nope"):
        print(f"train: {method} {path} answered {resp.status}: {data[:200]!r}", file=sys.stderr)
    return resp.status, data


def dump():
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], stdout=subprocess.DEVNULL, check=True)


deadline = time.monotonic() + 120
while True:
    try:
        if req("GET", "/ping")[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline or proc.poll() is not None:
        sys.exit("train: execd did not answer /ping within 120 s")
    time.sleep(0.05)
# Health checks as orchestrators send them: `Connection: close` (the kubelet's probes), the
# answer read only as far as its status line, the socket closed (scripts/bench/startup.py too).
for _ in range(3):
    with socket.create_connection(("127.0.0.1", port), timeout=120) as probe:
        probe.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        if not probe.recv(256).startswith(b"HTTP/1.1 200"):
            sys.exit("train: a Connection: close /ping did not answer 200")
# Work the start leaves to tasks (and the first timers) runs beside the first request natively,
# but later under callgrind's single-threaded pace: it belongs to the idle daemon's pages too.
time.sleep(IDLE_S)
dump()

for command in ["true"] * 10 + ["echo out; echo err >&2"] * 5:
    _, body = req("POST", "/command", {"command": command})
    # The path learned must be the one that runs: a spawn that failed takes another.
    if b'"execution_complete"' not in body:
        sys.exit(f"train: {command!r} did not complete: {body[-300:]!r}")
dump()

_, body = req("POST", "/command", {"command": "sleep 0.5; echo bg", "background": True})
cid = next((json.loads(line[line.index("{"):])["text"] for line in body.decode().splitlines()
            if '"init"' in line), None)
if cid:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, st = req("GET", f"/command/status/{cid}")
        if not json.loads(st).get("running", True):
            break
        time.sleep(0.2)
    req("GET", f"/command/{cid}/logs?cursor=0")
def busy_client():
    for _ in range(3):
        req("POST", "/command", {"command": "head -c 100000 /dev/urandom | base64"})


clients = [threading.Thread(target=busy_client) for _ in range(5)]
for t in clients:
    t.start()
for t in clients:
    t.join()
status, body = req("POST", "/session", {})
if status == 200:
    sid = json.loads(body)["session_id"]
    for _ in range(3):
        req("POST", f"/session/{sid}/run", {"command": "x=1; cd /tmp; echo $x"})
    req("POST", f"/session/{sid}/run", {"command": "seq 1000"})
    req("DELETE", f"/session/{sid}")
path = os.path.join(work, "f.txt")
boundary = "execd-link-order"
form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n\r\n"
        + json.dumps({"path": path}) +
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\nhello\n\r\n" + f"--{boundary}--\r\n")
req("POST", "/files/upload", form.encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"})
req("GET", f"/files/download?path={path}")
req("GET", f"/files/info?path={path}")
req("GET", f"/files/search?path={work}&pattern=*.txt")
big = os.path.join(work, "big.bin")
# As the SDKs' HTTP clients make them: httpx's boundary is 32 hex digits (a long needle takes
# another search in the multipart parser than a short one), curl asks for 100-continue above 1 MiB.
boundary = os.urandom(16).hex()
form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n\r\n"
        + json.dumps({"path": big}) +
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n").encode() + os.urandom(8 << 20) + f"\r\n--{boundary}--\r\n".encode()
req("POST", "/files/upload", form, {"Content-Type": f"multipart/form-data; boundary={boundary}", "Expect": "100-continue"})
# A client that reads late: the server meets a full socket buffer and waits to write.
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
conn.request("GET", f"/files/download?path={big}")
time.sleep(1.0)
resp = conn.getresponse()
if len(resp.read()) != 8 << 20:
    sys.exit("train: the download came short")
conn.close()
tree = os.path.join(work, "tree")
for i in range(300):
    os.makedirs(os.path.join(tree, str(i % 10)), exist_ok=True)
    with open(os.path.join(tree, str(i % 10), f"{i}.txt"), "w") as fh:
        fh.write("x")
req("GET", f"/files/search?path={tree}&pattern=*")
req("POST", "/directories", {os.path.join(work, "d"): {"mode": 755}})
req("DELETE", f"/files?path={path}")
req("GET", "/metrics")
req("GET", "/capabilities")
req("GET", "/nope")
proc.send_signal(signal.SIGTERM)
proc.wait(timeout=120)
