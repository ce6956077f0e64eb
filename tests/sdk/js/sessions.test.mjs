// Bash sessions through the JS SDK's `sandbox.commands`: `createSession` (`POST /session`),
// `runInSession` (`POST /session/{id}/run`, streamed), `deleteSession` (`DELETE /session/{id}`).

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { DEADLINE_MS, lines, raw, rejectsApi, shq, useExecd } from "./harness.mjs";

const ctx = useExecd();
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Runs `fn(sessionId)` in a fresh session, deleted afterwards. */
async function withSession(fn, opts) {
  const sid = await ctx.commands.createSession(opts);
  try {
    return await fn(sid);
  } finally {
    await ctx.commands.deleteSession(sid).catch(() => {});
  }
}

test("c70 createSession returns distinct UUIDs", async () => {
  const a = await ctx.commands.createSession();
  const b = await ctx.commands.createSession();
  assert.match(a, UUID);
  assert.match(b, UUID);
  assert.notEqual(a, b);
  await ctx.commands.deleteSession(a);
  await ctx.commands.deleteSession(b);
});

test("c71 workingDirectory is created and used; init text is the session id", async () => {
  const target = join(ctx.work("c71"), "newdir", "nested");
  const sid = await ctx.commands.createSession({ workingDirectory: target });
  assert.ok(existsSync(target));
  const inits = [];
  const ex = await ctx.commands.runInSession(sid, "pwd", undefined, { onInit: (e) => inits.push(e.id) });
  assert.deepEqual(raw(ex.logs.stdout), [`${target}\n`]);
  assert.equal(ex.id, sid);
  assert.deepEqual(inits, [sid]);
  assert.equal(ex.exitCode, 0);
  assert.ok(ex.complete);
  await ctx.commands.deleteSession(sid);
});

test("c72 c73 c74 exported variables, cd and a workingDirectory override persist", () =>
  withSession(async (sid) => {
    const dir = ctx.work("c73");
    const a = join(dir, "a b");
    mkdirSync(a);
    assert.equal((await ctx.commands.runInSession(sid, "export SDK_JS_FOO='hello world'")).exitCode, 0);
    let ex = await ctx.commands.runInSession(sid, 'echo "$SDK_JS_FOO"');
    assert.deepEqual(raw(ex.logs.stdout), ["hello world\n"]);
    await ctx.commands.runInSession(sid, `cd ${shq(dir)}`);
    ex = await ctx.commands.runInSession(sid, "pwd");
    assert.deepEqual(lines(ex.logs.stdout), [dir]);
    ex = await ctx.commands.runInSession(sid, "pwd", { workingDirectory: a });
    assert.deepEqual(lines(ex.logs.stdout), [a]);
    ex = await ctx.commands.runInSession(sid, "pwd");
    assert.deepEqual(lines(ex.logs.stdout), [a]);
  }));

test("c75 exit 7: CommandExecError, exitCode 7, and the session survives", () =>
  withSession(async (sid) => {
    const ex = await ctx.commands.runInSession(sid, "echo before; exit 7");
    assert.deepEqual(lines(ex.logs.stdout), ["before"]);
    assert.equal(ex.error?.name, "CommandExecError");
    assert.equal(ex.error?.value, "7");
    assert.equal(ex.exitCode, 7);
    assert.equal(ex.complete, undefined);
    const again = await ctx.commands.runInSession(sid, "echo still-here");
    assert.deepEqual(lines(again.logs.stdout), ["still-here"]);
    assert.equal(again.exitCode, 0);
  }));

test("c76 c78 stderr arrives as stdout; no marker leaks", () =>
  withSession(async (sid) => {
    let ex = await ctx.commands.runInSession(sid, "echo e 1>&2");
    assert.deepEqual(raw(ex.logs.stdout), ["e\n"]);
    assert.deepEqual(ex.logs.stderr, []);
    ex = await ctx.commands.runInSession(sid, `printf '{"foo":1}'`);
    assert.deepEqual(raw(ex.logs.stdout), ['{"foo":1}']);
  }));

test("sdk24_output session runs keep blank lines and line endings (replaces C77)", () =>
  withSession(async (sid) => {
    let ex = await ctx.commands.runInSession(sid, "printf 'a\\n\\nb\\r\\n'");
    assert.deepEqual(raw(ex.logs.stdout), ["a\n", "\n", "b\r\n"]);
    ex = await ctx.commands.runInSession(sid, "printf 'x\\r\\ny\\rz'");
    assert.equal(raw(ex.logs.stdout).join(""), "x\r\ny\rz");
  }));

test("c80 deleteSession ends a running run; a second delete is 404 CONTEXT_NOT_FOUND", async () => {
  const sid = await ctx.commands.createSession();
  let initSeen;
  const init = new Promise((r) => {
    initSeen = r;
  });
  const run = ctx.commands.runInSession(sid, "sleep 30", undefined, { onInit: initSeen });
  await Promise.race([init, new Promise((_, rej) => setTimeout(() => rej(new Error("no init")), DEADLINE_MS).unref())]);
  const started = Date.now();
  await ctx.commands.deleteSession(sid);
  const ex = await run;
  assert.ok(Date.now() - started < 5000);
  assert.equal(ex.complete, undefined);
  await rejectsApi(() => ctx.commands.deleteSession(sid), 404, "CONTEXT_NOT_FOUND");
});

test("c81 runInSession on a deleted session is 500 RUNTIME_ERROR", async () => {
  const sid = await ctx.commands.createSession();
  await ctx.commands.deleteSession(sid);
  await rejectsApi(() => ctx.commands.runInSession(sid, "echo x"), 500, "RUNTIME_ERROR");
});

test("c82 timeoutSeconds ends a session run promptly with an error; the session goes on", () =>
  withSession(async (sid) => {
    const started = Date.now();
    const ex = await ctx.commands.runInSession(sid, "sleep 5", { timeoutSeconds: 0.3 });
    assert.ok(Date.now() - started < 4500);
    assert.equal(ex.complete, undefined);
    assert.ok(ex.error);
    const after = await ctx.commands.runInSession(sid, "echo ok");
    assert.deepEqual(raw(after.logs.stdout), ["ok\n"]);
  }));
