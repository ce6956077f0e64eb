//! PTY sessions against the real binary: the reference's checklist C150–C161 (§11), plus DECISIONS
//! D51 (TERM default, `access_token` query parameter, idle collection), delete leaving no process
//! behind, and a disconnect keeping the shell running with its output in the replay ring.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestServer, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `POST /pty` with `body`; asserts 201 and returns the session id.
async fn create(server: &TestServer, body: Value) -> String {
    let resp = server.client().post(server.url("/pty")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    v["session_id"].as_str().expect("session_id").to_string()
}

async fn status(server: &TestServer, id: &str) -> (u16, Value) {
    let resp = server.client().get(server.url(&format!("/pty/{id}"))).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

fn ws_url(server: &TestServer, id: &str, query: &str) -> String {
    format!("ws://127.0.0.1:{}/pty/{id}/ws{query}", server.port)
}

/// A WebSocket client that sorts what it receives.
struct Client {
    ws: Ws,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    replay: Option<(u64, Vec<u8>)>,
    texts: Vec<Value>,
    close: Option<Option<CloseFrame>>,
}

impl Client {
    async fn connect(server: &TestServer, id: &str, query: &str) -> Client {
        let (ws, resp) = connect_async(ws_url(server, id, query)).await.expect("websocket connect");
        assert_eq!(resp.status(), 101);
        Client { ws, stdout: Vec::new(), stderr: Vec::new(), replay: None, texts: Vec::new(), close: None }
    }

    /// Connects and reads up to the `connected` frame.
    async fn attach(server: &TestServer, id: &str, query: &str) -> Client {
        let mut c = Client::connect(server, id, query).await;
        assert!(c.until(|c| c.has_text("connected")).await, "no connected frame: {:?}", c.texts);
        c
    }

    fn has_text(&self, kind: &str) -> bool {
        self.texts.iter().any(|t| t["type"] == kind)
    }

    fn text_of(&self, kind: &str) -> Option<&Value> {
        self.texts.iter().find(|t| t["type"] == kind)
    }

    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Reads frames until `done` holds, the connection closes, or [`TIMEOUT`] passes.
    async fn until(&mut self, done: impl Fn(&Client) -> bool) -> bool {
        self.until_within(TIMEOUT, done).await
    }

    async fn until_within(&mut self, limit: Duration, done: impl Fn(&Client) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.close.is_some() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.close.get_or_insert(None);
                    continue;
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Binary(b) => match b.first() {
                    Some(0x01) => self.stdout.extend_from_slice(&b[1..]),
                    Some(0x02) => self.stderr.extend_from_slice(&b[1..]),
                    Some(0x03) => {
                        assert!(b.len() >= 9, "short replay frame");
                        let off = u64::from_be_bytes(b[1..9].try_into().unwrap());
                        assert!(self.replay.is_none(), "two replay frames");
                        assert!(self.texts.is_empty(), "replay must come before connected");
                        self.replay = Some((off, b[9..].to_vec()));
                    }
                    other => panic!("unexpected binary frame type {other:?}"),
                },
                Message::Text(t) => self.texts.push(serde_json::from_str(&t).expect("text frame is JSON")),
                Message::Close(f) => self.close = Some(f),
                _ => {}
            }
        }
    }

    async fn stdin(&mut self, s: &str) {
        let mut b = vec![0x00];
        b.extend_from_slice(s.as_bytes());
        self.ws.send(Message::Binary(b.into())).await.unwrap();
    }

    async fn json(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    async fn disconnect(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close arrives (bounded).
        let _ = tokio::time::timeout(TIMEOUT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// Waits until the session is free again (the server detached the previous client).
async fn wait_free(server: &TestServer, id: &str) {
    let url = server.url(&format!("/pty/{id}/ws"));
    let client = server.client();
    let ok = common::wait_until_async(TIMEOUT, || {
        let req = client.get(&url);
        async move { req.send().await.map(|r| r.status() == 400).unwrap_or(false) }
    })
    .await;
    assert!(ok, "session still held");
}

/// Every descendant of `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for (c, _) in common::children(p) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// Pids of execd's children whose command line contains `needle`, and all their descendants.
fn procs_matching(server_pid: u32, needle: &str) -> Vec<u32> {
    descendants(server_pid)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn c150_create_gives_201_and_status_before_first_connect() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    assert!(uuid_like(&id), "{id}");
    let (code, v) = status(&server, &id).await;
    assert_eq!(code, 200);
    assert_eq!(v, json!({ "session_id": id, "running": false, "output_offset": 0 }));
    // An empty body is fine too; invalid JSON is 400.
    let resp = server.client().post(server.url("/pty")).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let resp = server.client().post(server.url("/pty")).body("{nope").send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|&c| c == '-').count() == 4
}

#[tokio::test]
async fn c151_connected_frame_names_session_and_mode() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let c = Client::attach(&server, &id, "").await;
    assert_eq!(c.text_of("connected").unwrap(), &json!({ "type": "connected", "session_id": id, "mode": "pty" }));
    let (_, v) = status(&server, &id).await;
    assert_eq!(v["running"], true);

    let id2 = create(&server, json!({})).await;
    let c2 = Client::attach(&server, &id2, "?pty=0").await;
    assert_eq!(c2.text_of("connected").unwrap(), &json!({ "type": "connected", "session_id": id2, "mode": "pipe" }));
}

#[tokio::test]
async fn c152_stdin_frame_leads_to_stdout_frames() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "").await;
    c.stdin("echo hello_$((40+2))_ws\n").await;
    assert!(c.until(|c| c.out().contains("hello_42_ws")).await, "output: {:?}", c.out());
    // The JSON stdin fallback works too.
    c.json(json!({ "type": "stdin", "data": "echo via_$((1+1))_json\n" })).await;
    assert!(c.until(|c| c.out().contains("via_2_json")).await, "output: {:?}", c.out());
}

