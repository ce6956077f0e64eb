//! Full-duplex exec over a WebSocket (EXTENSIONS X15, issue #16) against the real binary through a
//! real socket with a WebSocket client library: a REPL driven turn by turn, `eof`, `signal`,
//! attaching with `since=0` (whole transcript, input included), disconnects that leave the command
//! running, bad first frames, unknown ids and the query token; the same under a PTY (`"tty":true`:
//! `x15_tty_…`, `x13_tty_…`).

use crate::common;

use std::time::Duration;

use common::{TestServer, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server frame, decoded.
#[derive(Debug)]
enum Frame {
    Text(Value),
    /// Type byte and payload.
    Bin(u8, Vec<u8>),
    Close(Option<u16>),
    End,
}

fn ws_url(s: &TestServer, path: &str) -> String {
    s.url(path).replacen("http://", "ws://", 1)
}

async fn connect(s: &TestServer, path: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(ws_url(s, path)))
        .await
        .expect("connect timed out")
        .expect("websocket connect");
    ws
}

/// The next frame that is not a ping or pong (deadline: [`TIMEOUT`]).
async fn next(ws: &mut Ws) -> Frame {
    loop {
        let m = tokio::time::timeout(TIMEOUT, ws.next()).await.expect("no frame before the deadline");
        return match m {
            Some(Ok(Message::Text(t))) => Frame::Text(serde_json::from_str(t.as_str()).expect("text frame is JSON")),
            Some(Ok(Message::Binary(b))) => Frame::Bin(b[0], b[1..].to_vec()),
            Some(Ok(Message::Close(c))) => Frame::Close(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => Frame::End,
        };
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn send_stdin(ws: &mut Ws, data: &str) {
    let mut b = vec![0u8];
    b.extend_from_slice(data.as_bytes());
    ws.send(Message::Binary(b.into())).await.unwrap();
}

/// Opens `/command/ws`, sends `first`, returns the socket and the command's id (from `init`).
async fn exec(s: &TestServer, first: Value) -> (Ws, String) {
    let mut ws = connect(s, "/command/ws").await;
    send_json(&mut ws, first).await;
    match next(&mut ws).await {
        Frame::Text(v) if v["type"] == "init" => {
            let id = v["id"].as_str().expect("init id").to_string();
            (ws, id)
        }
        other => panic!("expected init, got {other:?}"),
    }
}

/// Collected output of a socket.
#[derive(Default, Debug)]
struct Seen {
    stdout: String,
    stderr: String,
    /// Live stdin echo (`0x00`).
    stdin: String,
    awaiting: usize,
    /// stdout and stderr as they were when each `awaiting_input` arrived.
    awaiting_after: Vec<(String, String)>,
    /// Replay frames (`0x03`): (stream byte, offset, text), in order.
    replay: Vec<(u8, u64, String)>,
    errors: Vec<Value>,
}

/// Reads frames into `seen` until `done(seen)` holds; panics on exit/close first (returns them).
async fn read_until(ws: &mut Ws, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    while !done(seen) {
        match next(ws).await {
            Frame::Text(v) => absorb_text(seen, v),
            Frame::Bin(kind, data) => absorb_bin(seen, kind, data),
            other => panic!("connection ended while waiting: {other:?}; seen {seen:?}"),
        }
    }
}

fn absorb_text(seen: &mut Seen, v: Value) {
    match v["type"].as_str() {
        Some("awaiting_input") => {
            seen.awaiting += 1;
            seen.awaiting_after.push((seen.stdout.clone(), seen.stderr.clone()));
        }
        Some("error") => seen.errors.push(v),
        _ => panic!("unexpected text frame {v}"),
    }
}

fn absorb_bin(seen: &mut Seen, kind: u8, data: Vec<u8>) {
    match kind {
        0x00 => seen.stdin.push_str(&String::from_utf8_lossy(&data)),
        0x01 => seen.stdout.push_str(&String::from_utf8_lossy(&data)),
        0x02 => seen.stderr.push_str(&String::from_utf8_lossy(&data)),
        0x03 => {
            let offset = u64::from_be_bytes(data[1..9].try_into().unwrap());
            seen.replay.push((data[0], offset, String::from_utf8_lossy(&data[9..]).into_owned()));
        }
        k => panic!("unknown binary frame type {k:#x}"),
    }
}

/// Reads to the `exit` frame, then expects close 1000; returns the exit frame.
async fn read_to_exit(ws: &mut Ws, seen: &mut Seen) -> Value {
    let exit = loop {
        match next(ws).await {
            Frame::Text(v) if v["type"] == "exit" => break v,
            Frame::Text(v) => absorb_text(seen, v),
            Frame::Bin(kind, data) => absorb_bin(seen, kind, data),
            other => panic!("connection ended before the exit frame: {other:?}; seen {seen:?}"),
        }
    };
    match next(ws).await {
        Frame::Close(Some(1000)) => {}
        other => panic!("expected close 1000 after exit, got {other:?}"),
    }
    exit
}

async fn status(s: &TestServer, id: &str) -> Value {
    s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn x15_python_repl_driven_turn_by_turn() {
    let s = TestServer::start();
    let (mut ws, _id) = exec(&s, json!({"command": "python3 -u -i -q", "awaiting_input_ms": 100})).await;
    let mut seen = Seen::default();
    // The REPL waits at its prompt: execd says so before anything is sent, after the prompt.
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 1).await;
    assert_eq!(seen.awaiting_after[0], (String::new(), ">>> ".to_string()), "{seen:?}");
    send_stdin(&mut ws, "1 + 1\n").await;
    read_until(&mut ws, &mut seen, |s| s.stdout.contains("2\n")).await;
    send_stdin(&mut ws, "x = 40\n").await;
    send_stdin(&mut ws, "print(x + 2)\n").await;
    read_until(&mut ws, &mut seen, |s| s.stdout.contains("42\n")).await;
    send_stdin(&mut ws, "import sys; print('oops', file=sys.stderr)\n").await;
    read_until(&mut ws, &mut seen, |s| s.stderr.contains("oops\n")).await;
    assert_eq!(seen.stdout, "2\n42\n", "{seen:?}");
    // Every wait is announced after the prompt that preceded it.
    assert!(seen.awaiting_after.iter().all(|(_, err)| err.ends_with(">>> ")), "{seen:?}");
    // Echo is off by default: the input is not sent back.
    assert!(seen.stdin.is_empty(), "{seen:?}");
    send_stdin(&mut ws, "exit(3)\n").await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 3, "{exit}");
    assert_eq!(exit["exit_reason"], "exited", "{exit}");
    assert!(seen.errors.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn x15_eof_ends_cat() {
    let s = TestServer::start();
    // `echo` in the first frame turns the input echo on; a `stdin` string is written first.
    let (mut ws, id) = exec(&s, json!({"command": "cat", "stdin": "first\n", "echo": true})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| s.stdout == "first\n").await;
    send_stdin(&mut ws, "hello\n").await;
    send_json(&mut ws, json!({"type": "stdin", "data": "text frame\n"})).await;
    read_until(&mut ws, &mut seen, |s| s.stdout == "first\nhello\ntext frame\n").await;
    send_json(&mut ws, json!({"type": "eof"})).await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert_eq!(seen.stdin, "first\nhello\ntext frame\n", "{seen:?}");
    // The offset in the exit frame is the journal's length: output and input.
    assert_eq!(exit["offset"], 2 * seen.stdout.len(), "{exit}");
    let st = status(&s, &id).await;
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["exit_code"], 0, "{st}");
}

#[tokio::test]
async fn x15_signal_sigint_interrupts_sleep() {
    let s = TestServer::start();
    let (mut ws, _id) = exec(&s, json!({"command": "sleep 30"})).await;
    let started = std::time::Instant::now();
    send_json(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    let mut seen = Seen::default();
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert!(started.elapsed() < Duration::from_secs(15), "SIGINT did not end sleep");
    assert_eq!(exit["exit_reason"], "signaled", "{exit}");
    assert_eq!(exit["signal"], "SIGINT", "{exit}");
    assert_ne!(exit["exit_code"], 0, "{exit}");
    // An unknown signal is an error frame, not the end of the socket.
    let (mut ws, _id) = exec(&s, json!({"command": "sleep 30"})).await;
    send_json(&mut ws, json!({"type": "signal", "signal": "SIGNOPE"})).await;
    match next(&mut ws).await {
        Frame::Text(v) => assert_eq!(v["type"], "error", "{v}"),
        other => panic!("expected an error frame, got {other:?}"),
    }
    send_json(&mut ws, json!({"type": "signal", "signal": 15})).await;
    let exit = read_to_exit(&mut ws, &mut Seen::default()).await;
    assert_eq!(exit["signal"], "SIGTERM", "{exit}");
}

/// Concatenates replay frames of one stream.
fn replayed(seen: &Seen, stream: u8) -> String {
    seen.replay.iter().filter(|r| r.0 == stream).map(|r| r.2.as_str()).collect()
}

#[tokio::test]
async fn x15_attach_since_zero_sees_the_whole_transcript() {
    let s = TestServer::start();
    let (mut a, id) = exec(&s, json!({"command": "cat"})).await;
    let mut sa = Seen::default();
    send_stdin(&mut a, "one\n").await;
    read_until(&mut a, &mut sa, |s| s.stdout == "one\n").await;

    // B attaches while it runs: the journal so far as replay, then live output and input.
    let mut b = connect(&s, &format!("/command/{id}/ws?since=0")).await;
    let init = match next(&mut b).await {
        Frame::Text(v) => v,
        other => panic!("expected init, got {other:?}"),
    };
    assert_eq!(init["type"], "init", "{init}");
    assert_eq!(init["id"], id.as_str(), "{init}");
    assert_eq!(init["offset"], 8, "{init}");
    let mut sb = Seen::default();
    read_until(&mut b, &mut sb, |s| replayed(s, 1) == "one\n").await;
    assert_eq!(sb.replay[0], (0, 0, "one\n".to_string()), "input comes first: {sb:?}");
    assert_eq!(sb.replay[1], (1, 4, "one\n".to_string()), "{sb:?}");
    send_stdin(&mut a, "two\n").await;
    read_until(&mut b, &mut sb, |s| s.stdout == "two\n" && s.stdin == "two\n").await;
    // B's input reaches the same command.
    send_stdin(&mut b, "three\n").await;
    read_until(&mut a, &mut sa, |s| s.stdout == "one\ntwo\nthree\n").await;
    send_json(&mut a, json!({"type": "eof"})).await;
    let exit_a = read_to_exit(&mut a, &mut sa).await;
    let exit_b = read_to_exit(&mut b, &mut sb).await;
    assert_eq!(exit_a["exit_code"], 0, "{exit_a}");
    assert_eq!(exit_a, exit_b);

    // C attaches after the end: everything is replay, in order, input included.
    let mut c = connect(&s, &format!("/command/{id}/ws?since=0")).await;
    assert!(matches!(next(&mut c).await, Frame::Text(v) if v["type"] == "init"));
    let mut sc = Seen::default();
    let exit_c = read_to_exit(&mut c, &mut sc).await;
    assert_eq!(exit_c, exit_a);
    let transcript: String = sc.replay.iter().map(|r| format!("{}:{}", r.0, r.2)).collect();
    assert_eq!(transcript, "0:one\n1:one\n0:two\n1:two\n0:three\n1:three\n", "{sc:?}");
    assert!(sc.stdout.is_empty() && sc.stdin.is_empty(), "{sc:?}");
    // since= skips what the client already has (offsets are journal offsets).
    let mut d = connect(&s, &format!("/command/{id}/ws?since=12")).await;
    assert!(matches!(next(&mut d).await, Frame::Text(v) if v["type"] == "init"));
    let mut sd = Seen::default();
    read_to_exit(&mut d, &mut sd).await;
    assert_eq!(sd.replay.first().map(|r| r.1), Some(12), "{sd:?}");
    assert_eq!(replayed(&sd, 1), "two\nthree\n", "{sd:?}");
}

#[tokio::test]
async fn x15_disconnect_leaves_the_command_running() {
    let s = TestServer::start();
    let (mut ws, id) = exec(&s, json!({"command": "cat"})).await;
    send_stdin(&mut ws, "before\n").await;
    read_until(&mut ws, &mut Seen::default(), |s| s.stdout == "before\n").await;
    drop(ws); // no close handshake: the TCP connection just goes away
              // Give execd time to notice the disconnect; the command must still be there afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = status(&s, &id).await;
    assert_eq!(st["running"], true, "{st}");
    // Its stdin is still open: a new client attaches, feeds it and ends it.
    let mut b = connect(&s, &format!("/command/{id}/ws?since=0&echo=0")).await;
    assert!(matches!(next(&mut b).await, Frame::Text(v) if v["type"] == "init"));
    let mut seen = Seen::default();
    send_stdin(&mut b, "after\n").await;
    read_until(&mut b, &mut seen, |s| s.stdout == "after\n").await;
    assert!(seen.stdin.is_empty(), "echo=0: {seen:?}");
    send_json(&mut b, json!({"type": "eof"})).await;
    let exit = read_to_exit(&mut b, &mut seen).await;
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert_eq!(replayed(&seen, 1), "before\n", "{seen:?}");
}

/// Sends `first` (text or binary) and expects an error frame with `code`, then close 1008.
async fn expect_refused(s: &TestServer, first: Message, code: &str) {
    let mut ws = connect(s, "/command/ws").await;
    ws.send(first).await.unwrap();
    match next(&mut ws).await {
        Frame::Text(v) => {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["code"], code, "{v}");
            assert!(!v["message"].as_str().unwrap_or("").is_empty(), "{v}");
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    match next(&mut ws).await {
        Frame::Close(Some(1008)) => {}
        other => panic!("expected close 1008, got {other:?}"),
    }
}

#[tokio::test]
async fn x15_bad_first_frame_is_refused_with_1008() {
    let s = TestServer::start();
    expect_refused(&s, Message::Text("not json".into()), "INVALID_REQUEST_BODY").await;
    expect_refused(&s, Message::Text("[1, 2]".into()), "INVALID_REQUEST_BODY").await;
    expect_refused(&s, Message::Binary(vec![0u8, b'x'].into()), "INVALID_REQUEST_BODY").await;
    expect_refused(&s, Message::Text(json!({"command": ""}).to_string().into()), "INVALID_REQUEST_BODY").await;
    expect_refused(
        &s,
        Message::Text(json!({"command": "x", "timeout": -1}).to_string().into()),
        "INVALID_REQUEST_BODY",
    )
    .await;
    // A window size needs a terminal, and must be sane: refused, nothing started.
    for first in [
        json!({"command": "bash", "cols": 80, "rows": 24}),
        json!({"command": "bash", "tty": true, "cols": 0}),
        json!({"command": "bash", "tty": true, "rows": 100000}),
        json!({"command": "bash", "tty": true, "cols": "80"}),
        json!({"command": "bash", "tty": true, "cols": -3, "rows": 2}),
        json!({"command": "bash", "tty": "yes"}),
    ] {
        expect_refused(&s, Message::Text(first.to_string().into()), "INVALID_REQUEST_BODY").await;
    }
    // A first message over the cap ends the connection without starting anything.
    let mut ws = connect(&s, "/command/ws").await;
    let huge = format!("{{\"command\":\"echo {}\"}}", "a".repeat(2 << 20));
    let _ = ws.send(Message::Text(huge.into())).await;
    match next(&mut ws).await {
        Frame::Text(v) => assert!(v["message"].as_str().unwrap().contains("largest message"), "{v}"),
        f => assert!(matches!(f, Frame::Close(_) | Frame::End), "{f:?}"),
    }
    let list: Value = s.client().get(s.url("/command")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["commands"].as_array().map(|a| a.len()), Some(0), "a refused frame started a command: {list}");
}

#[tokio::test]
async fn x15_unknown_id_is_404_before_the_upgrade() {
    let s = TestServer::start();
    let err = tokio_tungstenite::connect_async(ws_url(&s, "/command/nope/ws")).await.expect_err("upgrade must fail");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 404),
        e => panic!("expected an HTTP 404, got {e}"),
    }
    let resp = s.client().get(s.url("/command/nope/ws")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // A known id without an upgrade is a 400, and so is a bad since.
    let (ws, id) = exec(&s, json!({"command": "cat"})).await;
    let resp = s.client().get(s.url(&format!("/command/{id}/ws"))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = s.client().get(s.url(&format!("/command/{id}/ws?since=x"))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    drop(ws);
    let resp = s.client().get(s.url("/command/ws")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn x15_websocket_routes_take_the_query_token() {
    let s = TestServer::options().token("sekrit").start();
    let err = tokio_tungstenite::connect_async(ws_url(&s, "/command/ws")).await.expect_err("no token");
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 401), "{err}");
    let mut ws = connect(&s, "/command/ws?access_token=sekrit").await;
    send_json(&mut ws, json!({"command": "echo hi"})).await;
    let id = match next(&mut ws).await {
        Frame::Text(v) if v["type"] == "init" => v["id"].as_str().unwrap().to_string(),
        other => panic!("expected init, got {other:?}"),
    };
    let mut seen = Seen::default();
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!((exit["exit_code"].clone(), seen.stdout.as_str()), (json!(0), "hi\n"));
    let mut b = connect(&s, &format!("/command/{id}/ws?access_token=sekrit")).await;
    assert!(matches!(next(&mut b).await, Frame::Text(v) if v["type"] == "init"));
    let err = tokio_tungstenite::connect_async(ws_url(&s, &format!("/command/{id}/ws?access_token=wrong")))
        .await
        .expect_err("wrong token");
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 401), "{err}");
}

#[tokio::test]
async fn x15_attach_to_a_command_without_stdin() {
    let s = TestServer::start();
    let body = json!({"command": "echo started; sleep 30", "background": true});
    let text = s.client().post(s.url("/command")).json(&body).send().await.unwrap().text().await.unwrap();
    let events = common::parse_events(&text);
    let id = events.iter().find(|e| e["type"] == "init").expect("init")["text"].as_str().unwrap().to_string();
    let mut ws = connect(&s, &format!("/command/{id}/ws")).await;
    assert!(matches!(next(&mut ws).await, Frame::Text(v) if v["type"] == "init"));
    let mut seen = Seen::default();
    // Written before or after the attach: replay or live, either way it arrives.
    read_until(&mut ws, &mut seen, |s| s.stdout == "started\n" || replayed(s, 1) == "started\n").await;
    // Its stdin is /dev/null: input is refused with an error frame, the socket stays.
    send_stdin(&mut ws, "x\n").await;
    read_until(&mut ws, &mut seen, |s| !s.errors.is_empty()).await;
    assert_eq!(seen.errors[0]["code"], "STDIN_CLOSED", "{seen:?}");
    // No terminal: resize is not supported; unknown frame types are errors too.
    send_json(&mut ws, json!({"type": "resize", "cols": 100, "rows": 40})).await;
    send_json(&mut ws, json!({"type": "bogus"})).await;
    read_until(&mut ws, &mut seen, |s| s.errors.len() >= 3).await;
    assert_eq!(seen.errors[1]["code"], "NOT_SUPPORTED", "{seen:?}");
    assert_eq!(seen.errors[2]["code"], "INVALID_REQUEST_BODY", "{seen:?}");
    send_json(&mut ws, json!({"type": "ping"})).await;
    match next(&mut ws).await {
        Frame::Text(v) => assert_eq!(v["type"], "pong", "{v}"),
        other => panic!("expected pong, got {other:?}"),
    }
    send_json(&mut ws, json!({"type": "signal", "signal": "KILL"})).await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
    let st = status(&s, &id).await;
    assert_eq!(st["running"], false, "{st}");
}

#[tokio::test]
async fn x15_a_command_that_cannot_start_gets_init_and_exit() {
    let s = TestServer::start();
    let (mut ws, _id) = exec(&s, json!({"argv": ["no-such-executable-x15"]})).await;
    let exit = read_to_exit(&mut ws, &mut Seen::default()).await;
    assert_eq!(exit["exit_code"], 255, "{exit}");
    assert!(exit["error"].as_str().unwrap_or("").contains("executable file not found"), "{exit}");
    assert!(exit["exit_reason"].is_string(), "{exit}");
}

// ---- Under a PTY (`"tty":true`) ----

/// A terminal's output: what the command wrote and the terminal's echo of the input, with `\r\n`
/// line ends (ONLCR); this maps them back to `\n`.
fn screen(seen: &Seen) -> String {
    seen.stdout.replace("\r\n", "\n")
}

#[tokio::test]
async fn x15_tty_is_a_terminal_of_the_asked_size_and_resizes() {
    let s = TestServer::start();
    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    if caps["features"]["command_ws"]["tty"] != true {
        return common::prerequisite_missing("a pseudo-terminal (/dev/ptmx)");
    }
    let script = "test -t 0 && test -t 1 && test -t 2 && echo is-a-tty; stty size; \
                  while read -r line; do echo \"got $line\"; stty size; done";
    let (mut ws, id) = exec(&s, json!({"command": script, "tty": true, "cols": 100, "rows": 30})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| screen(s).contains("is-a-tty\n30 100\n")).await;
    // The resize is applied before the next input frame is written: the answer shows it.
    send_json(&mut ws, json!({"type": "resize", "cols": 132, "rows": 43})).await;
    send_stdin(&mut ws, "one\n").await;
    read_until(&mut ws, &mut seen, |s| screen(s).contains("got one\n43 132\n")).await;
    // Bad sizes are error frames; the command runs on with its size unchanged.
    for bad in [
        json!({"type": "resize", "cols": 0, "rows": 10}),
        json!({"type": "resize", "cols": 10, "rows": 70000}),
        json!({"type": "resize", "cols": "wide", "rows": 10}),
        json!({"type": "resize", "cols": 10}),
        json!({"type": "resize", "cols": 1e12, "rows": 10}),
    ] {
        send_json(&mut ws, bad).await;
    }
    read_until(&mut ws, &mut seen, |s| s.errors.len() >= 5).await;
    assert!(seen.errors.iter().all(|e| e["code"] == "INVALID_REQUEST_BODY"), "{seen:?}");
    send_stdin(&mut ws, "two\n").await;
    read_until(&mut ws, &mut seen, |s| screen(s).contains("got two\n43 132\n")).await;
    // Input is journalled as stdin; the terminal's echo is part of the output.
    send_json(&mut ws, json!({"type": "eof"})).await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert_eq!(exit["exit_reason"], "exited", "{exit}");
    let st = status(&s, &id).await;
    assert_eq!((st["running"].clone(), st["exit_code"].clone()), (json!(false), json!(0)), "{st}");
    let logs = s.client().get(s.url(&format!("/command/{id}/logs"))).send().await.unwrap().text().await.unwrap();
    assert!(logs.replace("\r\n", "\n").contains("one\ngot one\n43 132\n"), "{logs:?}");
    // A finished terminal cannot be resized.
    let mut b = connect(&s, &format!("/command/{id}/ws?since=0")).await;
    assert!(matches!(next(&mut b).await, Frame::Text(v) if v["type"] == "init"));
    read_to_exit(&mut b, &mut Seen::default()).await;
}

#[tokio::test]
async fn x15_tty_python_repl_driven_turn_by_turn() {
    let s = TestServer::start();
    let first = json!({
        "command": "python3 -q -i",
        "tty": true,
        "envs": {"TERM": "dumb", "PYTHON_BASIC_REPL": "1"},
        "awaiting_input_ms": 100,
    });
    let (mut ws, _id) = exec(&s, first).await;
    let mut seen = Seen::default();
    // X13 under a PTY: the REPL at its prompt (readline waits in select) is announced.
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 1).await;
    assert!(seen.awaiting_after[0].0.ends_with(">>> "), "{seen:?}");
    send_stdin(&mut ws, "1 + 1\n").await;
    read_until(&mut ws, &mut seen, |s| screen(s).contains("1 + 1\n2\n>>> ")).await;
    send_stdin(&mut ws, "import os, sys; print(os.isatty(0), sys.stdout.isatty())\n").await;
    read_until(&mut ws, &mut seen, |s| screen(s).contains("True True\n>>> ")).await;
    send_stdin(&mut ws, "x = 40\n").await;
    send_stdin(&mut ws, "print(x + 2)\n").await;
    read_until(&mut ws, &mut seen, |s| screen(s).contains("\n42\n>>> ")).await;
    // Waits are announced again after new input and output.
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 2).await;
    send_stdin(&mut ws, "exit(3)\n").await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 3, "{exit}");
    assert!(seen.errors.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn x15_tty_eof_ends_cat() {
    let s = TestServer::start();
    let (mut ws, id) = exec(&s, json!({"command": "cat", "tty": true})).await;
    let mut seen = Seen::default();
    send_stdin(&mut ws, "hello\n").await;
    // The terminal echoes the line, then cat writes it back.
    read_until(&mut ws, &mut seen, |s| screen(s) == "hello\nhello\n").await;
    send_json(&mut ws, json!({"type": "eof"})).await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 0, "{exit}");
    // The EOF character is part of the typed input in the journal.
    let events = s.client().get(s.url(&format!("/command/{id}/events"))).send().await.unwrap().text().await.unwrap();
    let stdin: String = events
        .split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|e| e["type"] == "stdin")
        .map(|e| e["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(stdin, "hello\n\u{4}", "{events}");
}

#[tokio::test]
async fn x15_tty_sigint_interrupts_sleep() {
    let s = TestServer::start();
    let (mut ws, _id) = exec(&s, json!({"command": "sleep 30", "tty": true})).await;
    let started = std::time::Instant::now();
    send_json(&mut ws, json!({"type": "signal", "signal": "SIGINT"})).await;
    let exit = read_to_exit(&mut ws, &mut Seen::default()).await;
    assert!(started.elapsed() < Duration::from_secs(15), "SIGINT did not end sleep");
    assert_eq!(exit["exit_reason"], "signaled", "{exit}");
    assert_eq!(exit["signal"], "SIGINT", "{exit}");
    assert_eq!(exit["exit_code"], -1, "{exit}");
}

#[tokio::test]
async fn x15_tty_attach_since_zero_sees_the_transcript() {
    let s = TestServer::start();
    let (mut a, id) = exec(&s, json!({"command": "cat", "tty": true})).await;
    let mut sa = Seen::default();
    send_stdin(&mut a, "one\n").await;
    read_until(&mut a, &mut sa, |s| screen(s) == "one\none\n").await;
    let mut b = connect(&s, &format!("/command/{id}/ws?since=0")).await;
    assert!(matches!(next(&mut b).await, Frame::Text(v) if v["type"] == "init"));
    let mut sb = Seen::default();
    read_until(&mut b, &mut sb, |s| replayed(s, 1).replace("\r\n", "\n") == "one\none\n").await;
    assert_eq!(sb.replay[0], (0, 0, "one\n".to_string()), "the input comes first: {sb:?}");
    // B types; A sees the output, B its echo of the input too.
    send_stdin(&mut b, "two\n").await;
    read_until(&mut a, &mut sa, |s| screen(s) == "one\none\ntwo\ntwo\n").await;
    read_until(&mut b, &mut sb, |s| s.stdin == "two\n" && screen(s) == "two\ntwo\n").await;
    send_json(&mut b, json!({"type": "eof"})).await;
    let exit_a = read_to_exit(&mut a, &mut sa).await;
    let exit_b = read_to_exit(&mut b, &mut sb).await;
    assert_eq!(exit_a, exit_b);
    assert_eq!(exit_a["exit_code"], 0, "{exit_a}");
}

#[tokio::test]
async fn x13_tty_awaiting_input_fires_for_read_not_for_sleep() {
    let s = TestServer::start();
    // The first second is a sleep: no event then, only once `read` waits on the terminal.
    let script = "sleep 1; echo slept; read -r -p 'name? ' n; echo \"hi $n\"; read -r m";
    let first = json!({"command": script, "tty": true, "awaiting_input_ms": 100});
    let (mut ws, _id) = exec(&s, first).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 1).await;
    assert_eq!(screen(&Seen { stdout: seen.awaiting_after[0].0.clone(), ..Seen::default() }), "slept\nname? ");
    send_stdin(&mut ws, "bob\n").await;
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 2).await;
    assert!(screen(&seen).ends_with("bob\nhi bob\n"), "{seen:?}");
    assert_eq!(seen.awaiting, 2, "once per wait: {seen:?}");
    send_json(&mut ws, json!({"type": "eof"})).await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 1, "read at EOF fails: {exit}");
}

