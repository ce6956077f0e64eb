//! `GET /metrics` (one record, answered at once) and `GET /metrics/watch` (one record per second,
//! each `<json>\n\n`, until the client goes away or execd shuts down) — §8, DECISIONS D40.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;

use super::error::{json_response, ApiError};
use crate::metrics::{Metrics, MetricsError};
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/metrics", get(metrics)).route("/metrics/watch", get(watch))
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = state.metrics.current().await?;
    Ok(json_response(StatusCode::OK, &m))
}

async fn watch(State(state): State<AppState>) -> Response {
    let events = state.metrics.watch().map(|r| Ok::<Bytes, Infallible>(frame(r)));
    super::sse::stream_response(Body::from_stream(events))
}

/// One event: the record, or `{"error": ...}` as upstream, followed by an empty line.
fn frame(r: Result<Metrics, MetricsError>) -> Bytes {
    let mut buf = match r {
        Ok(m) => serde_json::to_vec(&m),
        Err(e) => serde_json::to_vec(&serde_json::json!({ "error": e.to_string() })),
    }
    .unwrap_or_else(|_| b"{\"error\":\"encoding failed\"}".to_vec());
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}