#[tokio::test]
async fn c153_ping_is_answered_with_pong() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    c.json(json!({ "type": "ping" })).await;
    assert!(c.until(|c| c.has_text("pong")).await, "{:?}", c.texts);
    assert_eq!(c.text_of("pong").unwrap(), &json!({ "type": "pong" }));
}

#[tokio::test]
async fn c154_exit_sends_exit_frame_then_close_1000() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "").await;
    c.stdin("echo bye_$((1+1)); exit 0\n").await;
    assert!(c.until(|c| c.close.is_some()).await, "no close; texts {:?}", c.texts);
    // All output arrives before the exit frame.
    assert!(c.out().contains("bye_2"), "{:?}", c.out());
    assert_eq!(c.text_of("exit").unwrap(), &json!({ "type": "exit", "exit_code": 0 }));
    let frame = c.close.unwrap().expect("close frame");
    assert_eq!(frame.code, CloseCode::Normal);
    let (_, v) = status(&server, &id).await;
    assert_eq!(v["running"], false);
    // A reconnect starts a fresh shell; the offsets carry on.
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    c.stdin("echo again_$((3*3))\n").await;
    assert!(c.until(|c| c.out().contains("again_9")).await, "output: {:?}", c.out());
}

#[tokio::test]
async fn c155_reconnect_with_since_0_replays_old_output() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    c.stdin("echo first_$((5+5))\n").await;
    assert!(c.until(|c| c.out().contains("first_10")).await);
    c.disconnect().await;
    wait_free(&server, &id).await;
    let (_, v) = status(&server, &id).await;
    let offset = v["output_offset"].as_u64().unwrap();
    assert!(offset > 0, "{v}");
    assert_eq!(v["running"], true, "the shell outlives the connection");

    let c = Client::attach(&server, &id, "?pty=0&since=0").await;
    let (off, bytes) = c.replay.clone().expect("replay frame");
    assert_eq!(off, 0);
    assert!(String::from_utf8_lossy(&bytes).contains("first_10"));
    assert_eq!(bytes.len() as u64, offset);
    c.disconnect().await;
    wait_free(&server, &id).await;

    // since=<output_offset> gives no replay; since in the middle gives the tail from there.
    let c = Client::attach(&server, &id, &format!("?pty=0&since={offset}")).await;
    assert!(c.replay.is_none());
    c.disconnect().await;
    wait_free(&server, &id).await;
    let c = Client::attach(&server, &id, "?pty=0&since=3").await;
    let (off, bytes) = c.replay.clone().expect("replay frame");
    assert_eq!(off, 3);
    assert_eq!(bytes.len() as u64, offset - 3);
}

