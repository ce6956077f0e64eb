"""Loopback helpers shared by the benchmark drivers (fs_bench, grep_bench, archive_bench,
watch_bench, ws_roundtrip): a free port to start a server on, a bounded wait until it listens, and
execd started quietly on loopback."""
import os
import socket
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, deadline=20.0):
    """Waits until 127.0.0.1:PORT accepts, for at most DEADLINE seconds; fails when PROC exits."""
    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server did not listen on {port}")


def start_execd(execd, state, *extra):
    """Starts EXECD on a free loopback port with state directory STATE (quiet, no access token)
    and waits until it listens. Returns (process, port); the caller stops the process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "EXECD_ACCESS_TOKEN"}
    proc = subprocess.Popen(
        [execd, "--port", str(port), "--bind", "127.0.0.1", "--state-dir", state, "--log-level", "3", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port
