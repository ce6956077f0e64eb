//! Bad input against the real binary (issue 8): oversized bodies, huge headers, deep JSON,
//! invalid UTF-8, NUL bytes, negative and overflowing numbers, `..` and traversal-shaped ids.
//! Each request gets a clear 4xx JSON error (or a documented correct success) and the daemon keeps
//! serving: every test pings after each bad request and checks that execd is still alive.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};

/// `/ping` answers 200 and the process is alive.
fn assert_serving(s: &TestServer) {
    assert!(common::blocking_ping(s.port, None), "execd stopped serving; log:\n{}", s.log());
    assert!(common::pid_alive(s.pid() as i32), "execd died; log:\n{}", s.log());
}

/// A raw HTTP/1.1 exchange: `head` (request line + headers, without the final CRLF), then
/// `body_len` bytes of `fill` written by a separate thread (errors ignored: the server may answer
/// and close early). Returns the status and the response body.
fn raw(s: &TestServer, head: &str, body_len: usize, fill: u8) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let head = format!("{head}\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n");
    let writer = std::thread::spawn(move || {
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![fill; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if w.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut resp = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    // Read until the peer closes (Connection: close) or resets after answering.
    loop {
        match common::read_retrying(&mut stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    parse_raw_response(&resp)
}

fn parse_raw_response(resp: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(resp);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| {
        panic!("no HTTP status in response {:?}", &text[..text.len().min(300)]);
    });
    let body = resp.windows(4).position(|w| w == b"\r\n\r\n").map(|p| resp[p + 4..].to_vec()).unwrap_or_default();
    (status, body)
}

/// Asserts a JSON error body `{code, message}` with `code`.
fn assert_json_error(body: &[u8], code: &str) -> Value {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

async fn post_raw(s: &TestServer, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let resp = s.client().post(s.url(path)).header("content-type", "application/json").body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn post_json(s: &TestServer, path: &str, body: Value) -> (u16, Vec<u8>) {
    post_raw(s, path, serde_json::to_vec(&body).unwrap()).await
}

async fn get(s: &TestServer, path_and_query: &str) -> (u16, Vec<u8>) {
    let resp = s.client().get(s.url(path_and_query)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

/// Runs a command to its end and returns its events (the request must be accepted).
async fn run_events(s: &TestServer, body: Value) -> Vec<Value> {
    let (status, bytes) = post_json(s, "/command", body.clone()).await;
    assert_eq!(status, 200, "{body}: {}", String::from_utf8_lossy(&bytes));
    common::parse_events(&String::from_utf8_lossy(&bytes))
}

// ------------------------------------------------------------------------------------- sizes

#[test]
fn json_bodies_over_32_mib_are_413_payload_too_large_on_every_json_route() {
    let s = TestServer::start();
    let over = 32 * 1024 * 1024 + 1;
    for path in ["/command", "/session", "/code", "/pty"] {
        let (status, body) =
            raw(&s, &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"), over, b' ');
        assert_eq!(status, 413, "{path}: {}", String::from_utf8_lossy(&body));
        assert_json_error(&body, "PAYLOAD_TOO_LARGE");
        assert_serving(&s);
    }
}

#[test]
fn an_early_answer_ends_in_a_lingering_close_that_drains_what_the_client_still_sends() {
    // An upload without the token is answered 401 before its body is read. Closing the socket
    // then, with body bytes unread or still arriving, makes the kernel reset the connection:
    // the client's writes fail (a client that sends its whole body before reading, as Python's
    // http.client does, never sees the 401) and whatever of the answer is still in execd's send
    // buffer is thrown away. execd shuts its side and reads what still comes for a while
    // (src/api/server.rs, RFC 9112 section 9.6): the whole body goes through, then the client
    // reads the answer and an orderly end.
    let s = TestServer::options().token("right").start();
    for close in ["Connection: close\r\n", ""] {
        let mut stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(common::TIMEOUT)).unwrap();
        // 16 MiB: far more than the socket buffers hold, so it goes through only if execd reads it.
        let len = 16 * 1024 * 1024;
        let head = format!(
            "POST /files/upload HTTP/1.1\r\nHost: x\r\nX-EXECD-ACCESS-TOKEN: wrong\r\n{close}\
             Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for i in 0..len / chunk.len() {
            if let Err(e) = stream.write_all(&chunk) {
                panic!("{close:?}: write {i} of the body failed after the early answer: {e}");
            }
        }
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).expect("the answer, then an orderly close (not a reset)");
        let (status, body) = parse_raw_response(&resp);
        assert_eq!(status, 401, "{close:?}: {}", String::from_utf8_lossy(&body));
    }
    assert!(common::blocking_ping(s.port, Some("right")), "execd stopped serving; log:\n{}", s.log());
}

#[test]
fn oversized_json_bodies_on_filesystem_routes_are_413() {
    // /files/mv, /files/permissions and /directories read their JSON bodies themselves
    // (src/api/files.rs `read_json`), so they must map "too large" to 413 as well.
    let s = TestServer::start();
    let over = 32 * 1024 * 1024 + 1;
    for path in ["/files/mv", "/files/permissions", "/directories"] {
        let (status, body) =
            raw(&s, &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"), over, b' ');
        assert_eq!(status, 413, "{path}: {}", String::from_utf8_lossy(&body));
        assert_json_error(&body, "PAYLOAD_TOO_LARGE");
        assert_serving(&s);
    }
}

#[test]
fn a_body_just_under_the_limit_is_decoded() {
    // 32 MiB of leading whitespace before a valid object: accepted (the limit is on size only).
    let s = TestServer::start();
    let mut body = vec![b' '; 32 * 1024 * 1024 - 64];
    body.extend_from_slice(br#"{"command":"echo ok"}"#);
    let client = raw_post(&s, "/command", body);
    assert_eq!(client.0, 200, "{}", String::from_utf8_lossy(&client.1));
    let events = common::parse_events(&String::from_utf8_lossy(&client.1));
    assert_eq!(common::texts(&events, "stdout"), ["ok"]);
    assert_serving(&s);
}

/// A blocking POST over a raw socket that sends `body` as is; the answer is de-chunked.
fn raw_post(s: &TestServer, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    let (status, raw_body) = parse_raw_response(&resp);
    (status, dechunk(&raw_body))
}

/// Decodes a chunked body (streams are chunked); returns the input when it is not chunked.
fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = b;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { return b.to_vec() };
        let Ok(n) = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("x").trim(), 16) else {
            return b.to_vec();
        };
        if n == 0 {
            return out;
        }
        let start = eol + 2;
        if rest.len() < start + n + 2 {
            return b.to_vec();
        }
        out.extend_from_slice(&rest[start..start + n]);
        rest = &rest[start + n + 2..];
    }
}

#[test]
fn huge_headers_are_refused_and_the_daemon_keeps_serving() {
    let s = TestServer::start();
    // One 1 MiB header value: hyper refuses it before routing (431, or a closed connection).
    let big = "a".repeat(1024 * 1024);
    let mut stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let _ = stream.write_all(format!("GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    let head = String::from_utf8_lossy(&resp[..resp.len().min(64)]).to_string();
    assert!(resp.is_empty() || head.starts_with("HTTP/1.1 431"), "{head:?}");
    assert_serving(&s);
    // 500 small headers: over hyper's header-count limit.
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let _ = stream.write_all(format!("GET /ping HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp);
    let head = String::from_utf8_lossy(&resp[..resp.len().min(64)]).to_string();
    assert!(resp.is_empty() || head.starts_with("HTTP/1.1 431"), "{head:?}");
    assert_serving(&s);
}

// ------------------------------------------------------------------------------ JSON shape

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let s = TestServer::start();
    for depth in [200usize, 100_000] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for (path, body) in [
            ("/command", format!(r#"{{"command":"echo","envs":{deep}}}"#)),
            ("/command", deep.clone()),
            ("/session", format!(r#"{{"cwd":{deep}}}"#)),
            ("/files/mv", format!(r#"[{{"src":{deep}}}]"#)),
            ("/directories", format!(r#"{{"/tmp/x":{deep}}}"#)),
        ] {
            let (status, bytes) = post_raw(&s, path, body.into_bytes()).await;
            assert_eq!(status, 400, "{path} depth {depth}: {}", String::from_utf8_lossy(&bytes));
            assert_json_error(&bytes, "INVALID_REQUEST_BODY");
            assert_serving(&s);
        }
    }
}

#[tokio::test]
async fn invalid_utf8_and_lone_surrogates_in_json_are_400() {
    let s = TestServer::start();
    let bodies: [&[u8]; 3] =
        [b"{\"command\":\"echo \xff\xfe\"}", br#"{"command":"echo \ud800"}"#, b"{\"cwd\":\"/tmp/\xc3\"}"];
    for body in bodies {
        for path in ["/command", "/session"] {
            let (status, bytes) = post_raw(&s, path, body.to_vec()).await;
            assert_eq!(status, 400, "{path} {body:?}: {}", String::from_utf8_lossy(&bytes));
            assert_json_error(&bytes, "INVALID_REQUEST_BODY");
            assert_serving(&s);
        }
    }
}

#[tokio::test]
async fn invalid_utf8_in_path_segments_is_a_json_4xx() {
    let s = TestServer::start();
    for path in ["/command/status/%ff%fe", "/command/%ff/logs", "/command/%ff/events", "/pty/%ff"] {
        let (status, bytes) = get(&s, path).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{path}: {status} body is not JSON: {:?}", String::from_utf8_lossy(&bytes)));
        assert!(v["code"].is_string(), "{path}: {v}");
        assert_serving(&s);
    }
    let resp = s.client().delete(s.url("/session/%ff")).send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    assert!((400..500).contains(&status), "delete session: {status}");
    assert!(serde_json::from_slice::<Value>(&bytes).is_ok(), "{:?}", String::from_utf8_lossy(&bytes));
    assert_serving(&s);
}

#[tokio::test]
async fn invalid_utf8_in_query_paths_is_replaced_and_answered_as_not_found() {
    let s = TestServer::start();
    for q in ["/files/info?path=/tmp/%ff%fe", "/files/download?path=/tmp/%c3", "/directories/list?path=/nope/%ff"] {
        let (status, bytes) = get(&s, q).await;
        assert_eq!(status, 404, "{q}: {}", String::from_utf8_lossy(&bytes));
        assert_json_error(&bytes, "FILE_NOT_FOUND");
        assert_serving(&s);
    }
}

// ---------------------------------------------------------------------------------- numbers

#[tokio::test]
async fn negative_and_overflowing_command_numbers_are_400_naming_the_field() {
    let s = TestServer::start();
    let cases = [
        (r#"{"command":"true","timeout":-1}"#, "timeout"),
        (r#"{"command":"true","timeout":99999999999999999999}"#, "timeout"),
        (r#"{"command":"true","timeout":1e400}"#, ""),
        (r#"{"command":"true","timeout":1.5}"#, "timeout"),
        (r#"{"command":"true","uid":-1}"#, "uid"),
        (r#"{"command":"true","uid":4294967296}"#, "uid"),
        (r#"{"command":"true","gid":-5}"#, "gid"),
        (r#"{"command":"true","gid":18446744073709551616}"#, "gid"),
    ];
    for (body, field) in cases {
        let (status, bytes) = post_raw(&s, "/command", body.as_bytes().to_vec()).await;
        assert_eq!(status, 400, "{body}: {}", String::from_utf8_lossy(&bytes));
        let v = assert_json_error(&bytes, "INVALID_REQUEST_BODY");
        assert!(v["message"].as_str().unwrap().contains(field), "{body}: {v}");
        assert_serving(&s);
    }
}

#[tokio::test]
async fn the_largest_timeout_is_accepted_and_does_not_overflow() {
    // i64::MAX milliseconds: a deadline far in the future, not a panic on Instant overflow.
    let s = TestServer::start();
    let events = run_events(&s, json!({"command": "echo big", "timeout": i64::MAX})).await;
    assert_eq!(common::texts(&events, "stdout"), ["big"]);
    assert!(events.iter().any(|e| e["type"] == "execution_complete"), "{events:?}");
    assert_serving(&s);
    let (status, bytes) =
        post_json(&s, "/command", json!({"command": "echo bg", "timeout": i64::MAX, "background": true})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_serving(&s);
    // Session runs too.
    let (status, bytes) = post_json(&s, "/session", json!({})).await;
    assert_eq!(status, 200);
    let id = serde_json::from_slice::<Value>(&bytes).unwrap()["session_id"].as_str().unwrap().to_string();
    let (status, bytes) =
        post_json(&s, &format!("/session/{id}/run"), json!({"command": "echo s", "timeout": i64::MAX})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let events = common::parse_events(&String::from_utf8_lossy(&bytes));
    assert_eq!(common::texts(&events, "stdout"), ["s"]);
    assert_serving(&s);
}

#[tokio::test]
async fn session_run_numbers_are_validated() {
    let s = TestServer::start();
    let (_, bytes) = post_json(&s, "/session", json!({})).await;
    let id = serde_json::from_slice::<Value>(&bytes).unwrap()["session_id"].as_str().unwrap().to_string();
    for body in [
        r#"{"command":"true","timeout":-1}"#,
        r#"{"command":"true","timeout":99999999999999999999}"#,
        r#"{"command":"true","timeout":"10"}"#,
    ] {
        let (status, bytes) = post_raw(&s, &format!("/session/{id}/run"), body.as_bytes().to_vec()).await;
        assert_eq!(status, 400, "{body}: {}", String::from_utf8_lossy(&bytes));
        assert_json_error(&bytes, "INVALID_REQUEST_BODY");
        assert_serving(&s);
    }
}

#[tokio::test]
async fn depth_cursor_and_after_out_of_range_are_clear() {
    let s = TestServer::start();
    for q in ["/directories/list?path=/tmp&depth=-1", "/directories/list?path=/tmp&depth=99999999999999999999"] {
        let (status, bytes) = get(&s, q).await;
        assert_eq!(status, 400, "{q}: {}", String::from_utf8_lossy(&bytes));
        assert_json_error(&bytes, "INVALID_REQUEST_BODY");
        assert_serving(&s);
    }
    // The largest depth is legal (a bounded walk of a small tree).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
    let (status, bytes) = get(&s, &format!("/directories/list?path={}&depth=4294967295", dir.path().display())).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap().as_array().unwrap().len(), 3);

    let events = run_events(&s, json!({"command": "echo hi", "background": true})).await;
    let id = events[0]["text"].as_str().unwrap().to_string();
    assert!(
        common::wait_until_async(common::TIMEOUT, || async {
            let (_, b) = get(&s, &format!("/command/status/{id}")).await;
            serde_json::from_slice::<Value>(&b).is_ok_and(|v| v["running"] == false)
        })
        .await
    );
    // Negative cursor: 400. Past the end (also beyond i64): empty slice or 0, never a panic.
    let (status, bytes) = get(&s, &format!("/command/{id}/logs?cursor=-1")).await;
    assert_eq!(status, 400);
    assert_json_error(&bytes, "INVALID_REQUEST_BODY");
    for cursor in ["9223372036854775807", "18446744073709551615", "99999999999999999999999"] {
        let (status, bytes) = get(&s, &format!("/command/{id}/logs?cursor={cursor}")).await;
        assert_eq!(status, 200, "cursor {cursor}: {}", String::from_utf8_lossy(&bytes));
        assert_serving(&s);
    }
    for after in ["-1", "abc", "99999999999999999999999"] {
        let (status, bytes) = get(&s, &format!("/command/{id}/events?after={after}")).await;
        assert_eq!(status, 400, "after {after}: {}", String::from_utf8_lossy(&bytes));
        assert_json_error(&bytes, "INVALID_REQUEST_BODY");
        assert_serving(&s);
    }
    // An offset past the end of the journal is legal and ends at once (nothing to replay).
    let resp = s.client().get(s.url(&format!("/command/{id}/events?after=18446744073709551615"))).send().await.unwrap();
    assert!(resp.status().is_success() || resp.status().is_client_error(), "{}", resp.status());
    let _ = tokio::time::timeout(common::TIMEOUT, resp.bytes()).await.expect("events past the end did not end");
    assert_serving(&s);
}

// ------------------------------------------------------------------------ NUL bytes and `..`

#[tokio::test]
async fn nul_bytes_in_paths_are_400() {
    let s = TestServer::start();
    for q in ["/files/info?path=/tmp/a%00b", "/files/download?path=/tmp/%00", "/directories/list?path=/tmp%00x"] {
        let (status, bytes) = get(&s, q).await;
        assert_eq!(status, 400, "{q}: {}", String::from_utf8_lossy(&bytes));
        assert_json_error(&bytes, "INVALID_REQUEST_BODY");
        assert_serving(&s);
    }
    let (status, bytes) = post_json(&s, "/directories", json!({"/tmp/x\u{0}y": {"mode": 755}})).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
    assert_serving(&s);
}

#[tokio::test]
async fn nul_bytes_in_commands_cwd_and_envs_are_refused_cleanly() {
    let s = TestServer::start();
    for body in [
        json!({"command": "echo a\u{0}b"}),
        json!({"command": "pwd", "cwd": "/tmp\u{0}x"}),
        json!({"command": "true", "envs": {"K\u{0}": "v"}}),
        json!({"command": "true", "envs": {"K": "v\u{0}"}}),
    ] {
        let (status, bytes) = post_json(&s, "/command", body.clone()).await;
        let text = String::from_utf8_lossy(&bytes).to_string();
        // Either a 400 before the stream, or a stream that ends in an error event: never a hang,
        // a half stream or a crash.
        if status == 200 {
            let events = common::parse_events(&text);
            let last = events.last().unwrap_or_else(|| panic!("{body}: empty stream"));
            assert_eq!(last["type"], "error", "{body}: {events:?}");
        } else {
            assert_eq!(status, 400, "{body}: {text}");
            assert_json_error(&bytes, "INVALID_REQUEST_BODY");
        }
        assert_serving(&s);
    }
}

#[tokio::test]
async fn dot_dot_is_a_legal_path_that_resolves_lexically() {
    // `..` is not an attack surface here: execd serves the whole filesystem to its caller by
    // design. It must simply resolve as the kernel would for an existing directory.
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("f.txt"), b"hello").unwrap();
    let via_dotdot = format!("{}/sub/../f.txt", dir.path().display());
    let (status, bytes) = get(&s, &format!("/files/download?path={via_dotdot}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(bytes, b"hello");
    let (status, _) = get(&s, &format!("/files/info?path={via_dotdot}")).await;
    assert_eq!(status, 200);
    // `/..` is `/`: refused as the root for deletion (D32), never a recursive delete of `/`.
    let resp = s.client().delete(s.url("/directories?path=/tmp/../..")).send().await.unwrap();
    assert_eq!(resp.status(), 400, "deleting / via ..");
    assert_serving(&s);
}

#[tokio::test]
async fn traversal_shaped_ids_touch_nothing_outside_their_registry() {
    let s = TestServer::start();
    // A sentinel next to the sessions and journals directories.
    let sentinel = s.state_dir().join("sentinel");
    std::fs::create_dir_all(sentinel.join("inner")).unwrap();
    for id in ["..%2Fsentinel", "..%2F..%2Fstate%2Fsentinel", "%2E%2E", "..", "."] {
        let resp = s.client().delete(s.url(&format!("/session/{id}"))).send().await.unwrap();
        assert!(resp.status().is_client_error(), "delete session {id}: {}", resp.status());
        let resp = s.client().delete(s.url(&format!("/pty/{id}"))).send().await.unwrap();
        assert!(resp.status().is_client_error(), "delete pty {id}: {}", resp.status());
        let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
        assert!(resp.status().is_client_error() || resp.status().is_server_error(), "{}", resp.status());
        // (The client normalises `%2E%2E`, `..` and `.` as dot segments: those reach a 404 route.)
        let (status, bytes) = get(&s, &format!("/command/{id}/logs")).await;
        assert!(status == 400 || status == 404, "logs {id}: {status}");
        assert!(serde_json::from_slice::<Value>(&bytes).is_ok(), "logs {id}: not JSON");
        assert!(!String::from_utf8_lossy(&bytes).contains("root:"), "logs {id} leaked a file");
        assert_serving(&s);
    }
    let (status, bytes) = get(&s, "/command/..%2F..%2F..%2F..%2Fetc%2Fpasswd/logs").await;
    assert_eq!(status, 400);
    assert!(!String::from_utf8_lossy(&bytes).contains("root:"));
    assert!(sentinel.join("inner").is_dir(), "a traversal id removed a directory outside the registry");
}

// --------------------------------------------------------------------------------- framing

#[test]
fn garbage_request_lines_do_not_hurt_the_daemon() {
    let s = TestServer::start();
    let garbage: [&[u8]; 5] = [
        b"\xff\xfe\xfd\r\n\r\n",
        b"GET /ping\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /command HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /command HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /command HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"com",
    ];
    for g in garbage {
        let mut stream = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = stream.write_all(g);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut resp = Vec::new();
        let _ = stream.read_to_end(&mut resp);
        if !resp.is_empty() {
            let head = String::from_utf8_lossy(&resp[..resp.len().min(16)]).to_string();
            assert!(head.starts_with("HTTP/1.1 4"), "{g:?}: {head:?}");
        }
        assert_serving(&s);
    }
}