#[tokio::test]
async fn c156_second_client_gets_409_and_plain_takeover_get_does_not_evict() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    match connect_async(ws_url(&server, &id, "?pty=0")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 409);
            let v: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).unwrap();
            assert_eq!(v["code"], "ALREADY_CONNECTED");
            assert_eq!(v["message"], format!("another client is already connected to pty session {id}"));
        }
        other => panic!("expected 409, got {:?}", other.map(|r| r.1.status())),
    }
    let resp = server.client().get(server.url(&format!("/pty/{id}/ws?takeover=1"))).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "ALREADY_CONNECTED");
    // The holder is still attached and served.
    c.stdin("echo still_$((2+2))_here\n").await;
    assert!(c.until(|c| c.out().contains("still_4_here")).await);
    assert!(c.close.is_none());
}

#[tokio::test]
async fn c157_takeover_closes_old_with_4001_and_keeps_the_shell() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut old = Client::attach(&server, &id, "?pty=0").await;
    old.stdin("echo $$ > /dev/null; echo before_$((7*6))\n").await;
    assert!(old.until(|c| c.out().contains("before_42")).await);
    let (_, v) = status(&server, &id).await;
    let offset = v["output_offset"].as_u64().unwrap();

    let mut new = Client::attach(&server, &id, "?pty=0&takeover=1").await;
    assert!(old.until(|c| c.close.is_some()).await, "old client not closed");
    let frame = old.close.clone().unwrap().expect("close frame");
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason.as_str(), "TAKEN_OVER");
    // Same shell: the replay holds the earlier output, and the shell keeps its state.
    let (off, bytes) = new.replay.clone().expect("replay");
    assert_eq!(off, 0);
    assert_eq!(bytes.len() as u64, offset);
    assert!(String::from_utf8_lossy(&bytes).contains("before_42"));
    new.stdin("echo after_$((1+2))\n").await;
    assert!(new.until(|c| c.out().contains("after_3")).await);

    // takeover=1 on a free session simply connects.
    let id2 = create(&server, json!({})).await;
    Client::attach(&server, &id2, "?takeover=1").await;
}

#[tokio::test]
async fn c158_unknown_session_is_404_before_upgrade_and_delete_twice_404() {
    let server = TestServer::start();
    match connect_async(ws_url(&server, "nope", "")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404);
            let v: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).unwrap();
            assert_eq!(v["code"], "CONTEXT_NOT_FOUND");
        }
        other => panic!("expected 404, got {:?}", other.map(|r| r.1.status())),
    }
    let (code, v) = status(&server, "nope").await;
    assert_eq!(code, 404);
    assert_eq!(v, json!({ "code": "CONTEXT_NOT_FOUND", "message": "pty session nope not found" }));

    let id = create(&server, json!({})).await;
    // A plain GET on a free session is not a WebSocket: gorilla's 400 text.
    let resp = server.client().get(server.url(&format!("/pty/{id}/ws"))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().starts_with("websocket: the client is not using the websocket protocol"));
    let url = server.url(&format!("/pty/{id}"));
    let resp = server.client().delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 0);
    let resp = server.client().delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "CONTEXT_NOT_FOUND");
}

#[tokio::test]
async fn c159_pipe_mode_sends_stderr_in_0x02_frames() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    c.stdin("echo err_$((4+4)) 1>&2; echo out_$((4+5))\n").await;
    assert!(c.until(|c| String::from_utf8_lossy(&c.stderr).contains("err_8") && c.out().contains("out_9")).await);
    assert!(!c.out().contains("err_8"), "stderr leaked into stdout");
}

