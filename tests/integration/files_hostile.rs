//! Hostile clients and hostile files against the filesystem routes (issue #13, findings 6, 7, 9,
//! 10, 11): transfers whose client stops reading or sending, FIFOs and device files, empty paths,
//! a multipart form missing a part, and a `kill -9` in the middle of an upload. Every test drives
//! the real binary through real sockets.

use crate::common;
use crate::fsutil;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{fd_count, threads, wait_until, TestServer, TIMEOUT};
use fsutil::{
    assert_empty_ok, assert_error, open_files_under, part_head, q, start_in, status_json, temp_files, Fx, Part,
};
use serde_json::{json, Value};

/// `--max-transfers` for the stall tests.
const CAP: usize = 8;
/// `--stall-timeout` for the stall tests: long enough for a test to open all its
/// connections and look around before the first one is cut off, even on a loaded machine.
const STALL: Duration = Duration::from_secs(4);
/// Connections a stall test opens: well beyond the cap.
const CONNS: usize = 40;

fn limited_server() -> TestServer {
    TestServer::options()
        .arg(&format!("--max-transfers={CAP}"))
        .arg(&format!("--stall-timeout={}s", STALL.as_secs()))
        .start()
}

/// Opens a connection and sends `req` on it.
fn send_raw(port: u16, req: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(req).unwrap();
    s
}

/// Reads a response head up to its blank line, one byte at a time so that none of the body is
/// consumed. Returns the status and the head.
fn read_head(s: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match common::read_retrying(s, &mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("no response head ({other:?}); got {:?}", String::from_utf8_lossy(&head)),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head)
}

/// Reads the body announced by `head`'s Content-Length as JSON.
fn read_json_body(s: &mut TcpStream, head: &str) -> Value {
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Reads until the peer closes (EOF or reset). Returns the bytes read; panics if the connection
/// stays open for `TIMEOUT` without a byte.
fn read_until_closed(s: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match common::read_retrying(s, &mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("connection still open after {total} bytes: {e}"),
        }
    }
}

/// One raw GET with `Connection: close`: status and body.
fn raw_get(port: u16, path_and_query: &str) -> (u16, Vec<u8>) {
    let mut s =
        send_raw(port, format!("GET {path_and_query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = all.windows(4).position(|w| w == b"\r\n\r\n").map(|i| all[i + 4..].to_vec()).unwrap_or_default();
    (status, body)
}

/// Asserts that `/ping` and `/files/info` answer within two seconds.
fn assert_responsive(port: u16, some_file: &Path) {
    let t = Instant::now();
    assert!(common::blocking_ping(port, None), "ping failed");
    let (status, body) = raw_get(port, &format!("/files/info?path={}", q(&some_file.display().to_string())));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(t.elapsed() < Duration::from_secs(2), "ping + info took {:?}", t.elapsed());
}

/// Regular files in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default()
}

/// The head of a multipart upload request announcing `body_len` bytes of body.
fn upload_request_head(body_len: usize) -> String {
    format!(
        "POST /files/upload HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {body_len}\r\n\r\n",
        fsutil::multipart_content_type()
    )
}

/// The start of a multipart body: a metadata part for `target` (if any), then the head of the file part.
fn upload_body_head(target: Option<&Path>) -> String {
    let mut s = String::new();
    if let Some(t) = target {
        s.push_str(&part_head("metadata", Some("metadata"), Some("application/json")));
        s.push_str(&json!({"path": t.display().to_string(), "mode": 644}).to_string());
        s.push_str("\r\n");
    }
    s.push_str(&part_head("file", Some("blob"), Some("application/octet-stream")));
    s
}

/// Starts an upload of a file that claims 64 MiB and sends its first `sent` bytes, then nothing.
/// (A refused upload may see its connection closed while it still sends: write errors are
/// ignored; the answer is what the test reads.)
fn start_stalled_upload(port: u16, target: Option<&Path>, sent: usize) -> TcpStream {
    let head = upload_body_head(target);
    let mut s = send_raw(port, upload_request_head(head.len() + 64 * 1024 * 1024).as_bytes());
    let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(&vec![b'x'; sent]));
    s
}

// ------------------------------------------------------------------------------- finding 6

