//! `GET /files/grep` (EXTENSIONS X32): parses the query, checks the search (`fs::grep::prepare`:
//! 404 for a missing path, 400 for a bad regex or glob), admits it as a transfer (429 beyond the
//! cap) and streams the NDJSON the walk produces (`application/x-ndjson`). Dropping the response
//! (the client went away, or the stall watch closed a connection that stopped reading) stops
//! the walk.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::error::ApiError;
use super::extract::QueryPairs;
use crate::fs::{self, grep};
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/files/grep", get(grep_files))
}

/// `application/x-ndjson`: one JSON object per line.
const NDJSON: &str = "application/x-ndjson";

/// `GET /files/grep?path=&pattern=[&regex&ignore_case&glob…&exclude…&hidden&gitignore&context
/// &max_matches&max_filesize]`.
async fn grep_files(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let root = q.require("path")?.to_string();
    let opts = options(&q)?;
    let prepared = fs::blocking(move || grep::prepare(&root, opts)).await?;
    let permit = state.transfers.admit()?;
    let mut rx = grep::start(prepared, permit);
    let body = async_stream::stream! {
        while let Some(chunk) = rx.recv().await {
            yield Ok::<_, Infallible>(Bytes::from(chunk));
        }
    };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))], Body::from_stream(body)).into_response())
}

/// The search options of the query (400 for a value that does not parse).
fn options(q: &QueryPairs) -> Result<grep::GrepOptions, ApiError> {
    let mut o = grep::GrepOptions::new(q.require("pattern")?);
    o.regex = q.flag("regex", o.regex)?;
    o.ignore_case = q.flag("ignore_case", o.ignore_case)?;
    o.hidden = q.flag("hidden", o.hidden)?;
    o.gitignore = q.flag("gitignore", o.gitignore)?;
    o.globs = q.all("glob");
    o.excludes = q.all("exclude");
    if let Some(c) = q.uint("context")? {
        o.context = usize::try_from(c).unwrap_or(usize::MAX);
    }
    if let Some(m) = q.uint("max_matches")? {
        o.max_matches = m;
    }
    o.max_filesize = q.uint("max_filesize")?;
    Ok(o)
}
