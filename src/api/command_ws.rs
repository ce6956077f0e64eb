//! Full-duplex exec over a WebSocket (EXTENSIONS X15): `GET /command/ws` starts a command from
//! its first frame, `GET /command/{id}/ws?since=` attaches to any command. Both follow the
//! command's journal (D11), so what a socket shows is what `/events` shows, in the same order.
//!
//! # Frames
//! Server → client, binary: one type byte, then the payload:
//! - `0x00` + bytes: input written to the command's stdin (by any client; only with `echo`);
//! - `0x01` + bytes: stdout; `0x02` + bytes: stderr;
//! - `0x03` + stream byte (`0x00` stdin, `0x01` stdout, `0x02` stderr) + the journal offset of the
//!   first byte (u64 big-endian) + bytes: replay of what the journal held when the socket attached
//!   (attach route only).
//!
//! Server → client, text: `{"type":"init","id","offset"}` (`offset`: where live frames start),
//! `{"type":"awaiting_input","timestamp"}` (X13), `{"type":"error","code","message"}`,
//! `{"type":"pong"}`, and last `{"type":"exit","exit_code",…X22 fields,"offset"}` then close 1000.
//!
//! Client → server: binary `0x00` + bytes (stdin), text `{"type":"stdin","data":"…"}`,
//! `{"type":"eof"}`, `{"type":"signal","signal":"SIGINT"|"INT"|2}`, `{"type":"ping"}`,
//! `{"type":"resize","cols":C,"rows":R}` (a command with a terminal only; else a `NOT_SUPPORTED`
//! error frame; bad sizes an `INVALID_REQUEST_BODY` one).
//!
//! # Terminal
//! `"tty":true` in the first frame (optional `"cols"`, `"rows"`: 1 to
//! [`crate::process::tty::MAX_DIM`], default 80×24) runs the command on a new PTY: stdin, stdout
//! and stderr, the controlling terminal of a new session. What the terminal shows (the command's
//! output and the terminal's echo of the input, merged) is journalled and sent as stdout; input
//! goes to the terminal and is journalled as stdin; `eof` types the terminal's `VEOF` character
//! (`^D`) and input stays open; `resize` sets the window size (`SIGWINCH`). Everything else
//! (status, `/logs`, `/events`, attach with `since`, signals, kill guarantees) is as for any
//! command.
//!
//! # Bounds
//! The first frame must come within [`FIRST_FRAME_DEADLINE`]; afterwards a client that sends
//! nothing (pongs included) for [`READ_DEADLINE`] is dropped; every write has [`WRITE_DEADLINE`];
//! messages are capped at [`MAX_MESSAGE`]. Stdin frames go to the socket's stdin writer through a
//! small bounded queue (memory per socket ≤ queue × message cap), so a command that does not read
//! slows the client down (TCP backpressure) but never blocks its `signal` or `eof` frames beyond
//! that queue. A disconnect never ends the command (D13); its stdin stays open for the next client.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::RunCommandBody;
use super::error::{ApiError, ErrorCode};
use super::extract::{AppPath, QueryPairs};
use crate::command::{CommandError, CommandManager, CommandRequest, StdinRequest};
use crate::event::{EventKind, ExecEvent};
use crate::process::{Journal, StreamKind};
use crate::state::AppState;

/// The first client frame (the `POST /command` body) must arrive within this.
const FIRST_FRAME_DEADLINE: Duration = Duration::from_secs(10);
/// A client that sends nothing (not even a pong) for this long is dropped.
const READ_DEADLINE: Duration = Duration::from_secs(60);
/// Every write to the socket must finish within this.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// WebSocket ping interval (keeps [`READ_DEADLINE`] from firing on a quiet, healthy client).
const PING_EVERY: Duration = Duration::from_secs(30);
/// Largest client message (and frame).
pub const MAX_MESSAGE: usize = 1 << 20;
/// How long one stdin frame may wait for the command to read it (as `POST /command/{id}/stdin`).
const STDIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Stdin frames queued per socket while the command is not reading.
const STDIN_QUEUE: usize = 4;
/// After the exit frame and close: how long to wait for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// WebSocket close code for a policy violation (bad first frame).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for a server-side failure.
const CLOSE_INTERNAL: u16 = 1011;

/// The WebSocket exec routes (X15).
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/command/ws", get(exec_ws)).route("/command/{id}/ws", get(attach_ws))
}

