//! `/command` routes (reference §4): run (streamed; shell `command` or native `argv`), status, logs,
//! resumable events, interrupt.
//! Handlers translate between the wire and [`CommandManager`]; they decide nothing.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::error::{empty_ok, json_response, ApiError};
use super::extract::{AppJson, AppPath, QueryPairs};
use super::sse;
use crate::command::{CommandEvents, CommandManager, CommandRequest, CommandStatus, ResumableEvents};
use crate::state::AppState;

/// Header carrying the next `/logs` cursor (Go spells it `Execd-Commands-Tail-Cursor`).
pub const TAIL_CURSOR: &str = "EXECD-COMMANDS-TAIL-CURSOR";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/command", post(run_command).delete(interrupt))
        .route("/command/status/{id}", get(status))
        .route("/command/{id}/logs", get(logs))
        .route("/command/{id}/events", get(events))
        .route("/command/{id}/stdin", post(write_stdin))
        .route("/command/{id}/signal", post(signal))
        .route("/command/{id}/output", get(output))
}

/// `stdin` of `POST /command` (X10): `false`/absent, a string, or `true`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StdinField {
    Flag(bool),
    Text(String),
}

impl From<Option<StdinField>> for crate::command::StdinRequest {
    fn from(f: Option<StdinField>) -> Self {
        use crate::command::StdinRequest;
        match f {
            None | Some(StdinField::Flag(false)) => StdinRequest::Null,
            Some(StdinField::Flag(true)) => StdinRequest::Open,
            Some(StdinField::Text(t)) => StdinRequest::Text(t),
        }
    }
}

/// `POST /command` body (keys case-insensitive, unknown keys ignored: `AppJson`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RunCommandBody {
    #[serde(deserialize_with = "de_command")]
    command: String,
    /// Native arguments instead of `command` (the newer upstream contract).
    #[serde(deserialize_with = "de_argv")]
    argv: Option<Vec<String>>,
    #[serde(deserialize_with = "de_cwd")]
    cwd: String,
    #[serde(deserialize_with = "de_background")]
    background: bool,
    #[serde(deserialize_with = "de_timeout")]
    timeout: i64,
    #[serde(deserialize_with = "de_uid")]
    uid: Option<u32>,
    #[serde(deserialize_with = "de_gid")]
    gid: Option<u32>,
    #[serde(deserialize_with = "de_envs")]
    envs: BTreeMap<String, String>,
    /// X23 resource limits.
    #[serde(deserialize_with = "de_limits")]
    limits: Option<LimitsBody>,
    /// X10. Never logged: it may hold a secret (a password typed at a prompt).
    #[serde(deserialize_with = "de_stdin")]
    stdin: Option<StdinField>,
    /// X13: quiet time before `awaiting_input` (ms).
    #[serde(deserialize_with = "de_awaiting")]
    awaiting_input_ms: Option<u64>,
}

/// `limits` of `POST /command` (X23): `{"memory":"512M"|bytes, "pids":N, "cpu":0.5}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsBody {
    memory: Option<MemorySize>,
    pids: Option<u64>,
    cpu: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MemorySize {
    Bytes(u64),
    Text(String),
}

impl LimitsBody {
    /// The domain limits; a bad memory size is a 400.
    pub fn into_limits(self) -> Result<crate::cgroup::Limits, ApiError> {
        let memory = match self.memory {
            None => None,
            Some(MemorySize::Bytes(b)) => Some(crate::cgroup::parse_memory(&b.to_string())),
            Some(MemorySize::Text(t)) => Some(crate::cgroup::parse_memory(&t)),
        }
        .transpose()
        .map_err(|e| ApiError::validation(e.to_string()))?;
        Ok(crate::cgroup::Limits { memory, pids: self.pids, cpu: self.cpu })
    }
}

/// `limits` (X23) of a command, a session or a session run, a type error naming the field.
pub(super) fn de_limits<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LimitsBody>, D::Error> {
    named("limits", d)
}

/// Decodes one field, prefixing a type error with the field's name (`uid: invalid value ...`).
fn named<'de, D: Deserializer<'de>, T: Deserialize<'de>>(name: &str, d: D) -> Result<T, D::Error> {
    T::deserialize(d).map_err(|e| serde::de::Error::custom(format!("{name}: {e}")))
}

/// One named decoder per field of `POST /command` (and `limits` of the session bodies). Not
/// `serde_path_to_error` around every body decode, which names the field for every route: tried
/// on 2026-12-04, it made the static binary 53 KB larger (a tracking deserializer per body
/// type), over the 8 MiB budget.
macro_rules! named_field {
    ($($f:ident: $t:ty = $name:literal),* $(,)?) => {
        $(fn $f<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> { named($name, d) })*
    };
}