/// Kill guarantees hold for a terminal's command: a job that job control moved to another process
/// group of the command's session goes with the command (its cgroup leaf, or else its session).
#[tokio::test]
async fn x15_tty_interrupt_kills_jobs_in_other_process_groups() {
    // With cgroup leaves where the machine has them, and without (the session is the unit then).
    for s in [TestServer::start(), TestServer::options().arg("--cgroup-root").arg("none").start()] {
        tty_interrupt_kills_jobs(&s).await;
    }
}

async fn tty_interrupt_kills_jobs(s: &TestServer) {
    let script = "set -m; sleep 300 & echo \"job=$! pgid=$(ps -o pgid= $!)\"; read -r x";
    let (mut ws, id) = exec(s, json!({"command": script, "tty": true})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| s.stdout.contains("pgid=")).await;
    let out = screen(&seen);
    let job: i32 = out.split("job=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    let pgid: i32 = out.split("pgid=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    assert_eq!(job, pgid, "the job leads a group of its own: {out:?}");
    assert!(common::pid_alive(job));
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_reason"], "interrupted", "{exit}");
    assert!(common::wait_until(TIMEOUT, || !common::pid_alive(job)), "the job {job} survived its command");
}

/// X13 for event loops: a process waiting in `poll` or `epoll_wait` with its stdin among the
/// descriptors is announced; one polling only another descriptor is not.
#[tokio::test]
async fn x13_awaiting_input_fires_in_poll_and_epoll_waits() {
    let s = TestServer::start();
    let waits = [
        "p = select.poll(); p.register(0, select.POLLIN); p.poll()",
        "e = select.epoll(); e.register(0, select.EPOLLIN); e.poll()",
        "select.select([0], [], [])",
    ];
    for wait in waits {
        let script = format!(
            "import select, sys\nprint('ready', flush=True)\n{wait}\nprint('got', sys.stdin.readline(), end='')"
        );
        let first = json!({"argv": ["python3", "-c", script], "awaiting_input_ms": 100});
        let (mut ws, _id) = exec(&s, first).await;
        let mut seen = Seen::default();
        read_until(&mut ws, &mut seen, |s| s.awaiting >= 1).await;
        assert_eq!(seen.awaiting_after[0].0, "ready\n", "{wait}: {seen:?}");
        send_stdin(&mut ws, "line\n").await;
        let exit = read_to_exit(&mut ws, &mut seen).await;
        assert_eq!((exit["exit_code"].clone(), seen.stdout.as_str()), (json!(0), "ready\ngot line\n"), "{wait}");
    }
    // Waiting on a pipe of its own (not stdin) for a second: no event before it is done.
    let script = "import os, select\nr, w = os.pipe()\np = select.poll(); p.register(r, select.POLLIN)\n\
                  print('polling', flush=True)\np.poll(1000)\nprint('done', flush=True)\ninput()";
    let (mut ws, _id) = exec(&s, json!({"argv": ["python3", "-c", script], "awaiting_input_ms": 100})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 1).await;
    assert_eq!(seen.awaiting_after[0].0, "polling\ndone\n", "{seen:?}");
    send_json(&mut ws, json!({"type": "eof"})).await;
    read_to_exit(&mut ws, &mut seen).await;
}

/// An interactive shell on the terminal (readline waits in `pselect6`) is announced at each
/// prompt; what a command writes just before it exits is never lost (the master is drained after
/// the leader's exit).
#[tokio::test]
async fn x13_tty_interactive_bash_prompt_and_last_words() {
    let s = TestServer::start();
    let first = json!({
        "argv": ["bash", "--norc", "--noprofile", "-i"],
        "tty": true,
        "envs": {"PS1": "$ ", "TERM": "dumb"},
        "awaiting_input_ms": 100,
    });
    let (mut ws, _id) = exec(&s, first).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 1).await;
    assert!(seen.awaiting_after[0].0.ends_with("$ "), "{seen:?}");
    send_stdin(&mut ws, "echo hi-$((1+1))\n").await;
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 2).await;
    assert!(screen(&seen).contains("\nhi-2\n$ "), "{seen:?}");
    send_stdin(&mut ws, "exit 4\n").await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 4, "{exit}");
    for round in 0..10 {
        let script = format!("printf 'last words %s' {round}");
        let (mut ws, _id) = exec(&s, json!({"command": script, "tty": true})).await;
        let mut seen = Seen::default();
        let exit = read_to_exit(&mut ws, &mut seen).await;
        assert_eq!(exit["exit_code"], 0, "{exit}");
        assert_eq!(seen.stdout, format!("last words {round}"), "round {round}");
    }
}