#[test]
fn h6_stalled_downloads_are_capped_cut_off_after_the_stall_timeout_and_pin_no_thread() {
    let s = limited_server();
    let pid = s.pid();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    const SIZE: u64 = 1 << 30;
    std::fs::File::create(&big).unwrap().set_len(SIZE).unwrap(); // sparse: no disk used
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello").unwrap();
    let (fds0, threads0) = (fd_count(pid), threads(pid));
    let req = format!("GET /files/download?path={} HTTP/1.1\r\nHost: x\r\n\r\n", q(&big.display().to_string()));

    // Forty clients ask for a 1 GiB file and never read the body.
    let conns: Vec<TcpStream> = (0..CONNS).map(|_| send_raw(s.port, req.as_bytes())).collect();
    let mut stalled = Vec::new();
    for mut c in conns {
        match read_head(&mut c) {
            (200, _) => stalled.push(c),
            (429, head) => assert_eq!(read_json_body(&mut c, &head)["code"], "TOO_MANY_REQUESTS"),
            (st, head) => panic!("unexpected answer {st}: {head}"),
        }
    }
    assert_eq!(stalled.len(), CAP, "downloads let through with a cap of {CAP}");
    // One more is refused at once too; the rest of the API answers quickly.
    let (status, body) = raw_get(s.port, &format!("/files/download?path={}", q(&small.display().to_string())));
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert_responsive(s.port, &small);
    // Bounded by the cap, not by the number of clients. Short reads run on tokio's blocking
    // pool, which on a loaded machine can start a thread while a finished one is not yet back
    // to idle, so the peak is not a tight multiple of the cap (CI saw 4 -> 29 with a cap of 8);
    // the claim tested here is "fewer than one thread per client". That no thread stays with a
    // stalled transfer is h6_stalled_transfers_hold_no_thread.
    let pinned = threads(pid);
    assert!(pinned < threads0 + CONNS as u64, "threads {threads0} -> {pinned} with {CAP} stalled downloads");

    // Past the stall timeout execd closes the stalled connections: their sockets and files go.
    let t = Instant::now();
    assert!(wait_until(TIMEOUT, || fd_count(pid) <= fds0 + 1), "fds {fds0} -> {}", fd_count(pid));
    eprintln!("stalled downloads closed {:?} after the check", t.elapsed());
    for mut c in stalled {
        // What was buffered arrives, then the end: the transfer was cut off, not resumed.
        let got = read_until_closed(&mut c);
        assert!(got < SIZE, "the whole file arrived: the connection was never cut off");
    }
    // Permits are back: a download works again.
    let (status, body) = raw_get(s.port, &format!("/files/download?path={}", q(&small.display().to_string())));
    assert_eq!((status, &body[..]), (200, &b"hello"[..]));
}

#[test]
fn h6_stalled_uploads_are_capped_answered_408_after_the_stall_timeout_and_pin_no_thread() {
    let s = limited_server();
    let pid = s.pid();
    let dir = tempfile::tempdir().unwrap();
    let threads0 = threads(pid);
    let started = Instant::now();
    // Forty clients start uploading and stop after 64 KiB of a promised 64 MiB; a reader thread
    // per connection reports its answer.
    let (tx, rx) = mpsc::channel();
    let mut conns = Vec::new();
    for i in 0..CONNS {
        let c = start_stalled_upload(s.port, Some(&dir.path().join(format!("up-{i}.bin"))), 64 * 1024);
        let mut reader = c.try_clone().unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let (status, head) = read_head(&mut reader);
            let body = read_json_body(&mut reader, &head);
            let _ = tx.send((i, status, body, started.elapsed()));
        });
        conns.push(c);
    }
    let mut answered = std::collections::BTreeMap::new();
    for _ in 0..CONNS - CAP {
        let (i, status, body, _) = rx.recv_timeout(TIMEOUT).expect("refused uploads answer at once");
        assert_eq!((status, body["code"].as_str()), (429, Some("TOO_MANY_REQUESTS")), "upload {i}: {body}");
        answered.insert(i, status);
    }
    assert!(started.elapsed() < STALL, "the refusals took {:?}", started.elapsed());
    // Nothing else answered yet: CAP uploads wait for their body, holding no thread.
    assert!(rx.try_recv().is_err(), "a stalled upload answered before the stall timeout");
    let mut extra = start_stalled_upload(s.port, Some(&dir.path().join("extra.bin")), 1024);
    let (status, head) = read_head(&mut extra);
    assert_eq!(status, 429, "{head}");
    assert_responsive(s.port, dir.path());
    let pinned = threads(pid);
    assert!(pinned <= threads0 + 2 * CAP as u64 + 4, "threads {threads0} -> {pinned} with {CAP} stalled uploads");

    // Past the stall timeout each stalled upload gets 408 and its connection is closed.
    for _ in 0..CAP {
        let (i, status, body, at) = rx.recv_timeout(TIMEOUT).expect("stalled uploads are answered");
        assert_eq!((status, body["code"].as_str()), (408, Some("REQUEST_TIMEOUT")), "upload {i}: {body}");
        assert!(at >= STALL, "upload {i} answered after {at:?}, before the stall timeout");
        answered.insert(i, status);
    }
    for (i, mut c) in conns.into_iter().enumerate() {
        if answered[&i] == 408 {
            read_until_closed(&mut c);
        }
    }
    // Nothing was written and no temporary file remains, beside the targets or in the spool.
    assert!(wait_until(TIMEOUT, || std::fs::read_dir(dir.path()).unwrap().count() == 0));
    assert!(files_in(&s.state_dir().join("uploads")).is_empty());
}

