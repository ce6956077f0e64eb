//! `GET /metrics/prometheus` (EXTENSIONS X61): every metric of [`crate::observability::prom`] in
//! the Prometheus text exposition format, version 0.0.4. Gauges are read at scrape time.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::observability::{prom::Snapshot, system};
use crate::state::AppState;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics/prometheus", get(prometheus))
}

async fn prometheus(State(state): State<AppState>) -> Response {
    const MIB: f64 = 1024.0 * 1024.0;
    // CPU and memory as `GET /metrics` reports them (cgroup-aware); left out when unreadable.
    let record = state.metrics.current().await.ok();
    let mut snap = tokio::task::spawn_blocking(|| {
        let proc = std::path::Path::new("/proc");
        let net = system::network_io(proc);
        let conns = system::connections(proc);
        Snapshot {
            process_count: system::process_count(proc),
            network_in_bytes: net.map(|n| n.0),
            network_out_bytes: net.map(|n| n.1),
            tcp_connections: conns.map(|c| c.0),
            udp_connections: conns.map(|c| c.1),
            ..Snapshot::default()
        }
    })
    .await
    .unwrap_or_default();
    if let Some(m) = record {
        snap.cpu_used_pct = Some(m.cpu_used_pct);
        snap.cpu_count = Some(m.cpu_count);
        snap.mem_used_bytes = Some((m.mem_used_mib * MIB).round());
        snap.mem_total_bytes = Some((m.mem_total_mib * MIB).round());
    }
    snap.commands_tracked = state.commands.len() as u64;
    let body = state.observability.metrics().render(&snap);
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}
