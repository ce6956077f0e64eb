//! `/pty` routes (reference §11): REST (`POST /pty`, `GET`/`DELETE /pty/{id}`) and the WebSocket
//! `GET /pty/{id}/ws?pty=0&since=N&takeover=1` with its binary and JSON frames.
//!
//! Per connection, two halves: this task reads client frames (stdin, signal, resize, ping) with a
//! 60 s read deadline; a writer task owns the socket's sink and sends output, replies, pings every
//! 30 s, the exit frame, and the close frames (1000 on exit, 4001 `TAKEN_OVER` on takeover). Every
//! write has a 10 s deadline. The session's shell outlives the connection.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::{empty_ok, json_response, ApiError};
use super::extract::{AppPath, OptionalJson, QueryPairs};
use crate::pty::{parse_signal, Attachment, Mode, Output, PtyError, PtyHandle, PtyManager};
use crate::state::AppState;

/// A client that sends nothing (not even a pong) for this long is dropped.
const READ_DEADLINE: Duration = Duration::from_secs(60);
/// Every write to the socket must finish within this.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// WebSocket ping interval.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Best-effort budget for the 4001 close frame to an evicted client.
const EVICT_CLOSE_BUDGET: Duration = Duration::from_millis(200);
/// How long a takeover retries before giving up.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(5);
const TAKEOVER_RETRY: Duration = Duration::from_millis(10);
/// WebSocket close code for "taken over by another client".
const CLOSE_TAKEN_OVER: u16 = 4001;
/// gorilla/websocket's answer to a plain GET on a free session.
const NOT_WEBSOCKET: &str =
    "websocket: the client is not using the websocket protocol: 'upgrade' token not found in 'Connection' header";

/// The `/pty` routes.
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/pty", post(create)).route("/pty/{id}", get(status).delete(delete)).route("/pty/{id}/ws", get(websocket))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreatePty {
    cwd: String,
    command: String,
}

/// `POST /pty` → 201 `{"session_id"}`.
async fn create(
    State(state): State<AppState>,
    OptionalJson(req): OptionalJson<CreatePty>,
) -> Result<Response, ApiError> {
    let id = state.pty.create(&req.cwd, &req.command)?;
    Ok(json_response(StatusCode::CREATED, &json!({ "session_id": id })))
}

/// `GET /pty/{id}` → `{"session_id","running","output_offset"}`.
async fn status(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &state.pty.status(&id)?))
}

/// `DELETE /pty/{id}` → 200, empty.
async fn delete(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    state.pty.delete(&id)?;
    Ok(empty_ok())
}

/// `since` as Go's `%d` reads it: an optional sign and leading digits; anything else is 0.
/// Negative values clamp to 0 (the oldest retained byte).
pub fn parse_since(raw: Option<&str>) -> u64 {
    let s = raw.unwrap_or("").trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    match digits[..end].parse::<u64>() {
        Ok(n) if !neg => n,
        _ => 0,
    }
}

/// `GET /pty/{id}/ws`: 404 / 409 before the upgrade, then [`serve_socket`].
async fn websocket(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    query: QueryPairs,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let takeover = query.get("takeover") == Some("1");
    // A plain GET with takeover=1 never evicts: only a real upgrade may take over.
    if let Err(e) = state.pty.check_attachable(&id, takeover && upgrade.is_ok()) {
        return ApiError::from(e).into_response();
    }
    let Ok(upgrade) = upgrade else {
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], NOT_WEBSOCKET)
            .into_response();
    };
    let mode = if query.get("pty") == Some("0") { Mode::Pipe } else { Mode::Pty };
    let since = parse_since(query.get("since"));
    let pty = state.pty.clone();
    // Any Origin is accepted (upstream); no subprotocol.
    upgrade.on_upgrade(move |socket| serve_socket(pty, id, mode, since, takeover, socket))
}

