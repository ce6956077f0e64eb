// Isolated sessions (`/v1/isolated/*`, ISOLATED.md I45) through the JS SDK's own isolation
// service, the one `Sandbox.isolation` is: `create`, `attach`, `capabilities`, `list`, `runOnce`,
// `withSession`, and per handle `run`, `get`, `delete`, `files`. JS 0.1.11 has no background runs
// and no overlays list, and `workspace` is required. Needs root (namespaces, overlayfs): when execd
// says isolation is unavailable here the file skips locally and fails under CI=true.

import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { lines, useExecd } from "./harness.mjs";

const ctx = useExecd();

/** The isolation service, or `undefined` (with the test skipped) when execd cannot isolate here. */
async function isolation(t) {
  const caps = await ctx.isolation.capabilities();
  if (!caps.available) {
    assert.ok(process.env.CI !== "true", `isolation unavailable under CI: ${caps.message}`);
    t.skip(`isolation unavailable here: ${caps.message}`);
    return undefined;
  }
  return ctx.isolation;
}

test("i45 capabilities: available, with diff and commit flags", async (t) => {
  const iso = await isolation(t);
  if (!iso) return;
  const caps = await iso.capabilities();
  assert.equal(caps.available, true);
  assert.equal(typeof caps.diff_supported, "boolean");
  assert.equal(typeof caps.commit_supported, "boolean");
  assert.equal(typeof caps.setpriv_available, "boolean");
});

test("i45 create, run with state between runs, get, list, attach, delete", async (t) => {
  const iso = await isolation(t);
  if (!iso) return;
  const ws = ctx.work("i45-create");
  const session = await iso.create({ workspace: { path: ws, mode: "rw" }, share_net: false });
  try {
    assert.match(session.sessionId, /^[0-9a-f-]{32,36}$/);
    assert.equal(session.info.session_id, session.sessionId);
    let ex = await session.run("export JS_ISO=kept; cd /tmp; echo a; echo b >&2");
    assert.equal(ex.exitCode, 0);
    assert.ok(ex.complete);
    // stderr is merged into stdout events, as upstream's session shell does (I-Q4).
    assert.deepEqual(lines(ex.logs.stdout), ["a", "b"]);
    ex = await session.run('echo "$JS_ISO $(pwd) $$ $(hostname)"');
    assert.deepEqual(lines(ex.logs.stdout), ["kept /tmp 1 sandbox"]);
    ex = await session.run("echo scoped=$ONLY_HERE", { envs: { ONLY_HERE: "yes" } });
    assert.deepEqual(lines(ex.logs.stdout), ["scoped=yes"]);
    const state = await session.get();
    assert.equal(state.status, "active");
    assert.equal(state.share_net, false);
    assert.equal(state.workspace.path, ws);
    const listed = await iso.list();
    assert.ok(listed.some((s) => s.session_id === session.sessionId), JSON.stringify(listed));
    const again = await iso.attach(session.sessionId);
    assert.equal(again.info.share_net, false);
    assert.deepEqual(lines((await again.run("echo $JS_ISO")).logs.stdout), ["kept"]);
  } finally {
    await session.delete();
  }
  const listed = await iso.list();
  assert.ok(!listed.some((s) => s.session_id === session.sessionId), JSON.stringify(listed));
  await assert.rejects(() => iso.attach(session.sessionId), /404/);
});

test("i45 a failing command reports its exit code and the session stays usable", async (t) => {
  const iso = await isolation(t);
  if (!iso) return;
  await iso.withSession({ workspace: { path: ctx.work("i45-exit") } }, async (session) => {
    const ex = await session.run("sh -c 'exit 3'");
    assert.equal(ex.exitCode, 3);
    assert.equal(ex.error?.value, "3");
    assert.ok(!ex.complete);
    assert.deepEqual(lines((await session.run("echo still")).logs.stdout), ["still"]);
  });
});

test("i45 a bare exit N fails the run, exported state survives in the same session", async (t) => {
  const iso = await isolation(t);
  if (!iso) return;
  await iso.withSession({ workspace: { path: ctx.work("i45-bare-exit") } }, async (session) => {
    const ex = await session.run("export KEEP=yes; echo before; exit 4");
    assert.equal(ex.exitCode, 4);
    assert.deepEqual(lines(ex.logs.stdout), ["before"]);
    assert.deepEqual(lines((await session.run("echo $KEEP")).logs.stdout), ["yes"]);
    assert.equal((await session.get()).status, "active");
  });
});

test("i45 runOnce on an overlay: the run sees its writes, the host does not, the session is gone", async (t) => {
  const iso = await isolation(t);
  if (!iso) return;
  const ws = ctx.work("i45-overlay");
  writeFileSync(join(ws, "host.txt"), "from host\n");
  const before = (await iso.list()).length;
  const ex = await iso.runOnce("echo changed > host.txt; echo new > made.txt; cat host.txt made.txt", ws, {
    workspaceMode: "overlay",
  });
  assert.equal(ex.exitCode, 0);
  assert.deepEqual(lines(ex.logs.stdout), ["changed", "new"]);
  assert.equal(readFileSync(join(ws, "host.txt"), "utf8"), "from host\n");
  assert.ok(!existsSync(join(ws, "made.txt")));
  assert.equal((await iso.list()).length, before);
});

test("i45 session.files: write, read, info, list, search, delete inside the workspace", async (t) => {
  const iso = await isolation(t);
  if (!iso) return;
  const ws = ctx.work("i45-files");
  await iso.withSession({ workspace: { path: ws, mode: "rw" } }, async (session) => {
    const target = join(ws, "sub", "note.txt");
    await session.files.writeFiles([{ path: target, data: "hello isolated\n" }]);
    assert.equal(await session.files.readFile(target), "hello isolated\n");
    // The session shell sees what the API wrote (rw workspace).
    assert.deepEqual(lines((await session.run(`cat ${target}`)).logs.stdout), ["hello isolated"]);
    const info = await session.files.getFileInfo([target]);
    assert.equal(info[target].size, 15);
    const listed = await session.files.listDirectory({ path: join(ws, "sub") });
    assert.ok(listed.some((e) => e.path === target), JSON.stringify(listed));
    const found = await session.files.search({ path: ws, pattern: "*.txt" });
    assert.ok(found.some((e) => e.path === target), JSON.stringify(found));
    await session.files.deleteFiles([target]);
    assert.ok(!existsSync(target));
  });
});
