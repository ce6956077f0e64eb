// Commands through the JS SDK's `sandbox.commands` (CommandsAdapter): `POST /command` (foreground
// and background, with handlers, and the raw `runStream`), `GET /command/status/{id}`,
// `GET /command/{id}/logs?cursor=`, `DELETE /command?id=`.
//
// The JS SDK 0.1.11 has no argv form: `run(command: string, …)` always sends `{"command": text}`
// (the Python SDK 1.1.1's `run([...])` sends `argv`). The sdk24_argv tests therefore check what it
// has: exact arguments through shell text quoted by the caller, plus cwd and envs.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { DEADLINE_MS, HEX32, lines, pollUntil, raw, rejectsApi, shq, useExecd } from "./harness.mjs";

const ctx = useExecd();

/** ExecutionHandlers that record every callback in order. */
function recorder() {
  const calls = [];
  let resolveInit;
  const initSeen = new Promise((r) => {
    resolveInit = r;
  });
  const handlers = {
    onInit: (e) => {
      calls.push(["init", e]);
      resolveInit(e);
    },
    onStdout: (m) => calls.push(["stdout", m]),
    onStderr: (m) => calls.push(["stderr", m]),
    onExecutionComplete: (c) => calls.push(["complete", c]),
    onError: (e) => calls.push(["error", e]),
  };
  return {
    calls,
    handlers,
    initSeen,
    kinds: () => calls.map(([k]) => k),
    of: (kind) => calls.filter(([k]) => k === kind).map(([, v]) => v),
  };
}

// ---- foreground ----

test("c30 run with handlers: init, stdout, complete in order; exit code 0", async () => {
  const rec = recorder();
  const before = Date.now();
  const ex = await ctx.commands.run("echo Hello OpenSandbox E2E", undefined, rec.handlers);
  assert.match(ex.id, HEX32);
  assert.deepEqual(raw(ex.logs.stdout), ["Hello OpenSandbox E2E\n"]);
  assert.deepEqual(ex.logs.stderr, []);
  assert.equal(ex.error, undefined);
  assert.ok(ex.complete && ex.complete.executionTimeMs >= 0);
  assert.equal(ex.exitCode, 0);
  assert.deepEqual(rec.kinds(), ["init", "stdout", "complete"]);
  assert.equal(rec.of("init")[0].id, ex.id);
  assert.equal(rec.of("stdout")[0].isError, false);
  const now = Date.now();
  for (const [, v] of rec.calls) assert.ok(v.timestamp >= before - 60_000 && v.timestamp <= now + 60_000, `${v.timestamp}`);
});

test("c30 stderr arrives on onStderr with isError", async () => {
  const rec = recorder();
  const ex = await ctx.commands.run("echo out; echo err 1>&2", undefined, rec.handlers);
  assert.deepEqual(raw(ex.logs.stdout), ["out\n"]);
  assert.deepEqual(raw(ex.logs.stderr), ["err\n"]);
  assert.equal(ex.logs.stderr[0].isError, true);
  assert.deepEqual(raw(rec.of("stderr")), ["err\n"]);
  assert.equal(ex.exitCode, 0);
});

test("c34 nonzero exit: error event CommandExecError, exitCode inferred, no complete", async () => {
  const rec = recorder();
  const ex = await ctx.commands.run("echo before; exit 3", undefined, rec.handlers);
  assert.deepEqual(lines(ex.logs.stdout), ["before"]);
  assert.equal(ex.error?.name, "CommandExecError");
  assert.equal(ex.error?.value, "3");
  assert.equal(ex.complete, undefined);
  assert.equal(ex.exitCode, 3);
  assert.equal(rec.kinds()[0], "init");
  assert.equal(rec.kinds().at(-1), "error");
  assert.ok(!rec.kinds().includes("complete"));
});

test("c35 unknown command: 127 and the shell's message on stderr", async () => {
  const ex = await ctx.commands.run("definitely-not-a-command-xyz");
  assert.equal(ex.error?.name, "CommandExecError");
  assert.equal(ex.exitCode, 127);
  assert.ok(ex.logs.stderr.some((m) => m.text.includes("definitely-not-a-command-xyz")), JSON.stringify(ex.logs.stderr));
});

