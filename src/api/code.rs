//! `/code` (reference §6). The **stateless** path: `POST /code` without `context.language` runs
//! `code` as a foreground shell command (C90), `background-command` as a background one.
//!
//! Jupyter languages are routed by [`route_language`] to [`crate::code::CodeManager`] (with no
//! Jupyter configured they fail with a 500 JSON error before any event, C91); unknown languages
//! fail with 500 (C92). `DELETE /code?id=` interrupts a context's kernel, else a command. The
//! context routes (`/code/context`, `/code/contexts[/{id}]`) are at the end of this file.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::command::{interrupt, start_stream};
use super::error::ApiError;
use super::extract::{AppJson, AppPath, QueryPairs};
use crate::command::CommandRequest;
use crate::state::AppState;

/// Languages served by a Jupyter kernel (reference §6.1).
pub const JUPYTER_LANGUAGES: &[&str] = &["python", "java", "javascript", "typescript", "go", "bash"];

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/code", post(run_code).delete(interrupt))
        .route("/code/context", post(create_context))
        .route("/code/contexts", get(list_contexts).delete(delete_contexts))
        .route("/code/contexts/{id}", get(get_context).delete(delete_context))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CodeContextBody {
    id: String,
    language: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RunCodeBody {
    code: String,
    context: CodeContextBody,
}

/// Where a `POST /code` goes, by `context.language` (case-sensitive, reference §6.2).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Empty language: a foreground shell command.
    Command,
    /// `background-command`.
    BackgroundCommand,
    /// A Jupyter kernel language.
    Jupyter,
    /// Anything else (`sql` included: DECISIONS D50).
    Unknown,
}

/// Routes a language name.
pub fn route_language(language: &str) -> Route {
    match language {
        "" => Route::Command,
        "background-command" => Route::BackgroundCommand,
        l if JUPYTER_LANGUAGES.contains(&l) => Route::Jupyter,
        _ => Route::Unknown,
    }
}

async fn run_code(State(state): State<AppState>, AppJson(body): AppJson<RunCodeBody>) -> Result<Response, ApiError> {
    if body.code.is_empty() {
        return Err(ApiError::validation("code: must not be empty"));
    }
    let language = body.context.language;
    match route_language(&language) {
        Route::Command | Route::BackgroundCommand => {
            // Stateless path: no uid, envs or timeout; execd's cwd (reference §6.2).
            let req = CommandRequest {
                command: body.code,
                background: route_language(&language) == Route::BackgroundCommand,
                ..CommandRequest::default()
            };
            start_stream(&state.commands, req)
        }
        Route::Jupyter => {
            let req = crate::code::RunRequest { code: body.code, context_id: body.context.id, language };
            let run = state.code.run(req).await?;
            Ok(super::sse::exec_stream(tokio_stream::wrappers::ReceiverStream::new(run.events)))
        }
        Route::Unknown => Err(ApiError::runtime(format!("error running codes unknown language: {language}"))),
    }
}

// ---- Jupyter code contexts (reference §6.3; domain: `crate::code`) ----

/// `POST /code/context` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateContextBody {
    language: String,
    cwd: String,
}

/// A context on the wire: `{"id","language"}`, plus `cwd` when one was given at creation.
#[derive(serde::Serialize)]
struct ContextBody {
    id: String,
    language: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
}

impl From<crate::code::ContextInfo> for ContextBody {
    fn from(c: crate::code::ContextInfo) -> Self {
        ContextBody { id: c.id, language: c.language, cwd: c.cwd }
    }
}

async fn create_context(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateContextBody>,
) -> Result<Response, ApiError> {
    let cwd = (!body.cwd.is_empty()).then_some(body.cwd.as_str());
    let info = state.code.create_context(&body.language, cwd).await?;
    Ok(super::error::json_response(axum::http::StatusCode::OK, &ContextBody::from(info)))
}

/// `GET /code/contexts[?language=]` (without `language`: every context, as upstream).
async fn list_contexts(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let list: Vec<ContextBody> = state.code.list(q.get("language"))?.into_iter().map(ContextBody::from).collect();
    Ok(super::error::json_response(axum::http::StatusCode::OK, &list))
}

/// `DELETE /code/contexts?language=` (required).
async fn delete_contexts(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    state.code.delete_language(q.require("language")?).await?;
    Ok(super::error::empty_ok())
}

async fn get_context(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    let info = state.code.get(&id)?;
    Ok(super::error::json_response(axum::http::StatusCode::OK, &ContextBody::from(info)))
}

async fn delete_context(State(state): State<AppState>, AppPath(id): AppPath<String>) -> Result<Response, ApiError> {
    state.code.delete(&id).await?;
    Ok(super::error::empty_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_routing() {
        assert_eq!(route_language(""), Route::Command);
        assert_eq!(route_language("background-command"), Route::BackgroundCommand);
        assert_eq!(route_language("python"), Route::Jupyter);
        assert_eq!(route_language("Python"), Route::Unknown);
        assert_eq!(route_language("cobol"), Route::Unknown);
        assert_eq!(route_language("sql"), Route::Unknown);
    }
}