fn error_frame(code: &str, error: &str) -> Message {
    Message::Text(json!({ "type": "error", "error": error, "code": code }).to_string().into())
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Binary frame: one type byte, then `payload`.
fn binary(kind: u8, payload: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(1 + payload.len());
    b.put_u8(kind);
    b.put_slice(payload);
    Message::Binary(b.freeze())
}

/// Sends with the write deadline; false when the connection is unusable.
async fn send(sink: &mut SplitSink<WebSocket, Message>, msg: Message) -> bool {
    matches!(tokio::time::timeout(WRITE_DEADLINE, sink.send(msg)).await, Ok(Ok(())))
}

/// Attaches, retrying while a takeover evicts the holder (every 10 ms, up to 5 s).
async fn attach(pty: &PtyManager, id: &str, mode: Mode, since: u64, takeover: bool) -> Result<Attachment, Message> {
    let deadline = Instant::now() + TAKEOVER_DEADLINE;
    loop {
        match pty.attach(id, mode, since) {
            Ok(a) => return Ok(a),
            Err(PtyError::AlreadyConnected(_)) if takeover && Instant::now() < deadline => {
                pty.evict(id);
                tokio::time::sleep(TAKEOVER_RETRY).await;
            }
            Err(e @ PtyError::AlreadyConnected(_)) => {
                let msg = if takeover { format!("takeover timed out: {e}") } else { e.to_string() };
                return Err(error_frame("ALREADY_CONNECTED", &msg));
            }
            Err(e @ PtyError::Start(_)) => return Err(error_frame("START_FAILED", &e.to_string())),
            Err(e) => return Err(error_frame("SESSION_GONE", &e.to_string())),
        }
    }
}

/// One WebSocket connection to a session, from attach to detach.
async fn serve_socket(pty: PtyManager, id: String, mode: Mode, since: u64, takeover: bool, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    let att = match attach(&pty, &id, mode, since, takeover).await {
        Ok(a) => a,
        Err(frame) => {
            let _ = send(&mut sink, frame).await;
            let _ = send(&mut sink, close(1000, "")).await;
            return;
        }
    };
    let Attachment { handle, mode, replay, output, evicted } = att;
    if let Some((offset, bytes)) = replay {
        let mut b = BytesMut::with_capacity(9 + bytes.len());
        b.put_u8(0x03);
        b.put_u64(offset);
        b.put_slice(&bytes);
        if !send(&mut sink, Message::Binary(b.freeze())).await {
            return;
        }
    }
    let connected = json!({ "type": "connected", "session_id": id, "mode": mode.as_str() });
    if !send(&mut sink, text(connected)).await {
        return;
    }
    let done = CancellationToken::new();
    let (ctrl_tx, ctrl_rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(write_loop(sink, output, ctrl_rx, evicted, done.clone()));
    read_loop(stream, &handle, &ctrl_tx, &done, &pty.closing()).await;
    done.cancel();
    // The writer ends promptly once `done` is cancelled (each write is bounded too).
    let ended = writer.await;
    // Detach only now, so a takeover attaches after this connection is gone, and before the exit
    // frame goes out, so a client that reconnects as soon as it sees the shell exit is never
    // refused as "already connected".
    drop(handle);
    if let Ok((mut sink, Some(code))) = ended {
        if send(&mut sink, text(json!({ "type": "exit", "exit_code": code }))).await {
            let _ = send(&mut sink, close(1000, "process exited")).await;
        }
    }
}

/// Sends output, control replies and pings until exit, eviction, or the end of the connection.
/// Returns the sink and, when the shell exited, its exit code: the caller detaches and then sends
/// the exit frame and the close.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut output: mpsc::Receiver<Output>,
    mut ctrl: mpsc::Receiver<Message>,
    evicted: CancellationToken,
    done: CancellationToken,
) -> (SplitSink<WebSocket, Message>, Option<i32>) {
    let mut exited = None;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        // biased: eviction and teardown first, then replies, then output.
        tokio::select! {
            biased;
            _ = evicted.cancelled() => {
                let _ = tokio::time::timeout(EVICT_CLOSE_BUDGET, sink.send(close(CLOSE_TAKEN_OVER, "TAKEN_OVER"))).await;
                break;
            }
            _ = done.cancelled() => break,
            msg = ctrl.recv() => {
                let Some(msg) = msg else { break };
                let is_close = matches!(msg, Message::Close(_));
                if !send(&mut sink, msg).await || is_close {
                    break;
                }
            }
            item = output.recv() => {
                let ok = match item {
                    Some(Output::Stdout(b)) => send(&mut sink, binary(0x01, &b)).await,
                    Some(Output::Stderr(b)) => send(&mut sink, binary(0x02, &b)).await,
                    Some(Output::Exit(code)) => {
                        exited = Some(code);
                        false
                    }
                    // The session was deleted.
                    None => {
                        let _ = send(&mut sink, close(1000, "session closed")).await;
                        false
                    }
                };
                if !ok {
                    break;
                }
            }
            _ = ping.tick() => {
                if !send(&mut sink, Message::Ping(Bytes::new())).await {
                    break;
                }
            }
        }
    }
    done.cancel();
    (sink, exited)
}

