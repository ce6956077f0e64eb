//! `GET /capabilities` (EXTENSIONS X2): `{"version": "<crate version>", "features": {...}}`, the
//! features being [`crate::capabilities::features`]. Behind the access token like every route
//! (DECISIONS D60: nothing is reachable without it when one is configured).

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::error::json_response;
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/capabilities", get(capabilities))
}

async fn capabilities() -> Response {
    let body = json!({ "version": env!("CARGO_PKG_VERSION"), "features": crate::capabilities::features() });
    json_response(StatusCode::OK, &body)
}
