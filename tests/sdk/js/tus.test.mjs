// Resumable uploads (EXTENSIONS X33) with tus-js-client, the tus project's own JS client, against
// `/files/tus` of the suite's execd (directly, and through `/proxy/<port>` in the proxy pass, where
// the relative `Location` must keep the prefix): a multi-chunk upload whose file appears only at
// the end, an upload aborted midway (and one whose client process is killed) resumed by a new
// Upload from the server's offset, and termination (`Upload.terminate(url)` and `abort(true)`). tests/sdk/test_tus.py does the same with
// tuspy; the edge cases (409, 460, expiry, restart) are in tests/integration/upload.rs.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as tus from "tus-js-client";

import { basePath, TOKEN_HEADER, useExecd } from "./harness.mjs";

const ctx = useExecd();
const CHUNK = 256 * 1024;

const endpoint = () => `${ctx.execd.baseUrl}${basePath(ctx.execd.port)}/files/tus`;
const headers = () => ({ [TOKEN_HEADER]: ctx.execd.token });
const leftovers = (dir) => readdirSync(dir).filter((n) => n.startsWith(".execd-"));

/** Options every Upload here shares: no retries (a failure must fail the test), no URL storage. */
function options(extra) {
  return {
    endpoint: endpoint(),
    headers: headers(),
    chunkSize: CHUNK,
    retryDelays: null,
    storeFingerprintForResuming: false,
    ...extra,
  };
}

/** Runs `upload` to its end; resolves on success, rejects with the client's error. */
function finish(upload) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = () => resolve();
    upload.options.onError = (err) => reject(err);
    upload.start();
  });
}

/**
 * Finishes `data` with a new Upload of the existing upload `url` (the client asks the server's
 * offset with HEAD and sends only the rest); resolves to the Upload-Offset of every PATCH sent.
 */
async function resumeAt(url, data) {
  const patches = [];
  const upload = new tus.Upload(
    data,
    options({
      uploadUrl: url,
      onBeforeRequest: (req) => {
        if (req.getMethod() === "PATCH") patches.push(Number(req.getHeader("Upload-Offset")));
      },
    }),
  );
  await finish(upload);
  return patches;
}

/**
 * Starts `upload` and aborts it (without termination) as soon as `chunks` PATCHes were accepted;
 * resolves with the client's offset then. onChunkComplete runs before the client starts the next
 * PATCH, so no request is in flight after the abort.
 */
function abortAfter(upload, chunks) {
  return new Promise((resolve, reject) => {
    let done = 0;
    upload.options.onChunkComplete = (_size, accepted) => {
      done += 1;
      if (done === chunks) upload.abort().then(() => resolve(accepted), reject);
    };
    upload.options.onSuccess = () => reject(new Error("the upload finished before it was aborted"));
    upload.options.onError = (err) => reject(err);
    upload.start();
  });
}