/// The journal is the buffer under a PTY too: 64 MiB of output to a client that reads nothing
/// does not hold the command up or grow execd's memory, and all of it is in the record.
#[tokio::test]
async fn x15_tty_output_flood_to_a_client_that_does_not_read_is_bounded() {
    const TOTAL: u64 = 64 << 20;
    let s = TestServer::start();
    let before = common::hwm_kib(s.pid());
    let script = format!("head -c {TOTAL} /dev/zero | tr '\\0' x; echo; echo end");
    let (ws, id) = exec(&s, json!({"command": script, "tty": true})).await;
    // The socket is never read; the command finishes anyway.
    let st = common::wait_finished(&s, &id).await;
    assert_eq!(st["exit_code"], 0, "{st}");
    let url = s.url(&format!("/command/{id}/output?head=4&tail=8"));
    let view: Value = s.client().get(url).send().await.unwrap().json().await.unwrap();
    // `\n` became `\r\n` on the terminal (ONLCR).
    assert_eq!(view["total_bytes"], TOTAL + 7, "{view}");
    assert_eq!((view["head"].as_str(), view["tail"].as_str()), (Some("xxxx"), Some("x\r\nend\r\n")), "{view}");
    let grown = common::hwm_kib(s.pid()).saturating_sub(before);
    assert!(grown < 32 * 1024, "execd's peak RSS grew by {grown} KiB for 64 MiB of terminal output");
    drop(ws);
}

