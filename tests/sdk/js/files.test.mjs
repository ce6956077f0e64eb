// Filesystem through the JS SDK's `sandbox.files` (FilesystemAdapter): `writeFiles` (string,
// bytes, Blob, streamed), `readFile`/`readBytes`/`readBytesStream` (whole, `range`, and the line
// ranges `offset`/`limit` of issue #24), `getFileInfo`, `listDirectory`, `search`, `moveFiles`,
// `deleteFiles`, `setPermissions`, `replaceContents(Detailed)`, `createDirectories`,
// `deleteDirectories`.
//
// The JS SDK 0.1.11 has no per-identity files (`/v1/filesystem/{uid}/{gid}/…`, the Python SDK's
// `files_with_identity`): nothing in its sources or dist builds such a URL, so there is no test of
// them here.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { rejectsApi, useExecd } from "./harness.mjs";

const ctx = useExecd();
const dec = (bytes) => Buffer.from(bytes).toString("latin1");

async function collect(iterable) {
  const chunks = [];
  for await (const c of iterable) chunks.push(Buffer.from(c));
  return chunks;
}

function hasNobody() {
  if (process.geteuid() !== 0) return false;
  const passwd = readFileSync("/etc/passwd", "utf8");
  const group = readFileSync("/etc/group", "utf8");
  return /^nobody:/m.test(passwd) && /^nogroup:/m.test(group);
}

// ---- upload / download ----

test("c110 writeFiles then readFile/readBytes; parents are created", async () => {
  const target = join(ctx.work("c110"), "x", "y", "hello.txt");
  await ctx.files.writeFiles([{ path: target, data: "hello execd\n" }]);
  assert.equal(await ctx.files.readFile(target), "hello execd\n");
  assert.deepEqual(Buffer.from(await ctx.files.readBytes(target)), Buffer.from("hello execd\n"));
  assert.equal(readFileSync(target, "utf8"), "hello execd\n");
});

test("c111 writeFiles: string, bytes, Blob; modes; owner/group (root only)", async () => {
  const w = ctx.work("c111");
  const bin = Uint8Array.from([0, 1, 0xff, 0x62]);
  const entries = [
    { path: join(w, "a.txt"), data: "text data", mode: 644 },
    { path: join(w, "b.bin"), data: bin, mode: 755 },
    { path: join(w, "c.blob"), data: new Blob(["blob ", "parts"]), mode: 600 },
  ];
  const withOwner = hasNobody();
  if (withOwner) entries.push({ path: join(w, "d.txt"), data: "owned", mode: 600, owner: "nobody", group: "nogroup" });
  await ctx.files.writeFiles(entries);
  const info = await ctx.files.getFileInfo(entries.map((e) => e.path));
  assert.deepEqual(Object.keys(info).sort(), entries.map((e) => e.path).sort());
  assert.equal(info[join(w, "a.txt")].mode, 644);
  assert.equal(info[join(w, "a.txt")].size, 9);
  assert.equal(info[join(w, "b.bin")].mode, 755);
  assert.equal(info[join(w, "c.blob")].mode, 600);
  assert.deepEqual(Buffer.from(await ctx.files.readBytes(join(w, "b.bin"))), Buffer.from(bin));
  assert.equal(await ctx.files.readFile(join(w, "c.blob")), "blob parts");
  if (withOwner) {
    const d = info[join(w, "d.txt")];
    assert.deepEqual([d.mode, d.owner, d.group], [600, "nobody", "nogroup"]);
  }
});

test("c113 streamed upload (chunked multipart) and readBytesStream of 16 MiB, hashed both sides", async () => {
  const remote = join(ctx.work("c113"), "large", "blob.bin");
  const CHUNK = 1024 * 1024;
  const N = 16;
  const up = createHash("sha256");
  async function* source() {
    for (let i = 0; i < N; i++) {
      const seed = createHash("sha256").update(String(i)).digest();
      const c = Buffer.alloc(CHUNK);
      for (let o = 0; o < CHUNK; o += seed.length) seed.copy(c, o);
      up.update(c);
      yield new Uint8Array(c);
    }
  }
  await ctx.files.writeFiles([{ path: remote, data: source() }]);
  const digest = up.digest("hex");
  assert.equal(createHash("sha256").update(readFileSync(remote)).digest("hex"), digest);
  const info = await ctx.files.getFileInfo([remote]);
  assert.equal(info[remote].size, N * CHUNK);
  const down = createHash("sha256");
  let n = 0;
  for await (const c of ctx.files.readBytesStream(remote)) {
    down.update(c);
    n += c.length;
  }
  assert.equal(n, N * CHUNK);
  assert.equal(down.digest("hex"), digest);
  // A range inside the large file, crossing a chunk boundary.
  const part = await ctx.files.readBytes(remote, { range: `bytes=${CHUNK - 5}-${CHUNK + 4}` });
  assert.deepEqual(Buffer.from(part), readFileSync(remote).subarray(CHUNK - 5, CHUNK + 5));
});

