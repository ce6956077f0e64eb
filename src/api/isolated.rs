//! `/v1/isolated/*` (ISOLATED.md §2): isolated sessions as the official SDKs call them
//! (`Sandbox.isolation`). Handlers translate between the wire and
//! [`crate::isolated::IsolatedManager`]; they decide nothing. The foreground run streams with the
//! bare `{json}\n\n` framing of `/command` (I14); file routes take the same shapes as `/files`
//! and `/directories` but act inside the session's mount namespace.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{empty_ok, json_response, ApiError, ErrorCode};
use super::extract::{KeyFold, QueryPairs};
use super::files::read_json;
use super::sse;
use crate::fs::ops::{Move, Permission};
use crate::isolated::files::{self as ifiles, Upload};
use crate::isolated::{BgState, IsolatedError, Session};
use crate::state::AppState;

/// Header carrying the next `/logs` cursor (I20).
pub const TAIL_CURSOR: &str = "EXECD-ISOLATED-TAIL-CURSOR";
/// Largest metadata part of an upload.
const METADATA_LIMIT: usize = 64 * 1024;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/v1/isolated/capabilities", get(capabilities))
        .route("/v1/isolated/session", post(create))
        .route("/v1/isolated/sessions", get(list))
        .route("/v1/isolated/session/{sid}", get(get_session).delete(delete_session))
        .route("/v1/isolated/session/{sid}/run", post(run))
        .route("/v1/isolated/session/{sid}/runs/{rid}", get(run_status))
        .route("/v1/isolated/session/{sid}/runs/{rid}/logs", get(run_logs))
        .route("/v1/isolated/session/{sid}/diff", get(diff))
        .route("/v1/isolated/session/{sid}/commit", post(commit))
        .route("/v1/isolated/session/{sid}/files", axum::routing::delete(remove_files))
        .route("/v1/isolated/session/{sid}/files/info", get(info))
        .route("/v1/isolated/session/{sid}/files/download", get(download))
        .route("/v1/isolated/session/{sid}/files/upload", post(upload))
        .route("/v1/isolated/session/{sid}/files/mv", post(move_files))
        .route("/v1/isolated/session/{sid}/files/permissions", post(permissions))
        .route("/v1/isolated/session/{sid}/files/replace", post(replace))
        .route("/v1/isolated/session/{sid}/files/search", get(search))
        .route("/v1/isolated/session/{sid}/directories/list", get(list_dir))
        .route("/v1/isolated/session/{sid}/directories", post(make_dirs).delete(remove_dirs))
}

type Sid = axum::extract::Path<String>;

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Decodes a JSON body strictly by our serde types (snake_case keys, unknown keys ignored).
async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, 1024 * 1024).await.map_err(ApiError::invalid_body)?;
    serde_json::from_slice(&bytes).map_err(ApiError::invalid_body)
}

async fn capabilities(State(state): State<AppState>) -> Response {
    let c = state.isolated.capabilities();
    let disabled = json!({"state": "disabled", "message": "not configured"});
    let mut v = json!({
        "available": c.available,
        "isolator": "native",
        "version": env!("CARGO_PKG_VERSION"),
        "setpriv_available": c.setpriv_available,
        "userns_available": c.userns_available,
        "commit_supported": c.commit_supported,
        "diff_supported": c.diff_supported,
        "hardening": {
            "init_mode": if std::process::id() == 1 { "pid1" } else { "none" },
            "signal_shield": false,
            "cap_drop": disabled, "seccomp": disabled, "landlock": disabled, "ebpf": disabled,
        },
    });
    if let Some(m) = c.message {
        v["message"] = Value::String(m);
    }
    json_response(StatusCode::OK, &v)
}

/// Runtime state plus the creation echo (I10, I11).
fn session_json(s: &Session, echo: bool) -> Value {
    let mut v = json!({
        "session_id": s.id,
        "status": s.status(),
        "created_at": rfc3339(s.created_at),
        "last_run_at": rfc3339(s.last_run_at()),
    });
    if let Some(r) = s.idle_remaining_seconds() {
        v["idle_remaining_seconds"] = json!(r);
    }
    if echo {
        if let (Value::Object(m), Ok(Value::Object(e))) = (&mut v, serde_json::to_value(&s.settings)) {
            m.extend(e);
        }
        if s.settings.overlays.len() == 1 {
            let o = s.settings.primary();
            v["workspace"] = json!({"path": o.path, "mode": o.mode});
        }
    }
    v
}