type Upgrade = Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

fn not_websocket(path: &str) -> Response {
    ApiError::bad_request(format!("{path} requires a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)"))
        .into_response()
}

/// `GET /command/ws`: upgrade, then [`serve_exec`].
async fn exec_ws(State(state): State<AppState>, q: QueryPairs, upgrade: Upgrade) -> Response {
    let echo = match q.flag("echo", false) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let Ok(upgrade) = upgrade else { return not_websocket("GET /command/ws") };
    upgrade_to(upgrade, state.commands.clone(), Target::Exec { echo })
}

/// What an upgraded socket serves.
enum Target {
    Exec { echo: bool },
    Attach { id: String, journal: Journal, since: u64, echo: bool },
}

/// One upgrade path for both routes (one instantiation of the upgrade machinery: binary size).
fn upgrade_to(upgrade: WebSocketUpgrade, commands: CommandManager, target: Target) -> Response {
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(commands, target, socket))
}

async fn serve(commands: CommandManager, target: Target, socket: WebSocket) {
    let (id, journal, since, echo) = match target {
        Target::Exec { echo } => return serve_exec(commands, echo, socket).await,
        Target::Attach { id, journal, since, echo } => (id, journal, since, echo),
    };
    let (mut sink, stream) = socket.split();
    let live_from = journal.len();
    let since = since.min(live_from);
    let init = json!({ "type": "init", "id": id, "offset": live_from });
    if !send(&mut sink, text(init)).await {
        return;
    }
    follow(commands, Conn { id, journal, since, live_from, echo }, sink, stream, None).await;
}

/// `GET /command/{id}/ws?since=N&echo=`: 404 (unknown id) or 400 before the upgrade, then
/// [`follow`] from `since`. Live input is echoed by default here (an observer wants the
/// transcript); `echo=0` turns it off.
async fn attach_ws(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    q: QueryPairs,
    upgrade: Upgrade,
) -> Response {
    let since = match q.uint("since") {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return e.into_response(),
    };
    let echo = match q.flag("echo", true) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let journal = match state.commands.journal(&id) {
        Ok(j) => j,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Ok(upgrade) = upgrade else { return not_websocket("GET /command/{id}/ws") };
    upgrade_to(upgrade, state.commands.clone(), Target::Attach { id, journal, since, echo })
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

fn error_frame(code: &str, message: &str) -> Message {
    text(json!({ "type": "error", "code": code, "message": message }))
}

fn api_error_frame(e: &ApiError) -> Message {
    error_frame(e.code.as_str(), &e.message)
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// Sends with the write deadline; false when the connection is unusable.
async fn send(sink: &mut SplitSink<WebSocket, Message>, msg: Message) -> bool {
    matches!(tokio::time::timeout(WRITE_DEADLINE, sink.send(msg)).await, Ok(Ok(())))
}

/// Sends an error frame and a close, then lets the socket go.
async fn refuse(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    err: &ApiError,
    code: u16,
) {
    if send(&mut sink, api_error_frame(err)).await {
        let _ = send(&mut sink, close(code, "")).await;
        linger(&mut stream).await;
    }
}

/// Reads until the client's close reply (bounded), so our close frame is not lost to a reset.
async fn linger(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The first frame: a `POST /command` body plus `tty` (with `cols`, `rows`) and `echo`.
struct FirstFrame {
    req: CommandRequest,
    /// A `stdin` string: written first, then the pipe stays open.
    initial: Option<String>,
    echo: Option<bool>,
}

fn invalid_body(m: impl Into<String>) -> ApiError {
    ApiError::new(axum::http::StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody, m)
}

/// A window size from a frame: `cols` and `rows`, each absent (`default`) or an integer in range.
fn frame_size(obj: &serde_json::Map<String, Value>, default: Option<(u16, u16)>) -> Result<(u16, u16), String> {
    let dim = |k: &str, d: Option<u16>| match (obj.get(k), d) {
        (None, Some(d)) => Ok(u64::from(d)),
        (Some(v), _) => v.as_u64().ok_or_else(|| format!("{k}: expected a positive integer, got {v}")),
        (None, None) => Err(format!("{k}: required")),
    };
    let cols = dim("cols", default.map(|d| d.0))?;
    let rows = dim("rows", default.map(|d| d.1))?;
    crate::process::tty::check_size(cols, rows)
}

fn parse_first_frame(raw: &str) -> Result<FirstFrame, ApiError> {
    let mut value = super::extract::first_json_value(raw.as_bytes())?;
    super::extract::fold_keys(&mut value, super::extract::KeyFold::Struct);
    let Value::Object(obj) = &mut value else {
        return Err(invalid_body("first frame: expected a JSON object (a POST /command body)"));
    };
    let flag = |obj: &mut serde_json::Map<String, Value>, k: &str| match obj.remove(k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(v) => Err(invalid_body(format!("{k}: expected true or false, got {v}"))),
    };
    let tty = flag(obj, "tty")?.unwrap_or(false);
    let echo = flag(obj, "echo")?;
    let size = if tty {
        let default = (crate::process::tty::DEFAULT_COLS, crate::process::tty::DEFAULT_ROWS);
        Some(frame_size(obj, Some(default)).map_err(invalid_body)?)
    } else if obj.contains_key("cols") || obj.contains_key("rows") {
        return Err(invalid_body("cols, rows: only with \"tty\":true"));
    } else {
        None
    };
    obj.remove("cols");
    obj.remove("rows");
    let body: RunCommandBody = serde_json::from_value(value).map_err(ApiError::invalid_body)?;
    let mut req = CommandRequest::try_from(body)?;
    req.tty = size;
    // The socket is the foreground; a disconnect never kills the command anyway (D13).
    req.background = false;
    let initial = match std::mem::replace(&mut req.stdin, StdinRequest::Open) {
        StdinRequest::Text(t) if !t.is_empty() => Some(t),
        _ => None,
    };
    Ok(FirstFrame { req, initial, echo })
}

/// Waits (bounded) for the first data frame; pings and pongs are skipped.
async fn first_frame(stream: &mut SplitStream<WebSocket>) -> Result<String, ApiError> {
    let invalid = |m: &str| ApiError::new(axum::http::StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody, m);
    let wait = async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err(invalid("first frame: expected a text frame holding a POST /command body"))
                }
                Some(Err(e)) => {
                    return Err(invalid(&format!("first frame: {e} (largest message: {MAX_MESSAGE} bytes)")))
                }
                Some(Ok(Message::Close(_))) | None => return Err(invalid("connection closed before the first frame")),
            }
        }
    };
    match tokio::time::timeout(FIRST_FRAME_DEADLINE, wait).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            format!("first frame: none within {} s", FIRST_FRAME_DEADLINE.as_secs()),
        )),
    }
}

