//! File watches with a cursor (EXTENSIONS X40–X42) against the real binary: watches as resources
//! (create, list, delete, cap, TTL), the resumable SSE event stream (recursion race, rename
//! pairing, exclusion counted in kernel watches, resume, ring overflow, coalescing, a 10 000-file
//! burst beside `inotifywait -m -r`), and "what changed since".

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, TIMEOUT};
use serde_json::{json, Value};

/// One SSE event of a watch stream.
#[derive(Debug, Clone)]
struct Sse {
    id: u64,
    event: String,
    data: Value,
}

/// Reads a standard SSE body incrementally; `: ping` comments are counted, not returned.
struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    pings: usize,
}

impl SseReader {
    async fn open(s: &TestServer, id: &str, query: &str, last_event_id: Option<u64>) -> SseReader {
        let mut req = s.client().get(s.url(&format!("/files/watches/{id}/events{query}")));
        if let Some(l) = last_event_id {
            req = req.header("Last-Event-ID", l.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader { resp, buf: Vec::new(), pings: 0 }
    }

    /// The next event, `None` at the end of the stream or when `deadline` passes.
    async fn next_before(&mut self, deadline: Instant) -> Option<Sse> {
        loop {
            if let Some(pos) = memchr::memmem::find(&self.buf, b"\n\n") {
                let chunk: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(chunk[..pos].to_vec()).unwrap();
                if text.starts_with(':') {
                    self.pings += 1;
                    continue;
                }
                let (mut id, mut event, mut data) = (None, None, None);
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse::<u64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str::<Value>(v).unwrap());
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                let (id, event, data) = (id.unwrap(), event.unwrap(), data.unwrap());
                assert_eq!(data["seq"], id, "{data}");
                assert_eq!(data["type"], event.as_str(), "{data}");
                return Some(Sse { id, event, data });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Events until `done` holds for the ones read so far (panics at [`TIMEOUT`]).
    async fn until(&mut self, what: &str, mut done: impl FnMut(&[Sse]) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + TIMEOUT;
        let mut got = Vec::new();
        while !done(&got) {
            match self.next_before(deadline).await {
                Some(ev) => got.push(ev),
                None => panic!("{what}: stream ended or timed out; got {:#?}", data(&got)),
            }
        }
        got
    }

    /// Whatever arrives within `quiet`.
    async fn drain_for(&mut self, quiet: Duration) -> Vec<Sse> {
        let deadline = Instant::now() + quiet;
        let mut got = Vec::new();
        while let Some(ev) = self.next_before(deadline).await {
            got.push(ev);
        }
        got
    }
}

fn data(evs: &[Sse]) -> Vec<Value> {
    evs.iter().map(|e| e.data.clone()).collect()
}

fn has(evs: &[Sse], kind: &str, path: &Path) -> bool {
    evs.iter().any(|e| e.event == kind && e.data["path"] == path.to_str().unwrap())
}

fn count(evs: &[Sse], kind: &str, path: &Path) -> usize {
    evs.iter().filter(|e| e.event == kind && e.data["path"] == path.to_str().unwrap()).count()
}

async fn create(s: &TestServer, body: Value) -> reqwest::Response {
    s.client().post(s.url("/files/watches")).json(&body).send().await.unwrap()
}

/// Creates a watch and returns its id.
async fn watch(s: &TestServer, dir: &Path, recursive: bool, exclude: &[&str]) -> String {
    let resp = create(s, json!({"path": dir, "recursive": recursive, "exclude": exclude})).await;
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["cursor"], 0, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn list(s: &TestServer) -> Vec<Value> {
    let v: Value = s.client().get(s.url("/files/watches")).send().await.unwrap().json().await.unwrap();
    v["watches"].as_array().unwrap().clone()
}

async fn changes(s: &TestServer, id: &str, since: u64) -> Value {
    let resp = s.client().get(s.url(&format!("/files/watches/{id}/changes?since={since}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn sh(script: &str) {
    let st = std::process::Command::new("bash").arg("-c").arg(script).status().unwrap();
    assert!(st.success(), "{script}");
}

/// Kernel inotify watches held by `pid`, from `/proc/<pid>/fdinfo` (one `inotify wd:` line each).
fn kernel_watches(pid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let is_inotify = std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:inotify");
        if is_inotify {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy()))
                .unwrap_or_default();
            n += info.lines().filter(|l| l.starts_with("inotify wd:")).count();
        }
    }
    n
}

#[tokio::test]
async fn x40_create_list_delete_and_bad_input() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("file"), "x").unwrap();

    let resp = create(&s, json!({"path": dir.path(), "recursive": true})).await;
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let all = list(&s).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["path"], dir.path().to_str().unwrap());
    assert_eq!(all[0]["recursive"], true);
    assert_eq!(all[0]["kernel_watches"], 2, "root and sub: {all:?}");
    assert_eq!(kernel_watches(s.pid()), 2);

    let code = |v: &Value| v["code"].as_str().unwrap_or("").to_string();
    let resp = create(&s, json!({"path": dir.path().join("nope")})).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(code(&resp.json().await.unwrap()), "FILE_NOT_FOUND");
    let resp = create(&s, json!({"path": dir.path().join("file")})).await;
    assert_eq!(resp.status(), 400);
    let resp = create(&s, json!({"path": dir.path(), "exclude": ["a["]})).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("a["));
    let resp = create(&s, json!({"recursive": true})).await;
    assert_eq!(resp.status(), 400);
    let resp = create(&s, json!({"path": dir.path(), "recursive": "yes"})).await;
    assert_eq!(resp.status(), 400);

    let resp = s.client().get(s.url("/files/watches/nope/events")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(code(&resp.json().await.unwrap()), "WATCH_NOT_FOUND");
    let resp = s.client().get(s.url(&format!("/files/watches/{id}/events?after=x"))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = s.client().get(s.url(&format!("/files/watches/{id}/changes?since=99"))).send().await.unwrap();
    assert_eq!(resp.status(), 400, "a cursor ahead of the watch");

    // A reader's stream ends when the watch is deleted; the kernel watches go.
    let mut reader = SseReader::open(&s, &id, "", None).await;
    let resp = s.client().delete(s.url(&format!("/files/watches/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(reader.next_before(Instant::now() + TIMEOUT).await.is_none());
    assert!(list(&s).await.is_empty());
    let resp = s.client().delete(s.url(&format!("/files/watches/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(common::wait_until(TIMEOUT, || kernel_watches(s.pid()) == 0), "kernel watches left");
}

#[tokio::test]
async fn x40_inotify_watch_limit_is_a_clear_error_and_no_partial_watch() {
    // execd in its own user namespace, whose per-user inotify watch limit
    // (/proc/sys/user/max_inotify_watches, the namespaced fs.inotify.max_user_watches) is 40.
    if !common::is_root() {
        common::prerequisite_missing("root (a user namespace with its own inotify limit)");
        return;
    }
    let s = TestServer::options()
        .wrapper(&[
            "unshare",
            "-U",
            "-r",
            "sh",
            "-c",
            "echo 40 > /proc/sys/user/max_inotify_watches && exec \"$@\"",
            "sh",
        ])
        .start();
    let big = tempfile::tempdir().unwrap();
    for i in 0..60 {
        std::fs::create_dir(big.path().join(format!("d{i}"))).unwrap();
    }
    let resp = create(&s, json!({"path": big.path(), "recursive": true})).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "TOO_MANY_WATCHES", "{v}");
    assert!(v["message"].as_str().unwrap().contains("max_user_watches"), "{v}");
    // Nothing of the refused watch is kept: no listed watch, no kernel watch, and a small watch
    // still fits under the limit.
    assert!(list(&s).await.is_empty());
    assert_eq!(kernel_watches(s.pid()), 0);
    let small = tempfile::tempdir().unwrap();
    let resp = create(&s, json!({"path": small.path(), "recursive": true})).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(kernel_watches(s.pid()), 1);
}

#[tokio::test]
async fn x40_at_most_64_watches_then_429() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for _ in 0..64 {
        ids.push(watch(&s, dir.path(), false, &[]).await);
    }
    let resp = create(&s, json!({"path": dir.path()})).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "TOO_MANY_WATCHES", "{v}");
    assert_eq!(kernel_watches(s.pid()), 64);
    let resp = s.client().delete(s.url(&format!("/files/watches/{}", ids[0]))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    watch(&s, dir.path(), false, &[]).await;
    assert_eq!(list(&s).await.len(), 64);
}

#[tokio::test]
async fn x40_ttl_collects_idle_watches_not_read_ones() {
    let s = TestServer::options().arg("--watch-ttl=1s").start();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let idle = watch(&s, dir.path(), false, &[]).await;
    let read = watch(&s, dir.path(), false, &[]).await;
    let reader = SseReader::open(&s, &read, "", None).await;
    let ids = || async { list(&s).await.iter().map(|w| w["id"].as_str().unwrap().to_string()).collect::<Vec<_>>() };
    assert!(common::wait_until_async(TIMEOUT, || async { !ids().await.contains(&idle) }).await, "idle watch kept");
    assert!(started.elapsed() >= Duration::from_secs(1), "collected before its TTL");
    // The one with a reader survives well past its TTL...
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(ids().await.contains(&read));
    assert_eq!(list(&s).await[0]["readers"], 1);
    // ... and is collected once its reader has gone for a TTL.
    drop(reader);
    assert!(common::wait_until_async(TIMEOUT, || async { ids().await.is_empty() }).await, "watch not collected");
    assert!(common::wait_until(TIMEOUT, || kernel_watches(s.pid()) == 0));
}

#[tokio::test]
async fn x41_new_directories_are_watched_at_once_mkdir_p_then_touch() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let id = watch(&s, root, true, &[]).await;
    let mut r = SseReader::open(&s, &id, "", None).await;
    // The classic race, several times: the file is made before execd can watch its directory.
    for i in 0..10 {
        sh(&format!("cd {} && mkdir -p a{i}/b/c && touch a{i}/b/c/f", root.display()));
        let f = root.join(format!("a{i}/b/c/f"));
        let mut got = r.until("a/b/c/f", |evs| has(evs, "create", &f)).await;
        got.extend(r.drain_for(Duration::from_millis(200)).await);
        for p in [format!("a{i}"), format!("a{i}/b"), format!("a{i}/b/c"), format!("a{i}/b/c/f")] {
            assert_eq!(count(&got, "create", &root.join(&p)), 1, "{p}: {:#?}", data(&got));
        }
        let dirs: Vec<bool> = got.iter().filter(|e| e.event == "create").map(|e| e.data["is_dir"] == true).collect();
        assert_eq!(dirs, [true, true, true, false], "{:#?}", data(&got));
    }
    // Files later made in the new directories are seen too: they are watched.
    sh(&format!("touch {}/a3/b/c/g", root.display()));
    r.until("g", |evs| has(evs, "create", &root.join("a3/b/c/g"))).await;
    // 1 root + 3 per iteration.
    assert_eq!(kernel_watches(s.pid()), 31);
}

#[tokio::test]
async fn x41_renames_pair_and_moves_in_and_out_are_create_and_delete() {
    let s = TestServer::start();
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("w");
    let out = top.path().join("out");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(out.join("tree/inner")).unwrap();
    std::fs::write(out.join("z"), "z").unwrap();
    std::fs::write(root.join("x"), "x").unwrap();
    let id = watch(&s, &root, true, &[]).await;
    let mut r = SseReader::open(&s, &id, "", None).await;
    let p = |n: &str| root.join(n);

    sh(&format!("mv {} {}", p("x").display(), p("y").display()));
    let got = r.until("rename", |evs| !evs.is_empty()).await;
    assert_eq!(got[0].event, "rename", "{:#?}", data(&got));
    assert_eq!(got[0].data["old_path"], p("x").to_str().unwrap());
    assert_eq!(got[0].data["path"], p("y").to_str().unwrap());
    assert_eq!(got[0].data["is_dir"], false);

    // A directory renamed keeps being watched under its new name.
    sh(&format!("mkdir -p {0}/d/e && mv {0}/d {0}/d2 && touch {0}/d2/e/f", root.display()));
    let got = r.until("file in renamed dir", |evs| has(evs, "create", &p("d2/e/f"))).await;
    let renames: Vec<&Sse> = got.iter().filter(|e| e.event == "rename").collect();
    assert_eq!(renames.len(), 1, "{:#?}", data(&got));
    assert_eq!(renames[0].data["old_path"], p("d").to_str().unwrap());
    assert_eq!(renames[0].data["is_dir"], true);

    // Out of the tree: delete; into it: create (a moved-in directory with its contents).
    sh(&format!("mv {} {}/y", p("y").display(), out.display()));
    let got = r.until("moved out", |evs| !evs.is_empty()).await;
    assert_eq!((got[0].event.as_str(), &got[0].data["path"]), ("delete", &json!(p("y"))), "{:#?}", data(&got));
    sh(&format!("mv {}/z {}", out.display(), p("z").display()));
    let got = r.until("moved in", |evs| !evs.is_empty()).await;
    assert_eq!((got[0].event.as_str(), &got[0].data["path"]), ("create", &json!(p("z"))), "{:#?}", data(&got));
    sh(&format!("mv {}/tree {}", out.display(), p("tree").display()));
    let got = r.until("tree moved in", |evs| has(evs, "create", &p("tree/inner"))).await;
    assert!(has(&got, "create", &p("tree")), "{:#?}", data(&got));
    // A directory moved out is no longer watched: nothing from inside it.
    sh(&format!("mv {} {}/d2 && touch {}/d2/e/late", p("d2").display(), out.display(), out.display()));
    let got = r.until("dir moved out", |evs| has(evs, "delete", &p("d2"))).await;
    let mut got = got;
    got.extend(r.drain_for(Duration::from_millis(300)).await);
    assert!(got.iter().all(|e| !e.data["path"].as_str().unwrap().contains("late")), "{:#?}", data(&got));
    // root, tree, tree/inner.
    assert!(common::wait_until(TIMEOUT, || kernel_watches(s.pid()) == 3), "{}", kernel_watches(s.pid()));
}

#[tokio::test]
async fn x41_exclude_cuts_events_and_kernel_watches() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sh(&format!("cd {} && mkdir -p node_modules/p{{0..19}}/lib src/a src/b .git/objects", root.display()));
    // Without exclusion: root, node_modules, 20 × 2, src, src/a, src/b, .git, .git/objects.
    let all = watch(&s, root, true, &[]).await;
    assert_eq!(kernel_watches(s.pid()), 1 + 1 + 40 + 3 + 2);
    s.client().delete(s.url(&format!("/files/watches/{all}"))).send().await.unwrap();
    assert!(common::wait_until(TIMEOUT, || kernel_watches(s.pid()) == 0));

    let id = watch(&s, root, true, &["node_modules/**", ".git/**", "*.log"]).await;
    assert_eq!(kernel_watches(s.pid()), 4, "root, src, src/a, src/b");
    assert_eq!(list(&s).await[0]["kernel_watches"], 4);
    let mut r = SseReader::open(&s, &id, "", None).await;
    sh(&format!(
        "cd {} && touch node_modules/p1/x && mkdir node_modules/new && touch .git/HEAD src/a/debug.log && touch src/a/kept",
        root.display()
    ));
    let mut got = r.until("kept", |evs| has(evs, "create", &root.join("src/a/kept"))).await;
    got.extend(r.drain_for(Duration::from_millis(200)).await);
    assert_eq!(got.len(), 1, "only src/a/kept: {:#?}", data(&got));
    assert_eq!(kernel_watches(s.pid()), 4, "no kernel watch for node_modules/new");
    // A directory made under src is watched (and counted).
    sh(&format!("mkdir {}/src/c", root.display()));
    r.until("src/c", |evs| has(evs, "create", &root.join("src/c"))).await;
    assert!(common::wait_until(TIMEOUT, || kernel_watches(s.pid()) == 5));
}

#[tokio::test]
async fn x41_resume_with_last_event_id_gets_exactly_the_missed_events() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let id = watch(&s, root, false, &[]).await;
    let mut r = SseReader::open(&s, &id, "", None).await;
    sh(&format!("cd {} && touch f1 f2 f3 f4", root.display()));
    let got = r.until("four", |evs| evs.len() >= 4).await;
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    drop(r);
    sh(&format!("cd {} && touch f5 f6 && rm f1", root.display()));
    // Wait until the watch has the new events, then resume from id 2 (as if 3 and 4 were lost too).
    assert!(common::wait_until_async(TIMEOUT, || async { list(&s).await[0]["cursor"] == 7 }).await);
    for (query, header) in [("", Some(2)), ("?after=2", None)] {
        let mut r = SseReader::open(&s, &id, query, header).await;
        let mut got = r.until("resumed", |evs| evs.len() >= 5).await;
        got.extend(r.drain_for(Duration::from_millis(200)).await);
        let seen: Vec<(u64, String, String)> = got
            .iter()
            .map(|e| {
                let name =
                    Path::new(e.data["path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
                (e.id, e.event.clone(), name)
            })
            .collect();
        let want: Vec<(u64, String, String)> =
            [(3, "create", "f3"), (4, "create", "f4"), (5, "create", "f5"), (6, "create", "f6"), (7, "delete", "f1")]
                .iter()
                .map(|(i, k, n)| (*i, k.to_string(), n.to_string()))
                .collect();
        assert_eq!(seen, want);
    }
}

#[tokio::test]
async fn x41_resume_from_before_the_ring_starts_with_one_overflow() {
    let s = TestServer::options().arg("--watch-ring-size=10").start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let id = watch(&s, root, false, &[]).await;
    sh(&format!("cd {} && touch f{{01..30}}", root.display()));
    assert!(common::wait_until_async(TIMEOUT, || async { list(&s).await[0]["cursor"] == 30 }).await);
    let mut r = SseReader::open(&s, &id, "?after=5", None).await;
    let got = r.until("ring", |evs| evs.len() >= 11).await;
    assert_eq!(got[0].event, "overflow", "{:#?}", data(&got));
    assert_eq!(got[0].id, 20);
    assert_eq!(got[1..].iter().map(|e| e.id).collect::<Vec<_>>(), (21..=30).collect::<Vec<_>>());
    assert!(r.drain_for(Duration::from_millis(200)).await.is_empty());
    // From inside the ring: no overflow.
    let mut r = SseReader::open(&s, &id, "?after=25", None).await;
    let got = r.until("inside", |evs| evs.len() >= 5).await;
    assert!(got.iter().all(|e| e.event == "create"));
    let c = changes(&s, &id, 0).await;
    assert_eq!(c["overflow"], true);
    assert_eq!(c["created"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn x41_modify_bursts_coalesce() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let f = root.join("f");
    std::fs::write(&f, "").unwrap();
    let id = watch(&s, root, false, &[]).await;
    let mut r = SseReader::open(&s, &id, "", None).await;
    // Many writes in one open: one modify, as soon as the file is closed.
    let t = Instant::now();
    sh(&format!("for i in $(seq 500); do echo line $i; done > {}", f.display()));
    let elapsed = t.elapsed().as_millis() as usize;
    let mut got = r.until("modify", |evs| has(evs, "modify", &f)).await;
    got.extend(r.drain_for(Duration::from_millis(300)).await);
    let n = count(&got, "modify", &f);
    assert!(n == 1 || n <= 1 + elapsed / 50, "{n} modifies in {elapsed} ms: {:#?}", data(&got));
    // 100 open-append-close cycles: a leading modify, then at most one per 50 ms window.
    let t = Instant::now();
    sh(&format!("for i in $(seq 100); do echo $i >> {}; done", f.display()));
    let elapsed = t.elapsed().as_millis() as usize;
    let got = r.drain_for(Duration::from_millis(500)).await;
    let n = count(&got, "modify", &f);
    assert!(n >= 1 && n <= 2 + elapsed / 50, "{n} modifies in {elapsed} ms: {:#?}", data(&got));
    assert!(n < 100);
}

#[tokio::test]
async fn x41_deleting_the_watched_directory_ends_the_watch_with_a_final_event() {
    let s = TestServer::start();
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("w");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/f"), "x").unwrap();
    let id = watch(&s, &root, true, &[]).await;
    let mut r = SseReader::open(&s, &id, "", None).await;
    sh(&format!("rm -rf {}", root.display()));
    let deadline = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    while let Some(ev) = r.next_before(deadline).await {
        got.push(ev);
    }
    let last = got.last().unwrap_or_else(|| panic!("no events"));
    assert_eq!((last.event.as_str(), &last.data["path"], &last.data["is_dir"]), ("delete", &json!(root), &json!(true)));
    assert!(has(&got, "delete", &root.join("d/f")), "{:#?}", data(&got));
    assert!(Instant::now() < deadline, "the stream did not end");
    let w = &list(&s).await[0];
    assert_eq!(w["ended"], true, "{w}");
    assert!(common::wait_until(TIMEOUT, || kernel_watches(s.pid()) == 0));
}

/// 10 000 files in 100 new directories, made as fast as bash can: execd reports every path or an
/// overflow, never a silent gap; and every path `inotifywait -m -r` saw on the same burst.
#[tokio::test]
async fn x41_burst_of_10000_files_beside_inotifywait() {
    let found = std::process::Command::new("inotifywait").arg("--help").output().is_ok();
    if !found {
        common::prerequisite_missing("inotifywait (Debian inotify-tools)");
        return;
    }
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("w");
    std::fs::create_dir(&root).unwrap();
    let iw_out = dir.path().join("iw.out");
    let iw_err = dir.path().join("iw.err");
    let mut iw = std::process::Command::new("inotifywait")
        .args(["-m", "-r", "-e", "create", "--format", "%w%f"])
        .arg(&root)
        .stdout(std::fs::File::create(&iw_out).unwrap())
        .stderr(std::fs::File::create(&iw_err).unwrap())
        .spawn()
        .unwrap();
    let ready = common::wait_until(TIMEOUT, || {
        std::fs::read_to_string(&iw_err).unwrap_or_default().contains("Watches established")
    });
    assert!(ready, "inotifywait did not start");
    let id = watch(&s, &root, true, &[]).await;
    let mut r = SseReader::open(&s, &id, "", None).await;
    let hwm_before = common::hwm_kib(s.pid());

    sh(&format!("cd {} && mkdir -p b{{00..99}} && for i in b*; do (cd $i && touch f{{00..99}}); done", root.display()));
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for i in 0..100 {
        expected.insert(root.join(format!("b{i:02}")).display().to_string());
        for j in 0..100 {
            expected.insert(root.join(format!("b{i:02}/f{j:02}")).display().to_string());
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // The expected paths not reported yet (one lookup per event, not a scan of all 10 100).
    let mut unseen = expected.clone();
    let mut overflow = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !overflow && !unseen.is_empty() {
        let Some(ev) = r.next_before(deadline).await else { break };
        match ev.event.as_str() {
            "overflow" => overflow = true,
            "create" => {
                let path = ev.data["path"].as_str().unwrap();
                unseen.remove(path);
                *seen.entry(path.to_string()).or_default() += 1;
            }
            other => panic!("unexpected {other}: {}", ev.data),
        }
    }
    let _ = iw.kill();
    let _ = iw.wait();
    let iw_seen: BTreeSet<String> =
        std::fs::read_to_string(&iw_out).unwrap().lines().map(|l| l.trim_end_matches('/').to_string()).collect();
    let hwm_after = common::hwm_kib(s.pid());
    assert!(hwm_after < hwm_before + 64 * 1024, "peak RSS grew from {hwm_before} to {hwm_after} KiB");
    if overflow {
        eprintln!("execd reported an overflow after {} paths (inotifywait saw {})", seen.len(), iw_seen.len());
        return;
    }
    let missing: Vec<&String> = expected.iter().filter(|p| !seen.contains_key(*p)).take(5).collect();
    assert!(missing.is_empty(), "no overflow, yet missing (first 5): {missing:?}; got {} paths", seen.len());
    let dups: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "reported twice: {dups:?}");
    let floor: Vec<&String> = iw_seen.iter().filter(|p| !seen.contains_key(*p)).take(5).collect();
    assert!(floor.is_empty(), "inotifywait saw, execd did not: {floor:?}");
    eprintln!("execd: {} paths; inotifywait: {} paths", seen.len(), iw_seen.len());
}

#[tokio::test]
async fn x42_changes_since_a_cursor_fold_per_path() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("old"), "o").unwrap();
    let id = watch(&s, root, true, &[]).await;
    let p = |n: &str| root.join(n).display().to_string();
    sh(&format!("cd {} && echo a > a && touch b", root.display()));
    assert!(
        common::wait_until_async(TIMEOUT, || async { changes(&s, &id, 0).await["created"] == json!([p("a"), p("b")]) })
            .await
    );
    let c1 = changes(&s, &id, 0).await;
    assert_eq!(c1["modified"], json!([]), "created then written is created: {c1}");
    let cursor = c1["cursor"].as_u64().unwrap();
    sh(&format!("cd {} && echo more >> a && rm b && touch c && echo x > old && touch t && rm t", root.display()));
    let want = json!({"cursor": null, "created": [p("c")], "modified": [p("a"), p("old")], "deleted": [p("b")], "overflow": false});
    let matches = |v: &Value| {
        let mut v = v.clone();
        v["cursor"] = Value::Null;
        v == want
    };
    assert!(
        common::wait_until_async(TIMEOUT, || async { matches(&changes(&s, &id, cursor).await) }).await,
        "{}",
        changes(&s, &id, cursor).await
    );
    let all = changes(&s, &id, 0).await;
    assert_eq!(all["created"], json!([p("a"), p("c")]), "{all}");
    assert_eq!(all["deleted"], json!([]), "b created and deleted in the window: {all}");
    let now = all["cursor"].as_u64().unwrap();
    assert!(now > cursor);
    let none = changes(&s, &id, now).await;
    assert_eq!(none, json!({"cursor": now, "created": [], "modified": [], "deleted": [], "overflow": false}));
}

#[tokio::test]
async fn x40_capabilities_say_watch_works() {
    let s = TestServer::start();
    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["watch"], true, "{caps}");
}