#[tokio::test]
async fn h6_a_client_that_leaves_gives_its_permit_back_at_once() {
    // Permits must come back when the client goes, not at the stall timeout.
    let s = limited_server();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
    let url = s.url(&format!("/files/download?path={}", q(&big.display().to_string())));
    let fill = || async {
        let mut held = Vec::new();
        for _ in 0..CAP {
            // A fresh client each: a connection per download, closed when it is dropped.
            let mut r = reqwest::get(&url).await.unwrap();
            if r.status() != 200 {
                return None;
            }
            r.chunk().await.unwrap();
            held.push(r);
        }
        Some(held)
    };
    let first = fill().await.expect("the cap admits CAP downloads");
    drop(first);
    let t = Instant::now();
    let again = common::wait_until_async(STALL / 2, || async { fill().await.is_some() }).await;
    assert!(again, "permits not back {:?} after the clients left", t.elapsed());
}

#[tokio::test]
async fn h6_http2_is_not_spoken_and_http1_keeps_serving() {
    // execd serves HTTP/1.1 only (as upstream): an HTTP/2 prior-knowledge client (h2c) gets no
    // HTTP/2 connection, so no flow-control stall can hold a transfer permit behind a healthy
    // socket; the daemon keeps serving HTTP/1.1 clients.
    let s = TestServer::start();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2.get(s.url("/ping")).send().await;
    assert!(r.is_err(), "an HTTP/2 prior-knowledge request was answered: {:?}", r.map(|r| r.version()));
    let r = s.client().get(s.url("/ping")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_11));
}

#[test]
fn h6_stalled_transfers_hold_no_thread() {
    // A generous cap and a long stall timeout: 24 stalled downloads and 24 stalled uploads stay
    // open for the whole test. The blocking pool lets an idle thread go after 10 s; a thread
    // that waited for one of these clients would never be idle.
    let s = TestServer::options().arg("--max-transfers=100").arg("--stall-timeout=5m").start();
    let pid = s.pid();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
    let threads0 = threads(pid);
    let req = format!("GET /files/download?path={} HTTP/1.1\r\nHost: x\r\n\r\n", q(&big.display().to_string()));
    let mut conns = Vec::new();
    for i in 0..24 {
        let mut c = send_raw(s.port, req.as_bytes());
        assert_eq!(read_head(&mut c).0, 200);
        conns.push(c);
        conns.push(start_stalled_upload(s.port, Some(&dir.path().join(format!("up-{i}.bin"))), 256 * 1024));
    }
    // Every upload has begun writing its file.
    assert!(
        wait_until(TIMEOUT, || open_files_under(pid, dir.path()).len() >= 48),
        "{:?}",
        open_files_under(pid, dir.path())
    );
    let peak = threads(pid);
    let settled = wait_until(TIMEOUT, || threads(pid) <= threads0 + 2);
    assert!(settled, "threads {threads0} -> {peak} -> {} with 48 stalled transfers", threads(pid));
    assert_responsive(s.port, &big);
    drop(conns);
}

// ------------------------------------------------------------------------------- finding 7