/// Reads client frames until the connection ends, the writer stops, or shutdown.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    handle: &PtyHandle,
    ctrl: &mpsc::Sender<Message>,
    done: &CancellationToken,
    shutdown: &CancellationToken,
) {
    loop {
        // Any message (pongs included) restarts the read deadline.
        let msg = tokio::select! {
            _ = done.cancelled() => return,
            _ = shutdown.cancelled() => return,
            m = tokio::time::timeout(READ_DEADLINE, stream.next()) => m,
        };
        // Deadline passed, connection closed or broken: done.
        let Ok(Some(Ok(msg))) = msg else { return };
        let stdin: Option<Bytes> = match msg {
            Message::Binary(b) if b.len() > 1 && b[0] == 0x00 => Some(b.slice(1..)),
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => return,
            Message::Text(t) => match handle_text(t.as_str(), handle, ctrl).await {
                TextAction::Stdin(data) => Some(data),
                TextAction::None => None,
            },
        };
        if let Some(data) = stdin {
            // A teardown must not wait for a full terminal.
            let res = tokio::select! {
                r = handle.write_stdin(&data) => r,
                _ = done.cancelled() => return,
            };
            if let Err(e) = res {
                let _ = ctrl.send(error_frame("STDIN_WRITE_FAILED", &e.to_string())).await;
                let _ = ctrl.send(close(1011, "stdin write failed")).await;
                return;
            }
        }
    }
}

enum TextAction {
    None,
    Stdin(Bytes),
}

/// A JSON text frame from the client. Text that is not JSON is ignored.
async fn handle_text(raw: &str, handle: &PtyHandle, ctrl: &mpsc::Sender<Message>) -> TextAction {
    let Ok(v) = serde_json::from_str::<Value>(raw) else { return TextAction::None };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "stdin" => {
            let data = v.get("data").and_then(Value::as_str).unwrap_or("");
            if !data.is_empty() {
                return TextAction::Stdin(Bytes::copy_from_slice(data.as_bytes()));
            }
        }
        "signal" => {
            let name = v.get("signal").and_then(Value::as_str).unwrap_or("");
            match parse_signal(name) {
                Some(sig) => handle.signal(sig),
                None => tracing::info!(signal = %name, "pty: signal not accepted, ignored"),
            }
        }
        "resize" => {
            let dim = |k: &str| v.get(k).and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()).unwrap_or(0);
            if let Err(e) = handle.resize(dim("cols"), dim("rows")) {
                let _ = ctrl.send(error_frame("RUNTIME_ERROR", &format!("resize failed: {e}"))).await;
            }
        }
        "ping" => {
            let _ = ctrl.send(text(json!({ "type": "pong" }))).await;
        }
        other => {
            let msg = format!("unknown frame type {other:?}");
            let _ = ctrl.send(error_frame("INVALID_FRAME", &msg)).await;
        }
    }
    TextAction::None
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_parses_like_go_percent_d() {
        assert_eq!(parse_since(None), 0);
        assert_eq!(parse_since(Some("")), 0);
        assert_eq!(parse_since(Some("42")), 42);
        assert_eq!(parse_since(Some("42abc")), 42);
        assert_eq!(parse_since(Some("abc")), 0);
        assert_eq!(parse_since(Some("-5")), 0);
        assert_eq!(parse_since(Some("+7")), 7);
    }
}
