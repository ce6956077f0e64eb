//! `/session` routes (reference §5): create, run (streamed), delete. Handlers translate between the
//! wire and [`crate::session::SessionManager`]; they decide nothing.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::command::{de_limits, LimitsBody};
use super::error::{empty_ok, json_response, ApiError};
use super::extract::{AppJson, AppPath, OptionalJson};
use super::sse;
use crate::session::RunRequest;
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/session", post(create)).route("/session/{id}/run", post(run)).route("/session/{id}", delete(remove))
}

/// `POST /session` body: optional; an empty body or `{}` is fine (C70).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateBody {
    cwd: String,
    /// X23: limits of every run's cgroup leaf (a run may set its own).
    #[serde(deserialize_with = "de_limits")]
    limits: Option<LimitsBody>,
}

#[derive(Serialize)]
struct Created {
    session_id: String,
}

/// `POST /session/{id}/run` body (keys case-insensitive, unknown keys ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RunBody {
    command: String,
    cwd: String,
    /// Milliseconds; 0 or absent: 24 h; negative: 400.
    timeout: i64,
    /// X10: absent/`false` (`/dev/null`) or a string; `true` (an open pipe) is for commands only.
    /// Never logged: it may hold a secret.
    #[serde(deserialize_with = "de_stdin")]
    stdin: Option<StdinField>,
    /// X23: this run's limits; each one not set comes from the session's.
    #[serde(deserialize_with = "de_limits")]
    limits: Option<LimitsBody>,
}

/// `stdin` of a session run (X10).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StdinField {
    Flag(bool),
    Text(String),
}

/// `stdin`, with a type error naming the field.
fn de_stdin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<StdinField>, D::Error> {
    Option::<StdinField>::deserialize(d).map_err(|_| serde::de::Error::custom("stdin: must be a string or false"))
}

async fn create(
    State(state): State<AppState>,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> Result<Response, ApiError> {
    let cwd = (!body.cwd.is_empty()).then_some(body.cwd);
    let limits = body.limits.map(LimitsBody::into_limits).transpose()?.unwrap_or_default();
    let session_id = state.sessions.create(cwd, limits).await?;
    Ok(json_response(axum::http::StatusCode::OK, &Created { session_id }))
}

async fn run(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<RunBody>,
) -> Result<Response, ApiError> {
    let timeout = match u64::try_from(body.timeout) {
        Ok(0) => None,
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => return Err(ApiError::validation("timeout must not be negative")),
    };
    tracing::info!(
        session = %id,
        command = %crate::telemetry::command_excerpt(&body.command),
        command_len = body.command.len(),
        "session run"
    );
    let stdin = match body.stdin {
        None | Some(StdinField::Flag(false)) => None,
        Some(StdinField::Text(t)) => Some(t),
        Some(StdinField::Flag(true)) => {
            return Err(ApiError::validation(
                "stdin: an open pipe (true) is for POST /command only; a session run takes a string",
            ))
        }
    };
    let limits = body.limits.map(LimitsBody::into_limits).transpose()?.unwrap_or_default();
    let cwd = (!body.cwd.is_empty()).then_some(body.cwd);
    let req = RunRequest { command: body.command, cwd, timeout, stdin, limits };
    let events = state.sessions.run(&id, req).await?;
    Ok(sse::exec_stream(events))
}

async fn remove(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    state.sessions.delete(&id)?;
    Ok(empty_ok())
}