async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let req: crate::isolated::CreateRequest = json_body(body).await?;
    let s = state.isolated.create(req).await?;
    tracing::info!(session = %s.id, "isolated session created");
    Ok(json_response(StatusCode::CREATED, &session_json(&s, true)))
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let sessions: Vec<Value> = state.isolated.list()?.iter().map(|s| session_json(s, false)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "sessions": sessions })))
}

async fn get_session(State(state): State<AppState>, sid: Sid) -> Result<Response, ApiError> {
    let s = state.isolated.get(&sid)?;
    Ok(json_response(StatusCode::OK, &session_json(&s, true)))
}

async fn delete_session(State(state): State<AppState>, sid: Sid) -> Result<Response, ApiError> {
    state.isolated.get(&sid)?;
    state.isolated.delete(&sid).await?;
    Ok(empty_ok())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RunBody {
    code: String,
    envs: Option<BTreeMap<String, String>>,
    timeout_seconds: Option<i64>,
    background: Option<bool>,
}

#[derive(Serialize)]
struct BgStarted<'a> {
    session_id: &'a str,
    run_id: &'a str,
    started_at: String,
}

async fn run(State(state): State<AppState>, sid: Sid, body: Body) -> Result<Response, ApiError> {
    // Unknown session: 404 before the body is even looked at (I13).
    state.isolated.get(&sid)?;
    let body: RunBody = json_body(body).await?;
    let envs = body.envs.unwrap_or_default();
    if body.background == Some(true) {
        let r = state.isolated.run_background(&sid, body.code, envs).await?;
        let started = BgStarted { session_id: &sid, run_id: &r.id, started_at: rfc3339(r.started_at) };
        return Ok(json_response(StatusCode::ACCEPTED, &started));
    }
    let timeout = match body.timeout_seconds.unwrap_or(0) {
        t if t < 0 => return Err(ApiError::bad_request("timeout_seconds must not be negative")),
        0 => None,
        t => Some(Duration::from_secs(t as u64)),
    };
    let mut rx = state.isolated.run(&sid, body.code, envs, timeout).await?;
    let events = async_stream::stream! {
        while let Some(ev) = rx.recv().await {
            yield ev;
        }
    };
    Ok(sse::exec_stream(events))
}

fn status_json(sid: &str, r: &crate::isolated::BgRun, st: &BgState) -> Value {
    let mut v = json!({
        "session_id": sid,
        "run_id": r.id,
        "running": st.running,
        "started_at": rfc3339(r.started_at),
    });
    if let Some(c) = st.exit_code {
        v["exit_code"] = json!(c);
    }
    if let Some(e) = &st.error {
        v["error"] = json!(e);
    }
    if let Some(f) = st.finished_at {
        v["finished_at"] = json!(rfc3339(f));
    }
    v
}