named_field! {
    de_command: String = "command",
    de_argv: Option<Vec<String>> = "argv",
    de_cwd: String = "cwd",
    de_background: bool = "background",
    de_timeout: i64 = "timeout",
    de_uid: Option<u32> = "uid",
    de_gid: Option<u32> = "gid",
    de_envs: BTreeMap<String, String> = "envs",
    de_stdin: Option<StdinField> = "stdin",
    de_awaiting: Option<u64> = "awaiting_input_ms",
}

impl TryFrom<RunCommandBody> for CommandRequest {
    type Error = ApiError;
    fn try_from(b: RunCommandBody) -> Result<Self, ApiError> {
        let limits = b.limits.map(LimitsBody::into_limits).transpose()?.unwrap_or_default();
        Ok(CommandRequest {
            command: b.command,
            argv: b.argv,
            cwd: b.cwd,
            background: b.background,
            timeout_ms: b.timeout,
            uid: b.uid,
            gid: b.gid,
            envs: b.envs,
            limits,
            stdin: b.stdin.into(),
            awaiting_input_ms: b.awaiting_input_ms,
            // Only `GET /command/ws` gives a terminal (its first frame's `tty`).
            tty: None,
        })
    }
}

async fn run_command(
    State(state): State<AppState>,
    AppJson(body): AppJson<RunCommandBody>,
) -> Result<Response, ApiError> {
    start_stream(&state.commands, body.try_into()?)
}

/// Starts `req` and answers with its event stream (or a JSON error before any event).
pub fn start_stream(commands: &CommandManager, req: CommandRequest) -> Result<Response, ApiError> {
    let started = commands.start(req)?;
    let mut events = started.events;
    // Always there: a command's events start with `init`.
    let init = events.take_init().unwrap_or_else(|| crate::event::ExecEvent::init(&started.id));
    Ok(sse::exec_stream_rendered(&init, Rendered(events)))
}

/// A command's events rendered by its own reader ([`CommandEvents::render`]): no event value
/// per output line.
struct Rendered(CommandEvents);

impl sse::Fill for Rendered {
    async fn fill(&mut self, buf: &mut Vec<u8>, max: usize) -> bool {
        self.0.render(buf, sse::FRAME_END, max).await
    }
}

fn resumable_events(
    mut events: ResumableEvents,
) -> impl futures_util::Stream<Item = (Option<u64>, crate::event::ExecEvent)> + Send {
    async_stream::stream! {
        while let Some(e) = events.next().await {
            yield e;
        }
    }
}

/// `GET /command/status/{id}` body.
#[derive(Serialize)]
struct StatusBody {
    id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    content: String,
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    /// X22 keys (`exit_reason`, `signal`, `usage`, ...) once finished.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    exit: Option<crate::event::ExitInfo>,
    /// While running, when output was lost (a full state directory); once finished it is among
    /// the `exit` keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_lost_bytes: Option<u64>,
}

/// A time as the status routes write it (RFC 3339, UTC, as precise as it is).
pub(super) fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl From<CommandStatus> for StatusBody {
    fn from(s: CommandStatus) -> Self {
        StatusBody {
            id: s.id,
            content: s.content,
            running: s.running,
            exit_code: if s.running { None } else { s.exit_code },
            error: s.error,
            started_at: rfc3339(s.started_at),
            finished_at: s.finished_at.map(rfc3339),
            output_lost_bytes: (s.exit.is_none() && s.output_lost_bytes > 0).then_some(s.output_lost_bytes),
            exit: s.exit,
        }
    }
}

async fn status(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    let st = state.commands.status(&id)?;
    Ok(json_response(StatusCode::OK, &StatusBody::from(st)))
}

/// `GET /command/{id}/logs?cursor=N`: raw bytes from N, next cursor in [`TAIL_CURSOR`]. Every
/// failure is a 400 (upstream), including an unknown id.
async fn logs(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    // Absent or not an integer: 0; negative: 400 (upstream's seek error).
    let cursor = match q.get("cursor").map(|c| c.parse::<i64>()) {
        Some(Ok(c)) if c < 0 => return Err(ApiError::bad_request(format!("cursor: must not be negative (got {c})"))),
        Some(Ok(c)) => c as u64,
        _ => 0,
    };
    let slice = state.commands.logs(&id, cursor).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(mut reader) = slice.filtered {
        // The command had input (X12): output only, read around it; length unknown up front.
        let stream = async_stream::stream! {
            loop {
                match reader.next().await {
                    Ok(Some(piece)) => yield Ok::<_, std::io::Error>(bytes::Bytes::from(piece)),
                    Ok(None) => break,
                    Err(e) => { yield Err(e); break; }
                }
            }
        };
        let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(TAIL_CURSOR, HeaderValue::from(slice.tail));
        return Ok(resp);
    }
    let len = slice.end.saturating_sub(slice.start);
    let body = match slice.file {
        Some(file) => {
            let mut file = tokio::fs::File::from_std(file);
            file.seek(std::io::SeekFrom::Start(slice.start)).await.map_err(|e| ApiError::bad_request(e.to_string()))?;
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024))
        }
        // Nothing was written yet: no file either (lazy journal).
        None => Body::empty(),
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(TAIL_CURSOR, HeaderValue::from(slice.tail));
    Ok(resp)
}

