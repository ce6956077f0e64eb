"""WebSocket exec round trip (EXTENSIONS X15, issue #16; not part of the test suite).

    python3 scripts/bench/ws_roundtrip.py [N] [EXECD]      # N turns (default 2000)
    scripts/bench/ws_roundtrip.sh [N]                     # builds the static binary first

One line through `cat` and back, N times, over `GET /command/ws` (binary `0x00` frame out, the
`0x01` stdout frame back), against the same round trip through a local pipe to `cat` started
with subprocess, in the same run. Prints p50/p99 of both and their ratio as a markdown table.
Standard library only: a minimal RFC 6455 client (masked client frames, unfragmented messages)
is enough for this loop.
"""
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnet import start_execd  # noqa: E402


class Ws:
    """A blocking WebSocket client for one loopback connection."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("connection closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"no upgrade: {head.decode(errors='replace')}")

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next data message as (opcode, payload); answers pings."""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self.send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            return opcode, payload


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def ws_turns(port, n, line):
    ws = Ws(port, "/command/ws")
    ws.send(0x1, json.dumps({"command": "cat"}).encode())
    op, msg = ws.recv()
    if op != 0x1 or json.loads(msg).get("type") != "init":
        raise SystemExit(f"expected init, got {msg!r}")
    frame = b"\x00" + line
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ws.send(0x2, frame)
        got = b""
        while len(got) < len(line):
            op, msg = ws.recv()
            if op == 0x2 and msg[:1] == b"\x01":
                got += msg[1:]
            elif op == 0x8:
                raise SystemExit("closed early")
        times.append(time.perf_counter() - t0)
        if got != line:
            raise SystemExit(f"echo mismatch: {got!r}")
    ws.send(0x1, b'{"type":"eof"}')
    while True:
        op, msg = ws.recv()
        if op == 0x1 and json.loads(msg).get("type") == "exit":
            break
    return times


def pipe_turns(n, line):
    p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    fd_in, fd_out = p.stdin.fileno(), p.stdout.fileno()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        os.write(fd_in, line)
        got = b""
        while len(got) < len(line):
            got += os.read(fd_out, 65536)
        times.append(time.perf_counter() - t0)
    p.stdin.close()
    p.wait(timeout=10)
    return times


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    execd = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("EXECD_BENCH_BIN", "target/debug/execd")
    line = b"the quick brown fox jumps over the lazy dog\n"
    state = tempfile.mkdtemp(prefix="execd-ws-bench-")
    proc, port = start_execd(execd, state)
    try:
        ws_turns(port, 50, line)  # warm-up
        pipe_turns(50, line)
        ws = ws_turns(port, n, line)
        pipe = pipe_turns(n, line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    load = open("/proc/loadavg").read().split()[:3]
    print(f"machine: {os.cpu_count()} cores, load {' '.join(load)}; execd {execd}; N={n}, {len(line)}-byte line")
    print()
    print("| round trip through `cat` | p50 | p99 |")
    print("|---|---|---|")
    us = lambda t: f"{t * 1e6:.0f} µs"  # noqa: E731
    print(f"| WebSocket exec (`/command/ws`) | {us(pct(ws, 50))} | {us(pct(ws, 99))} |")
    print(f"| local pipe (subprocess) | {us(pct(pipe, 50))} | {us(pct(pipe, 99))} |")
    print(f"| ratio | {pct(ws, 50) / pct(pipe, 50):.1f}× | {pct(ws, 99) / pct(pipe, 99):.1f}× |")


if __name__ == "__main__":
    main()