async fn run_status(
    State(state): State<AppState>,
    axum::extract::Path((sid, rid)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (r, st) = state.isolated.run_status(&sid, &rid)?;
    Ok(json_response(StatusCode::OK, &status_json(&sid, &r, &st)))
}

async fn run_logs(
    State(state): State<AppState>,
    axum::extract::Path((sid, rid)): axum::extract::Path<(String, String)>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let cursor = match q.get("cursor") {
        None | Some("") => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid cursor {c:?}: must be a non-negative integer")))?,
    };
    let (bytes, next) = state.isolated.run_logs(&sid, &rid, cursor).await?;
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(TAIL_CURSOR, HeaderValue::from(next));
    Ok((StatusCode::OK, h, bytes).into_response())
}

/// `GET …/diff`: the change list as JSON (I24; our format, see docs/COMPATIBILITY.md).
async fn diff(State(state): State<AppState>, sid: Sid) -> Result<Response, ApiError> {
    let changes = state.isolated.diff(&sid).await?;
    Ok(json_response(StatusCode::OK, &json!({ "session_id": *sid, "changes": changes })))
}

async fn commit(State(state): State<AppState>, sid: Sid) -> Result<Response, ApiError> {
    let report = state.isolated.commit(&sid).await?;
    let mut v = serde_json::to_value(&report).unwrap_or_default();
    v["session_id"] = json!(*sid);
    Ok(json_response(StatusCode::OK, &v))
}

// ---- files ----

fn fs_err(e: crate::fs::FsError) -> IsolatedError {
    ifiles::fs_error(e)
}

async fn info(State(state): State<AppState>, sid: Sid, q: QueryPairs) -> Result<Response, ApiError> {
    let paths = q.all("path");
    let infos = state.isolated.in_session(&sid, move |_| crate::fs::info::info_many(&paths).map_err(fs_err)).await?;
    let map: BTreeMap<String, crate::fs::FileInfo> = infos.into_iter().collect();
    Ok(json_response(StatusCode::OK, &map))
}

async fn remove_files(State(state): State<AppState>, sid: Sid, q: QueryPairs) -> Result<Response, ApiError> {
    let paths = q.all("path");
    state
        .isolated
        .in_session(&sid, move |v| {
            v.refuse_ephemeral_all(paths.iter().map(String::as_str))?;
            crate::fs::ops::remove_files(&paths).map_err(fs_err)
        })
        .await?;
    Ok(empty_ok())
}

async fn remove_dirs(State(state): State<AppState>, sid: Sid, q: QueryPairs) -> Result<Response, ApiError> {
    let paths = q.all("path");
    state
        .isolated
        .in_session(&sid, move |v| {
            v.refuse_ephemeral_all(paths.iter().map(String::as_str))?;
            crate::fs::ops::remove_dirs(&paths).map_err(fs_err)
        })
        .await?;
    Ok(empty_ok())
}

async fn permissions(State(state): State<AppState>, sid: Sid, body: Body) -> Result<Response, ApiError> {
    state.isolated.get(&sid)?;
    let items: BTreeMap<String, Permission> = read_json(body, KeyFold::MapOfStructs).await?;
    let items: Vec<_> = items.into_iter().collect();
    state
        .isolated
        .in_session(&sid, move |v| {
            v.refuse_ephemeral_all(items.iter().map(|(p, _)| p.as_str()))?;
            crate::fs::ops::set_permissions(&items).map_err(fs_err)
        })
        .await?;
    Ok(empty_ok())
}

async fn move_files(State(state): State<AppState>, sid: Sid, body: Body) -> Result<Response, ApiError> {
    state.isolated.get(&sid)?;
    let items: Vec<Move> = read_json(body, KeyFold::ArrayOfStructs).await?;
    state
        .isolated
        .in_session(&sid, move |v| {
            v.refuse_ephemeral_all(items.iter().flat_map(|m| [m.src.as_str(), m.dest.as_str()]))?;
            crate::fs::ops::move_all(&items).map_err(fs_err)
        })
        .await?;
    Ok(empty_ok())
}

async fn make_dirs(State(state): State<AppState>, sid: Sid, body: Body) -> Result<Response, ApiError> {
    state.isolated.get(&sid)?;
    let items: BTreeMap<String, Permission> = read_json(body, KeyFold::MapOfStructs).await?;
    let items = items
        .into_iter()
        .map(|(p, perm)| {
            let mode = if perm.mode == 0 { 0o755 } else { crate::fs::info::mode_from_wire(perm.mode)? };
            Ok((p, mode))
        })
        .collect::<Result<Vec<_>, crate::fs::FsError>>()?;
    state
        .isolated
        .in_session(&sid, move |v| {
            v.refuse_ephemeral_all(items.iter().map(|(p, _)| p.as_str()))?;
            ifiles::make_dirs(v, &items).map_err(fs_err)
        })
        .await?;
    Ok(empty_ok())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplaceItem {
    old: String,
    new: String,
}

async fn replace(State(state): State<AppState>, sid: Sid, q: QueryPairs, body: Body) -> Result<Response, ApiError> {
    state.isolated.get(&sid)?;
    let verbose = q.get("verbose") == Some("true");
    let items: BTreeMap<String, ReplaceItem> = read_json(body, KeyFold::MapOfStructs).await?;
    let counts = state
        .isolated
        .in_session(&sid, move |v| {
            v.refuse_ephemeral_all(items.keys().map(String::as_str))?;
            items
                .into_iter()
                .map(|(p, i)| Ok((p.clone(), ifiles::replace(&p, &i.old, &i.new).map_err(fs_err)?)))
                .collect::<Result<Vec<_>, IsolatedError>>()
        })
        .await?;
    if !verbose {
        return Ok(empty_ok());
    }
    let map: BTreeMap<String, Value> = counts.into_iter().map(|(p, n)| (p, json!({ "replacedCount": n }))).collect();
    Ok(json_response(StatusCode::OK, &map))
}

async fn search(State(state): State<AppState>, sid: Sid, q: QueryPairs) -> Result<Response, ApiError> {
    let root = q.require("path")?.to_string();
    let pattern = q.get("pattern").unwrap_or("**").to_string();
    let v = state.isolated.in_session(&sid, move |_| ifiles::search(&root, &pattern).map_err(fs_err)).await?;
    Ok(json_response(StatusCode::OK, &v))
}

async fn list_dir(State(state): State<AppState>, sid: Sid, q: QueryPairs) -> Result<Response, ApiError> {
    let root = q.require("path")?.to_string();
    let depth = match q.get("depth") {
        None => 1,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| ApiError::bad_request(format!("invalid depth {d:?}: must be a non-negative integer")))?,
    };
    if depth == 0 {
        state.isolated.get(&sid)?;
        return Ok(json_response(StatusCode::OK, &Vec::<Value>::new()));
    }
    let v = state.isolated.in_session(&sid, move |_| ifiles::list(&root, depth).map_err(fs_err)).await?;
    Ok(json_response(StatusCode::OK, &v))
}

async fn download(
    State(state): State<AppState>,
    sid: Sid,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.isolated.get(&sid)?;
    let mgr = state.isolated.clone();
    let sid = sid.0;
    super::files::serve_download(&state, &q, &headers, |given| async move {
        mgr.in_session(&sid, move |_| crate::fs::download::open(&given).map_err(fs_err)).await.map_err(ApiError::from)
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UploadMetadata {
    path: String,
    mode: Option<i64>,
}

fn upload_error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// `POST …/files/upload`: `metadata`/`file` part pairs. Each file is spooled to the session's
/// host directory, then all are written inside the session once the form is complete.
async fn upload(State(state): State<AppState>, sid: Sid, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let session = state.isolated.get(&sid)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| upload_error(ErrorCode::InvalidFile, "multipart form is empty"))?;
    let _permit = state.transfers.admit()?;
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let form_err =
        |e: multer::Error| upload_error(ErrorCode::InvalidFile, format!("error parsing multipart form: {e}"));
    let mut metas: VecDeque<(String, u32)> = VecDeque::new();
    let mut files: VecDeque<std::fs::File> = VecDeque::new();
    while let Some(mut field) = form.next_field().await.map_err(form_err)? {
        match field.name() {
            Some("metadata") => {
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(form_err)? {
                    if bytes.len() + chunk.len() > METADATA_LIMIT {
                        return Err(upload_error(ErrorCode::InvalidFileMetadata, "metadata part is too large"));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                let m: UploadMetadata = serde_json::from_slice(&bytes)
                    .map_err(|e| upload_error(ErrorCode::InvalidFileMetadata, format!("invalid metadata: {e}")))?;
                if m.path.is_empty() {
                    return Err(upload_error(ErrorCode::InvalidFileMetadata, "metadata path is empty"));
                }
                let mode = match m.mode {
                    None | Some(0) => 0o644,
                    Some(w) => crate::fs::info::mode_from_wire(w)?,
                };
                metas.push_back((m.path, mode));
            }
            Some("file") => {
                let spool = session.spool_file().map_err(ApiError::from)?;
                let mut f = tokio::fs::File::from_std(spool.try_clone().map_err(|e| ApiError::runtime(e.to_string()))?);
                while let Some(chunk) = field.chunk().await.map_err(form_err)? {
                    tokio::io::AsyncWriteExt::write_all(&mut f, &chunk).await.map_err(|e| {
                        ApiError::from(crate::fs::FsError::io("spool", std::path::Path::new("upload"), e))
                    })?;
                }
                tokio::io::AsyncWriteExt::flush(&mut f).await.map_err(|e| ApiError::runtime(e.to_string()))?;
                files.push_back(spool);
            }
            _ => {}
        }
    }
    if metas.is_empty() {
        return Err(upload_error(ErrorCode::InvalidFileMetadata, "metadata file is missing"));
    }
    if metas.len() != files.len() {
        return Err(upload_error(
            ErrorCode::InvalidFile,
            format!("metadata and file count mismatch: {} vs {}", metas.len(), files.len()),
        ));
    }
    let items: Vec<Upload> =
        metas.into_iter().zip(files).map(|((path, mode), spooled)| Upload { path, mode, spooled }).collect();
    state
        .isolated
        .in_session(&sid, move |v| {
            v.refuse_ephemeral_all(items.iter().map(|u| u.path.as_str()))?;
            ifiles::write_uploads(v, items).map_err(fs_err)
        })
        .await?;
    Ok(empty_ok())
}
