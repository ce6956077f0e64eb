// The SDK's top-level entry point, `Sandbox.connect`, end to end: a stand-in lifecycle server on
// loopback answers `GET /v1/sandboxes/{id}/endpoints/{port}` with execd's address (plus the base
// path, e.g. `/proxy/<port>`) and the `X-EXECD-ACCESS-TOKEN` endpoint header, exactly what the real
// lifecycle server hands the SDK. Everything after that is the unmodified SDK talking to execd.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { Sandbox } from "@alibaba-group/opensandbox";

import { endpointOf, lines, raw, useExecd } from "./harness.mjs";

const ctx = useExecd();
const SANDBOX_ID = "sbx-execd-rust-js";
let lifecycle;
const seen = [];

before(async () => {
  lifecycle = createServer((req, res) => {
    seen.push({ url: req.url, apiKey: req.headers["open-sandbox-api-key"] });
    const prefix = `/v1/sandboxes/${SANDBOX_ID}/endpoints/`;
    const path = req.url.split("?")[0];
    let status = 200;
    let body;
    if (req.method !== "GET" || !path.startsWith(prefix)) {
      status = 404;
      body = { code: "NOT_FOUND", message: path };
    } else if (path.slice(prefix.length) === "44772") {
      body = endpointOf(ctx.execd); // execd's well-known port
    } else {
      body = { endpoint: "127.0.0.1:9" }; // the egress sidecar (18080): resolved, never called here
    }
    const data = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
    res.end(data);
  });
  await new Promise((r) => lifecycle.listen(0, "127.0.0.1", r));
});

after(() => new Promise((r) => lifecycle.close(r)));

test("Sandbox.connect end to end: health, commands, session, files, metrics", async () => {
  const sandbox = await Sandbox.connect({
    sandboxId: SANDBOX_ID,
    connectionConfig: {
      domain: `127.0.0.1:${lifecycle.address().port}`,
      protocol: "http",
      apiKey: "test-key",
      requestTimeoutSeconds: 60,
      disableMetrics: true,
    },
    readyTimeoutSeconds: 20,
  });
  try {
    assert.equal(sandbox.id, SANDBOX_ID);
    const execdLookups = seen.filter((s) => s.url.startsWith(`/v1/sandboxes/${SANDBOX_ID}/endpoints/44772`));
    assert.equal(execdLookups.length, 1, JSON.stringify(seen));
    assert.equal(execdLookups[0].apiKey, "test-key");
    assert.equal(await sandbox.isHealthy(), true);

    const ex = await sandbox.commands.run("printf 'a\\n\\nb\\r\\n'; echo err >&2; exit 2");
    assert.deepEqual(raw(ex.logs.stdout), ["a\n", "\n", "b\r\n"]);
    assert.deepEqual(raw(ex.logs.stderr), ["err\n"]);
    assert.equal(ex.exitCode, 2);

    const bg = await sandbox.commands.run("echo bg-line", { background: true });
    const deadline = Date.now() + 20_000;
    while ((await sandbox.commands.getCommandStatus(bg.id)).running !== false) {
      assert.ok(Date.now() < deadline);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await sandbox.commands.getBackgroundCommandLogs(bg.id)).content, "bg-line\n");

    const sid = await sandbox.commands.createSession();
    await sandbox.commands.runInSession(sid, "export S=1");
    assert.deepEqual(lines((await sandbox.commands.runInSession(sid, "echo $S")).logs.stdout), ["1"]);
    await sandbox.commands.deleteSession(sid);

    const w = ctx.work("connect");
    const p = join(w, "f.txt");
    await sandbox.files.writeFiles([{ path: p, data: "one\ntwo\nthree\n", mode: 644 }]);
    assert.equal(await sandbox.files.readFile(p), "one\ntwo\nthree\n");
    assert.equal(await sandbox.files.readFile(p, { offset: 2, limit: 1 }), "two");
    assert.deepEqual((await sandbox.files.search({ path: w, pattern: "*.txt" })).map((e) => e.path), [p]);

    const m = await sandbox.getMetrics();
    assert.ok(m.cpuCount > 0 && m.memoryTotalMiB > 0, JSON.stringify(m));
  } finally {
    await sandbox.close();
  }
});
