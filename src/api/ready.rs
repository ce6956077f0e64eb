//! `GET /ready` (EXTENSIONS X52): `200 {"ready":true,"checks":[…]}`, or `503` with the same body
//! and `"ready":false` when a check fails. Each check is `{"name","ok","detail"}`. Behind the
//! access token like `/ping` (DECISIONS D60). The checks live in [`crate::readiness`].

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::error::json_response;
use crate::readiness::{Report, DEADLINE};
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/ready", get(ready))
}

#[derive(Serialize)]
struct CheckBody {
    name: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    checks: Vec<CheckBody>,
}

impl From<Report> for ReadyBody {
    fn from(r: Report) -> Self {
        ReadyBody {
            ready: r.ready,
            checks: r.checks.into_iter().map(|c| CheckBody { name: c.name, ok: c.ok, detail: c.detail }).collect(),
        }
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    // The checks bound themselves; this is the backstop for the 1 s promise.
    let body = match tokio::time::timeout(DEADLINE, state.readiness.check()).await {
        Ok(report) => ReadyBody::from(report),
        Err(_) => ReadyBody {
            ready: false,
            checks: vec![CheckBody {
                name: "deadline",
                ok: false,
                detail: format!("checks took longer than {DEADLINE:?}"),
            }],
        },
    };
    let status = if body.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut resp = json_response(status, &body);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
