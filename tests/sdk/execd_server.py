"""Starts the real execd binary for the Python suites (SDK and contract).

`ExecdServer.start()` builds or reuses the release binary, picks a free loopback port, runs execd
with a random access token, its own state directory and a scratch cwd/HOME/TMPDIR, and waits for
`/ping` with a deadline. `stop()` sends SIGTERM, then SIGKILL after a deadline, and reaps it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Hypothesis (loaded through schemathesis' pytest plugin) keeps its files out of the repository,
# also when pytest is run directly rather than through scripts/sdk-test.sh.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "execd-hypothesis"))
TOKEN_HEADER = "X-EXECD-ACCESS-TOKEN"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def execd_binary() -> Path:
    """`EXECD_BIN` if set, else `target/release/execd`, built once with `cargo build --release`."""
    env_bin = os.environ.get("EXECD_BIN")
    if env_bin:
        path = Path(env_bin).resolve()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise RuntimeError(f"EXECD_BIN={env_bin} is not an executable file")
        return path
    path = REPO_ROOT / "target" / "release" / "execd"
    # cargo decides whether anything changed; a no-op build takes well under a second.
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--bin", "execd"],
        cwd=REPO_ROOT,
        check=True,
    )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ExecdServer:
    """A running execd on 127.0.0.1 with its scratch directories."""

    binary: Path
    port: int = 0
    token: str = ""
    root: Path = field(default_factory=Path)
    scratch: Path = field(default_factory=Path)
    home: Path = field(default_factory=Path)
    tmpdir: Path = field(default_factory=Path)
    env_file: Path = field(default_factory=Path)
    log_path: Path = field(default_factory=Path)
    proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, binary: Path | None = None, extra_env: dict[str, str] | None = None) -> "ExecdServer":
        binary = binary or execd_binary()
        last_log = ""
        # Retried only when execd exited early (the free port was taken in between).
        for _ in range(5):
            server = cls(binary=binary)
            try:
                server._spawn(extra_env or {})
            except BaseException:
                server.stop()  # removes the scratch tree of a failed spawn
                raise
            if server._wait_ready():
                return server
            last_log = server.log()
            exited = server.proc is not None and server.proc.poll() is not None
            server.stop()
            if not exited:
                break
        raise RuntimeError(f"execd did not become ready; log:\n{last_log}")

    def _spawn(self, extra_env: dict[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="execd-py-"))
        self.scratch = self.root / "scratch"
        self.home = self.scratch / "home"
        self.tmpdir = self.scratch / "tmp"
        for d in (self.scratch, self.home, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        self.env_file = self.root / "execd.env"
        self.env_file.touch()
        self.log_path = self.root / "execd.log"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EXECD_", "JUPYTER_")) and k not in ("RUST_LOG",)
        }
        env.update(
            {
                "HOME": str(self.home),
                "TMPDIR": str(self.tmpdir),
                "EXECD_ACCESS_TOKEN": self.token,
                "EXECD_ENVS": str(self.env_file),
            }
        )
        env.update(extra_env)
        args = [
            str(self.binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.root / "state"),
        ]
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                args,
                cwd=self.scratch,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session and process group, like a daemon: a group-wide signal from execd
                # or from a command it runs can never reach the test runner or the CI shell.
                start_new_session=True,
            )
        finally:
            log.close()

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.05)
        return False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self.token}

    def ping(self, timeout: float = 2.0) -> bool:
        req = urllib.request.Request(self.base_url + "/ping", headers=self.headers())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a deadline; reaps execd and removes the scratch tree."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
            code = self.proc.returncode
            self.proc = None
        if self.root and str(self.root) not in ("", "."):
            shutil.rmtree(self.root, ignore_errors=True)
        return code
