"""Driver for scripts/bench/fs.sh: starts execd, nginx and the upload baseline on loopback ports,
times curl/find/cat/dd runs (median of RUNS), and prints a markdown table with ratios.

    python3 fs_bench.py RUNS WORKDIR EXECD BASELINE NGINX [search]

With a sixth argument `search`, only the search rows are measured (BASELINE and NGINX unused).
"""
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse

from benchnet import free_port, wait_port

GIB = 1024 * 1024 * 1024




def timed(cmd, setup=None, runs=3):
    """Median wall time of running cmd (a list) RUNS times; setup() runs untimed before each."""
    times = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_interleaved(cmds, runs=3):
    """Median wall time of each command (lists), the commands taking turns RUNS times, so a
    machine that speeds up or slows down during the run weighs on all of them alike."""
    times = [[] for _ in cmds]
    for _ in range(runs):
        for i, cmd in enumerate(cmds):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def rm(path):
    def f():
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        subprocess.run(["sync"], check=True)
    return f


def main():
    runs, work, execd, baseline, nginx = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    only_search = sys.argv[6:] == ["search"]
    procs = []
    try:
        big = os.path.join(work, "big.bin")
        if not only_search:
            subprocess.run(["dd", "if=/dev/urandom", f"of={big}", "bs=1M", "count=1024", "status=none"], check=True)
            subprocess.run(["cat", big], check=True, stdout=subprocess.DEVNULL)  # into the page cache

        # execd
        ep = free_port()
        env = dict(os.environ)
        env.pop("EXECD_ACCESS_TOKEN", None)
        p = subprocess.Popen([execd, "--bind", "127.0.0.1", "--port", str(ep), "--state-dir", os.path.join(work, "state")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        wait_port(ep, p)

        if not only_search:
            # nginx with sendfile, serving WORKDIR
            np_ = free_port()
            ndir = os.path.join(work, "nginx")
            os.makedirs(ndir)
            conf = os.path.join(ndir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""user root; worker_processes 1; daemon off; pid {ndir}/nginx.pid; error_log {ndir}/error.log;
    events {{ worker_connections 64; }}
    http {{
      sendfile on; tcp_nopush on; access_log off;
      client_body_temp_path {ndir}/body; proxy_temp_path {ndir}/proxy; fastcgi_temp_path {ndir}/fcgi;
      uwsgi_temp_path {ndir}/uwsgi; scgi_temp_path {ndir}/scgi;
      server {{ listen 127.0.0.1:{np_}; root {work}; location / {{ }} }}
    }}
    """)
            p = subprocess.Popen([nginx, "-p", ndir, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(np_, p)

            # upload baseline
            bp = free_port()
            p = subprocess.Popen([baseline, str(bp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(bp, p)

        rows = []
        curl = ["curl", "-sS", "--fail", "-o", "/dev/null"]

        if not only_search:
            # Download
            t_cat = timed(["cat", big], runs=runs)
            t_nginx = timed(curl + [f"http://127.0.0.1:{np_}/big.bin"], runs=runs)
            t_execd = timed(curl + [f"http://127.0.0.1:{ep}/files/download?path={urllib.parse.quote(big)}"], runs=runs)
            rows.append(("download 1 GiB (page cache)", t_execd, "nginx sendfile", t_nginx, t_nginx / t_execd, "≥ 0.8×",
                         f"cat: {t_cat:.2f} s"))

            # Upload
            def form(dest):
                meta = os.path.join(work, f"meta-{os.path.basename(dest)}.json")
                with open(meta, "w") as f:
                    json.dump({"path": dest, "mode": 644}, f)
                return ["-F", f"metadata=@{meta};filename=metadata;type=application/json",
                        "-F", f"file=@{big};type=application/octet-stream"]
            up_e, up_b, up_f = (os.path.join(work, n) for n in ("up-execd.bin", "up-base.bin", "up-floor.bin"))
            t_dd = timed(["dd", f"if={big}", f"of={up_f}", "bs=1M", "conv=fsync", "status=none"], setup=rm(up_f), runs=runs)
            t_base = timed(curl + form(up_b) + [f"http://127.0.0.1:{bp}/files/upload"], setup=rm(up_b), runs=runs)
            t_up = timed(curl + form(up_e) + [f"http://127.0.0.1:{ep}/files/upload"], setup=rm(up_e), runs=runs)
            for f in (up_e, up_b):
                assert os.path.getsize(f) == GIB, f
            rows.append(("upload 1 GiB (multipart, fsync)", t_up, "axum multipart → disk", t_base, t_base / t_up, "≥ 0.8×",
                         f"dd conv=fsync: {t_dd:.2f} s"))

        # Search
        tree = os.path.join(work, "tree")
        for d in range(100):
            dd = os.path.join(tree, f"d{d:03}")
            os.makedirs(dd)
            for i in range(1000):
                open(os.path.join(dd, f"f{i:04}.{'log' if i % 10 == 0 else 'txt'}"), "w").close()
        subprocess.run(["find", tree], check=True, stdout=subprocess.DEVNULL)  # warm the dentry cache
        url = f"http://127.0.0.1:{ep}/files/search?path={urllib.parse.quote(tree)}&pattern={urllib.parse.quote('*.txt')}"
        out = subprocess.run(["curl", "-sS", url], check=True, capture_output=True).stdout
        assert len(json.loads(out)) == 90000
        # Floors that do the same lstat work per hit (find -name never stats).
        t_find, t_search, t_stat, t_names, t_ls = timed_interleaved([
            ["find", tree, "-name", "*.txt"],
            curl + [url],
            ["find", tree, "-name", "*.txt", "-printf", "%p %s %T@ %C@ %U %G %m\n"],
            ["find", tree, "-name", "*.txt", "-printf", "%p %s %T@ %C@ %u %g %m\n"],
            ["find", tree, "-name", "*.txt", "-ls"],
        ], runs=max(runs, 9))
        # The goal (issue #14): as fast as find printing the same fields (path, size, both times,
        # owner and group names, mode); find -name, which never stats, is reported beside it.
        rows.append(("search 100 000 files (90 000 hits)", t_search, "find -printf (lstat fields, owner names)", t_names,
                     t_names / t_search, "≥ 1× (as fast as find with the same fields)",
                     f"{len(out) / 1e6:.1f} MB JSON with FileInfo"))
        rows.append(("", t_search, "find -printf (lstat fields, numeric ids)", t_stat, t_stat / t_search, "floor", ""))
        rows.append(("", t_search, "find -ls", t_ls, t_ls / t_search, "floor", ""))
        rows.append(("", t_search, "find -name (no lstat)", t_find, t_find / t_search, "", "names only"))

        print()
        print("| operation | execd | reference | reference time | ratio (reference/execd) | goal | floor / note |")
        print("|---|---|---|---|---|---|---|")
        for name, te, ref, tr, ratio, goal, note in rows:
            print(f"| {name} | {te:.3f} s | {ref} | {tr:.3f} s | {ratio:.2f}× | {goal} | {note} |")
        print(f"\n(median of {runs} runs, search rows of max({runs}, 9) runs taking turns; "
              "ratio > 1 means execd is faster than the reference)")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
