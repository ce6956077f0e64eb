// Starts the real execd binary for the JS SDK suite (the JS twin of tests/sdk/execd_server.py).
//
// `ExecdServer.start()` uses `EXECD_BIN` (scripts/sdk-js-test.sh sets it to the static release
// build) or builds `target/release/execd` once, picks a free loopback port, runs execd with a random
// access token, its own state directory and a scratch cwd/HOME/TMPDIR, in its own session and
// process group, and waits for `/ping` with a deadline. `stop()` sends SIGTERM, then SIGKILL after a
// deadline, waits for the exit and removes the scratch tree.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, closeSync, constants, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const TOKEN_HEADER = "X-EXECD-ACCESS-TOKEN";
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

/** `EXECD_BIN` if set, else `target/release/execd`, built once with `cargo build --release`. */
export function execdBinary() {
  const envBin = process.env.EXECD_BIN;
  if (envBin) {
    const path = resolve(envBin);
    try {
      if (!statSync(path).isFile()) throw new Error("not a file");
      accessSync(path, constants.X_OK);
    } catch {
      throw new Error(`EXECD_BIN=${envBin} is not an executable file`);
    }
    return path;
  }
  // cargo decides whether anything changed; a no-op build takes well under a second.
  const built = spawnSync("cargo", ["build", "--release", "--locked", "--bin", "execd"], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (built.status !== 0) throw new Error(`cargo build --release failed (status ${built.status})`);
  return join(REPO_ROOT, "target", "release", "execd");
}

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Every execd this process started, killed if the test process exits without stopping it.
const running = new Set();
process.on("exit", () => {
  for (const s of running) {
    try {
      process.kill(s.child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

export class ExecdServer {
  /** Starts execd and waits until `/ping` answers; retried only when execd exited early. */
  static async start({ binary, extraEnv = {} } = {}) {
    const bin = binary ?? execdBinary();
    let lastLog = "";
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = new ExecdServer(bin);
      await server.#spawn(extraEnv);
      if (await server.#waitReady()) return server;
      lastLog = server.log();
      const exited = server.exitCode !== null;
      await server.stop();
      if (!exited) break; // alive but not answering: not a port race, do not retry
    }
    throw new Error(`execd did not become ready; log:\n${lastLog}`);
  }

  constructor(binary) {
    this.binary = binary;
    this.port = 0;
    this.token = "";
    this.root = "";
    this.child = null;
    this.exitCode = null;
    this.exited = null;
  }

  async #spawn(extraEnv) {
    this.root = mkdtempSync(join(tmpdir(), "execd-js-"));
    this.scratch = join(this.root, "scratch");
    this.home = join(this.scratch, "home");
    this.tmpdir = join(this.scratch, "tmp");
    for (const d of [this.scratch, this.home, this.tmpdir]) mkdirSync(d, { recursive: true });
    this.envFile = join(this.root, "execd.env");
    writeFileSync(this.envFile, "");
    this.logPath = join(this.root, "execd.log");
    this.port = await freePort();
    this.token = randomBytes(16).toString("hex");
    const env = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith("EXECD_") && !k.startsWith("JUPYTER_") && k !== "RUST_LOG") env[k] = v;
    }
    Object.assign(env, {
      HOME: this.home,
      TMPDIR: this.tmpdir,
      EXECD_ACCESS_TOKEN: this.token,
      EXECD_ENVS: this.envFile,
    }, extraEnv);
    const args = ["--bind", "127.0.0.1", "--port", String(this.port), "--state-dir", join(this.root, "state")];
    const logFd = openSync(this.logPath, "w");
    try {
      // detached: its own session and process group, like a daemon, so a group-wide signal from
      // execd or from a command it runs can never reach the test runner or the CI shell.
      this.child = spawn(this.binary, args, {
        cwd: this.scratch,
        env,
        stdio: ["ignore", logFd, logFd],
        detached: true,
      });
    } finally {
      closeSync(logFd);
    }
    running.add(this);
    this.exited = new Promise((res) => {
      this.child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : 0);
        running.delete(this);
        res(this.exitCode);
      });
      this.child.once("error", () => {
        this.exitCode = -1;
        running.delete(this);
        res(-1);
      });
    });
  }

  async #waitReady() {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.exitCode !== null) return false;
      if (await this.ping()) return true;
      await sleep(50);
    }
    return false;
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  async ping() {
    try {
      const res = await fetch(`${this.baseUrl}/ping`, {
        headers: { [TOKEN_HEADER]: this.token },
        signal: AbortSignal.timeout(2000),
      });
      await res.arrayBuffer();
      return res.status === 200;
    } catch {
      return false;
    }
  }

  alive() {
    return this.child !== null && this.exitCode === null;
  }

  log() {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  /** SIGTERM, then SIGKILL after a deadline; waits for the exit and removes the scratch tree. */
  async stop() {
    if (this.child !== null && this.exitCode === null) {
      this.child.kill("SIGTERM");
      let timer;
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        new Promise((r) => {
          timer = setTimeout(() => r(true), STOP_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        this.child.kill("SIGKILL");
        await this.exited;
      }
    }
    if (this.root) rmSync(this.root, { recursive: true, force: true });
    return this.exitCode;
  }
}