#[tokio::test]
async fn h7_fifo_and_device_files_are_refused_at_once_for_download_and_replace() {
    let fx = Fx::new();
    let pipe = fx.p("pipe");
    nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::symlink(&pipe, fx.p("pipe.link")).unwrap();
    // Without a writer, opening a FIFO for reading blocks forever: a client must not wait for it.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let threads0 = threads(fx.server.pid());
    for p in [fx.s("pipe"), fx.s("pipe.link"), "/dev/zero".to_string(), "/dev/null".to_string()] {
        let t = Instant::now();
        let r = client.get(fx.url(&format!("/files/download?path={}", q(&p)))).send().await.expect("download answers");
        let msg = assert_error(r, 400, "INVALID_REQUEST_BODY").await;
        assert!(msg.contains("not a regular file"), "{p}: {msg}");
        assert!(t.elapsed() < Duration::from_secs(5), "{p}: {:?}", t.elapsed());
    }
    for p in [fx.s("pipe"), fx.s("pipe.link"), "/dev/null".to_string()] {
        let r = client
            .post(fx.url("/files/replace"))
            .body(json!({ &p: {"old": "a", "new": "b"} }).to_string())
            .send()
            .await
            .expect("replace answers");
        let msg = assert_error(r, 400, "INVALID_REQUEST_BODY").await;
        assert!(msg.contains("not a regular file"), "{p}: {msg}");
    }
    // The FIFO is still a FIFO, no thread is stuck on it, and execd keeps serving.
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&pipe).unwrap().file_type().is_fifo());
    assert_eq!(fx.info(&fx.s("pipe")).await["type"], "other");
    assert!(threads(fx.server.pid()) <= threads0 + 4, "threads {threads0} -> {}", threads(fx.server.pid()));
    let f = fx.s("plain.txt");
    std::fs::write(&f, b"aaa").unwrap();
    assert_empty_ok(fx.post_json("/files/replace", json!({ &f: {"old": "a", "new": "b"} })).await).await;
    assert_eq!(std::fs::read(&f).unwrap(), b"bbb");
}

// ------------------------------------------------------------------------------- finding 9

#[tokio::test]
async fn h9_empty_paths_are_refused_with_400_and_execd_cwd_is_untouched() {
    // execd runs in a sacrificial working directory: on the code as found, an empty path meant it.
    let cwd = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("marker"), b"m").unwrap();
    std::fs::set_permissions(cwd.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = start_in(cwd.path(), &state.path().join("state"), &[("EXECD_TEST_EMPTY", "")]);
    let fx = Fx::with(server);
    let elsewhere = fx.s("moved");
    let existing = fx.s("existing.txt");
    std::fs::write(&existing, b"keep").unwrap();

    let posts: Vec<(&str, Value)> = vec![
        ("/files/mv", json!([{"src": "", "dest": elsewhere}])),
        ("/files/mv", json!([{"src": "$EXECD_TEST_EMPTY", "dest": elsewhere}])),
        ("/files/mv", json!([{"src": existing, "dest": ""}])),
        // A later empty item: refused before the first item is applied.
        ("/files/mv", json!([{"src": existing, "dest": fx.s("renamed.txt")}, {"src": "", "dest": elsewhere}])),
        ("/files/permissions", json!({"": {"mode": 700}})),
        ("/files/permissions", json!({ &existing: {"mode": 600}, "${EXECD_TEST_EMPTY}": {"mode": 700} })),
        ("/directories", json!({"": {"mode": 700}})),
        ("/files/replace", json!({"": {"old": "a", "new": "b"}})),
    ];
    for (route, body) in &posts {
        let r = fx.post_json(route, body.clone()).await;
        let msg = assert_error(r, 400, "INVALID_REQUEST_BODY").await;
        assert!(msg.contains("empty path"), "{route} {body}: {msg}");
    }
    let gets = [
        "/files/info?path=",
        "/files/info?path=$EXECD_TEST_EMPTY",
        "/files/download?path=",
        "/files/search?path=",
        "/directories/list?path=",
    ];
    for g in gets {
        let msg = assert_error(fx.get(g).await, 400, "INVALID_REQUEST_BODY").await;
        assert!(msg.contains("empty path"), "{g}: {msg}");
    }
    for d in ["/files?path=", "/directories?path=", "/directories?path=$EXECD_TEST_EMPTY"] {
        let msg = assert_error(fx.delete(d).await, 400, "INVALID_REQUEST_BODY").await;
        assert!(msg.contains("empty path"), "{d}: {msg}");
    }
    for meta_path in ["", "$EXECD_TEST_EMPTY"] {
        let r = fx.upload(&[Part::metadata(json!({ "path": meta_path })), Part::file(b"x".to_vec())]).await;
        let msg = assert_error(r, 400, "INVALID_FILE_METADATA").await;
        assert!(msg.contains("path is empty"), "{meta_path:?}: {msg}");
    }
    // Nothing moved, changed mode or was written.
    assert_eq!(std::fs::read(cwd.path().join("marker")).unwrap(), b"m");
    assert_eq!(fsutil::mode_of(cwd.path()), 0o755);
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    assert_eq!(fsutil::mode_of(Path::new(&existing)), 0o644);
    assert!(!fx.p("moved").exists() && !fx.p("renamed.txt").exists());
}

