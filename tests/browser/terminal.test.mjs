// The GET /terminal page (EXTENSIONS X70) end to end: the real execd (EXECD_BIN, started by the
// JS SDK suite's harness), Debian's chromium, headless, driven by playwright-core. Each case
// opens its own browser context; the cases run in order and share one execd, so the last one can
// read everything the others put in its request log.
//
// What the page shows is read from xterm.js's buffer (`execdTerminal.term`, the page's debugging
// handle) and, once, from the rendered rows; keys go in through the keyboard as a person types.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createServer, connect } from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ExecdServer, REPO_ROOT } from "../sdk/js/execd.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const TIMEOUT = 20_000;
const SCREENSHOTS = process.env.X70_SCREENSHOT_DIR || join(REPO_ROOT, "tests", "browser", "screenshots");

let server;
let browser;

before(async () => {
  server = await ExecdServer.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const rand = () => Math.floor(Math.random() * 1e9);

function pageUrl({ base = server.baseUrl, path = "/terminal", session } = {}) {
  const q = new URLSearchParams({ access_token: server.token });
  if (session) q.set("session", session);
  return `${base}${path}?${q}`;
}

async function newPage(viewport = { width: 1000, height: 600 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.errors = errors;
  return page;
}

async function waitState(page, state) {
  await waitFor(page, (s) => document.body.dataset.state === s, state, `state ${state}`);
}

/** page.waitForFunction, failing with the page's state and status line. */
async function waitFor(page, fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT });
  } catch (e) {
    const now = await page.evaluate(() => `${document.body.dataset.state}: ${document.getElementById("status").textContent}`);
    throw new Error(`${what} never happened (page ${now}; page errors: ${page.errors.join("; ")})`, { cause: e });
  }
}

async function open(url, viewport) {
  const page = await newPage(viewport);
  await page.goto(url);
  await waitState(page, "connected");
  return page;
}

/** Every line of the terminal's buffer (scrollback included), trailing blanks trimmed. */
function screen(page) {
  return page.evaluate(() => {
    const b = window.execdTerminal.term.buffer.active;
    const out = [];
    for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
    return out.join("\n");
  });
}

async function waitScreen(page, re, what) {
  const deadline = Date.now() + TIMEOUT;
  let text = "";
  while (Date.now() < deadline) {
    text = await screen(page);
    const m = text.match(re);
    if (m) return m;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what}: ${re} never showed; the terminal has:\n${text}`);
}

/** Types a command line into the terminal, as keys. */
async function type(page, line) {
  await page.evaluate(() => window.execdTerminal.term.focus());
  await page.keyboard.type(line);
  await page.keyboard.press("Enter");
}

/** Types `echo <tag>-$((n+1))` and waits for the shell's answer `<tag>-<n+1>` on a line of its own. */
async function echo(page, tag) {
  const n = rand();
  await type(page, `echo ${tag}-$((${n}+1))`);
  const out = `${tag}-${n + 1}`;
  await waitScreen(page, new RegExp(`^${out}$`, "m"), `echo ${tag}`);
  return out;
}

async function sttySize(page) {
  const tag = `SZ${rand()}`;
  await type(page, `echo ${tag}:$(stty size)`);
  const m = await waitScreen(page, new RegExp(`^${tag}:(\\d+) (\\d+)$`, "m"), "stty size");
  return { rows: Number(m[1]), cols: Number(m[2]) };
}

const termSize = (page) => page.evaluate(() => ({ rows: window.execdTerminal.term.rows, cols: window.execdTerminal.term.cols }));

test("x70_type_a_command_and_see_its_output", async () => {
  const page = await open(pageUrl());
  const session = await page.evaluate(() => window.execdTerminal.sessionId);
  assert.match(session, /^[0-9a-f-]{36}$/);
  assert.equal(new URL(page.url()).searchParams.get("session"), session, "the session id is kept in the URL");
  const out = await echo(page, "hello");
  // Rendered, not only in the buffer.
  assert.ok((await page.locator(".xterm-rows").innerText()).includes(out));
  mkdirSync(SCREENSHOTS, { recursive: true });
  await type(page, "echo TERM=$TERM; stty size; ls -d /usr/*bin");
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(SCREENSHOTS, "terminal.png") });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("x70_resizing_the_window_changes_stty_size", async () => {
  const page = await open(pageUrl(), { width: 800, height: 500 });
  const first = await sttySize(page);
  assert.deepEqual(first, await termSize(page), "the PTY has the terminal's size");
  await page.setViewportSize({ width: 1300, height: 850 });
  await waitFor(page, (c) => window.execdTerminal.term.cols > c, first.cols, "a wider terminal");
  const second = await sttySize(page);
  assert.deepEqual(second, await termSize(page), "the PTY follows the window");
  assert.ok(second.cols > first.cols && second.rows > first.rows, `${JSON.stringify(first)} -> ${JSON.stringify(second)}`);
  await page.context().close();
});

test("x70_reload_shows_the_earlier_output_again", async () => {
  const page = await open(pageUrl());
  const session = await page.evaluate(() => window.execdTerminal.sessionId);
  const out = await echo(page, "before-reload");
  await page.reload();
  await waitState(page, "connected");
  assert.equal(await page.evaluate(() => window.execdTerminal.sessionId), session, "same session after the reload");
  await waitScreen(page, new RegExp(`^${out}$`, "m"), "replay after reload");
  await echo(page, "after-reload");
  await page.context().close();
});

test("x70_dropped_connection_reconnects_without_losing_or_doubling_output", async () => {
  // A TCP relay between the browser and execd that the test can cut.
  const sockets = new Set();
  const relay = createServer((client) => {
    const upstream = connect(server.port, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise((r) => relay.listen(0, "127.0.0.1", r));
  try {
    const page = await open(pageUrl({ base: `http://127.0.0.1:${relay.address().port}` }));
    const before = await echo(page, "before-drop");
    const connects = await page.evaluate(() => window.execdTerminal.connects);
    for (const s of sockets) s.destroy();
    await waitFor(page, (c) => window.execdTerminal.connects > c, connects, "a reconnect");
    await waitState(page, "connected");
    await echo(page, "after-drop");
    const lines = (await screen(page)).split("\n").filter((l) => l === before);
    assert.equal(lines.length, 1, "the output before the drop is shown once");
    await page.context().close();
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => relay.close(r));
  }
});

