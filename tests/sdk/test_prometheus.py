"""`GET /metrics/prometheus` (EXTENSIONS X61) read with the official Prometheus text parser
(`prometheus_client.parser`): every family parses, has the declared type, and the values move with
the requests and commands the SDK sends."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from opensandbox.adapters.command_adapter import CommandsAdapter


def scrape(execd) -> dict:
    r = httpx.get(execd.base_url + "/metrics/prometheus", headers=execd.headers(), timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict, family: str, sample: str, **labels) -> float | None:
    f = families.get(family)
    if f is None:
        return None
    for s in f.samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_x61_exposition_parses_and_follows_requests(execd):
    fams = scrape(execd)
    # The parser drops the histogram's suffixes from the family name and `_total` from counters.
    assert fams["execd_http_request_duration_milliseconds"].type == "histogram"
    assert fams["execd_system_process_count"].type == "gauge"
    assert fams["execd_system_memory_usage_bytes"].type == "gauge"
    assert fams["execd_system_cpu_usage_percent"].type == "gauge"
    assert fams["execd_metrics_series_dropped"].type == "counter"
    assert fams["execd_system_network_io_bytes"].type == "counter"
    before = value(fams, "execd_http_request_duration_milliseconds", "execd_http_request_duration_milliseconds_count",
                   http_method="GET", http_route="/ping", http_status_code="200") or 0
    for _ in range(4):
        assert httpx.get(execd.base_url + "/ping", headers=execd.headers()).status_code == 200
    fams = scrape(execd)
    after = value(fams, "execd_http_request_duration_milliseconds", "execd_http_request_duration_milliseconds_count",
                  http_method="GET", http_route="/ping", http_status_code="200")
    assert after == before + 4
    # Buckets are cumulative and end with +Inf == count (for one label set: the suite shares this
    # execd, so /ping may also have been answered with other statuses or methods).
    buckets = [s for s in fams["execd_http_request_duration_milliseconds"].samples
               if s.name.endswith("_bucket") and s.labels.get("http_route") == "/ping"
               and s.labels.get("http_method") == "GET" and s.labels.get("http_status_code") == "200"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf" and counts[-1] == after


async def test_x61_executions_through_the_sdk_are_counted(execd, commands: CommandsAdapter):
    def runs(fams):
        return value(fams, "execd_execution_duration_milliseconds", "execd_execution_duration_milliseconds_count",
                     operation="run_command", result="success") or 0
    before = runs(scrape(execd))
    execution = await commands.run("true")
    assert execution.error is None
    deadline = time.monotonic() + 20
    while runs(scrape(execd)) < before + 1:
        assert time.monotonic() < deadline, "execution not counted"
        time.sleep(0.05)
