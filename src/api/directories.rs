//! `/directories*` (§7.10–7.12): list (streamed JSON array), mkdir -p, rm -rf.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::error::{empty_ok, ApiError};
use super::extract::{KeyFold, QueryPairs};
use super::files::{admit_stream, json_array, read_json};
use crate::fs::{self, ops::Permission};
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/directories/list", get(list)).route("/directories", axum::routing::post(make_dirs).delete(remove_dirs))
}

/// `GET /directories/list?path=<dir>&depth=<n>` (depth defaults to 1; 0 gives `[]`).
async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let root = q.require("path")?;
    let depth = match q.get("depth") {
        None => 1,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| ApiError::bad_request(format!("invalid depth {d:?}: must be a non-negative integer")))?,
    };
    Ok(json_array(fs::list::list(root, depth), admit_stream(&state)).await)
}

/// `POST /directories {"<dir>": {"owner","group","mode"}}`.
async fn make_dirs(body: Body) -> Result<Response, ApiError> {
    let items: BTreeMap<String, Permission> = read_json(body, KeyFold::MapOfStructs).await?;
    let items: Vec<_> = items.into_iter().collect();
    fs::blocking(move || fs::ops::make_dirs(&items)).await?;
    Ok(empty_ok())
}

/// `DELETE /directories?path=..`.
async fn remove_dirs(q: QueryPairs) -> Result<Response, ApiError> {
    let paths = q.all("path");
    fs::blocking(move || fs::ops::remove_dirs(&paths)).await?;
    Ok(empty_ok())
}