#[tokio::test]
async fn c159_resize_changes_stty_size() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "").await;
    c.stdin("stty size\n").await;
    assert!(c.until(|c| c.out().contains("24 80")).await, "default size: {:?}", c.out());
    c.json(json!({ "type": "resize", "cols": 100, "rows": 40 })).await;
    c.stdin("stty size\n").await;
    assert!(c.until(|c| c.out().contains("40 100")).await, "output: {:?}", c.out());
    // In pipe mode resize is a no-op (no error frame).
    let id2 = create(&server, json!({})).await;
    let mut p = Client::attach(&server, &id2, "?pty=0").await;
    p.json(json!({ "type": "resize", "cols": 100, "rows": 40 })).await;
    p.json(json!({ "type": "ping" })).await;
    assert!(p.until(|c| c.has_text("pong")).await);
    assert!(!p.has_text("error"), "{:?}", p.texts);
}

/// SIGINT interrupts a running `sleep` in both modes (PTY: the terminal's foreground job too).
#[tokio::test]
async fn c159_sigint_interrupts_running_sleep() {
    let server = TestServer::start();
    for (query, marker) in [("", "31"), ("?pty=0", "32")] {
        let id = create(&server, json!({})).await;
        let mut c = Client::attach(&server, &id, query).await;
        let needle = format!("sleep 3{marker}");
        c.stdin(&format!("{needle}; echo not_interrupted\n")).await;
        let found = common::wait_until(TIMEOUT, || !procs_matching(server.pid(), &needle).is_empty());
        assert!(found, "sleep did not start");
        c.json(json!({ "type": "signal", "signal": "SIGINT" })).await;
        assert!(
            common::wait_until(TIMEOUT, || procs_matching(server.pid(), &needle).is_empty()),
            "sleep survived SIGINT"
        );
        if query.is_empty() {
            // The interactive shell survives and still answers.
            c.stdin("echo alive_$((2+3))\n").await;
            assert!(c.until(|c| c.out().contains("alive_5")).await, "output: {:?}", c.out());
            // (The terminal echoes the typed line; the command's own output would start a line.)
            assert!(!c.out().contains("\nnot_interrupted"), "output: {:?}", c.out());
        } else {
            // A non-interactive shell dies with its job: exit frame with -1 (killed by a signal).
            assert!(c.until(|c| c.has_text("exit")).await, "{:?}", c.texts);
            assert_eq!(c.text_of("exit").unwrap()["exit_code"], -1);
            assert!(!c.out().contains("not_interrupted"));
        }
    }
}

#[tokio::test]
async fn c160_unknown_frame_type_gets_invalid_frame_and_connection_stays_open() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    c.json(json!({ "type": "bogus" })).await;
    assert!(c.until(|c| c.has_text("error")).await);
    let e = c.text_of("error").unwrap();
    assert_eq!(e["code"], "INVALID_FRAME");
    assert!(e["error"].as_str().unwrap().contains("bogus"), "{e}");
    // Not JSON, an unknown signal, odd binary frames: ignored.
    c.ws.send(Message::Text("not json".into())).await.unwrap();
    c.json(json!({ "type": "signal", "signal": "SIGUSR1" })).await;
    c.ws.send(Message::Binary(vec![0x07, 1, 2].into())).await.unwrap();
    c.ws.send(Message::Binary(Vec::new().into())).await.unwrap();
    c.stdin("echo open_$((6+1))\n").await;
    assert!(c.until(|c| c.out().contains("open_7")).await);
    assert_eq!(c.texts.iter().filter(|t| t["type"] == "error").count(), 1);
}

#[tokio::test]
async fn c161_command_runs_instead_of_shell_and_exits_0() {
    let server = TestServer::start();
    let id = create(&server, json!({ "command": "echo hello_command" })).await;
    let mut c = Client::connect(&server, &id, "?pty=0").await;
    assert!(c.until(|c| c.has_text("exit")).await, "{:?}", c.texts);
    let replayed = c.replay.as_ref().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    // The output may be cut anywhere between the replay and the live frames: look at both, joined.
    assert!(format!("{replayed}{}", c.out()).contains("hello_command"), "{:?} / {replayed:?}", c.out());
    assert_eq!(c.text_of("exit").unwrap(), &json!({ "type": "exit", "exit_code": 0 }));
    assert!(c.until(|c| c.close.is_some()).await);
}