/// One `GET /command/ws` connection: first frame, start, then [`follow`] from offset 0.
async fn serve_exec(commands: CommandManager, echo: bool, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let first = match first_frame(&mut stream).await.and_then(|raw| parse_first_frame(&raw)) {
        Ok(f) => f,
        Err(e) => return refuse(sink, stream, &e, CLOSE_POLICY).await,
    };
    let echo = first.echo.unwrap_or(echo);
    let started = match commands.start(first.req) {
        Ok(s) => s,
        Err(e) => {
            let code = if matches!(e, CommandError::Invalid(_)) { CLOSE_POLICY } else { CLOSE_INTERNAL };
            return refuse(sink, stream, &ApiError::from(e), code).await;
        }
    };
    let id = started.id.clone();
    // Not registered: it failed to start; its events are `init` and the terminal event.
    let Ok(journal) = commands.journal(&id) else {
        return report_start_failure(sink, stream, started.events).await;
    };
    if !send(&mut sink, text(json!({ "type": "init", "id": id, "offset": 0 }))).await {
        return;
    }
    follow(commands, Conn { id, journal, since: 0, live_from: 0, echo }, sink, stream, first.initial).await;
}

async fn report_start_failure(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    mut events: crate::command::CommandEvents,
) {
    while let Some(ev) = events.next().await {
        let frame = if ev.kind == EventKind::Init {
            text(json!({ "type": "init", "id": ev.text, "offset": 0 }))
        } else if ev.is_terminal() {
            exit_frame(Some(&ev), 0)
        } else {
            continue;
        };
        if !send(&mut sink, frame).await {
            return;
        }
    }
    if send(&mut sink, close(1000, "process exited")).await {
        linger(&mut stream).await;
    }
}

