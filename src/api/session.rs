//! `/session` routes (reference §5): create, run (streamed), delete. Handlers translate between the
//! wire and [`crate::session::SessionManager`]; they decide nothing.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::error::{empty_ok, json_response, ApiError};
use super::extract::{AppJson, AppPath, OptionalJson};
use super::sse;
use crate::session::RunRequest;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/session", post(create))
        .route("/session/{id}/run", post(run))
        .route("/session/{id}", delete(remove))
}

/// `POST /session` body: optional; an empty body or `{}` is fine (C70).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateBody {
    cwd: String,
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
}

async fn create(
    State(state): State<AppState>,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> Result<Response, ApiError> {
    let cwd = (!body.cwd.is_empty()).then_some(body.cwd);
    let session_id = state.sessions.create(cwd).await?;
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
    let req = RunRequest { command: body.command, cwd: (!body.cwd.is_empty()).then_some(body.cwd), timeout };
    let events = state.sessions.run(&id, req).await?;
    Ok(sse::exec_stream(events))
}

async fn remove(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    state.sessions.delete(&id)?;
    Ok(empty_ok())
}
