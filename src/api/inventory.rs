//! `GET /command` (EXTENSIONS X53): the command inventory in upstream's shape
//! (opensandbox-group/OpenSandbox PR #1309): `?running=true|false&limit=N&cursor=…` →
//! `{"commands":[…],"pagination":{"limit":N,"nextCursor":"…"}}`, `Cache-Control: no-store`.
//! `POST /command` and `DELETE /command` live in `api/command.rs`; axum merges the methods.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::error::{json_response, ApiError, ErrorCode};
use super::extract::QueryPairs;
use crate::command::inventory::{InventoryPage, InventoryQuery, RunningFilter, DEFAULT_LIMIT};
use crate::command::CommandStatus;
use crate::state::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/command", get(list))
}

/// One listed command: the status keys of `GET /command/status/{id}` without `content`.
#[derive(Serialize)]
struct ItemBody {
    id: String,
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    /// X22 keys (`exit_reason`, `signal`, `usage`, ...) once finished.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    exit: Option<crate::event::ExitInfo>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
    has_more: bool,
}

#[derive(Serialize)]
struct ListBody {
    commands: Vec<ItemBody>,
    pagination: Pagination,
}

impl From<CommandStatus> for ItemBody {
    fn from(s: CommandStatus) -> Self {
        ItemBody {
            id: s.id,
            running: s.running,
            exit_code: if s.running { None } else { s.exit_code },
            error: s.error,
            started_at: super::command::rfc3339(s.started_at),
            finished_at: s.finished_at.map(super::command::rfc3339),
            exit: s.exit,
        }
    }
}

impl From<InventoryPage> for ListBody {
    fn from(p: InventoryPage) -> Self {
        ListBody {
            commands: p.commands.into_iter().map(ItemBody::from).collect(),
            pagination: Pagination { limit: p.limit, has_more: p.next_cursor.is_some(), next_cursor: p.next_cursor },
        }
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, message)
}

/// `running` as Go's `strconv.ParseBool` reads it (upstream's parser).
fn parse_running(v: &str) -> Result<RunningFilter, ApiError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(RunningFilter::Running),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(RunningFilter::Finished),
        _ => Err(invalid(format!("running must be true or false, got {v:?}"))),
    }
}

fn parse_query(q: &QueryPairs) -> Result<InventoryQuery, ApiError> {
    let filter = match q.get("running") {
        None => RunningFilter::All,
        Some(v) => parse_running(v)?,
    };
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v.trim().parse::<usize>().map_err(|_| invalid(format!("limit must be an integer, got {v:?}")))?,
    };
    let cursor = q.get("cursor").filter(|c| !c.is_empty()).map(str::to_string);
    Ok(InventoryQuery { filter, limit, cursor })
}

/// `Cache-Control: no-store` on every answer of the inventory (upstream).
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn list(State(state): State<AppState>, q: QueryPairs) -> Response {
    let page = parse_query(&q).and_then(|query| state.commands.inventory(&query).map_err(ApiError::from));
    no_store(match page {
        Ok(page) => json_response(StatusCode::OK, &ListBody::from(page)),
        Err(e) => e.into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> QueryPairs {
        QueryPairs(p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn x53_query_parsing() {
        let q = parse_query(&pairs(&[])).unwrap();
        assert_eq!((q.filter, q.limit, q.cursor), (RunningFilter::All, 50, None));
        let q = parse_query(&pairs(&[("running", "true"), ("limit", "7"), ("cursor", "")])).unwrap();
        assert_eq!((q.filter, q.limit, q.cursor), (RunningFilter::Running, 7, None));
        assert_eq!(parse_query(&pairs(&[("running", "0")])).unwrap().filter, RunningFilter::Finished);
        for bad in [("running", "yes"), ("limit", "-1"), ("limit", "ten"), ("limit", "")] {
            let e = parse_query(&pairs(&[bad])).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidQuery, "{bad:?}");
        }
    }
}