test("x70_killed_shell_is_shown_and_can_be_restarted", async () => {
  const page = await open(pageUrl());
  await type(page, "kill -9 $$");
  await waitState(page, "exited");
  assert.match(await page.locator("#status").innerText(), /exited \(killed by a signal\)/);
  await waitScreen(page, /\[shell exited: killed by a signal\]/, "exit note");
  assert.ok(await page.locator("#restart").isVisible());
  await page.locator("#restart").click();
  await waitState(page, "connected");
  await echo(page, "restarted");
  // A normal exit shows its code.
  await type(page, "exit 3");
  await waitState(page, "exited");
  assert.match(await page.locator("#status").innerText(), /exit code 3/);
  await page.context().close();
});

test("x70_second_page_takes_over_the_session", async () => {
  const first = await open(pageUrl());
  const session = await first.evaluate(() => window.execdTerminal.sessionId);
  const out = await echo(first, "first-page");
  const second = await newPage();
  await second.goto(pageUrl({ session }));
  await waitState(second, "held");
  assert.ok(await second.locator("#takeover").isVisible());
  await second.locator("#takeover").click();
  await waitState(second, "connected");
  await waitState(first, "taken-over");
  assert.ok(await first.locator("#takeover").isVisible(), "the evicted page offers to take it back");
  await waitScreen(second, new RegExp(`^${out}$`, "m"), "replay on takeover");
  await echo(second, "second-page");
  await first.context().close();
  await second.context().close();
});

test("x70_page_works_through_the_proxy", async () => {
  const path = `/proxy/${server.port}/terminal`;
  const page = await open(pageUrl({ path }));
  assert.equal(new URL(page.url()).pathname, path);
  await echo(page, "via-proxy");
  const session = await page.evaluate(() => window.execdTerminal.sessionId);
  const resp = await fetch(`${server.baseUrl}/pty/${session}`, { headers: { "X-EXECD-ACCESS-TOKEN": server.token } });
  assert.equal((await resp.json()).running, true);
  await page.context().close();
});

test("x70_token_is_not_in_the_request_log_or_browser_storage", async () => {
  const page = await open(pageUrl());
  await echo(page, "storage");
  const stored = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }, document.cookie]));
  assert.ok(!stored.includes(server.token), `the token is in the page's storage: ${stored}`);
  await page.context().close();
  const log = server.log();
  for (const path of ['"/terminal"', '"/terminal/xterm.js"', '"/pty"', `/proxy/${server.port}/terminal"`]) {
    assert.ok(log.includes(path), `the request log has ${path}:\n${log}`);
  }
  assert.match(log, /"path":"\/pty\/[0-9a-f-]+\/ws"/);
  assert.ok(!log.includes(server.token), "the token is in execd's log");
});