test("c110 overwrite, Unicode names and random bytes round trip", async () => {
  const w = ctx.work("unicode");
  const p = join(w, "测试 文件 'q'.txt");
  await ctx.files.writeFiles([{ path: p, data: "first version, longer" }]);
  await ctx.files.writeFiles([{ path: p, data: "ünïcödé ✓" }]);
  assert.equal(await ctx.files.readFile(p), "ünïcödé ✓");
  assert.equal((await ctx.files.getFileInfo([p]))[p].path, p);
  const bytes = randomBytes(300_000);
  await ctx.files.writeFiles([{ path: join(w, "r.bin"), data: bytes }]);
  assert.ok(Buffer.from(await ctx.files.readBytes(join(w, "r.bin"))).equals(bytes));
});

test("names with query and URL characters ('+', '%', '&', '#', '?', '=', space) on every route", async () => {
  const w = ctx.work("names");
  const dir = join(w, "d %41+&=?#");
  const p = join(dir, "a+b %2F&x=1#frag?.txt");
  await ctx.files.writeFiles([{ path: p, data: "one\ntwo\n" }]);
  assert.equal(readFileSync(p, "utf8"), "one\ntwo\n");
  assert.equal(await ctx.files.readFile(p), "one\ntwo\n");
  assert.equal(await ctx.files.readFile(p, { offset: 2 }), "two");
  assert.equal(Buffer.concat(await collect(ctx.files.readBytesStream(p))).toString(), "one\ntwo\n");
  assert.equal((await ctx.files.getFileInfo([p]))[p].size, 8);
  assert.deepEqual((await ctx.files.listDirectory({ path: dir })).map((e) => e.path), [p]);
  assert.deepEqual((await ctx.files.search({ path: w, pattern: "*#frag?.txt" })).map((e) => e.path), [p]);
  await ctx.files.replaceContents([{ path: p, oldContent: "two", newContent: "2" }]);
  await ctx.files.setPermissions([{ path: p, mode: 600 }]);
  const q = `${p}.moved`;
  await ctx.files.moveFiles([{ src: p, dest: q }]);
  assert.equal(readFileSync(q, "utf8"), "one\n2\n");
  await ctx.files.deleteFiles([q]);
  assert.ok(!existsSync(q));
  await ctx.files.deleteDirectories([dir]);
  assert.ok(!existsSync(dir));
});

test("c110 names with '\"', ';' and '\\' upload in both SDK encodings (FormData and hand-built stream)", async () => {
  const w = ctx.work("quotes");
  for (const name of ['q"uote.txt', "semi;colon.txt", "back\\slash.txt"]) {
    async function* streamed() {
      yield new TextEncoder().encode(`streamed ${name}`);
    }
    // The streamed path writes the base name unescaped into Content-Disposition; the metadata
    // part's path is what counts.
    await ctx.files.writeFiles([
      { path: join(w, name), data: streamed() },
      { path: join(w, `form-${name}`), data: `form ${name}` },
    ]);
    assert.equal(readFileSync(join(w, name), "utf8"), `streamed ${name}`);
    assert.equal(readFileSync(join(w, `form-${name}`), "utf8"), `form ${name}`);
  }
});

test("c110 an entry without data writes an empty file", async () => {
  const p = join(ctx.work("empty"), "empty.txt");
  await ctx.files.writeFiles([{ path: p }]);
  assert.equal(readFileSync(p, "utf8"), "");
  assert.equal(await ctx.files.readFile(p), "");
  assert.equal((await ctx.files.getFileInfo([p]))[p].size, 0);
});

test("c115 ranged reads with the range option", async () => {
  const p = join(ctx.work("c115"), "range.txt");
  await ctx.files.writeFiles([{ path: p, data: "0123456789abcdefghij" }]);
  assert.equal(dec(await ctx.files.readBytes(p, { range: "bytes=0-9" })), "0123456789");
  assert.equal(dec(await ctx.files.readBytes(p, { range: "bytes=-5" })), "fghij");
  assert.equal(dec(await ctx.files.readBytes(p, { range: "bytes=5-" })), "56789abcdefghij");
  assert.equal(await ctx.files.readFile(p, { range: "bytes=10-14" }), "abcde");
});