/// `GET /command/{id}/events` (DECISIONS D11): standard SSE; resume with `Last-Event-ID` or
/// `?after=N` (byte offsets).
async fn events(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let from_header = headers.get("last-event-id").map(|v| ("Last-Event-ID", v.to_str().unwrap_or("-").to_string()));
    let from_query = q.get("after").map(|v| ("after", v.to_string()));
    let after = match from_header.or(from_query) {
        Some((name, v)) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("{name}: expected a byte offset, got {v:?}")))?,
        None => 0,
    };
    let events = state.commands.events(&id, after)?;
    Ok(sse::standard_sse(resumable_events(events)))
}

/// `DELETE /command?id=` (and `DELETE /code?id=`).
pub async fn interrupt(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let id = q.require("id")?;
    // Lookup order as upstream (§4.10): Jupyter context, command, bash session.
    if state.code.interrupt(id).await? {
        return Ok(empty_ok());
    }
    match state.commands.interrupt(id).await {
        // Not a command: a bash session id deletes that session (reference §4.10 step 3, C83).
        Err(crate::command::CommandError::NoSuchSession) if state.sessions.delete(id).is_ok() => {}
        r => r?,
    }
    Ok(empty_ok())
}

/// A non-negative integer query parameter with a default and an upper bound.
fn query_u64(q: &QueryPairs, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    match q.uint(name)? {
        None => Ok(default),
        Some(n) if n <= max => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("invalid {name} {n}: at most {max}"))),
    }
}

/// Default bound of a stdin write (X11).
const STDIN_TIMEOUT_MS: u64 = 30_000;
/// Longest a stdin write may be told to wait.
const STDIN_TIMEOUT_MAX_MS: u64 = 3_600_000;

#[derive(Serialize)]
struct StdinAnswer {
    written: u64,
    eof: bool,
}

/// `POST /command/{id}/stdin[?eof=true][&timeout_ms=]` (X11): the raw body, streamed into the
/// command's stdin in order.
async fn write_stdin(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    q: QueryPairs,
    body: Body,
) -> Result<Response, ApiError> {
    let eof = q.flag("eof", false)?;
    let timeout = query_u64(&q, "timeout_ms", STDIN_TIMEOUT_MS, STDIN_TIMEOUT_MAX_MS)?;
    let stream = body.into_data_stream();
    match state.commands.write_stdin(&id, stream, eof, std::time::Duration::from_millis(timeout)).await {
        Ok(w) => Ok(json_response(StatusCode::OK, &StdinAnswer { written: w.written, eof: w.eof })),
        Err(e @ crate::command::CommandError::StdinTimeout { written, .. }) => {
            // The error envelope plus how far the write got, so a client can resume.
            let err = ApiError::from(e);
            let body = serde_json::json!({"code": err.code.as_str(), "message": err.message, "written": written});
            Ok(json_response(err.status, &body))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /command/{id}/signal` body (X14): `{"signal": "SIGINT" | "INT" | 2}`.
#[derive(Debug, Deserialize)]
struct SignalBody {
    signal: serde_json::Value,
}

#[derive(Serialize)]
struct SignalAnswer {
    signal: &'static str,
}

/// `POST /command/{id}/signal` (X14).
async fn signal(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<SignalBody>,
) -> Result<Response, ApiError> {
    let sig = match &body.signal {
        serde_json::Value::String(s) => crate::process::parse_signal(s),
        serde_json::Value::Number(n) => {
            n.as_i64().and_then(|n| i32::try_from(n).ok()).and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
        }
        _ => None,
    }
    .ok_or_else(|| ApiError::validation(format!("signal: unknown signal {}", body.signal)))?;
    state.commands.signal(&id, sig)?;
    Ok(json_response(StatusCode::OK, &SignalAnswer { signal: sig.as_str() }))
}

/// Default and largest `head`/`tail` of the bounded output view (X16).
const VIEW_DEFAULT: u64 = 4096;
const VIEW_MAX: u64 = 1 << 20;

#[derive(Serialize)]
struct OutputAnswer {
    head: String,
    tail: String,
    total_bytes: u64,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// `GET /command/{id}/output?head=&tail=` (X16).
async fn output(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let head = query_u64(&q, "head", VIEW_DEFAULT, VIEW_MAX)?;
    let tail = query_u64(&q, "tail", VIEW_DEFAULT, VIEW_MAX)?;
    let v = state.commands.output_view(&id, head, tail).await?;
    let answer = OutputAnswer {
        head: v.head,
        tail: v.tail,
        total_bytes: v.total_bytes,
        truncated: v.truncated,
        sha256: v.sha256,
    };
    Ok(json_response(StatusCode::OK, &answer))
}
