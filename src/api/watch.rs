//! `/files/watches` routes (EXTENSIONS X40–X42): create, list, delete, the resumable event stream
//! (standard SSE, X3) and "what changed since". Handlers translate to [`crate::watch`].

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;

use super::error::{empty_ok, json_response, ApiError};
use super::extract::{AppJson, AppPath, QueryPairs};
use super::sse::{coalesced, stream_response, KEEPALIVE, KEEPALIVE_EVERY};
use crate::state::AppState;
use crate::watch::{WatchEvent, WatchEvents, WatchSpec};

/// Largest batch of ready events written at once.
const BATCH_BYTES: usize = 64 * 1024;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/files/watches", post(create).get(list))
        .route("/files/watches/{id}", delete(remove))
        .route("/files/watches/{id}/events", get(events))
        .route("/files/watches/{id}/changes", get(changes))
}

/// `POST /files/watches` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateBody {
    path: String,
    recursive: bool,
    exclude: Vec<String>,
}

async fn create(State(state): State<AppState>, AppJson(body): AppJson<CreateBody>) -> Result<Response, ApiError> {
    if body.path.is_empty() {
        return Err(ApiError::validation("path: required"));
    }
    let path = crate::fs::path::resolve_checked(&body.path)?;
    let spec = WatchSpec { path, recursive: body.recursive, exclude: body.exclude };
    let created = state.watches.create(spec).await?;
    Ok(json_response(StatusCode::CREATED, &created))
}

async fn list(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &serde_json::json!({ "watches": state.watches.list() }))
}

async fn remove(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    state.watches.delete(&id)?;
    Ok(empty_ok())
}

/// A cursor from `name` (`Last-Event-ID` or a query parameter): a sequence number.
fn cursor(name: &str, value: &str) -> Result<u64, ApiError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("{name}: expected a sequence number, got {value:?}")))
}

/// `GET /files/watches/{id}/events`: events after `Last-Event-ID` (or `?after=`, else 0), then
/// live ones, until the watch ends.
async fn events(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let after = match (headers.get("last-event-id"), q.get("after")) {
        (Some(v), _) => cursor("Last-Event-ID", v.to_str().unwrap_or("-"))?,
        (None, Some(v)) => cursor("after", v)?,
        (None, None) => 0,
    };
    let events = state.watches.events(&id, after)?;
    Ok(sse_response(events))
}

/// `GET /files/watches/{id}/changes?since=N`.
async fn changes(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let since = q.get("since").map(|v| cursor("since", v)).transpose()?.unwrap_or(0);
    let changes = state.watches.changes(&id, since)?;
    Ok(json_response(StatusCode::OK, &changes))
}

/// `id: <seq>\nevent: <type>\ndata: <json>\n\n`.
fn append_frame(buf: &mut Vec<u8>, ev: &WatchEvent) {
    buf.extend_from_slice(format!("id: {}\nevent: {}\ndata: ", ev.seq, ev.kind.as_str()).as_bytes());
    // A WatchEvent always serialises (strings, numbers, bools).
    let _ = serde_json::to_writer(&mut *buf, ev);
    buf.extend_from_slice(b"\n\n");
}

fn sse_response(events: WatchEvents) -> Response {
    let body =
        coalesced(events.into_stream(), append_frame, BATCH_BYTES, KEEPALIVE_EVERY, Bytes::from_static(KEEPALIVE));
    stream_response(Body::from_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x41_frame() {
        let mut ev = WatchEvent::new(crate::watch::EventType::Create, "/w/a".into(), false);
        ev.seq = 3;
        ev.timestamp = 5;
        let mut buf = Vec::new();
        append_frame(&mut buf, &ev);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "id: 3\nevent: create\ndata: {\"seq\":3,\"type\":\"create\",\"path\":\"/w/a\",\"is_dir\":false,\"timestamp\":5}\n\n"
        );
    }
}