/** `HEAD` of an upload URL: status and Upload-Offset. */
async function head(url) {
  const res = await fetch(url, {
    method: "HEAD",
    headers: { ...headers(), "Tus-Resumable": "1.0.0" },
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, offset: Number(res.headers.get("upload-offset")) };
}

test("x33_tusjs_multi_chunk_upload_appears_whole_only_at_the_end", async () => {
  const w = ctx.work("x33-multi");
  const data = randomBytes(12 * CHUNK + 1234);
  const target = join(w, "sub", "tusjs.bin");
  const seen = [];
  const patches = [];
  const upload = new tus.Upload(
    data,
    options({
      metadata: { path: target, filename: "tusjs.bin" },
      onBeforeRequest: (req) => {
        if (req.getMethod() === "PATCH") patches.push(Number(req.getHeader("Upload-Offset")));
      },
      onChunkComplete: (_size, accepted, total) => {
        // Before the last chunk only the hidden partial file exists.
        if (accepted < total) seen.push([accepted, existsSync(target), leftovers(join(w, "sub")).length]);
      },
    }),
  );
  await finish(upload);
  assert.equal(patches.length, 13, `PATCH offsets ${patches}`);
  assert.deepEqual(patches, Array.from({ length: 13 }, (_, i) => i * CHUNK));
  assert.deepEqual(
    seen,
    Array.from({ length: 12 }, (_, i) => [(i + 1) * CHUNK, false, 1]),
  );
  // Relative Location resolved against the creation URL: the prefix (/proxy/<port>) is kept.
  assert.ok(upload.url.startsWith(`${endpoint()}/`), upload.url);
  assert.ok(readFileSync(target).equals(data), "the uploaded bytes differ");
  assert.deepEqual(leftovers(join(w, "sub")), []);
  assert.equal((await head(upload.url)).status, 404, "a finished upload is gone");
});

test("x33_tusjs_aborted_upload_resumes_from_the_server_offset", async () => {
  const w = ctx.work("x33-resume");
  const data = randomBytes(8 * CHUNK + 17);
  const target = join(w, "resumed.bin");
  const first = new tus.Upload(data, options({ metadata: { path: target } }));
  const clientOffset = await abortAfter(first, 3);
  assert.equal(clientOffset, 3 * CHUNK);
  const url = first.url;
  assert.ok(url, "the first upload has a URL");

  const before = await head(url);
  assert.equal(before.status, 200);
  assert.ok(before.offset > 0 && before.offset < data.length, `server offset ${before.offset}`);
  assert.equal(before.offset, 3 * CHUNK);
  assert.ok(!existsSync(target), "the target exists before the upload finished");
  assert.equal(leftovers(w).length, 1);

  // A NEW Upload with the same URL asks the server (HEAD) and sends only the rest.
  const patches = await resumeAt(url, data);
  assert.equal(patches[0], before.offset, `PATCH offsets ${patches}`);
  assert.equal(patches.length, 6, `PATCH offsets ${patches}`);
  assert.ok(readFileSync(target).equals(data), "the resumed bytes differ");
  assert.deepEqual(leftovers(w), []);
});

test("x33_tusjs_termination_removes_the_partial_upload", async () => {
  const w = ctx.work("x33-terminate");
  const data = randomBytes(6 * CHUNK);

  // tus.Upload.terminate(url) on an upload a client left behind.
  const a = join(w, "a.bin");
  const left = new tus.Upload(data, options({ metadata: { path: a } }));
  await abortAfter(left, 2);
  assert.equal((await head(left.url)).offset, 2 * CHUNK);
  assert.equal(leftovers(w).length, 1);
  await tus.Upload.terminate(left.url, { headers: headers(), retryDelays: null });
  assert.equal((await head(left.url)).status, 404);
  assert.deepEqual(leftovers(w), []);
  assert.ok(!existsSync(a));

  // abort(true): the client stops and terminates in one call.
  const b = join(w, "b.bin");
  const gone = new tus.Upload(data, options({ metadata: { path: b } }));
  await new Promise((resolve, reject) => {
    gone.options.onChunkComplete = (_size, accepted) => {
      if (accepted === CHUNK) gone.abort(true).then(resolve, reject);
    };
    gone.options.onSuccess = () => reject(new Error("the upload finished before it was aborted"));
    gone.options.onError = reject;
    gone.start();
  });
  assert.equal((await head(gone.url)).status, 404);
  assert.deepEqual(leftovers(w), []);
  assert.ok(!existsSync(b));

  // The terminated upload cannot be resumed: given its URL, tus-js-client sees the 404 of its HEAD
  // and creates a new upload at the endpoint; the old URL stays gone.
  const again = new tus.Upload(data, options({ uploadUrl: gone.url, metadata: { path: b } }));
  await finish(again);
  assert.notEqual(again.url, gone.url);
  assert.ok(readFileSync(b).equals(data));
  assert.equal((await head(gone.url)).status, 404);
});

// The client process dies (SIGKILL, no abort, no cleanup) after two chunks; a new client resumes.
const KILLED_CLIENT = `
import * as tus from "tus-js-client";
import { readFileSync } from "node:fs";
const [src, endpoint, header, token, target, chunk] = process.argv.slice(1);
let n = 0;
const upload = new tus.Upload(readFileSync(src), {
  endpoint, headers: { [header]: token }, chunkSize: Number(chunk), retryDelays: null,
  storeFingerprintForResuming: false, metadata: { path: target },
  onChunkComplete: () => {
    n += 1;
    if (n === 2) {
      process.stdout.write(upload.url + "\\n", () => process.kill(process.pid, "SIGKILL"));
    }
  },
  onError: (err) => { console.error(String(err)); process.exit(3); },
  onSuccess: () => process.exit(4),
});
upload.start();
`;

test("x33_tusjs_killed_client_resumes_from_the_server_offset", async () => {
  const w = ctx.work("x33-killed");
  const data = randomBytes(8 * CHUNK + 99);
  const src = join(w, "source.bin");
  writeFileSync(src, data);
  const target = join(w, "out", "killed.bin");
  // Run from this directory, so `tus-js-client` resolves from its node_modules.
  const here = dirname(fileURLToPath(import.meta.url));
  const child = spawn(
    process.execPath,
    ["--input-type=module", "-e", KILLED_CLIENT, src, endpoint(), TOKEN_HEADER, ctx.execd.token, target, String(CHUNK)],
    { cwd: here, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const [code, signal] = await new Promise((r) => child.once("exit", (c, s) => r([c, s])));
  clearTimeout(timer);
  assert.equal(signal, "SIGKILL", `client exit ${code}; stderr: ${err}`);
  const url = out.trim();
  assert.ok(url.startsWith(`${endpoint()}/`), `url ${JSON.stringify(url)}; stderr: ${err}`);

  const before = await head(url);
  assert.equal(before.status, 200);
  assert.ok(before.offset > 0 && before.offset < data.length, `server offset ${before.offset}`);
  assert.ok(!existsSync(target));
  const patches = await resumeAt(url, data);
  assert.equal(patches[0], before.offset, `PATCH offsets ${patches}`);
  assert.ok(readFileSync(target).equals(data), "the resumed bytes differ");
  assert.deepEqual(leftovers(join(w, "out")), []);
});
