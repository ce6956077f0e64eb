//! `/files/*` (§7.2–7.9): info, delete, permissions, mv, search, replace, upload, download.
//! Handlers parse the request, call one `fs` function (blocking work on the blocking pool) and
//! map the result. The multipart wire format of uploads is parsed here (multer) and each file's
//! bytes are handed to `fs::upload`, which streams them to disk.
//!
//! Transfers (downloads, uploads, long list/search answers) are admitted by the transfer limits
//! (`fs::transfer`, issue #13 finding 6): 429 beyond the cap, 408 for an upload whose client
//! stops sending, and a connection whose client stops reading is closed by its stall watch,
//! which the accept loop (`api::server`, `ConnIo`) puts on every connection.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::error::{empty_ok, json_response, ApiError, ErrorCode, JSON_CONTENT_TYPE};
use super::extract::{decode_lenient, KeyFold, QueryPairs};
use crate::fs::ops::{Move, Permission};
use crate::fs::range::{self, LineRange, RangePlan};
use crate::fs::temp::Scratch;
use crate::fs::transfer::TransferPermit;
use crate::fs::upload::{Received, SpooledFile, StagedSet, UploadSpec, UploadWriter};
use crate::fs::{self, download, identity, FsError, InfoStream};
use crate::state::AppState;

/// Largest JSON body accepted by the JSON routes here.
const JSON_LIMIT: usize = 32 * 1024 * 1024;
/// Largest metadata part of an upload.
const METADATA_LIMIT: usize = 64 * 1024;
/// At most this many metadata parts (or spooled files) may wait for their partner.
const MAX_UNPAIRED: usize = 1000;
/// After a failed upload, at most this much of the rest of the body is read and discarded ...
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// ... for at most this long.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// JSON arrays (list, search) are buffered up to this size before the response starts, so an
/// early error still gets a proper error status; longer results are streamed.
const ARRAY_PREFIX: usize = 256 * 1024;

/// Where the per-identity copies of the filesystem routes live (issue #24 part 4; upstream's
/// "filesystem execution identity", OpenSandbox SDK 1.1).
const IDENTITY_PREFIX: &str = "/v1/filesystem/{uid}/{gid}";

/// Every `/files*` and `/directories*` route again under `/v1/filesystem/{uid}/{gid}`, performed
/// with those credentials ([`fs::identity`]): same handlers, same limits; only the identity (and
/// so the kernel's permission checks, the owner of what is created, and how paths resolve)
/// differs.
pub fn identity_routes(r: Router<AppState>) -> Router<AppState> {
    let inner = [routes, super::directories::routes, super::grep::routes, super::upload_raw::routes]
        .into_iter()
        .fold(Router::new(), |r, add| add(r))
        .route_layer(middleware::from_fn(with_identity));
    r.nest(IDENTITY_PREFIX, inner)
}

/// Parses one id of the prefix: decimal digits only, 0..=4294967294.
fn parse_id(name: &str, raw: Option<&str>) -> Result<u32, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid {name} {:?}: must be a decimal integer between 0 and {}",
            raw.unwrap_or(""),
            identity::MAX_ID
        ))
    };
    let raw = raw.ok_or_else(bad)?;
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    raw.parse::<u64>().ok().filter(|v| *v <= u64::from(identity::MAX_ID)).map(|v| v as u32).ok_or_else(bad)
}

/// Resolves the identity of the prefix (passwd and groups, and a check that execd can take it),
/// then runs the route's handler in its [`identity::scope`]. A refused request's body is read
/// (bounded) before the answer, so that an upload still sending sees the error, not a reset.
async fn with_identity(params: Result<RawPathParams, RawPathParamsRejection>, req: Request, next: Next) -> Response {
    let ids = match &params {
        Ok(p) => {
            let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
            parse_id("uid", get("uid")).and_then(|uid| Ok((uid, parse_id("gid", get("gid"))?)))
        }
        Err(e) => Err(ApiError::bad_request(format!("invalid uid/gid: {e}"))),
    };
    let resolved = match ids {
        Ok((uid, gid)) => tokio::task::spawn_blocking(move || -> Result<Arc<identity::Identity>, ApiError> {
            let who = identity::Identity::lookup(uid, gid)?;
            who.probe()?;
            Ok(Arc::new(who))
        })
        .await
        .unwrap_or_else(|e| Err(ApiError::runtime(format!("internal error: {e}")))),
        Err(e) => Err(e),
    };
    match resolved {
        Ok(who) => identity::scope(who, next.run(req)).await,
        Err(e) => {
            drain_body(req.into_body()).await;
            e.into_response()
        }
    }
}