#[tokio::test]
async fn pty_delete_leaves_no_process_of_the_session_alive() {
    let server = TestServer::start();
    for query in ["", "?pty=0"] {
        let id = create(&server, json!({})).await;
        let mut c = Client::attach(&server, &id, query).await;
        // A background job (its own process group under interactive bash) and a foreground one.
        c.stdin("sleep 341 & sleep 342\n").await;
        assert!(common::wait_until(TIMEOUT, || procs_matching(server.pid(), "sleep 34").len() >= 2));
        let before = descendants(server.pid());
        assert!(before.len() >= 3, "shell and two sleeps: {before:?}");
        let resp = server.client().delete(server.url(&format!("/pty/{id}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            common::wait_until(TIMEOUT, || before.iter().all(|&p| !common::pid_alive(p as i32))),
            "still alive: {:?}",
            before.iter().filter(|&&p| common::pid_alive(p as i32)).collect::<Vec<_>>()
        );
        // The connection is told the session is gone.
        assert!(c.until(|c| c.close.is_some()).await);
    }
    assert!(common::wait_until(TIMEOUT, || common::children(server.pid()).is_empty()), "unreaped children");
}

#[tokio::test]
async fn pty_disconnect_keeps_shell_running_and_output_goes_to_replay() {
    let server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "").await;
    // Output that appears only after the client is gone: the shell waits for a flag file that
    // the test creates after the disconnect.
    let flag = server.dir.path().join("flag");
    c.stdin(&format!("while [ ! -e {} ]; do sleep 0.05; done; echo late_$((6*7))\n", flag.display())).await;
    // The terminal's echo of the typed line is all the output before the flag exists.
    assert!(c.until(|c| c.out().contains("late_$((6*7))\r\n")).await, "{:?}", c.out());
    c.disconnect().await;
    wait_free(&server, &id).await;
    let (_, before) = status(&server, &id).await;
    let since = before["output_offset"].as_u64().unwrap();
    std::fs::write(&flag, b"").unwrap();
    // The shell keeps running and its output lands in the ring (output_offset grows).
    let deadline = Instant::now() + TIMEOUT;
    let mut last;
    loop {
        last = status(&server, &id).await.1;
        if last["output_offset"].as_u64().unwrap_or(0) > since || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last["output_offset"].as_u64().unwrap_or(0) > since, "{last}");
    assert_eq!(last["running"], true);
    // The first bytes after `since` may be bash's own terminal bookkeeping (bracketed-paste off)
    // rather than the command's output: re-attach until the replay holds the late line.
    let deadline = Instant::now() + TIMEOUT;
    let text = loop {
        let c = Client::attach(&server, &id, &format!("?since={since}")).await;
        let (off, bytes) = c.replay.clone().expect("replay");
        assert_eq!(off, since);
        let text = String::from_utf8_lossy(&bytes).to_string();
        if text.contains("late_42") || Instant::now() > deadline {
            break text;
        }
        c.disconnect().await;
        wait_free(&server, &id).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(text.contains("late_42"), "{text:?}");
    let (_, v) = status(&server, &id).await;
    assert_eq!(v["running"], true);
}

#[tokio::test]
async fn d51_term_default_token_query_and_no_token_in_env() {
    let server = TestServer::options().token("s3cret").env("TERM", "").start();
    let resp =
        server.client().post(server.url("/pty")).header("X-EXECD-ACCESS-TOKEN", "s3cret").json(&json!({})).send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_string();
    // Without the token the upgrade is refused; with ?access_token= it is accepted.
    match connect_async(ws_url(&server, &id, "?pty=0")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|r| r.1.status())),
    }
    let mut c = Client::attach(&server, &id, "?pty=0&access_token=s3cret").await;
    c.stdin("echo term=$TERM tok=${EXECD_ACCESS_TOKEN:-none}\n").await;
    // Wait for the whole line: the shell's output may arrive in several frames, cut anywhere.
    let line_done = |c: &Client| c.out().split_once("tok=").is_some_and(|(_, rest)| rest.contains('\n'));
    assert!(c.until(line_done).await, "{:?}", c.out());
    assert!(c.out().contains("term=xterm-256color tok=none"), "{:?}", c.out());
}