test("c114 reading a missing file is 404", async () => {
  const w = ctx.work("c114");
  await rejectsApi(() => ctx.files.readBytes(join(w, "missing.txt")), 404);
  await rejectsApi(() => collect(ctx.files.readBytesStream(join(w, "missing.txt"))), 404);
});

// ---- line ranges (issue #24 part 3; upstream 1.0.19: lines joined by "\n", endings dropped) ----

test("sdk24_lines readFile/readBytes with offset and limit", async () => {
  const p = join(ctx.work("lines"), "lines.txt");
  await ctx.files.writeFiles([{ path: p, data: "line1\nline2\nline3\nline4\nline5" }]);
  assert.equal(await ctx.files.readFile(p, { offset: 2, limit: 2 }), "line2\nline3");
  assert.equal(await ctx.files.readFile(p, { offset: 4 }), "line4\nline5");
  assert.equal(await ctx.files.readFile(p, { limit: 2 }), "line1\nline2");
  assert.equal(await ctx.files.readFile(p, { offset: 2, limit: 100 }), "line2\nline3\nline4\nline5");
  assert.equal(dec(await ctx.files.readBytes(p, { offset: 3, limit: 1 })), "line3");
  assert.equal(dec(await ctx.files.readBytes(p, { offset: 6 })), "");
});

test("sdk24_lines CRLF and an unterminated last line", async () => {
  const p = join(ctx.work("crlf"), "crlf.txt");
  writeFileSync(p, "a\r\nb\r\n\r\nd\r\nlast");
  assert.equal(dec(await ctx.files.readBytes(p, { offset: 1 })), "a\nb\n\nd\nlast");
  assert.equal(await ctx.files.readFile(p, { offset: 3, limit: 2 }), "\nd");
  assert.equal(await ctx.files.readFile(p, { offset: 5, limit: 9 }), "last");
  assert.equal(await ctx.files.readFile(p, { offset: 99 }), "");
});

test("sdk24_lines readBytesStream of a 100 000-line file", async () => {
  const p = join(ctx.work("many"), "many.txt");
  writeFileSync(p, Array.from({ length: 100_000 }, (_, i) => `row ${i + 1}\n`).join(""));
  const tail = Buffer.concat(await collect(ctx.files.readBytesStream(p, { offset: 99_998, limit: 5 })));
  assert.equal(tail.toString(), "row 99998\nrow 99999\nrow 100000");
  const whole = Buffer.concat(await collect(ctx.files.readBytesStream(p, { offset: 2 })));
  assert.equal(whole.toString(), Array.from({ length: 99_999 }, (_, i) => `row ${i + 2}`).join("\n"));
});

test("sdk24_lines offset 0, negative, limit 0, or with range are 400; missing file 404", async () => {
  const w = ctx.work("lines-err");
  const p = join(w, "one.txt");
  await ctx.files.writeFiles([{ path: p, data: "line1\n" }]);
  for (const opts of [{ offset: 0 }, { offset: -1 }, { limit: 0 }, { offset: 1, range: "bytes=0-2" }]) {
    await rejectsApi(() => ctx.files.readBytes(p, opts), 400);
  }
  await rejectsApi(() => ctx.files.readFile(join(w, "missing.txt"), { offset: 1, limit: 1 }), 404);
});

// ---- info ----

test("c118 c137 getFileInfo fields; directory type", async () => {
  const w = ctx.work("c118");
  const a = join(w, "A.txt");
  const b = join(w, "B.txt");
  await ctx.files.writeFiles([{ path: a, data: "aaa", mode: 644 }, { path: b, data: "bb", mode: 600 }]);
  const info = await ctx.files.getFileInfo([a, b]);
  assert.deepEqual(Object.keys(info).sort(), [a, b]);
  const ia = info[a];
  assert.equal(ia.path, a);
  assert.equal(ia.type, "file");
  assert.equal(ia.size, 3);
  assert.equal(ia.mode, 644);
  assert.ok(ia.owner && ia.group);
  assert.ok(ia.createdAt instanceof Date && ia.modifiedAt instanceof Date);
  assert.ok(Math.abs(ia.modifiedAt - ia.createdAt) <= 2000);
  assert.ok(Math.abs(ia.modifiedAt - Date.now()) < 120_000);
  assert.equal(info[b].mode, 600);
  assert.equal((await ctx.files.getFileInfo([w]))[w].type, "directory");
});