// ------------------------------------------------------------------------------ finding 10

#[tokio::test]
async fn h10_a_form_with_a_missing_or_bad_part_writes_no_file() {
    let fx = Fx::new();
    let (a, b) = (fx.s("a.txt"), fx.s("b.txt"));
    std::fs::write(&a, b"old a").unwrap();
    let cases: Vec<(Vec<Part>, u16, &str)> = vec![
        // metadata, file, metadata: the second pair has no file.
        (
            vec![Part::metadata(json!({"path": a})), Part::file(b"new a".to_vec()), Part::metadata(json!({"path": b}))],
            400,
            "INVALID_FILE",
        ),
        // Two metadata parts, then one file (the review's form).
        (
            vec![Part::metadata(json!({"path": a})), Part::metadata(json!({"path": b})), Part::file(b"new a".to_vec())],
            400,
            "INVALID_FILE",
        ),
        // A spooled file paired later, then a file without metadata.
        (
            vec![Part::file(b"new a".to_vec()), Part::metadata(json!({"path": a})), Part::file(b"new b".to_vec())],
            400,
            "INVALID_FILE",
        ),
        // A complete first pair, then a second pair with an invalid mode.
        (
            vec![
                Part::metadata(json!({"path": a})),
                Part::file(b"new a".to_vec()),
                Part::metadata(json!({"path": b, "mode": 789})),
                Part::file(b"new b".to_vec()),
            ],
            500,
            "RUNTIME_ERROR",
        ),
        // A complete first pair, then an unreadable metadata part.
        (
            vec![
                Part::metadata(json!({"path": a})),
                Part::file(b"new a".to_vec()),
                Part {
                    name: "metadata",
                    filename: Some("metadata".into()),
                    content_type: None,
                    body: b"{not json".to_vec(),
                },
                Part::file(b"new b".to_vec()),
            ],
            400,
            "INVALID_FILE_METADATA",
        ),
    ];
    for (i, (parts, status, code)) in cases.into_iter().enumerate() {
        let r = fx.upload(&parts).await;
        let msg = assert_error(r, status, code).await;
        assert_eq!(std::fs::read(&a).unwrap(), b"old a", "case {i} ({msg}) wrote the first file");
        assert!(!fx.p("b.txt").exists(), "case {i} ({msg})");
        // The spooled and temporary files go when the failed request's body is dropped, which can
        // come just after the error answer: polled, with a deadline.
        let uploads = fx.server.state_dir().join("uploads");
        let clean = wait_until(TIMEOUT, || temp_files(fx.dir.path()).is_empty() && files_in(&uploads).is_empty());
        assert!(clean, "case {i}: left {:?} {:?}", temp_files(fx.dir.path()), files_in(&uploads));
    }
    // The same pairs, complete, are written.
    let r = fx
        .upload(&[
            Part::metadata(json!({"path": a})),
            Part::file(b"new a".to_vec()),
            Part::metadata(json!({"path": b})),
            Part::file(b"new b".to_vec()),
        ])
        .await;
    assert_empty_ok(r).await;
    assert_eq!(std::fs::read(&a).unwrap(), b"new a");
    assert_eq!(std::fs::read(&b).unwrap(), b"new b");
}