test("runStream yields the raw events: init first, one terminal event last", async () => {
  const events = [];
  for await (const ev of ctx.commands.runStream("echo a; echo b 1>&2")) events.push(ev);
  const types = events.map((e) => e.type);
  assert.equal(types[0], "init");
  assert.match(events[0].text, HEX32);
  assert.equal(types.at(-1), "execution_complete");
  assert.deepEqual(events.filter((e) => e.type === "stdout").map((e) => e.text), ["a\n"]);
  assert.deepEqual(events.filter((e) => e.type === "stderr").map((e) => e.text), ["b\n"]);
  const failed = [];
  for await (const ev of ctx.commands.runStream("exit 4")) failed.push(ev);
  assert.equal(failed.at(-1).type, "error");
  assert.equal(failed.at(-1).error.evalue, "4");
});

// ---- issue #24 part 1: argv (the JS SDK has none) -> exact arguments, cwd, envs ----

test("sdk24_argv js sdk has no argv form: quoted shell arguments arrive exactly", async () => {
  const args = ["a b", "", "it's", '"dq"', "$HOME", "*", "back\\slash", "tab\there", "new\nline", "-n"];
  const ex = await ctx.commands.run(`printf '[%s]\\n' ${args.map(shq).join(" ")}`);
  assert.equal(ex.exitCode, 0);
  assert.equal(raw(ex.logs.stdout).join(""), args.map((a) => `[${a}]\n`).join(""));
  // The status `content` is the shell text as sent (argv commands would show a JSON array).
  const st = await ctx.commands.getCommandStatus(ex.id);
  assert.equal(st.content, `printf '[%s]\\n' ${args.map(shq).join(" ")}`);
});

test("sdk24_argv c36 c37 cwd: workingDirectory is the command's directory; a missing one is 400", async () => {
  const dir = ctx.work("cwd dir 'q'");
  const ex = await ctx.commands.run("pwd", { workingDirectory: dir });
  assert.deepEqual(raw(ex.logs.stdout), [`${dir}\n`]);
  writeFileSync(join(dir, "tool.sh"), "#!/bin/sh\nprintf '<%s>' \"$@\"\n", { mode: 0o755 });
  const rel = await ctx.commands.run(`./tool.sh ${shq("x y")} ${shq("")}`, { workingDirectory: dir });
  assert.deepEqual(raw(rel.logs.stdout), ["<x y><>"]);
  await rejectsApi(() => ctx.commands.run("pwd", { workingDirectory: `${dir}/nope` }), 400, "INVALID_REQUEST_BODY");
});

test("sdk24_argv c38 envs: values with spaces, quotes, $ and newlines reach the command exactly", async () => {
  const envs = { SDK_JS_A: "hello world $x 'q' \"d\"", SDK_JS_B: "", SDK_JS_C: "l1\nl2" };
  const base = await ctx.commands.run('echo "[${SDK_JS_A:-unset}]"');
  assert.deepEqual(raw(base.logs.stdout), ["[unset]\n"]);
  const ex = await ctx.commands.run('printf "[%s]\\n" "$SDK_JS_A" "${SDK_JS_B-unset}" "$SDK_JS_C"', { envs });
  assert.equal(raw(ex.logs.stdout).join(""), `[${envs.SDK_JS_A}]\n[]\n[l1\nl2]\n`);
  assert.equal(ex.exitCode, 0);
});

// ---- issue #24 part 2: output text keeps its line endings ----

test("sdk24_output logs.stdout joined is the exact output: blank lines and CRLF kept", async () => {
  const ex = await ctx.commands.run("printf 'a\\n\\nb\\r\\n'");
  assert.deepEqual(raw(ex.logs.stdout), ["a\n", "\n", "b\r\n"]);
  assert.equal(raw(ex.logs.stdout).join(""), "a\n\nb\r\n");
});