/// The `exit` frame from the journal's terminal event: `exit_code`, the X22 fields, `error` when
/// the command did not run, and `offset` (the journal's final length, for a later `since`).
fn exit_frame(terminal: Option<&ExecEvent>, offset: u64) -> Message {
    let mut v = json!({ "type": "exit", "offset": offset });
    let obj = v.as_object_mut().expect("object");
    match terminal {
        Some(t) if t.kind == EventKind::ExecutionComplete => {
            obj.insert("exit_code".into(), json!(0));
        }
        Some(t) => {
            let evalue = t.error.as_ref().map(|e| e.evalue.as_str()).unwrap_or(t.text.as_str());
            match evalue.parse::<i32>() {
                Ok(code) => {
                    obj.insert("exit_code".into(), json!(code));
                }
                Err(_) => {
                    // Never ran (spawn failure, lost): 255 as a failed background start.
                    obj.insert("exit_code".into(), json!(255));
                    obj.insert("error".into(), json!(evalue));
                }
            }
        }
        None => {
            obj.insert("exit_code".into(), json!(255));
            obj.insert("error".into(), json!("command ended without a result"));
        }
    }
    // The X22 keys as the event's own JSON has them (flattened), without the event's keys: no
    // second serializer for `ExitInfo` in the binary.
    if let Some(Ok(Value::Object(x))) =
        terminal.filter(|t| t.exit.is_some()).map(|t| serde_json::from_slice(&t.to_json()))
    {
        const EVENT_KEYS: [&str; 7] =
            ["type", "text", "execution_count", "execution_time", "timestamp", "results", "error"];
        obj.extend(x.into_iter().filter(|(k, _)| !EVENT_KEYS.contains(&k.as_str())));
    }
    text(v)
}

/// What a socket follows.
struct Conn {
    id: String,
    journal: Journal,
    /// First journal offset to send.
    since: u64,
    /// Journal length at attach: bytes before it are replay (`0x03`), after it live.
    live_from: u64,
    echo: bool,
}

/// A stdin job for the socket's writer task, in arrival order.
enum StdinJob {
    Data(Bytes),
    Eof,
}

/// Runs one connection: a writer task follows the journal into the socket, a stdin task feeds the
/// command in order, and this task reads client frames until the client goes, the deadline
/// passes, or the command's exit was sent.
async fn follow(
    commands: CommandManager,
    conn: Conn,
    sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    initial: Option<String>,
) {
    let done = CancellationToken::new();
    let (ctrl_tx, ctrl_rx) = mpsc::channel::<Message>(16);
    let (stdin_tx, stdin_rx) = mpsc::channel::<StdinJob>(STDIN_QUEUE);
    if let Some(t) = initial {
        let _ = stdin_tx.send(StdinJob::Data(Bytes::from(t))).await;
    }
    let id = conn.id.clone();
    // Three parts of one task (no extra spawned tasks: binary size, and nothing outlives the
    // connection but the queued stdin writes, each bounded by STDIN_TIMEOUT).
    let exited = CancellationToken::new();
    let reader = async {
        read_loop(&commands, &id, &mut stream, &stdin_tx, &ctrl_tx, &done).await;
        done.cancel();
        drop(stdin_tx);
        // After the exit frame and close: the client's close reply, so ours is not lost.
        if exited.is_cancelled() {
            linger(&mut stream).await;
        }
        drop(stream);
    };
    let writer = async {
        // The writer ends promptly once `done` is cancelled (each write is bounded too).
        if write_loop(conn, sink, ctrl_rx, done.clone()).await {
            exited.cancel();
        }
    };
    tokio::join!(reader, writer, stdin_loop(&commands, &id, stdin_rx, ctrl_tx.clone()));
}

/// Writes queued stdin frames in order; errors go back to the client as error frames.
async fn stdin_loop(
    commands: &CommandManager,
    id: &str,
    mut jobs: mpsc::Receiver<StdinJob>,
    ctrl: mpsc::Sender<Message>,
) {
    while let Some(job) = jobs.recv().await {
        // The same body stream type as `POST /command/{id}/stdin`: one instantiation of the writer.
        let (body, eof) = match job {
            StdinJob::Data(b) => (axum::body::Body::from(b), false),
            StdinJob::Eof => (axum::body::Body::empty(), true),
        };
        if let Err(e) = commands.write_stdin(id, body.into_data_stream(), eof, STDIN_TIMEOUT).await {
            // Waits for room (the socket writer drains it, and it is gone once the writer ends):
            // a failed write is never lost for a full control queue.
            let _ = ctrl.send(api_error_frame(&ApiError::from(e))).await;
        }
    }
}