test("c119 c120 symlink type, missing 404 FILE_NOT_FOUND, ~ expansion", async () => {
  const w = ctx.work("c119");
  writeFileSync(join(w, "target.txt"), "t");
  symlinkSync(join(w, "target.txt"), join(w, "link"));
  const link = join(w, "link");
  assert.equal((await ctx.files.getFileInfo([link]))[link].type, "symlink");
  await rejectsApi(() => ctx.files.getFileInfo([join(w, "nope")]), 404, "FILE_NOT_FOUND");
  await ctx.files.writeFiles([{ path: "~/sdk-js-home.txt", data: "home" }]);
  assert.equal(readFileSync(join(ctx.execd.home, "sdk-js-home.txt"), "utf8"), "home");
  const info = await ctx.files.getFileInfo(["~/sdk-js-home.txt"]);
  assert.equal(info["~/sdk-js-home.txt"].path, join(ctx.execd.home, "sdk-js-home.txt"));
});

test("c137 rewriting a file moves its mtime forward", async () => {
  const p = join(ctx.work("mtime"), "m.txt");
  await ctx.files.writeFiles([{ path: p, data: "one" }]);
  const old = Date.now() / 1000 - 100;
  utimesSync(p, old, old);
  await ctx.files.writeFiles([{ path: p, data: "two" }]);
  const m = (await ctx.files.getFileInfo([p]))[p].modifiedAt;
  assert.ok(m.getTime() > Date.now() - 60_000, m.toISOString());
});

// ---- delete / move / permissions ----

test("c121 deleteFiles: removes; missing is fine; a directory is 500 and untouched", async () => {
  const w = ctx.work("c121");
  const p = join(w, "del.txt");
  writeFileSync(p, "x");
  await ctx.files.deleteFiles([p]);
  assert.ok(!existsSync(p));
  await ctx.files.deleteFiles([join(w, "never-existed.txt")]);
  mkdirSync(join(w, "adir"));
  await rejectsApi(() => ctx.files.deleteFiles([join(w, "adir")]), 500);
  assert.ok(existsSync(join(w, "adir")));
});

test("c124 c125 moveFiles: parents created; missing src 404; existing dest 500", async () => {
  const w = ctx.work("c124");
  const src = join(w, "src.txt");
  writeFileSync(src, "moving");
  const dest = join(w, "new", "dir", "dest.txt");
  await ctx.files.moveFiles([{ src, dest }]);
  assert.ok(!existsSync(src));
  assert.equal(await ctx.files.readFile(dest), "moving");
  await rejectsApi(() => ctx.files.moveFiles([{ src: join(w, "missing"), dest: join(w, "d") }]), 404, "FILE_NOT_FOUND");
  writeFileSync(join(w, "s"), "s");
  writeFileSync(join(w, "d"), "d");
  await rejectsApi(() => ctx.files.moveFiles([{ src: join(w, "s"), dest: join(w, "d") }]), 500);
  assert.equal(readFileSync(join(w, "s"), "utf8"), "s");
  assert.equal(readFileSync(join(w, "d"), "utf8"), "d");
});

test("c122 c123 setPermissions: mode; owner/group (root only); mode 789 is 500", async () => {
  const p = join(ctx.work("c122"), "perm.txt");
  await ctx.files.writeFiles([{ path: p, data: "p", mode: 644 }]);
  await ctx.files.setPermissions([{ path: p, mode: 600 }]);
  assert.equal((await ctx.files.getFileInfo([p]))[p].mode, 600);
  if (hasNobody()) {
    await ctx.files.setPermissions([{ path: p, mode: 755, owner: "nobody", group: "nogroup" }]);
    let i = (await ctx.files.getFileInfo([p]))[p];
    assert.deepEqual([i.mode, i.owner, i.group], [755, "nobody", "nogroup"]);
    await ctx.files.setPermissions([{ path: p, mode: 700 }]); // D30: mode only keeps ownership
    i = (await ctx.files.getFileInfo([p]))[p];
    assert.deepEqual([i.mode, i.owner, i.group], [700, "nobody", "nogroup"]);
  }
  await rejectsApi(() => ctx.files.setPermissions([{ path: p, mode: 789 }]), 500);
});

// ---- search / replace ----

