#!/usr/bin/env python3
"""Paired streaming rounds (not part of the test suite): the minimal axum SSE floor and one or more
execd binaries take turns on the same measurement, ROUNDS times, so load drifts hit every side
alike; prints each side's median and best round and its ratio to the floor's.

    python3 scripts/bench/stream_ab.py lines|raw|concurrent ROUNDS EXECD [EXECD...]

Needs target/bench-commands/release/{commands-bench,commands-sse-floor}
(scripts/bench/commands.sh builds both). Measurements as in commands.py: 200 MiB of 100-byte
lines, 200 MiB without newlines, 200 concurrent commands of 5 MiB each.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from commands import (CONCURRENT, EACH_BYTES, EACH_CMD, LINES_CMD, MIB, RAW_CMD,  # noqa: E402
                      Execd, SseFloor, client)

TARGET = "target/bench-commands/release"


def measure(exe, addr, mode):
    """MiB/s for the streams, seconds for the concurrent case; checks every byte arrived."""
    if mode == "concurrent":
        r = client(exe, "concurrent", addr, CONCURRENT, EACH_CMD)
        assert r["bytes"] == CONCURRENT * EACH_BYTES and r["complete"] == CONCURRENT, r
        return r["wall_s"]
    r = client(exe, "stream", addr, LINES_CMD if mode == "lines" else RAW_CMD, mode)
    assert r["bytes"] == 200 * MIB and r["terminal"] == "execution_complete", r
    return r["mib_s"]


def main():
    mode, rounds, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    exe = f"{TARGET}/commands-bench"
    servers = [("floor: minimal axum SSE", SseFloor(f"{TARGET}/commands-sse-floor"))]
    servers += [(b, Execd(b)) for b in bins]
    got = {name: [] for name, _ in servers}
    try:
        for _ in range(rounds):
            for name, s in servers:
                got[name].append(measure(exe, s.addr, mode))
    finally:
        for _, s in servers:
            s.stop()
    unit, best = ("s", min) if mode == "concurrent" else ("MiB/s", max)
    floor = got[servers[0][0]]
    print(f"{mode}: {rounds} paired rounds; load {open('/proc/loadavg').read().split()[:3]}")
    print()
    print(f"| server | median | best | all rounds | median / floor |")
    print("|---|---|---|---|---|")
    for name, vals in got.items():
        ratio = statistics.median(vals) / statistics.median(floor)
        print(f"| {name} | {statistics.median(vals):.2f} {unit} | {best(vals):.2f} {unit} | "
              f"{', '.join(f'{v:.1f}' for v in vals)} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
