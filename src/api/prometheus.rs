//! `GET /metrics/prometheus` (EXTENSIONS X61): every metric of [`crate::observability::prom`] in
//! the Prometheus text exposition format, version 0.0.4. Gauges are read at scrape time.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::observability::system;
use crate::state::AppState;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/metrics/prometheus", get(prometheus))
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let mut snap = system::snapshot(&state.metrics).await;
    snap.commands_tracked = state.commands.len() as u64;
    if let Some(otel) = state.observability.otel() {
        snap.extra.extend(otel.extra_metrics());
    }
    let body = state.observability.metrics().render(&snap);
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}
