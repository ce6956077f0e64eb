// Fixtures for the JS SDK suite: one real execd per test file, and the SDK's own execd services
// (commands, files, health, metrics) built from an endpoint exactly the way `Sandbox.connect`
// builds them after the lifecycle server hands it one: `host:port[/base/path]` plus the
// `X-EXECD-ACCESS-TOKEN` endpoint header, through the SDK's public `DefaultAdapterFactory`
// (`createExecdStack`) and `ConnectionConfig.withTransportIfMissing()` (its Node transport).
// connect.test.mjs goes through `Sandbox.connect` itself with a stand-in lifecycle server.
//
// The base path is configurable so the whole suite can run through execd's port proxy:
// `EXECD_SDK_BASE_PATH=/proxy/{port}` (`{port}` is replaced by execd's own port).

import assert from "node:assert/strict";
import { after, before } from "node:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { ConnectionConfig, DefaultAdapterFactory, SandboxApiException } from "@alibaba-group/opensandbox";

import { ExecdServer, TOKEN_HEADER } from "./execd.mjs";

export { TOKEN_HEADER };
export const DEADLINE_MS = 20_000;
export const HEX32 = /^[0-9a-f]{32}$/;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The endpoint base path for this run: "" or e.g. "/proxy/41234". */
export function basePath(port) {
  let p = (process.env.EXECD_SDK_BASE_PATH ?? "").replaceAll("{port}", String(port)).replace(/\/+$/, "");
  if (p && !p.startsWith("/")) p = `/${p}`;
  return p;
}

/** What the lifecycle server would return for port 44772: address (+ path) and headers. */
export function endpointOf(execd, headers = { [TOKEN_HEADER]: execd.token }) {
  return { endpoint: `127.0.0.1:${execd.port}${basePath(execd.port)}`, headers };
}

/**
 * The SDK's execd stack for `endpoint`, as `Sandbox.connect` makes it. Returns the services and
 * `close()` for the transport. `requestTimeoutSeconds` is generous (large files).
 */
export function sdkStack(endpoint) {
  const connectionConfig = new ConnectionConfig({
    protocol: "http",
    requestTimeoutSeconds: 60,
    disableMetrics: true,
  }).withTransportIfMissing();
  const execdBaseUrl = `${connectionConfig.protocol}://${endpoint.endpoint}`;
  const stack = new DefaultAdapterFactory().createExecdStack({
    connectionConfig,
    execdBaseUrl,
    endpointHeaders: endpoint.headers,
  });
  return { ...stack, close: () => connectionConfig.closeTransport() };
}

/**
 * Registers `before`/`after` hooks for this test file: starts execd, builds the SDK stack, and at
 * the end fails the file if execd died during it. Returns an object filled in by `before`.
 */
export function useExecd() {
  const ctx = {};
  let counter = 0;
  before(async () => {
    ctx.execd = await ExecdServer.start();
    ctx.endpoint = endpointOf(ctx.execd);
    Object.assign(ctx, sdkStack(ctx.endpoint));
    /** A fresh directory for one test inside execd's scratch tree (same machine, same paths). */
    ctx.work = (name) => {
      const d = join(ctx.execd.scratch, "t", `${String(counter++).padStart(3, "0")}-${name.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 60)}`);
      mkdirSync(d, { recursive: true });
      return d;
    };
  });
  after(async () => {
    if (!ctx.execd) return;
    await ctx.close();
    const alive = ctx.execd.alive();
    const tail = ctx.execd.log().slice(-4000);
    await ctx.execd.stop();
    assert.ok(alive, `execd died during the JS SDK suite; log tail:\n${tail}`);
  });
  return ctx;
}

/** Runs `fn`, which must reject with a SandboxApiException of `status` (and `code` if given). */
export async function rejectsApi(fn, status, code) {
  let caught;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught, `expected a SandboxApiException ${status}, got success`);
  assert.ok(caught instanceof SandboxApiException, `expected SandboxApiException, got ${caught?.stack ?? caught}`);
  assert.equal(caught.statusCode, status, `status; body: ${JSON.stringify(caught.rawBody)}`);
  if (code !== undefined) assert.equal(caught.error.code, code, `code; body: ${JSON.stringify(caught.rawBody)}`);
  return caught;
}

/** Polls `fn` until `pred(value)` holds, with a deadline; returns that value. */
export async function pollUntil(fn, pred, timeoutMs = DEADLINE_MS, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (pred(v)) return v;
    assert.ok(Date.now() < deadline, `${what} never held; last: ${JSON.stringify(v)}`);
    await sleep(50);
  }
}

/** Quotes one argument for a POSIX shell: the JS SDK only sends shell text (no argv form). */
export function shq(arg) {
  return `'${String(arg).replaceAll("'", `'\\''`)}'`;
}

/** The exact texts of output messages (events keep their line endings, issue #24). */
export const raw = (msgs) => msgs.map((m) => m.text);

/** The lines of output messages, one line ending removed from each. */
export const lines = (msgs) => msgs.map((m) => m.text.replace(/(\r\n|\n|\r)$/, ""));