test("sdk24_output CR progress redraws, unterminated last line and stderr are exact", async () => {
  const ex = await ctx.commands.run("printf 'a\\r\\nb\\rc\\n\\n\\nd'; printf 'e1\\n\\ne2' >&2");
  assert.deepEqual(raw(ex.logs.stdout), ["a\r\n", "b\r", "c\n", "\n", "\n", "d"]);
  assert.equal(raw(ex.logs.stderr).join(""), "e1\n\ne2");
  const c31 = await ctx.commands.run("printf 'a\\n\\nb\\n\\n\\nc\\n'");
  assert.deepEqual(raw(c31.logs.stdout), ["a\n", "\n", "b\n", "\n", "\n", "c\n"]);
  const c33 = await ctx.commands.run("printf 'no-newline'");
  assert.deepEqual(raw(c33.logs.stdout), ["no-newline"]);
});

test("sdk24_output 20000 lines in order through onStdout with skipAccumulation", async () => {
  const seen = [];
  const ex = await ctx.commands.run("seq 1 20000", undefined, { onStdout: (m) => seen.push(m.text), skipAccumulation: true });
  assert.equal(ex.exitCode, 0);
  assert.deepEqual(ex.logs.stdout, []);
  assert.equal(seen.length, 20000);
  assert.equal(seen.join(""), Array.from({ length: 20000 }, (_, i) => `${i + 1}\n`).join(""));
});

test("sdk24_output a 3 MB line is cut into pieces of at most 1 MiB that join exactly (D10)", async () => {
  const ex = await ctx.commands.run("head -c 3000000 /dev/zero | tr '\\0' a; printf '\\nend\\n'");
  const texts = raw(ex.logs.stdout);
  assert.ok(texts.length >= 4, `${texts.length} events`);
  assert.ok(texts.every((t) => Buffer.byteLength(t) <= 1024 * 1024), texts.map((t) => t.length).join(","));
  assert.equal(texts.join(""), `${"a".repeat(3_000_000)}\nend\n`);
  assert.equal(texts.at(-1), "end\n");
});

test("sdk24_output invalid UTF-8 becomes U+FFFD; valid multibyte text is exact", async () => {
  const ex = await ctx.commands.run("printf 'ok \\303\\251 \\342\\234\\223\\n'; printf 'bad \\377\\376 x\\n'");
  assert.deepEqual(raw(ex.logs.stdout), ["ok é ✓\n", "bad \uFFFD\uFFFD x\n"]);
});

test("c171 output reaches the handler while the command runs", async () => {
  const at = {};
  const ex = await ctx.commands.run("echo first; sleep 1.5; echo second", undefined, {
    onStdout: (m) => {
      at[m.text.trim()] = Date.now();
    },
  });
  assert.equal(ex.exitCode, 0);
  assert.ok(at.second - at.first >= 500, JSON.stringify(at));
});

test("c41 timeoutSeconds kills the command: error -1", async () => {
  const started = Date.now();
  const ex = await ctx.commands.run("sleep 10", { timeoutSeconds: 0.5 });
  assert.ok(Date.now() - started < 8000);
  assert.equal(ex.error?.value, "-1");
  assert.equal(ex.exitCode, -1);
  assert.equal(ex.complete, undefined);
});

test("c42 uid and gid (root only)", async (t) => {
  if (process.geteuid() !== 0) {
    t.skip("needs root to switch credentials");
    return;
  }
  const ex = await ctx.commands.run("id -u; id -g", { uid: 65534, gid: 65534 });
  assert.deepEqual(lines(ex.logs.stdout), ["65534", "65534"]);
});

// ---- status, interrupt ----

test("c51 status of a finished foreground command", async () => {
  const ex = await ctx.commands.run("echo done");
  const st = await ctx.commands.getCommandStatus(ex.id);
  assert.equal(st.id, ex.id);
  assert.equal(st.content, "echo done");
  assert.equal(st.running, false);
  assert.equal(st.exitCode, 0);
  assert.ok(st.startedAt instanceof Date && st.finishedAt instanceof Date);
  assert.ok(st.finishedAt >= st.startedAt);
});

test("c56 status of an unknown id is 404", async () => {
  await rejectsApi(() => ctx.commands.getCommandStatus("0".repeat(32)), 404, "INVALID_REQUEST_BODY");
});

