"""Driver for scripts/bench/tus.sh: starts execd on a loopback port and times a 1 GiB upload with
tus (EXTENSIONS X33) against the multipart upload of the same file, the two taking turns RUNS
times (the order alternating), and prints a markdown table of medians and the throughput ratio
(multipart time / tus time: 1.0 is as fast as multipart).

    python3 tus_bench.py RUNS WORKDIR EXECD CHUNK_MIB [BEFORE]

With BEFORE (another execd binary, e.g. the one before a change), its tus upload is timed too, in
the same rounds, against a second execd started from it.

- tus: `POST /files/tus` (Upload-Length, Upload-Metadata `path`), then `PATCH` chunks of CHUNK_MIB,
  each body sent from the cached file with sendfile, all on one keep-alive connection (a minimal
  HTTP/1.1 client on a plain socket: http.client copies every chunk through Python first), timed
  from the POST to the last 204;
- multipart: `curl -F metadata=@…;filename=metadata -F file=@big.bin` to `/files/upload`, as
  scripts/bench/fs_bench.py does.

Each target is removed (and `sync` run) before its run, untimed. Both land the file with fsync
and a rename. The first tus upload is compared byte for byte with the source (untimed).
"""
import base64
import filecmp
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from benchnet import start_execd

GIB = 1024 * 1024 * 1024


def b64(s):
    return base64.b64encode(s.encode()).decode()


def read_response(sock, buf):
    """Reads one response without a body (201/204) from SOCK; BUF holds bytes already read.
    Returns (status, headers dict with lower-case names, rest of BUF)."""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        if not more:
            raise SystemExit("connection closed by execd")
        buf += more
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if int(headers.get("content-length", "0")) != 0:
        raise SystemExit(f"unexpected body: {status} {headers}")
    return status, headers, buf


def tus_upload(port, src, dest, chunk):
    """Uploads SRC to DEST with tus over one keep-alive connection, each PATCH body sent from the
    cached file with sendfile (as an efficient client streams it); returns (seconds, PATCHes)."""
    size = os.path.getsize(src)
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    start = time.perf_counter()
    sock.sendall((f"POST /files/tus HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                  f"Upload-Length: {size}\r\nUpload-Metadata: path {b64(dest)}\r\n"
                  "Content-Length: 0\r\n\r\n").encode())
    status, headers, buf = read_response(sock, buf)
    if status != 201:
        raise SystemExit(f"tus creation: {status}")
    url = "/files/" + headers["location"]  # relative: tus/<id>
    offset, patches = 0, 0
    with open(src, "rb") as f:
        while offset < size:
            n = min(chunk, size - offset)
            sock.sendall((f"PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                          f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
                          f"Content-Length: {n}\r\n\r\n").encode())
            if sock.sendfile(f, offset, n) != n:
                raise SystemExit(f"short sendfile at {offset}")
            status, headers, buf = read_response(sock, buf)
            if status != 204:
                raise SystemExit(f"PATCH at {offset}: {status}")
            offset = int(headers["upload-offset"])
            patches += 1
    elapsed = time.perf_counter() - start
    sock.close()
    return elapsed, patches


def curl_upload(port, src, dest, work):
    meta = os.path.join(work, "meta.json")
    with open(meta, "w") as f:
        json.dump({"path": dest, "mode": 644}, f)
    cmd = ["curl", "-sS", "--fail", "-o", "/dev/null",
           "-F", f"metadata=@{meta};filename=metadata;type=application/json",
           "-F", f"file=@{src};type=application/octet-stream", f"http://127.0.0.1:{port}/files/upload"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def clear(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    subprocess.run(["sync"], check=True)


def main():
    runs, work, execd, chunk_mib = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    chunk = chunk_mib << 20
    big = os.path.join(work, "big.bin")
    subprocess.run(["dd", "if=/dev/urandom", f"of={big}", "bs=1M", "count=1024", "status=none"], check=True)
    subprocess.run(["cat", big], check=True, stdout=subprocess.DEVNULL)  # into the page cache
    state = os.path.join(work, "state")
    os.mkdir(state, 0o700)
    before = sys.argv[5] if len(sys.argv) > 5 else None
    proc, port = start_execd(execd, state)
    procs = [proc]
    t_tus, t_mp, t_before, loads = [], [], [], []
    up_t, up_m = os.path.join(work, "up-tus.bin"), os.path.join(work, "up-multipart.bin")
    try:
        if before:
            state_b = os.path.join(work, "state-before")
            os.mkdir(state_b, 0o700)
            proc_b, port_b = start_execd(before, state_b)
            procs.append(proc_b)
        for i in range(runs):
            loads.append(os.getloadavg()[0])
            order = ("tus", "multipart") if i % 2 == 0 else ("multipart", "tus")
            if before:
                order = order + ("before",)
            for which in order:
                if which == "before":
                    clear(up_t)
                    t, _ = tus_upload(port_b, big, up_t, chunk)
                    assert os.path.getsize(up_t) == GIB
                    t_before.append(t)
                elif which == "tus":
                    clear(up_t)
                    t, patches = tus_upload(port, big, up_t, chunk)
                    assert patches == -(-GIB // chunk), patches
                    assert os.path.getsize(up_t) == GIB
                    if i == 0:
                        assert filecmp.cmp(big, up_t, shallow=False), "tus upload differs"
                    t_tus.append(t)
                else:
                    clear(up_m)
                    t_mp.append(curl_upload(port, big, up_m, work))
                    assert os.path.getsize(up_m) == GIB
    finally:
        for p in procs:
            p.kill()
            p.wait()
    mt, mm = statistics.median(t_tus), statistics.median(t_mp)
    print(f"runs: {runs}, load (1 min) at each run: {', '.join(f'{x:.1f}' for x in loads)}")
    print(f"tus runs: {', '.join(f'{x:.2f}' for x in t_tus)} s; multipart runs: {', '.join(f'{x:.2f}' for x in t_mp)} s")
    pairs = [m / t for m, t in zip(t_mp, t_tus)]
    print(f"ratio per round (multipart / tus): {', '.join(f'{x:.2f}' for x in pairs)}; median {statistics.median(pairs):.2f}")
    print()
    print("| upload of 1 GiB | execd | throughput |")
    print("|---|---|---|")
    print(f"| multipart (`curl -F`, /files/upload) | {mm:.2f} s | {GIB / mm / 2**20:.0f} MiB/s |")
    print(f"| tus, {chunk_mib} MiB PATCHes, one connection | {mt:.2f} s | {GIB / mt / 2**20:.0f} MiB/s |")
    print(f"| ratio (multipart time / tus time) | **{mm / mt:.2f}×** | goal ≥ 0.8× |")
    if t_before:
        mb = statistics.median(t_before)
        print(f"| before: tus with {before} | {mb:.2f} s | {GIB / mb / 2**20:.0f} MiB/s |")
        print(f"| before: ratio (multipart time / tus time) | {mm / mb:.2f}× | |")
        print(f"\nbefore runs: {', '.join(f'{x:.2f}' for x in t_before)} s")


if __name__ == "__main__":
    main()
