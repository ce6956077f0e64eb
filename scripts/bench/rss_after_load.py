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

B = sys.argv[1]
extra = sys.argv[2:]
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
print(f"idle after first ping: {rss():.1f} MiB ({split()}), {threads()} threads")
def cmds(n):
    for i in range(n):
        req("POST", "/command", json.dumps({"command": "head -c 100000 /dev/urandom | base64"}), {"Content-Type": "application/json"})
ts = [threading.Thread(target=cmds, args=(20,)) for _ in range(5)]
[t.start() for t in ts]; [t.join() for t in ts]
st, body = req("POST", "/session", json.dumps({}), {"Content-Type": "application/json"})
sid = json.loads(body)["session_id"] if st == 200 else None
for i in range(10):
    if sid: req("POST", f"/session/{sid}/run", json.dumps({"command": f"X{i}=1; seq 1000"}), {"Content-Type": "application/json"})
f = os.path.join(d, "up.bin")
with open(f, "wb") as fh: fh.write(os.urandom(20 << 20))
subprocess.run(["curl", "-s", "-o", "/dev/null", "-F", f"metadata={{\"path\":\"{d}/copy.bin\"}};type=application/json", "-F", f"file=@{f}", f"http://127.0.0.1:{port}/files/upload"], check=True)
subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/files/download?path={d}/copy.bin"], check=True)
req("GET", "/files/search?path=/usr/share/doc&pattern=*")
t0 = time.time()
for at in [0, 1, 5, 12, 20]:
    while time.time() - t0 < at: time.sleep(0.05)
    print(f"{at:>2} s after the workload: {rss():.1f} MiB ({split()}), {threads()} threads")
p.terminate()
p.wait()
shutil.rmtree(d, ignore_errors=True)