/// Reads and discards a request body, within the drain limits.
async fn drain_body(body: Body) {
    let mut stream = body.into_data_stream();
    let discard = async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > DRAIN_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/files", axum::routing::delete(remove_files))
        .route("/files/info", get(info))
        .route("/files/permissions", post(permissions))
        .route("/files/mv", post(move_files))
        .route("/files/search", get(search))
        .route("/files/replace", post(replace))
        .route("/files/upload", post(upload))
        .route("/files/download", get(download_file))
}

/// Reads a JSON body (bounded) and decodes it leniently (§2.5).
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(body: Body, fold: KeyFold) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, JSON_LIMIT).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit exceeded");
        if too_large {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                super::error::ErrorCode::PayloadTooLarge,
                format!("request body too large (limit {JSON_LIMIT} bytes)"),
            )
        } else {
            ApiError::invalid_body(e)
        }
    })?;
    decode_lenient(&bytes, fold)
}

/// Admits a streamed answer as a transfer (see [`json_array_response`]).
pub(super) fn admit_stream(state: &AppState) -> impl FnOnce() -> Result<TransferPermit, FsError> {
    let transfers = state.transfers.clone();
    move || transfers.admit()
}

/// `GET /directories/list`'s answer: each batch of FileInfo from the walk becomes one chunk of
/// the array (a batch is at most 256 entries, about 60 KiB).
pub(super) async fn json_array(
    mut rx: InfoStream,
    admit: impl FnOnce() -> Result<TransferPermit, FsError>,
) -> Response {
    let chunks = async_stream::stream! {
        let mut first = true;
        while let Some(item) = rx.recv().await {
            let batch = match item {
                Ok(batch) => batch,
                Err(e) => {
                    yield Err(e);
                    break;
                }
            };
            let mut chunk = Vec::with_capacity(batch.len() * 256);
            for info in &batch {
                if !std::mem::take(&mut first) {
                    chunk.push(b',');
                }
                // FileInfo has only strings and numbers: serialisation cannot fail.
                let _ = serde_json::to_writer(&mut chunk, info);
            }
            yield Ok(Bytes::from(chunk));
        }
    };
    json_array_response(chunks, admit).await
}

/// A JSON array response made of `chunks` of comma-separated elements, as a walk produces them.
/// The first [`ARRAY_PREFIX`] bytes are collected before answering, so errors found early become
/// a normal error response; after that the array is streamed, and an error cuts the body off
/// (the client sees a broken transfer, never a silently truncated but valid array). Dropping
/// the response stops the walk. A streamed answer is a transfer: `admit` must let it in (else
/// 429), and its permit is held until the stream ends, so that walkers waiting for slow readers
/// are bounded like downloads.
async fn json_array_response(
    chunks: impl Stream<Item = Result<Bytes, FsError>> + Send + 'static,
    admit: impl FnOnce() -> Result<TransferPermit, FsError>,
) -> Response {
    let mut chunks = Box::pin(chunks);
    let mut buf = Vec::with_capacity(ARRAY_PREFIX + 80 * 1024);
    buf.push(b'[');
    while buf.len() < ARRAY_PREFIX {
        match chunks.next().await {
            None => {
                buf.push(b']');
                return ([(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE))], buf).into_response();
            }
            Some(Err(e)) => return ApiError::from(e).into_response(),
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
        }
    }
    let permit = match admit() {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let stream = async_stream::stream! {
        let _permit = permit;
        yield Ok::<_, std::io::Error>(Bytes::from(buf));
        loop {
            match chunks.next().await {
                None => {
                    yield Ok(Bytes::from_static(b"]"));
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "walk failed after the response started; cutting it off");
                    yield Err(std::io::Error::other(e.to_string()));
                    break;
                }
                Some(Ok(chunk)) => yield Ok(chunk),
            }
        }
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE))], Body::from_stream(stream)).into_response()
}

