"""Fixtures for the OpenAPI contract check: a fresh execd (shared launcher from tests/sdk, started
by contract_server) whose cwd, HOME and TMPDIR live in a scratch tree, plus a scratch root every
fuzzed path is mapped into."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))

import contract_server  # noqa: E402
from contract_stats import STATS  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not STATS:
        return
    tr = terminalreporter
    tr.section("contract: responses per operation (status: count)")
    total = 0
    for op in sorted(STATS):
        counts = STATS[op]
        total += sum(counts.values())
        tr.write_line(f"{op:42} " + "  ".join(f"{s}:{n}" for s, n in sorted(counts.items())))
    tr.write_line(f"{total} requests")


def pytest_unconfigure(config):
    contract_server.stop()


@pytest.fixture(scope="session")
def execd():
    return contract_server.running()