test("c126 c127 search: *.txt at any depth incl. hidden; * is files only; no match []; missing 404", async () => {
  const w = ctx.work("c126");
  mkdirSync(join(w, "sub", "deep"), { recursive: true });
  for (const rel of ["a.txt", "sub/b.txt", "sub/deep/c.txt", "sub/d.log", ".hidden.txt"]) writeFileSync(join(w, rel), rel);
  const found = await ctx.files.search({ path: w, pattern: "*.txt" });
  assert.deepEqual(found.map((e) => e.path).sort(), ["a.txt", "sub/b.txt", "sub/deep/c.txt", ".hidden.txt"].map((r) => join(w, r)).sort());
  assert.ok(found.every((e) => e.type === "file"));
  assert.equal((await ctx.files.search({ path: w, pattern: "*" })).length, 5);
  assert.deepEqual(await ctx.files.search({ path: w, pattern: "*.nomatch" }), []);
  await rejectsApi(() => ctx.files.search({ path: join(w, "missing"), pattern: "*" }), 404);
});

test("c129 c130 replaceContentsDetailed counts; replaceContents; missing file 404", async () => {
  const w = ctx.work("c129");
  const p = join(w, "r.txt");
  const q = join(w, "q.txt");
  await ctx.files.writeFiles([{ path: p, data: "foo bar foo baz foo" }, { path: q, data: "nothing" }]);
  const results = await ctx.files.replaceContentsDetailed([
    { path: p, oldContent: "foo", newContent: "qux" },
    { path: q, oldContent: "foo", newContent: "qux" },
  ]);
  assert.deepEqual(Object.fromEntries(results.map((r) => [r.path, r.replacedCount])), { [p]: 3, [q]: 0 });
  assert.equal(await ctx.files.readFile(p), "qux bar qux baz qux");
  await ctx.files.replaceContents([{ path: p, oldContent: "bar", newContent: "BAR" }]);
  assert.equal(await ctx.files.readFile(p), "qux BAR qux baz qux");
  await rejectsApi(() => ctx.files.replaceContents([{ path: join(w, "nope"), oldContent: "a", newContent: "b" }]), 404);
});

// ---- directories ----

test("c134 createDirectories: nested, modes 755/644; existing is fine", async () => {
  const w = ctx.work("c134");
  const d1 = join(w, "d1", "nested");
  const d2 = join(w, "d2");
  await ctx.files.createDirectories([{ path: d1, mode: 755 }, { path: d2, mode: 644 }]);
  const info = await ctx.files.getFileInfo([d1, d2]);
  assert.equal(info[d1].type, "directory");
  assert.equal(info[d1].mode, 755);
  assert.equal(info[d2].mode, 644);
  await ctx.files.createDirectories([{ path: d1, mode: 755 }]);
});

test("c131 c132 c133 listDirectory: depth 1/2/0 in lexical pre-order; file 400; missing 404", async () => {
  const w = ctx.work("c131");
  mkdirSync(join(w, "alpha"));
  for (const rel of ["alpha/x.txt", "alpha/y.txt", "bravo.txt", "charlie.txt"]) writeFileSync(join(w, rel), rel);
  const one = await ctx.files.listDirectory({ path: w });
  assert.deepEqual(one.map((e) => e.path), ["alpha", "bravo.txt", "charlie.txt"].map((n) => join(w, n)));
  assert.equal(one[0].type, "directory");
  assert.equal(one[1].type, "file");
  const two = await ctx.files.listDirectory({ path: w, depth: 2 });
  assert.deepEqual(two.map((e) => e.path), ["alpha", "alpha/x.txt", "alpha/y.txt", "bravo.txt", "charlie.txt"].map((n) => join(w, n)));
  assert.deepEqual(await ctx.files.listDirectory({ path: w, depth: 0 }), []);
  await rejectsApi(() => ctx.files.listDirectory({ path: join(w, "bravo.txt") }), 400);
  await rejectsApi(() => ctx.files.listDirectory({ path: join(w, "missing") }), 404);
});

test("c136 deleteDirectories: recursive; missing is fine", async () => {
  const w = ctx.work("c136");
  const d = join(w, "tree");
  mkdirSync(join(d, "a", "b"), { recursive: true });
  writeFileSync(join(d, "a", "b", "f.txt"), "f");
  await ctx.files.deleteDirectories([d]);
  assert.ok(!existsSync(d));
  await ctx.files.deleteDirectories([join(w, "missing-dir")]);
  await rejectsApi(() => ctx.files.getFileInfo([d]), 404);
});