/// `GET /files/info?path=A&path=B`: `{"A": FileInfo, "B": FileInfo}`.
async fn info(q: QueryPairs) -> Result<Response, ApiError> {
    let paths = q.all("path");
    let infos = fs::blocking(move || fs::info::info_many(&paths)).await?;
    let map: BTreeMap<String, fs::FileInfo> = infos.into_iter().collect();
    Ok(json_response(StatusCode::OK, &map))
}

/// `DELETE /files?path=..`.
async fn remove_files(q: QueryPairs) -> Result<Response, ApiError> {
    let paths = q.all("path");
    fs::blocking(move || fs::ops::remove_files(&paths)).await?;
    Ok(empty_ok())
}

/// `POST /files/permissions {"<path>": {"owner","group","mode"}}`.
async fn permissions(body: Body) -> Result<Response, ApiError> {
    let items: BTreeMap<String, Permission> = read_json(body, KeyFold::MapOfStructs).await?;
    let items: Vec<_> = items.into_iter().collect();
    fs::blocking(move || fs::ops::set_permissions(&items)).await?;
    Ok(empty_ok())
}

/// `POST /files/mv [{"src","dest"}]`.
async fn move_files(body: Body) -> Result<Response, ApiError> {
    let items: Vec<Move> = read_json(body, KeyFold::ArrayOfStructs).await?;
    fs::blocking(move || fs::ops::move_all(&items)).await?;
    Ok(empty_ok())
}

/// `GET /files/search?path=<dir>&pattern=<glob>` (pattern defaults to `**`).
async fn search(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let root = q.require("path")?;
    let pattern = q.get("pattern").unwrap_or("**");
    let mut rx = fs::search::search(root, pattern);
    // The search writes the JSON itself; its buffers go back to it once sent.
    let chunks = async_stream::stream! {
        while let Some(item) = rx.recv().await {
            yield item.map(Bytes::from_owner);
        }
    };
    Ok(json_array_response(chunks, admit_stream(&state)).await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplaceItem {
    old: String,
    new: String,
}

#[derive(serde::Serialize)]
struct ReplaceCount {
    #[serde(rename = "replacedCount")]
    replaced_count: u64,
}

/// `POST /files/replace?verbose=true {"<path>": {"old","new"}}`. An empty path anywhere is
/// refused before any file is touched.
async fn replace(State(state): State<AppState>, q: QueryPairs, body: Body) -> Result<Response, ApiError> {
    let verbose = q.get("verbose") == Some("true");
    let items: BTreeMap<String, ReplaceItem> = read_json(body, KeyFold::MapOfStructs).await?;
    let scratch = state.transfers.scratch().clone();
    let counts = fs::blocking(move || {
        fs::path::check_all(items.keys().map(String::as_str))?;
        items
            .into_iter()
            .map(|(p, item)| Ok((p.clone(), fs::replace::replace_in_file(&p, &item.old, &item.new, &scratch)?)))
            .collect::<Result<Vec<_>, FsError>>()
    })
    .await?;
    if !verbose {
        return Ok(empty_ok());
    }
    let map: BTreeMap<String, ReplaceCount> =
        counts.into_iter().map(|(p, n)| (p, ReplaceCount { replaced_count: n })).collect();
    Ok(json_response(StatusCode::OK, &map))
}

fn upload_error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn form_error(e: multer::Error) -> ApiError {
    // The server's request-body stall deadline (`api::server`) shows through multer as a read
    // failure: that is the client's stall, 408 like the transfer's own.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(c) = cause {
        if let Some(stalled) = c.downcast_ref::<super::server::BodyStalled>() {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout, stalled.to_string());
        }
        cause = c.source();
    }
    upload_error(ErrorCode::InvalidFile, format!("error parsing multipart form: {e}"))
}

/// The metadata part of an upload.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UploadMetadata {
    path: String,
    owner: Option<String>,
    group: Option<String>,
    mode: i64,
}

