"""Driver for scripts/bench/archive.sh: starts execd on a loopback port and times directory archives
(EXTENSIONS X30, X31) against GNU tar on the same tree, the two taking turns RUNS times, and
prints a markdown table of medians and ratios (floor time / execd time: 1.0 is as fast as tar).

    python3 archive_bench.py RUNS TREE EXECD

- export: `GET /files/archive?format=tar|tar.zst` read whole by curl into /dev/null, against
  `tar -cf - -C TREE .` (and `tar --zstd`) into /dev/null through a pipe (tar special-cases a
  direct /dev/null and reads nothing);
- import: `POST /files/archive?format=tar` of a tar of TREE (made once, from the page cache) into
  a fresh empty directory, against `tar -xf` of the same file into a fresh empty directory. curl
  streams the file (`-T`): `--data-binary @FILE` reads the whole 512 MiB into memory before it
  sends a byte, which put ~0.3 s of curl's own reading (and execd waiting for it) into every
  import measured before 2026-12-04 23:50.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

from benchnet import start_execd




def timed(cmd, shell=False):
    start = time.perf_counter()
    out = subprocess.run(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{cmd} failed ({out.returncode}): {out.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def main():
    runs, tree, execd = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    work = tempfile.mkdtemp(prefix="execd-archive-bench-", dir=os.environ.get("EXECD_BENCH_WORK_DIR", "/var/tmp"))
    state = os.path.join(work, "state")
    os.mkdir(state, 0o700)
    proc, port = start_execd(execd, state)
    try:
        base = f"http://127.0.0.1:{port}/files/archive"
        q = urllib.parse.quote(tree)
        tarball = os.path.join(work, "tree.tar")
        subprocess.run(["tar", "-cf", tarball, "-C", tree, "."], check=True)
        size = os.path.getsize(tarball)

        def fresh(name):
            d = os.path.join(work, name)
            shutil.rmtree(d, ignore_errors=True)
            os.mkdir(d)
            return d

        cases = [
            ("export tar", f"curl -sf -o /dev/null '{base}?path={q}&format=tar'",
             f"tar -cf - -C '{tree}' . | cat > /dev/null"),
            ("export tar.zst", f"curl -sf -o /dev/null '{base}?path={q}&format=tar.zst'",
             f"tar --zstd -cf - -C '{tree}' . | cat > /dev/null"),
            ("import tar", lambda: f"curl -sf -o /dev/null -X POST -T '{tarball}' "
             f"'{base}?path={urllib.parse.quote(fresh('in-execd'))}&format=tar'",
             lambda: f"tar -xf '{tarball}' -C '{fresh('in-tar')}'"),
        ]
        print(f"| case | execd (s) | GNU tar (s) | tar / execd |")
        print(f"|---|---|---|---|")
        for label, ours, floor in cases:
            a, b = [], []
            for i in range(runs + 1):  # the first round warms the page cache and is not counted
                # Each side's command (and its fresh directory, the previous round's output
                # removed) is made right before it runs, after a `sync` (untimed): otherwise the
                # writeback of the other side's 512 MiB import (and the removal of a 100 000-file
                # tree) ran inside the next timed run, and always inside execd's.
                oc = ours() if callable(ours) else ours
                subprocess.run(["sync"], check=True)
                ta = timed(oc, shell=True)
                fc = floor() if callable(floor) else floor
                subprocess.run(["sync"], check=True)
                tb = timed(fc, shell=True)
                if i:
                    a.append(ta)
                    b.append(tb)
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"| {label} | {ma:.3f} | {mb:.3f} | {mb / ma:.2f}× |")
        print(f"\ntar of the tree: {size / 1024 / 1024:.0f} MiB; medians of {runs} runs")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
