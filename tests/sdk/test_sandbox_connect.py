"""The SDK's top-level entry point, `Sandbox.connect`, end to end: a stand-in lifecycle server on
loopback answers `GET /v1/sandboxes/{id}/endpoints/{port}` with execd's address (plus the base path,
e.g. `/proxy/<port>`) and the `X-EXECD-ACCESS-TOKEN` endpoint header, exactly what the real
lifecycle server hands the SDK. Everything after that is the unmodified SDK talking to execd."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from execd_server import TOKEN_HEADER
from opensandbox.config import ConnectionConfig
from opensandbox.models.execd import RunCommandOpts
from opensandbox.models.filesystem import SearchEntry, WriteEntry
from opensandbox.sandbox import Sandbox
from opensandbox.transport import RetryPolicy

SANDBOX_ID = "sbx-execd-rust"


@pytest.fixture(scope="module")
def lifecycle(execd, base_path):
    """A minimal lifecycle server: only the endpoint lookup `Sandbox.connect` performs."""
    requests_seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            requests_seen.append(self.path)
            prefix = f"/v1/sandboxes/{SANDBOX_ID}/endpoints/"
            path = self.path.split("?")[0]
            if not path.startswith(prefix):
                self._send(404, {"code": "NOT_FOUND", "message": path})
                return
            port = path[len(prefix):]
            if port == "44772":  # execd's well-known port
                body = {
                    "endpoint": f"127.0.0.1:{execd.port}{base_path}",
                    "headers": {TOKEN_HEADER: execd.token},
                }
            else:  # the egress sidecar (18080): resolved by connect, never called here
                body = {"endpoint": "127.0.0.1:9"}
            self._send(200, body)

        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", requests_seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_sandbox_connect_end_to_end(lifecycle, work):
    domain, seen = lifecycle
    config = ConnectionConfig(
        domain=domain,
        api_key="test-key",
        protocol="http",
        request_timeout=timedelta(seconds=60),
        retry_policy=RetryPolicy.disabled(),
        disable_metrics=True,
    )
    sandbox = await Sandbox.connect(SANDBOX_ID, connection_config=config, connect_timeout=timedelta(seconds=20))
    try:
        assert any(p.startswith(f"/v1/sandboxes/{SANDBOX_ID}/endpoints/44772") for p in seen)
        assert await sandbox.is_healthy() is True

        ex = await sandbox.commands.run("echo from-sandbox; echo err 1>&2")
        assert [m.text for m in ex.logs.stdout] == ["from-sandbox\n"]  # endings kept (issue #24)
        assert ex.text == "from-sandbox"
        assert [m.text for m in ex.logs.stderr] == ["err\n"]
        assert ex.exit_code == 0

        bg = await sandbox.commands.run("sleep 0.2; echo bg", opts=RunCommandOpts(background=True))
        assert bg.id and bg.exit_code is None

        sid = await sandbox.commands.create_session(working_directory=str(work))
        run = await sandbox.commands.run_in_session(sid, "export S=1; pwd")
        assert [m.text for m in run.logs.stdout] == [f"{work}\n"]
        run = await sandbox.commands.run_in_session(sid, "echo $S")
        assert [m.text for m in run.logs.stdout] == ["1\n"]
        await sandbox.commands.delete_session(sid)

        p = str(work / "via-sandbox.txt")
        await sandbox.files.write_files([WriteEntry(path=p, data="sandbox data", mode=644)])
        assert await sandbox.files.read_file(p) == "sandbox data"
        info = await sandbox.files.get_file_info([p])
        assert info[p].size == len("sandbox data") and info[p].mode == 644
        found = await sandbox.files.search(SearchEntry(path=str(work), pattern="*.txt"))
        assert [e.path for e in found] == [p]

        m = await sandbox.get_metrics()
        assert m.cpu_count > 0 and 0 <= m.memory_used_in_mib <= m.memory_total_in_mib
    finally:
        await sandbox.close()