#[tokio::test]
async fn d51_idle_session_without_client_is_collected() {
    let server = TestServer::options().arg("--session-idle-ttl=1s").start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "").await;
    c.stdin("echo idle_$((1+1))\n").await;
    assert!(c.until(|c| c.out().contains("idle_2")).await);
    let shells = descendants(server.pid());
    assert!(!shells.is_empty());
    // Attached sessions are not collected, however long.
    assert!(!c.until_within(Duration::from_millis(1500), |c| c.close.is_some()).await);
    assert_eq!(status(&server, &id).await.0, 200);
    c.disconnect().await;
    let client = server.client();
    let url = server.url(&format!("/pty/{id}"));
    let gone = common::wait_until_async(TIMEOUT, || {
        let req = client.get(&url);
        async move { req.send().await.unwrap().status() == 404 }
    })
    .await;
    assert!(gone, "idle session not collected");
    assert!(common::wait_until(TIMEOUT, || shells.iter().all(|&p| !common::pid_alive(p as i32))));
}

#[tokio::test]
async fn pty_shutdown_kills_shells_and_closes_connections() {
    let mut server = TestServer::start();
    let id = create(&server, json!({})).await;
    let mut c = Client::attach(&server, &id, "").await;
    c.stdin("sleep 351 & sleep 352\n").await;
    assert!(common::wait_until(TIMEOUT, || procs_matching(server.pid(), "sleep 35").len() >= 2));
    let procs = descendants(server.pid());
    // Blocking is fine here: nothing else on this runtime needs to run meanwhile.
    let status = server.terminate().expect("execd did not exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(common::wait_until(TIMEOUT, || procs.iter().all(|&p| !common::pid_alive(p as i32))));
    assert!(c.until(|c| c.close.is_some()).await, "connection not closed");
}

#[tokio::test]
async fn pty_create_attach_delete_cycles_leak_no_fds() {
    let server = TestServer::start();
    let cycle = |query: &'static str| {
        let server = &server;
        async move {
            let id = create(server, json!({})).await;
            let mut c = Client::attach(server, &id, query).await;
            c.stdin("echo cyc_$((1+2))\n").await;
            assert!(c.until(|c| c.out().contains("cyc_3")).await);
            let resp = server.client().delete(server.url(&format!("/pty/{id}"))).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert!(c.until(|c| c.close.is_some()).await);
        }
    };
    cycle("").await;
    cycle("?pty=0").await;
    assert!(common::wait_until(TIMEOUT, || common::children(server.pid()).is_empty()));
    let base = common::fd_count(server.pid());
    for i in 0..10 {
        cycle(if i % 2 == 0 { "" } else { "?pty=0" }).await;
    }
    assert!(common::wait_until(TIMEOUT, || common::children(server.pid()).is_empty()), "unreaped shells");
    let ok = common::wait_until(TIMEOUT, || common::fd_count(server.pid()) <= base + 2);
    assert!(ok, "fds grew from {base} to {}", common::fd_count(server.pid()));
}

#[tokio::test]
async fn pty_cwd_is_created_and_used_and_start_failure_is_reported() {
    let server = TestServer::start();
    let dir = server.dir.path().join("work/a b/c");
    let id = create(&server, json!({ "cwd": dir.to_str().unwrap() })).await;
    assert!(dir.is_dir(), "cwd not created");
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    c.stdin("pwd\n").await;
    assert!(c.until(|c| c.out().contains(&format!("{}\n", dir.display()))).await, "{:?}", c.out());
    c.stdin("exit 3\n").await;
    assert!(c.until(|c| c.close.is_some()).await);
    assert_eq!(c.text_of("exit").unwrap()["exit_code"], 3);
    // The cwd vanished: starting a new shell fails with START_FAILED, then the connection closes.
    std::fs::remove_dir(&dir).unwrap();
    let mut c = Client::connect(&server, &id, "?pty=0").await;
    assert!(c.until(|c| c.close.is_some()).await, "{:?}", c.texts);
    let e = c.text_of("error").expect("error frame");
    assert_eq!(e["code"], "START_FAILED");
    assert!(!c.has_text("connected"));
    // The session is still usable once the directory is back.
    std::fs::create_dir(&dir).unwrap();
    let mut c = Client::attach(&server, &id, "?pty=0").await;
    c.stdin("echo back_$((2*4))\n").await;
    assert!(c.until(|c| c.out().contains("back_8")).await);
}
