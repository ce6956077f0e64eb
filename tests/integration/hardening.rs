//! Issue #13, hostile inside and hostile outside, findings 1–5 and 8 against the real binary: the
//! state directory (hijack refused, private modes), tokens out of `/proc/<pid>/cmdline`, the query
//! token only on WebSocket routes, slowloris and stalled transfers, and huge command bodies.
//! The tests that act as another uid need root; outside CI they skip loudly, in CI they fail.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{parse_events, texts, without_pings, TestServer, TIMEOUT};
use serde_json::{json, Value};

/// False (and a loud line) when not root; in CI a missing prerequisite fails the test.
fn need_root(test: &str) -> bool {
    if common::is_root() {
        return true;
    }
    common::prerequisite_missing(&format!("{test} needs root"));
    false
}

/// Runs execd with `args` (plus a free loopback port) and expects it to exit at once; returns
/// (exit code, stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(common::execd_bin())
        .args(["--bind", "127.0.0.1", "--port", &common::free_port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("execd {args:?} kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn run(server: &TestServer, body: Value) -> Vec<Value> {
    let resp = server.client().post(server.url("/command")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(TIMEOUT, resp.text()).await.expect("stream ended").unwrap();
    without_pings(&parse_events(&text))
}

async fn stdout_of(server: &TestServer, body: Value) -> String {
    texts(&run(server, body).await, "stdout").concat()
}

// ---------------------------------------------------------------------------------------------
// 1. State directory hijack

#[test]
fn h1_state_dir_owned_by_another_uid_is_refused() {
    if !need_root("h1_state_dir_owned_by_another_uid_is_refused") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The attacker (uid 65534) made it first.
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let (code, err) = run_to_exit(&["--state-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "nothing written into it");
}

#[test]
fn h1_state_dir_writable_by_others_or_a_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, err) = run_to_exit(&["--state-dir", dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");

    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (code, err) = run_to_exit(&["--state-dir", link.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("symlink"), "{err}");
}

#[test]
fn h1_default_state_dir_is_not_under_tmp_for_root() {
    let out = Command::new(common::execd_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("/var/lib/execd"), "{help}");
    assert!(!help.contains("\"$TMPDIR/execd\""), "{help}");
}

// ---------------------------------------------------------------------------------------------
// 2. State is private

fn assert_private_tree(root: &Path) {
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        // A run's scratch files come and go while we walk; what vanished is not a finding.
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        let mode = meta.mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
            seen += 1;
        }
    }
    assert!(seen > 0, "expected files under {}", root.display());
}

#[tokio::test]
async fn h2_journals_and_session_state_are_private_to_execd() {
    if !need_root("h2_journals_and_session_state_are_private_to_execd") {
        return;
    }
    let server = TestServer::start();
    // A background command keeps its journal; a session keeps its state file.
    let resp = server
        .client()
        .post(server.url("/command"))
        .json(&json!({"command": "echo DB_PASSWORD=hunter2; sleep 30", "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = server.client().post(server.url("/session")).json(&json!({})).send().await.unwrap();
    let sid = resp.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_string();
    let resp = server
        .client()
        .post(server.url(&format!("/session/{sid}/run")))
        .json(&json!({"command": "export DB_PASSWORD=hunter2"}))
        .send()
        .await
        .unwrap();
    let _ = resp.text().await.unwrap();
    assert_private_tree(server.state_dir());

    // What an unprivileged process in the sandbox sees: nothing.
    let state = server.state_dir().display().to_string();
    let out = stdout_of(
        &server,
        json!({"command": format!("grep -rs hunter2 {state} | head -c 200; echo end"), "uid": 65534}),
    )
    .await;
    assert_eq!(out.trim(), "end", "uid 65534 read execd's state: {out}");
}

// ---------------------------------------------------------------------------------------------
// 3. Tokens in /proc/<pid>/cmdline

#[tokio::test]
async fn h3_token_flags_are_not_readable_in_proc_cmdline() {
    if !need_root("h3_token_flags_are_not_readable_in_proc_cmdline") {
        return;
    }
    let token = "s3cret-access-token-h3";
    let server = TestServer::options()
        .token(token)
        .arg(&format!("--access-token={token}"))
        .arg("--jupyter-token")
        .arg("jupyter-secret-h3")
        .start();
    let pid = server.pid();
    let out = stdout_of(&server, json!({"command": format!("tr '\\0' ' ' < /proc/{pid}/cmdline"), "uid": 65534})).await;
    assert!(out.contains("--access-token=") && out.contains("--jupyter-token"), "{out}");
    assert!(!out.contains(token) && !out.contains("jupyter-secret-h3"), "token readable: {out}");
    // The token still works: this request carried it, and a wrong one is refused.
    let resp =
        reqwest::Client::new().get(server.url("/ping")).header("X-EXECD-ACCESS-TOKEN", "nope").send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn h3_access_token_file_keeps_the_token_out_of_argv() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("token");
    std::fs::write(&file, "file-token-h3\n").unwrap();
    let port = common::free_port();
    let state = t.path().join("state");
    let mut child = Command::new(common::execd_bin())
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--state-dir", state.to_str().unwrap()])
        .arg(format!("--access-token-file={}", file.display()))
        .env_remove("EXECD_ACCESS_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = common::wait_until(TIMEOUT, || common::blocking_ping(port, Some("file-token-h3")));
    let pid = child.id();
    let refused = !common::blocking_ping(port, None) && !common::blocking_ping(port, Some("file-token-h"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "execd did not answer with the token from the file");
    assert!(refused, "no token, or a wrong one, must not authenticate");
    assert!(String::from_utf8_lossy(&cmdline).contains("--access-token-file="));
    assert!(!String::from_utf8_lossy(&cmdline).contains("file-token-h3"));
}

// ---------------------------------------------------------------------------------------------
// 4. ?access_token= only on WebSocket routes

/// Sends a raw request and returns the status code.
fn raw_status(port: u16, request: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = common::read_retrying(&mut s, &mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"))
}

#[test]
fn h4_query_token_with_upgrade_header_is_refused_on_plain_routes() {
    let server = TestServer::options().token("tok-h4").start();
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for path in [
        "/files/info?path=/etc/hostname&access_token=tok-h4",
        "/ping?access_token=tok-h4",
        "/command/status/x?access_token=tok-h4",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n");
        assert_eq!(raw_status(server.port, &req), 401, "{path}");
    }
    // The PTY WebSocket still takes it (the upgrade reaches the handler: 404 for an unknown id,
    // not 401).
    let req = format!("GET /pty/nope/ws?access_token=tok-h4 HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n");
    assert_ne!(raw_status(server.port, &req), 401);
}

// ---------------------------------------------------------------------------------------------
// 5. Slowloris, stalled bodies, stalled readers

/// Opens a connection that sends the start of a request head and then nothing.
fn slow_client(port: u16) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /pi").ok()?;
    Some(s)
}

#[tokio::test]
async fn x54_h5_slowloris_connections_do_not_lock_out_a_real_client() {
    let server = TestServer::options().arg("--max-connections=1000").start();
    // A small descriptor limit, as in many containers: without a cap, half-sent requests take
    // every descriptor and accept fails. With it, execd keeps (128 - 64) / 2 = 32 for connections,
    // and an evicted connection counts until its socket is closed.
    let st = Command::new("prlimit").arg(format!("--pid={}", server.pid())).arg("--nofile=128:128").status().unwrap();
    assert!(st.success());
    // Far more half-sent requests than that; each stays open until execd closes it.
    let mut slow = Vec::new();
    for _ in 0..300 {
        if let Some(s) = slow_client(server.port) {
            slow.push(s);
        }
    }
    let start = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(5), stdout_of(&server, json!({"command": "echo served"})))
        .await
        .expect("a real client was locked out by half-sent requests");
    assert_eq!(out, "served", "log:\n{}", server.log());
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    // execd holds about the cap, not 300 sockets.
    let fds = common::fd_count(server.pid());
    assert!(fds < 64 + 40, "execd holds {fds} fds");
    drop(slow);
}

/// Sockets of execd's (`socket:[…]` descriptors).
fn socket_count(pid: u32) -> usize {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    rd.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
        .count()
}

#[tokio::test]
async fn x54_h5_lingering_closes_hold_at_most_half_the_connection_cap() {
    // Answered `Connection: close` requests whose clients keep their sockets open and send
    // nothing: each closed connection lingers (drains for up to 2 s) outside the connection cap.
    // With 128 descriptors the cap is (128 - 64) / 2 = 32, so at most 16 linger; up to 64 did,
    // 96 sockets beside the cap's 32 where commands need the rest.
    let server = TestServer::options().arg("--max-connections=1000").start();
    let st = Command::new("prlimit").arg(format!("--pid={}", server.pid())).arg("--nofile=128:128").status().unwrap();
    assert!(st.success());
    let base = socket_count(server.pid());
    let mut held = Vec::new();
    for i in 0..60 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match common::read_retrying(&mut s, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "request {i}: {:?}", String::from_utf8_lossy(&got));
        held.push(s);
    }
    // Within the 2 s linger: what execd holds beyond its own sockets.
    let lingering = socket_count(server.pid()).saturating_sub(base);
    assert!(lingering <= 16 + 2, "{lingering} sockets held for 60 answered, closed connections");
    let out = stdout_of(&server, json!({"command": "echo served"})).await;
    assert_eq!(out, "served", "log:\n{}", server.log());
    drop(held);
}

#[test]
fn x54_h5_half_sent_request_head_is_closed_after_the_header_timeout() {
    let server = TestServer::options().arg("--header-timeout=1s").start();
    // Before the first byte: execd's clock starts with it, and this thread may be held up between
    // sending and reading on a loaded machine (the bound below is from the first byte on).
    let start = Instant::now();
    let mut s = slow_client(server.port).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 256];
    // EOF (or a 408/400 answer, then EOF) from execd, well before the test's deadline.
    loop {
        match common::read_retrying(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "closed after {took:?}");
}

#[test]
fn x54_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = TestServer::options().arg("--header-timeout=1s").start();
    // From before the connect: hyper's header clock may start as soon as it accepts, and this
    // thread may run late on a loaded machine between any two of its steps. (The early closes
    // once blamed on that, "260 ms" in CI run 32, "532 ms" in a local full run, "430 ms" in CI
    // run 63, were most likely reads cut by a signal: see `common::read_retrying`.)
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    // One complete keep-alive request, answered; then the client goes quiet.
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = common::read_retrying(&mut s, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // The next read ends the connection (EOF or reset); any bytes would be an unasked answer.
    if let Ok(n @ 1..) = common::read_retrying(&mut s, &mut buf) {
        panic!("unexpected bytes on an idle connection: {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "idle connection closed after {took:?}"
    );
}

#[test]
fn x54_h5_request_body_that_stops_arriving_fails_after_the_stall_timeout() {
    let server = TestServer::options().arg("--stall-timeout=1s").start();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(
        b"POST /command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"comm",
    )
    .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "execd waited {took:?} for a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("no progress"), "{text}");
}

#[test]
fn x54_h5_client_that_stops_reading_a_stream_is_cut_off_after_the_stall_timeout() {
    let server = TestServer::options().arg("--stall-timeout=1s").start();
    let fds_before = common::fd_count(server.pid());
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let body = r#"{"command":"head -c 200000000 /dev/zero | tr '\\0' x"}"#;
    let req = format!(
        "POST /command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // Read nothing for a while: execd's writes stall.
    std::thread::sleep(Duration::from_secs(3));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let start = Instant::now();
    loop {
        match common::read_retrying(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        assert!(start.elapsed() < TIMEOUT, "stream still flowing: execd did not cut the stalled client");
    }
    // The stream is ~270 MB of JSON; what arrived is what sat in socket buffers.
    assert!(total < 100_000_000, "got {total} bytes: the connection was not cut");
    // The socket, and the command's pipe and journal (a foreground command ends with its
    // client), are all released.
    assert!(common::wait_until(TIMEOUT, || common::fd_count(server.pid()) <= fds_before), "descriptors still held");
}

// ---------------------------------------------------------------------------------------------
// 8. Huge command bodies

#[tokio::test]
async fn h8_huge_command_is_logged_as_a_bounded_excerpt_with_its_length() {
    let server = TestServer::start();
    // Just under Linux's 128 KiB limit on one exec argument (bash -c takes the command as one).
    let filler = "x".repeat(120 * 1024);
    let command = format!(": {filler}; echo done");
    let out = stdout_of(&server, json!({ "command": command })).await;
    assert_eq!(out, "done");
    let log = server.log();
    let line =
        log.lines().find(|l| l.contains("command started") && l.contains("command_len")).expect("a command log line");
    assert!(line.len() < 2048, "log line is {} bytes", line.len());
    assert!(line.contains(&format!("\"command_len\":{}", command.len())), "{line}");
    assert!(log.len() < 64 * 1024, "log is {} bytes", log.len());
}

#[tokio::test]
async fn h8_large_bodies_are_decoded_a_few_at_a_time() {
    let server = TestServer::start();
    let port = server.port;
    // Two clients announce 2 MiB bodies and send half: they hold both large-body slots.
    let big = 2 * 1024 * 1024;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "POST /command HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {big}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![b' '; big / 2]).unwrap();
        holders.push(s);
    }
    // A small request is served at once (and, being answered after the holders' heads were
    // sent, it lets execd reach their body reads first)...
    let small = tokio::time::timeout(Duration::from_secs(5), stdout_of(&server, json!({"command": "echo small"})))
        .await
        .expect("small request blocked");
    assert_eq!(small, "small");
    // ...while a third large body waits for a slot.
    let body = format!("{{\"command\":\"echo third\",\"pad\":\"{}\"}}", "p".repeat(big));
    let client = server.client();
    let url = server.url("/command");
    let third =
        tokio::spawn(
            async move { client.post(url).header("content-type", "application/json").body(body).send().await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    if third.is_finished() {
        let r = third.await.unwrap().unwrap();
        panic!("a third large body was decoded while two held the slots: {} {}", r.status(), r.text().await.unwrap());
    }
    // The holders finish their bodies (an invalid command, answered at once): the third proceeds.
    for s in &mut holders {
        s.write_all(&vec![b' '; big / 2]).unwrap();
    }
    let resp = tokio::time::timeout(TIMEOUT, third).await.expect("third body never decoded").unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("third"), "{text}");
}
