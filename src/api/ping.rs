//! `GET /ping`: 200 with an empty body (§12, C1).

use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::error::empty_ok;
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/ping", get(ping))
}

async fn ping() -> Response {
    empty_ok()
}