/// A terminal for a command run as another uid: it becomes the controlling terminal before the
/// credentials switch, and the command can use it.
#[tokio::test]
async fn x15_tty_command_as_another_uid() {
    if !common::is_root() {
        return common::prerequisite_missing("root (to run a command as another uid)");
    }
    let s = TestServer::start();
    let script = "id -u; test -t 0 && stty size; read -r x; echo \"read $x\"";
    let (mut ws, _id) = exec(&s, json!({"command": script, "tty": true, "uid": 65534, "cols": 90})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| screen(s).contains("65534\n24 90\n")).await;
    send_stdin(&mut ws, "ok\n").await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert!(screen(&seen).ends_with("ok\nread ok\n"), "{seen:?}");
}

/// X13 for readers of `/dev/tty` (`getpass`, `sudo`, installers): the command's terminal reached
/// through the controlling-terminal device is recognised too.
#[tokio::test]
async fn x13_tty_awaiting_input_fires_for_dev_tty_readers() {
    let s = TestServer::start();
    let script = "python3 -c \"import getpass; print('len', len(getpass.getpass('pw: ')))\"; \
                  read -r x < /dev/tty; echo \"x=$x\"";
    let (mut ws, id) = exec(&s, json!({"command": script, "tty": true, "awaiting_input_ms": 100})).await;
    let mut seen = Seen::default();
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 1).await;
    assert!(seen.awaiting_after[0].0.ends_with("pw: "), "{seen:?}");
    send_stdin(&mut ws, "secret\n").await;
    read_until(&mut ws, &mut seen, |s| s.awaiting >= 2).await;
    // getpass turned the echo off: the password is in the input record, not on the screen.
    assert!(screen(&seen).ends_with("pw: \nlen 6\n"), "{seen:?}");
    send_stdin(&mut ws, "y\n").await;
    let exit = read_to_exit(&mut ws, &mut seen).await;
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert!(screen(&seen).ends_with("y\nx=y\n"), "{seen:?}");
    assert_eq!(seen.awaiting, 2, "{seen:?}");
    assert_eq!(status(&s, &id).await["exit_code"], 0);
}
