"""The one execd of the contract run. Started when first asked for: the test module asks at
import time, because schemathesis loads the document the binary serves (`GET /openapi.json`)
while pytest collects; conftest stops it at the end of the session."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))

from execd_server import ExecdServer  # noqa: E402

_server: ExecdServer | None = None


def running() -> ExecdServer:
    global _server
    if _server is None:
        _server = ExecdServer.start()
    return _server


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
