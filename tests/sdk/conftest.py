"""Fixtures for the official-SDK suite: one real execd for the session, and the SDK's own execd
adapters (health, commands, filesystem, metrics; async and sync) built from an endpoint the way
the SDK builds them after the lifecycle server hands it one: `host:port[/base/path]` plus the
`X-EXECD-ACCESS-TOKEN` endpoint header.

The base path is configurable so the whole suite can run through execd's port proxy:
`--execd-base-path=/proxy/{port}` or `EXECD_SDK_BASE_PATH=/proxy/{port}` (`{port}` is replaced by
execd's own port).
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from execd_server import TOKEN_HEADER, ExecdServer
from opensandbox.adapters.command_adapter import CommandsAdapter
from opensandbox.adapters.filesystem_adapter import FilesystemAdapter
from opensandbox.adapters.health_adapter import HealthAdapter
from opensandbox.adapters.metrics_adapter import MetricsAdapter
from opensandbox.config import ConnectionConfig
from opensandbox.config.connection_sync import ConnectionConfigSync
from opensandbox.models.sandboxes import SandboxEndpoint
from opensandbox.sync.adapters.command_adapter import CommandsAdapterSync
from opensandbox.sync.adapters.filesystem_adapter import FilesystemAdapterSync
from opensandbox.sync.adapters.health_adapter import HealthAdapterSync
from opensandbox.sync.adapters.metrics_adapter import MetricsAdapterSync
from opensandbox.transport import RetryPolicy

# Generous per-request timeout: the large-file tests move 64 MiB through the SDK.
REQUEST_TIMEOUT = timedelta(seconds=120)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--execd-base-path",
        default=os.environ.get("EXECD_SDK_BASE_PATH", ""),
        help="path prefix of the execd endpoint, e.g. /proxy/{port} to go through the port proxy",
    )


@pytest.fixture(scope="session")
def execd():
    server = ExecdServer.start()
    try:
        yield server
    finally:
        alive = server.alive()
        log_tail = server.log()[-4000:]
        server.stop()
        if not alive:
            pytest.fail(f"execd died during the SDK suite; log tail:\n{log_tail}", pytrace=False)


@pytest.fixture(scope="session")
def base_path(request: pytest.FixtureRequest, execd: ExecdServer) -> str:
    raw = request.config.getoption("--execd-base-path") or ""
    path = raw.replace("{port}", str(execd.port)).rstrip("/")
    if path and not path.startswith("/"):
        path = "/" + path
    return path


@pytest.fixture
def endpoint(execd: ExecdServer, base_path: str) -> SandboxEndpoint:
    """What the lifecycle server would return for port 44772: address (+ path) and headers."""
    return SandboxEndpoint(
        endpoint=f"127.0.0.1:{execd.port}{base_path}",
        headers={TOKEN_HEADER: execd.token},
    )


@pytest.fixture
async def config():
    # No SDK retries: every SDK call is exactly one request, so a server failure is not masked.
    cfg = ConnectionConfig(
        protocol="http",
        request_timeout=REQUEST_TIMEOUT,
        retry_policy=RetryPolicy.disabled(),
        disable_metrics=True,
    ).with_transport_if_missing()
    yield cfg
    await cfg.close_transport_if_owned()


@pytest.fixture
def commands(config: ConnectionConfig, endpoint: SandboxEndpoint) -> CommandsAdapter:
    return CommandsAdapter(config, endpoint)


@pytest.fixture
def fs(config: ConnectionConfig, endpoint: SandboxEndpoint) -> FilesystemAdapter:
    return FilesystemAdapter(config, endpoint)


@pytest.fixture
def health(config: ConnectionConfig, endpoint: SandboxEndpoint) -> HealthAdapter:
    return HealthAdapter(config, endpoint)


@pytest.fixture
def metrics(config: ConnectionConfig, endpoint: SandboxEndpoint) -> MetricsAdapter:
    return MetricsAdapter(config, endpoint)


@pytest.fixture
def sync_config():
    cfg = ConnectionConfigSync(
        protocol="http",
        request_timeout=REQUEST_TIMEOUT,
        retry_policy=RetryPolicy.disabled(),
    ).with_transport_if_missing()
    yield cfg
    cfg.close_transport_if_owned()


@pytest.fixture
def sync_commands(sync_config, endpoint) -> CommandsAdapterSync:
    return CommandsAdapterSync(sync_config, endpoint)


@pytest.fixture
def sync_fs(sync_config, endpoint) -> FilesystemAdapterSync:
    return FilesystemAdapterSync(sync_config, endpoint)


@pytest.fixture
def sync_health(sync_config, endpoint) -> HealthAdapterSync:
    return HealthAdapterSync(sync_config, endpoint)


@pytest.fixture
def sync_metrics(sync_config, endpoint) -> MetricsAdapterSync:
    return MetricsAdapterSync(sync_config, endpoint)


_counter = itertools.count()


@pytest.fixture
def work(execd: ExecdServer, request: pytest.FixtureRequest) -> Path:
    """A fresh directory for this test inside execd's scratch tree (same machine, same paths)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:60]
    d = execd.scratch / "t" / f"{next(_counter):03d}-{name}"
    d.mkdir(parents=True)
    return d