#[tokio::test]
async fn h10_a_form_with_many_files_writes_them_all_once_complete() {
    // More files than stay open while they wait for the end of the form (the rest are parked
    // under journaled names), some spooled before their metadata, some on another filesystem.
    let fx = Fx::new();
    let shm = Path::new("/dev/shm");
    use std::os::unix::fs::MetadataExt;
    let other_fs =
        shm.is_dir() && std::fs::metadata(shm).unwrap().dev() != std::fs::metadata(fx.dir.path()).unwrap().dev();
    let shm_dir = other_fs.then(|| tempfile::tempdir_in(shm).unwrap());
    let mut parts = Vec::new();
    let mut want = Vec::new();
    for i in 0..40 {
        let target = match (&shm_dir, i % 10) {
            (Some(d), 0) => d.path().join(format!("f{i}.txt")),
            _ => fx.p(&format!("many/f{i}.txt")),
        };
        let content = format!("content {i}").repeat(i + 1);
        let meta = Part::metadata(json!({"path": target.display().to_string(), "mode": 640}));
        let file = Part::file(content.clone().into_bytes());
        // Every third pair sends its file first (spooled until its metadata comes).
        if i % 3 == 0 {
            parts.extend([file, meta]);
        } else {
            parts.extend([meta, file]);
        }
        want.push((target, content));
    }
    assert_empty_ok(fx.upload(&parts).await).await;
    for (target, content) in &want {
        assert_eq!(std::fs::read_to_string(target).unwrap(), *content, "{}", target.display());
        assert_eq!(fsutil::mode_of(target), 0o640, "{}", target.display());
    }
    assert!(temp_files(&fx.p("many")).is_empty());
    let uploads = fx.server.state_dir().join("uploads");
    assert!(files_in(&uploads).is_empty() && files_in(&uploads.join("journal")).is_empty());
}

// ------------------------------------------------------------------------------ finding 11

#[test]
fn h11_kill_9_mid_upload_leaves_nothing_beside_the_target_and_restart_sweeps_the_spool() {
    let cwd = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    let tmpdir = tempfile::tempdir().unwrap();
    let targets = tempfile::tempdir().unwrap();
    let env = [("TMPDIR", tmpdir.path().to_str().unwrap())];
    let mut s = start_in(cwd.path(), &state_dir, &env);
    let pid = s.pid();
    let spool = state_dir.join("uploads");

    // One upload with its metadata first (written beside its target), one with its file part
    // first (spooled until its metadata comes): both stop halfway.
    let _beside = start_stalled_upload(s.port, Some(&targets.path().join("a.bin")), 1024 * 1024);
    let _spooled = start_stalled_upload(s.port, None, 1024 * 1024);
    assert!(
        wait_until(TIMEOUT, || !open_files_under(pid, targets.path()).is_empty()),
        "execd never opened a file beside the target"
    );
    assert!(wait_until(TIMEOUT, || !files_in(&spool).is_empty()), "no spool file under {}", spool.display());
    for f in files_in(&spool) {
        assert_eq!(fsutil::mode_of(&f), 0o600, "{}", f.display());
    }
    assert_eq!(fsutil::mode_of(&spool), 0o700);

    s.kill(); // SIGKILL: no destructor runs
    let beside: Vec<_> = std::fs::read_dir(targets.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(beside.is_empty(), "left beside the target: {beside:?}");
    assert!(std::fs::read_dir(tmpdir.path()).unwrap().next().is_none(), "spooled into $TMPDIR");

    // A restart on the same state directory sweeps what the spool kept.
    let s2 = start_in(cwd.path(), &state_dir, &env);
    assert!(files_in(&spool).is_empty(), "spool not swept: {:?}", files_in(&spool));
    assert!(common::blocking_ping(s2.port, None));
}

// ----------------------------------------------------------------------- regular transfers

#[tokio::test]
async fn transfers_under_the_cap_still_round_trip() {
    // The cap counts transfers in flight, not requests: many sequential transfers are fine.
    let s = limited_server();
    let fx = Fx::with(s);
    for i in 0..3 * CAP {
        let f = fx.s(&format!("f{i}.txt"));
        assert_empty_ok(fx.upload_one(&f, format!("content {i}").as_bytes()).await).await;
        let r = fx.get(&format!("/files/download?path={}", q(&f))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), format!("content {i}"));
    }
    let (st, v) = status_json(fx.get(&format!("/directories/list?path={}", q(&fx.s("")))).await).await;
    assert_eq!((st, v.as_array().map(Vec::len)), (200, Some(3 * CAP)));
}