/// Follows the journal into the socket until the command's end (then the exit frame and close:
/// returns true) or teardown (false).
async fn write_loop(
    conn: Conn,
    mut sink: SplitSink<WebSocket, Message>,
    mut ctrl: mpsc::Receiver<Message>,
    done: CancellationToken,
) -> bool {
    let mut reader = match conn.journal.chunks(conn.since) {
        Ok(r) => r,
        Err(e) => {
            let msg = CommandError::Read { id: conn.id.clone(), source: e }.to_string();
            if send(&mut sink, error_frame(ErrorCode::RuntimeError.as_str(), &msg)).await {
                let _ = send(&mut sink, close(CLOSE_INTERNAL, "")).await;
            }
            done.cancel();
            return true;
        }
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let finished = loop {
        // biased: teardown first, then replies, then output.
        tokio::select! {
            biased;
            _ = done.cancelled() => break false,
            msg = ctrl.recv() => {
                let Some(msg) = msg else { break false };
                if !send(&mut sink, msg).await {
                    break false;
                }
            }
            chunk = reader.next() => {
                let frame = match chunk {
                    Ok(Some(c)) => chunk_frame(&c, &conn),
                    Ok(None) => break true,
                    Err(e) => {
                        let msg = CommandError::Read { id: conn.id.clone(), source: e }.to_string();
                        let _ = send(&mut sink, error_frame(ErrorCode::RuntimeError.as_str(), &msg)).await;
                        let _ = send(&mut sink, close(CLOSE_INTERNAL, "")).await;
                        done.cancel();
                        return true;
                    }
                };
                if let Some(frame) = frame {
                    if !send(&mut sink, frame).await {
                        break false;
                    }
                }
            }
            _ = ping.tick() => {
                if !send(&mut sink, Message::Ping(Bytes::new())).await {
                    break false;
                }
            }
        }
    };
    if finished {
        // Error frames queued by the stdin task before the end still go out first.
        while let Ok(msg) = ctrl.try_recv() {
            if !send(&mut sink, msg).await {
                break;
            }
        }
        let frame = exit_frame(conn.journal.terminal().as_ref(), conn.journal.len());
        if send(&mut sink, frame).await {
            let _ = send(&mut sink, close(1000, "process exited")).await;
        }
    }
    done.cancel();
    finished
}

/// The frame for one journal chunk (`None`: not shown on this socket).
fn chunk_frame(c: &crate::process::Chunk, conn: &Conn) -> Option<Message> {
    let stream_byte = match c.kind {
        StreamKind::Stdin => 0x00,
        StreamKind::Stdout => 0x01,
        StreamKind::Stderr => 0x02,
        StreamKind::AwaitingInput => {
            // A stale marker from before the attach says nothing about now.
            return (c.start >= conn.live_from)
                .then(|| text(json!({ "type": "awaiting_input", "timestamp": c.timestamp })));
        }
    };
    if c.end() <= conn.live_from {
        let mut b = BytesMut::with_capacity(10 + c.data.len());
        b.put_u8(0x03);
        b.put_u8(stream_byte);
        b.put_u64(c.start);
        b.put_slice(&c.data);
        return Some(Message::Binary(b.freeze()));
    }
    if c.kind == StreamKind::Stdin && !conn.echo {
        return None;
    }
    let mut b = BytesMut::with_capacity(1 + c.data.len());
    b.put_u8(stream_byte);
    b.put_slice(&c.data);
    Some(Message::Binary(b.freeze()))
}

/// Reads client frames until the connection ends, the deadline passes, or the writer is done.
async fn read_loop(
    commands: &CommandManager,
    id: &str,
    stream: &mut SplitStream<WebSocket>,
    stdin: &mpsc::Sender<StdinJob>,
    ctrl: &mpsc::Sender<Message>,
    done: &CancellationToken,
) {
    loop {
        // Any message (pongs included) restarts the read deadline.
        let msg = tokio::select! {
            _ = done.cancelled() => return,
            m = tokio::time::timeout(READ_DEADLINE, stream.next()) => m,
        };
        let Ok(Some(Ok(msg))) = msg else { return };
        let job = match msg {
            Message::Binary(b) if b.first() == Some(&0x00) => Some(StdinJob::Data(b.slice(1..))),
            Message::Binary(_) => {
                let m = "binary frame: expected 0x00 followed by stdin bytes";
                let _ = ctrl.send(error_frame(ErrorCode::InvalidRequestBody.as_str(), m)).await;
                None
            }
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => return,
            Message::Text(t) => control(commands, id, t.as_str(), ctrl).await,
        };
        if let Some(job) = job {
            // Waits while the queue is full (the command is not reading): backpressure.
            let sent = tokio::select! {
                r = stdin.send(job) => r.is_ok(),
                _ = done.cancelled() => return,
            };
            if !sent {
                return;
            }
        }
    }
}

/// A JSON text frame from the client: a stdin/eof job, or handled here.
async fn control(commands: &CommandManager, id: &str, raw: &str, ctrl: &mpsc::Sender<Message>) -> Option<StdinJob> {
    let invalid = |m: String| error_frame(ErrorCode::InvalidRequestBody.as_str(), &m);
    let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(raw) else {
        let _ = ctrl.send(invalid("text frame: expected a JSON object with a \"type\"".into())).await;
        return None;
    };
    match v.get("type").and_then(Value::as_str).unwrap_or("") {
        "stdin" => match v.get("data").and_then(Value::as_str) {
            Some(d) => return Some(StdinJob::Data(Bytes::copy_from_slice(d.as_bytes()))),
            None => {
                let _ = ctrl.send(invalid("stdin: \"data\" must be a string".into())).await;
            }
        },
        "eof" => return Some(StdinJob::Eof),
        "signal" => {
            let given = v.get("signal").cloned().unwrap_or(Value::Null);
            let sig = match &given {
                Value::String(s) => crate::process::parse_signal(s),
                Value::Number(n) => n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .and_then(|n| nix::sys::signal::Signal::try_from(n).ok()),
                _ => None,
            };
            let res = match sig {
                Some(sig) => commands.signal(id, sig).map_err(ApiError::from),
                None => Err(ApiError::validation(format!("signal: unknown signal {given}"))),
            };
            if let Err(e) = res {
                let _ = ctrl.send(api_error_frame(&e)).await;
            }
        }
        "resize" => {
            let res = match v.as_object().map(|o| frame_size(o, None)) {
                Some(Ok((cols, rows))) => commands.resize(id, cols, rows).map_err(ApiError::from),
                Some(Err(m)) => Err(invalid_body(format!("resize: {m}"))),
                None => Err(invalid_body("resize: expected an object")),
            };
            if let Err(e) = res {
                let _ = ctrl.send(api_error_frame(&e)).await;
            }
        }
        "ping" => {
            let _ = ctrl.send(text(json!({ "type": "pong" }))).await;
        }
        other => {
            let _ = ctrl.send(invalid(format!("unknown frame type {other:?}"))).await;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x15_first_frame_parsing() {
        let f = parse_first_frame(r#"{"Command":"cat","stdin":"hi","echo":true,"background":true}"#).unwrap();
        assert_eq!(f.req.command, "cat");
        assert_eq!(f.req.stdin, StdinRequest::Open);
        assert!(!f.req.background);
        assert_eq!(f.initial.as_deref(), Some("hi"));
        assert_eq!(f.echo, Some(true));
        assert_eq!(f.req.tty, None);
        assert_eq!(parse_first_frame(r#"{"command":"x","tty":true}"#).unwrap().req.tty, Some((80, 24)));
        let sized = parse_first_frame(r#"{"command":"x","tty":true,"cols":120,"rows":40}"#).unwrap();
        assert_eq!(sized.req.tty, Some((120, 40)));
        for bad in [
            r#"{"command":"x","tty":true,"cols":0}"#,
            r#"{"command":"x","tty":true,"rows":100000}"#,
            r#"{"command":"x","tty":true,"cols":"80"}"#,
            r#"{"command":"x","tty":true,"cols":-1}"#,
            r#"{"command":"x","tty":true,"cols":1.5}"#,
            r#"{"command":"x","cols":80}"#,
        ] {
            assert!(parse_first_frame(bad).is_err(), "{bad}");
        }
        assert!(parse_first_frame("[1]").is_err());
        assert!(parse_first_frame("nope").is_err());
        assert!(parse_first_frame(r#"{"command":"x","tty":"yes"}"#).is_err());
        assert!(parse_first_frame(r#"{"command":"x","timeout":"soon"}"#).is_err());
    }
}