test("c43 c44 interrupt a running foreground command: the run ends with -1", async () => {
  const rec = recorder();
  const run = ctx.commands.run("sleep 30", undefined, rec.handlers);
  const init = await Promise.race([rec.initSeen, new Promise((_, rej) => setTimeout(() => rej(new Error("no init")), DEADLINE_MS).unref())]);
  const st = await ctx.commands.getCommandStatus(init.id);
  assert.equal(st.running, true);
  const started = Date.now();
  await ctx.commands.interrupt(init.id);
  const ex = await run;
  assert.ok(Date.now() - started < DEADLINE_MS);
  assert.equal(ex.id, init.id);
  assert.equal(ex.error?.value, "-1");
  assert.equal(ex.exitCode, -1);
  const after = await ctx.commands.getCommandStatus(init.id);
  assert.equal(after.running, false);
  assert.equal(after.exitCode, -1);
});

test("c45 interrupt of a finished command is 500 RUNTIME_ERROR", async () => {
  const ex = await ctx.commands.run("true");
  await rejectsApi(() => ctx.commands.interrupt(ex.id), 500, "RUNTIME_ERROR");
});

// ---- background ----

test("c50 c51 c59 background: returns at once, status running, interrupt -> -1", async () => {
  const started = Date.now();
  const ex = await ctx.commands.run("sleep 30", { background: true });
  assert.ok(Date.now() - started < 10_000);
  assert.match(ex.id, HEX32);
  assert.equal(ex.exitCode, undefined); // the SDK infers no exit code for background runs
  assert.deepEqual(ex.logs.stdout, []);
  let st = await pollUntil(() => ctx.commands.getCommandStatus(ex.id), (s) => s.running === true, DEADLINE_MS, "running");
  assert.equal(st.content, "sleep 30");
  assert.equal(st.exitCode, null);
  assert.equal(st.finishedAt, null);
  assert.ok(st.startedAt instanceof Date);
  await ctx.commands.interrupt(ex.id);
  st = await pollUntil(() => ctx.commands.getCommandStatus(ex.id), (s) => s.running === false, DEADLINE_MS, "stopped");
  assert.equal(st.exitCode, -1);
});

test("c52 c53 background logs: polling with the cursor collects every line; cursor is a byte offset", async () => {
  const ex = await ctx.commands.run("echo log-line-1; echo log-line-2 1>&2; sleep 0.3; echo 'log-line-3 é'", { background: true });
  let collected = "";
  let cursor;
  const cursors = [];
  const deadline = Date.now() + DEADLINE_MS;
  let st;
  for (;;) {
    const logs = await ctx.commands.getBackgroundCommandLogs(ex.id, cursor);
    assert.equal(typeof logs.cursor, "number");
    collected += logs.content;
    cursors.push(logs.cursor);
    cursor = logs.cursor;
    st = await ctx.commands.getCommandStatus(ex.id);
    if (st.running === false && collected.includes("log-line-3")) break;
    assert.ok(Date.now() < deadline, `logs never completed: ${JSON.stringify(collected)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(cursors, [...cursors].sort((a, b) => a - b));
  assert.equal(collected, "log-line-1\nlog-line-2\nlog-line-3 é\n");
  assert.equal(cursor, Buffer.byteLength(collected));
  const again = await ctx.commands.getBackgroundCommandLogs(ex.id, cursor);
  assert.equal(again.content, "");
  assert.equal(again.cursor, cursor);
  const full = await ctx.commands.getBackgroundCommandLogs(ex.id);
  assert.equal(full.content, collected);
  assert.equal(st.exitCode, 0);
});

test("c57 background exit 5: status error 'exit status 5'", async () => {
  const ex = await ctx.commands.run("exit 5", { background: true });
  const st = await pollUntil(() => ctx.commands.getCommandStatus(ex.id), (s) => s.running === false, DEADLINE_MS, "finished");
  assert.equal(st.exitCode, 5);
  assert.equal(st.error, "exit status 5");
  assert.ok(st.finishedAt >= st.startedAt);
});

test("c58 background timeoutSeconds ends the command with -1", async () => {
  const ex = await ctx.commands.run("sleep 10", { background: true, timeoutSeconds: 0.5 });
  const st = await pollUntil(() => ctx.commands.getCommandStatus(ex.id), (s) => s.running === false, 8000, "timed out");
  assert.equal(st.exitCode, -1);
});

test("c55 logs of an unknown id is 400", async () => {
  await rejectsApi(() => ctx.commands.getBackgroundCommandLogs("f".repeat(32)), 400, "INVALID_REQUEST_BODY");
});
