//! Minimal axum SSE server: the "plain axum" reference for execd's foreground `/command` stream.
//!
//! `POST /command {"command": CMD}` runs `bash -c CMD` with stdout piped and answers a chunked
//! `text/event-stream` of bare events (`{json}\n\n`): `init`, one `stdout` event per `\n`-ended
//! line (lines longer than 1 MiB cut into 1 MiB pieces, as execd's D10), a trailing partial line,
//! then `execution_complete`. The events come from the child's pipe (not from memory), each read
//! of up to 64 KiB is turned into one HTTP chunk of events, each event serialised by serde_json.
//! No journal, no stderr, no pings, no `\r` rules, no UTF-8 repair beyond `from_utf8_lossy`:
//! only what any axum SSE endpoint streaming a pipe has to do.
//!
//! usage: commands-sse-floor PORT

use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

const MAX_LINE: usize = 1 << 20;

#[derive(Deserialize)]
struct Req {
    command: String,
}

#[derive(Serialize)]
struct Ev<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    text: &'a str,
    timestamp: i64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn push(out: &mut Vec<u8>, kind: &str, text: &[u8], ts: i64) {
    let text = String::from_utf8_lossy(text);
    serde_json::to_writer(&mut *out, &Ev { kind, text: &text, timestamp: ts }).unwrap();
    out.extend_from_slice(b"\n\n");
}

async fn run(Json(req): Json<Req>) -> axum::response::Response {
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&req.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = std::time::Instant::now();
    struct St {
        child: tokio::process::Child,
        pipe: tokio::process::ChildStdout,
        held: Vec<u8>,
        buf: Vec<u8>,
        state: u8, // 0 init, 1 streaming, 2 done
        started: std::time::Instant,
    }
    let st = St { child, pipe: stdout, held: Vec::new(), buf: vec![0; 64 * 1024], state: 0, started };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        let mut out = Vec::new();
        match st.state {
            0 => {
                push(&mut out, "init", b"floor", now_ms());
                st.state = 1;
            }
            1 => loop {
                let n = st.pipe.read(&mut st.buf).await.unwrap_or(0);
                let ts = now_ms();
                if n == 0 {
                    if !st.held.is_empty() {
                        push(&mut out, "stdout", &st.held, ts);
                    }
                    let _ = st.child.wait().await;
                    let ms = st.started.elapsed().as_millis();
                    out.extend_from_slice(
                        format!("{{\"type\":\"execution_complete\",\"execution_time\":{ms},\"timestamp\":{ts}}}\n\n")
                            .as_bytes(),
                    );
                    st.state = 2;
                    break;
                }
                let mut rest = &st.buf[..n];
                while let Some(i) = memchr::memchr(b'\n', rest) {
                    if st.held.is_empty() {
                        push(&mut out, "stdout", if i == 0 { b"\n" } else { &rest[..i] }, ts);
                    } else {
                        st.held.extend_from_slice(&rest[..i]);
                        push(&mut out, "stdout", &st.held, ts);
                        st.held.clear();
                    }
                    rest = &rest[i + 1..];
                }
                st.held.extend_from_slice(rest);
                while st.held.len() >= MAX_LINE {
                    let tail = st.held.split_off(MAX_LINE);
                    push(&mut out, "stdout", &st.held, ts);
                    st.held = tail;
                }
                if !out.is_empty() {
                    break;
                }
            },
            _ => return None,
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), st))
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap().tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/command", post(run));
    axum::serve(listener, app.into_make_service()).await.unwrap();
}
