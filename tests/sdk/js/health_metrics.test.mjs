// Health (`GET /ping`) and metrics (`GET /metrics`) through the JS SDK's `sandbox.health` and
// `sandbox.metrics`, plus the auth header the SDK forwards from the endpoint.

import assert from "node:assert/strict";
import { test } from "node:test";

import { endpointOf, rejectsApi, sdkStack, useExecd } from "./harness.mjs";

const ctx = useExecd();

test("ping: health.ping() is true", async (t) => {
  t.diagnostic(`endpoint ${ctx.endpoint.endpoint}`);
  assert.equal(await ctx.health.ping(), true);
});

test("ping with a wrong token or none raises 401", async () => {
  for (const headers of [{ "X-EXECD-ACCESS-TOKEN": "not-the-token" }, {}]) {
    const bad = sdkStack(endpointOf(ctx.execd, headers));
    try {
      await rejectsApi(() => bad.health.ping(), 401);
      await rejectsApi(() => bad.commands.run("echo no"), 401);
    } finally {
      await bad.close();
    }
  }
});

test("c140 metrics: ranges and timestamp, answered at once", async () => {
  const started = Date.now();
  const m = await ctx.metrics.getMetrics();
  assert.ok(Date.now() - started < 5000); // D40: a background sampler answers at once
  assert.ok(m.cpuCount > 0, JSON.stringify(m));
  assert.ok(m.cpuUsedPercentage >= 0 && m.cpuUsedPercentage <= 100, JSON.stringify(m));
  assert.ok(m.memoryTotalMiB > 0, JSON.stringify(m));
  assert.ok(m.memoryUsedMiB >= 0 && m.memoryUsedMiB <= m.memoryTotalMiB, JSON.stringify(m));
  assert.ok(Math.abs(Date.now() - m.timestamp) < 60_000, JSON.stringify(m));
  const again = await ctx.metrics.getMetrics();
  assert.ok(again.timestamp >= m.timestamp);
  assert.equal(again.cpuCount, m.cpuCount);
});
