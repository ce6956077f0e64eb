"""Health (`GET /ping`) and metrics (`GET /metrics`) through the SDK's HealthAdapter and
MetricsAdapter, plus the auth header the SDK forwards from the endpoint."""

from __future__ import annotations

import time

import pytest

from opensandbox.adapters.health_adapter import HealthAdapter
from opensandbox.adapters.metrics_adapter import MetricsAdapter
from opensandbox.exceptions import SandboxApiException
from opensandbox.models.sandboxes import SandboxEndpoint


async def test_ping_is_healthy(health: HealthAdapter):
    assert await health.ping("sbx") is True


async def test_ping_with_wrong_token_raises_401(config, execd, base_path):
    # The SDK treats 401/403 as a non-recoverable readiness error and re-raises it.
    bad = SandboxEndpoint(
        endpoint=f"127.0.0.1:{execd.port}{base_path}",
        headers={"X-EXECD-ACCESS-TOKEN": "not-the-token"},
    )
    with pytest.raises(SandboxApiException) as ei:
        await HealthAdapter(config, bad).ping("sbx")
    assert ei.value.status_code == 401


async def test_ping_without_token_raises_401(config, execd, base_path):
    bare = SandboxEndpoint(endpoint=f"127.0.0.1:{execd.port}{base_path}")
    with pytest.raises(SandboxApiException) as ei:
        await HealthAdapter(config, bare).ping("sbx")
    assert ei.value.status_code == 401


async def test_c140_metrics_ranges(metrics: MetricsAdapter):
    started = time.monotonic()
    m = await metrics.get_metrics("sbx")
    # D40: a background sampler answers at once (upstream blocks 1 s); generous bound.
    assert time.monotonic() - started < 5
    assert m.cpu_count > 0
    assert 0 <= m.cpu_used_percentage <= 100
    assert m.memory_total_in_mib > 0
    assert 0 <= m.memory_used_in_mib <= m.memory_total_in_mib
    now_ms = int(time.time() * 1000)
    assert abs(now_ms - m.timestamp) < 60_000


async def test_metrics_twice_both_valid(metrics: MetricsAdapter):
    a = await metrics.get_metrics("sbx")
    b = await metrics.get_metrics("sbx")
    assert b.timestamp >= a.timestamp
    assert a.cpu_count == b.cpu_count


def test_sync_ping_and_metrics(sync_health, sync_metrics):
    assert sync_health.ping("sbx") is True
    m = sync_metrics.get_metrics("sbx")
    assert m.cpu_count > 0 and m.memory_total_in_mib > 0
    assert 0 <= m.memory_used_in_mib <= m.memory_total_in_mib
