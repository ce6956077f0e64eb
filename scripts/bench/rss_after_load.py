#!/usr/bin/env python3
"""Resident memory of execd idle, then after a mixed workload (100 commands of 133 KB output, five
at a time; ten session runs; a 20 MiB upload and its download; a search), sampled as it settles
(issue #15: "back to <= 4 MiB after a mixed workload"). Reported in BENCHMARKS.md, not a test.

usage: scripts/bench/rss_after_load.py EXECD_BINARY [EXECD_FLAGS...]
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from startup import evict

B = sys.argv[1]
extra = sys.argv[2:]
# The binary as a container's first exec maps it (see startup.py's evict).
evict(B)
d = tempfile.mkdtemp()
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
p = subprocess.Popen([B, "--port", str(port), "--bind", "127.0.0.1", "--state-dir", d + "/s", *extra],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1]) / 1024
def split():
    f = {}
    for l in open(f"/proc/{p.pid}/status"):
        k = l.split(":")[0]
        if k in ("RssAnon", "RssFile"): f[k] = int(l.split()[1]) / 1024
    return f"anon {f['RssAnon']:.1f}, file {f['RssFile']:.1f}"
def threads():
    return len(os.listdir(f"/proc/{p.pid}/task"))
def req(method, path, body=None, headers={}):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body, headers); r = c.getresponse(); data = r.read(); c.close(); return r.status, data
for _ in range(500):
    try:
        if req("GET", "/ping")[0] == 200:
            break
    except OSError:
        time.sleep(0.02)
time.sleep(0.5)
idle = (rss(), split())
print(f"idle after first ping: {idle[0]:.1f} MiB ({idle[1]}), {threads()} threads")
failed = []
def cmds(n):
    for i in range(n):
        st, body = req("POST", "/command", json.dumps({"command": "head -c 100000 /dev/urandom | base64"}), {"Content-Type": "application/json"})
        if st != 200 or b"execution_complete" not in body:
            failed.append(st)
ts = [threading.Thread(target=cmds, args=(20,)) for _ in range(5)]
[t.start() for t in ts]; [t.join() for t in ts]
if failed:
    sys.exit(f"{len(failed)} commands failed: {failed[:5]}")
st, body = req("POST", "/session", json.dumps({}), {"Content-Type": "application/json"})
if st != 200:
    sys.exit(f"POST /session answered {st}: {body[:200]!r}")
sid = json.loads(body)["session_id"]
for i in range(10):
    st, body = req("POST", f"/session/{sid}/run", json.dumps({"command": f"X{i}=1; seq 1000"}), {"Content-Type": "application/json"})
    if st != 200 or b"1000" not in body:
        sys.exit(f"session run answered {st}: {body[-200:]!r}")
f = os.path.join(d, "up.bin")
with open(f, "wb") as fh: fh.write(os.urandom(20 << 20))
# The metadata part is a file part (a filename), as the SDKs send it; execd refuses one without.
meta = os.path.join(d, "meta.json")
with open(meta, "w") as fh: json.dump({"path": f"{d}/copy.bin"}, fh)
subprocess.run(["curl", "-sSf", "-o", "/dev/null", "-F", f"metadata=@{meta};filename=metadata;type=application/json", "-F", f"file=@{f}", f"http://127.0.0.1:{port}/files/upload"], check=True)
subprocess.run(["curl", "-sSf", "-o", "/dev/null", f"http://127.0.0.1:{port}/files/download?path={d}/copy.bin"], check=True)
if os.path.getsize(f"{d}/copy.bin") != 20 << 20:
    sys.exit("the upload did not land whole")
st, _ = req("GET", "/files/search?path=/usr/share/doc&pattern=*")
if st != 200:
    sys.exit(f"GET /files/search answered {st}")
t0 = time.time()
for at in [0, 1, 5, 12, 20]:
    while time.time() - t0 < at: time.sleep(0.05)
    last = (rss(), split())
    print(f"{at:>2} s after the workload: {last[0]:.1f} MiB ({last[1]}), {threads()} threads")
# The table scripts/bench/summary.py reads.
print("\n| when | RSS | of which |\n|---|---|---|")
print(f"| idle after the first `/ping` | {idle[0]:.1f} MiB | {idle[1]} |")
print(f"| 20 s after the workload | {last[0]:.1f} MiB | {last[1]} |")
p.terminate()
p.wait()
shutil.rmtree(d, ignore_errors=True)
