"""Loopback helpers shared by the benchmark drivers (fs_bench, grep_bench, archive_bench): a free
port to start a server on, and a bounded wait until it listens."""
import socket
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