async fn read_metadata(mut field: multer::Field<'_>) -> Result<UploadSpec, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        if bytes.len() + chunk.len() > METADATA_LIMIT {
            return Err(upload_error(ErrorCode::InvalidFileMetadata, "metadata part is too large"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let meta: UploadMetadata = decode_lenient(&bytes, KeyFold::Struct)
        .map_err(|e| upload_error(ErrorCode::InvalidFileMetadata, format!("invalid metadata: {}", e.message)))?;
    // Also a path that expands to nothing (`$UNSET_OR_EMPTY`): it would mean execd's cwd.
    if meta.path.is_empty() || fs::path::expand(&meta.path).is_empty() {
        return Err(upload_error(ErrorCode::InvalidFileMetadata, "metadata path is empty"));
    }
    Ok(UploadSpec { path: meta.path, perm: Permission { owner: meta.owner, group: meta.group, mode: meta.mode } })
}

/// `POST /files/upload`: multipart `metadata`/`file` pairs (paired by index), each file streamed
/// to a temporary file; all are renamed into place once the whole form is read and valid
/// (DECISIONS D33, issue #13 finding 10). Chunked bodies work. A transfer: 429 beyond the cap,
/// 408 when the client stops sending for the stall timeout.
async fn upload(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| upload_error(ErrorCode::InvalidFile, "multipart form is empty"))?;
    let _permit = state.transfers.admit()?;
    let (stream, stall) = state.transfers.stall_guard(body.into_data_stream());
    let mut form = multer::Multipart::new(stream, boundary);
    let result = receive_parts(&mut form, state.transfers.scratch()).await;
    if stall.stalled() {
        return Err(FsError::Stalled(state.transfers.limits().stall_timeout).into());
    }
    if result.is_err() {
        drain(form).await;
    }
    result
}

/// After an error, reads (and discards) what is left of the body, within limits, so that a
/// client still sending gets to read our error answer instead of a reset connection.
async fn drain(mut form: multer::Multipart<'static>) {
    let mut drained = 0usize;
    let discard = async {
        while let Ok(Some(mut field)) = form.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                drained += chunk.len();
                if drained > DRAIN_LIMIT {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Reads every part, writing files as they arrive (each to a temporary file), checks the pairing
/// at the end, and only then moves the files into place. Any error drops the staged files.
async fn receive_parts(form: &mut multer::Multipart<'static>, scratch: &Arc<Scratch>) -> Result<Response, ApiError> {
    let mut pending_meta: VecDeque<UploadSpec> = VecDeque::new();
    let mut pending_files: VecDeque<SpooledFile> = VecDeque::new();
    let mut staged = StagedSet::default();
    let (mut metas, mut files, mut parts) = (0usize, 0usize, 0usize);
    while let Some(mut field) = form.next_field().await.map_err(form_error)? {
        parts += 1;
        match field.name() {
            // A metadata part must be a file part (have a filename), as upstream.
            Some("metadata") if field.file_name().is_some() => {
                metas += 1;
                let spec = read_metadata(field).await?;
                match pending_files.pop_front() {
                    Some(spooled) => {
                        let scratch = scratch.clone();
                        staged.push(fs::blocking(move || spooled.stage(&spec, &scratch)).await?).await?
                    }
                    None if pending_meta.len() >= MAX_UNPAIRED => {
                        return Err(upload_error(ErrorCode::InvalidFile, "too many metadata parts without a file"))
                    }
                    None => pending_meta.push_back(spec),
                }
            }
            Some("file") => {
                files += 1;
                let mut writer = match pending_meta.pop_front() {
                    Some(spec) => UploadWriter::to_target(spec, scratch).await?,
                    None if pending_files.len() >= MAX_UNPAIRED => {
                        return Err(upload_error(ErrorCode::InvalidFile, "too many file parts without metadata"))
                    }
                    None => UploadWriter::to_spool(scratch).await?,
                };
                // An error here drops the writer, and with it the temporary file.
                while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                    writer.write(chunk).await?;
                }
                match writer.finish().await? {
                    Received::Staged(s) => staged.push(s).await?,
                    Received::Spooled(s) => pending_files.push_back(s),
                }
            }
            _ => while field.chunk().await.map_err(form_error)?.is_some() {},
        }
    }
    if parts == 0 {
        return Err(upload_error(ErrorCode::InvalidFile, "multipart form is empty"));
    }
    if metas == 0 {
        return Err(upload_error(ErrorCode::InvalidFileMetadata, "metadata file is missing"));
    }
    if files == 0 {
        return Err(upload_error(ErrorCode::InvalidFileContent, "file is missing"));
    }
    if metas != files {
        return Err(upload_error(
            ErrorCode::InvalidFile,
            format!("metadata and file count mismatch: {metas} vs {files}"),
        ));
    }
    // Every pair is complete and valid: only now is any target replaced.
    fs::blocking(move || staged.commit()).await?;
    Ok(empty_ok())
}

fn range_not_satisfiable(message: String, size: Option<u64>) -> Response {
    let mut resp = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::Unknown, message).into_response();
    if let Some(size) = size {
        if let Ok(v) = HeaderValue::from_str(&range::unsatisfied_range(size)) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// `GET /files/download?path=..` with optional `Range` (DECISIONS D34), or with `offset`/`limit`
/// for a line range (issue #24 part 3, upstream 1.0.19): `text/plain` with just those lines,
/// never combined with a non-empty `Range` (400). A transfer: 429 beyond the cap; the
/// connection's stall watch ends it if the client stops reading.
async fn download_file(State(state): State<AppState>, q: QueryPairs, headers: HeaderMap) -> Result<Response, ApiError> {
    serve_download(&state, &q, &headers, |given| async move {
        fs::blocking(move || download::open(&given)).await.map_err(ApiError::from)
    })
    .await
}

/// The download answer (line reads, ranges, headers) for a file that `open` opens from the
/// `path` parameter; `/v1/isolated` opens it inside a session's mount namespace.
pub(super) async fn serve_download<F, Fut>(
    state: &AppState,
    q: &QueryPairs,
    headers: &HeaderMap,
    open: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<download::Download, ApiError>>,
{
    let given = q.require("path")?.to_string();
    let (offset, limit) = (q.get("offset"), q.get("limit"));
    let lines = LineRange::wanted(offset, limit);
    // Upstream's order: the conflict is refused before the file is opened, the values are
    // checked after (a bad value on a missing file is a 404).
    if lines && headers.get(header::RANGE).is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request(
            "line-based reading (offset/limit) and byte range (Range header) are mutually exclusive",
        ));
    }
    let permit = state.transfers.admit()?;
    let dl = open(given).await?;
    if lines {
        let range = LineRange::parse(offset, limit).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        let stall = state.transfers.limits().stall_timeout;
        let body = Body::from_stream(download::stream_lines(dl, range, permit, stall));
        return Ok((StatusCode::OK, h, body).into_response());
    }
    let size = dl.size;
    let range_header = match headers.get(header::RANGE).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return Ok(range_not_satisfiable("invalid range: not ASCII".into(), None)),
    };
    let plan = match range::plan(range_header, size) {
        Ok(p) => p,
        Err(e) => return Ok(range_not_satisfiable(e.to_string(), None)),
    };
    let (status, start) = match plan {
        RangePlan::Full => (StatusCode::OK, 0),
        RangePlan::Partial { start, .. } => (StatusCode::PARTIAL_CONTENT, start),
        RangePlan::Unsatisfiable => {
            return Ok(range_not_satisfiable(
                format!("invalid range: no satisfiable range in {:?} for size {size}", range_header.unwrap_or("")),
                Some(size),
            ))
        }
    };
    let len = plan.len(size);
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Ok(v) = HeaderValue::from_str(&download::content_disposition(&dl.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(dl.modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let RangePlan::Partial { start, end } = plan {
        if let Ok(v) = HeaderValue::from_str(&range::content_range(start, end, size)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    let stall = state.transfers.limits().stall_timeout;
    let body = Body::from_stream(download::stream(dl, start, len, permit, stall));
    Ok((status, h, body).into_response())
}
