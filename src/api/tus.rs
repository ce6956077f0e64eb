//! `/files/tus`: the tus 1.0 resumable upload protocol (EXTENSIONS X33; <https://tus.io/protocols/resumable-upload>)
//! with the creation, creation-with-upload, termination, checksum (sha1, sha256) and expiration
//! extensions. The domain side (partial files, records, expiry) is [`crate::fs::tus`].
//!
//! - `OPTIONS /files/tus`: what the server supports (no `Tus-Resumable` needed).
//! - `POST /files/tus` with `Upload-Length` and `Upload-Metadata` (base64 `path`, required;
//!   optional `mode` in the wire form of the other routes, `644`): `201` with `Location:
//!   tus/<id>`. The location is relative on purpose: resolved against the creation URL it stays
//!   under whatever prefix the client used (`/proxy/<port>/files/tus` → `/proxy/<port>/files/tus/<id>`),
//!   which an absolute path would lose. A body of type `application/offset+octet-stream` is the
//!   first chunk (creation-with-upload).
//! - `HEAD /files/tus/{id}`: `Upload-Offset`, `Upload-Length`, `Upload-Metadata`, `Upload-Expires`,
//!   `Cache-Control: no-store`.
//! - `PATCH /files/tus/{id}` (`application/offset+octet-stream`): `Upload-Offset` must equal the
//!   upload's (else 409); an `Upload-Checksum` is verified over the chunk (460, chunk discarded).
//!   `204` with the new offset; the last chunk moves the file into place.
//! - `DELETE /files/tus/{id}`: termination, `204`.
//!
//! Every answer carries `Tus-Resumable: 1.0.0`; a request (other than OPTIONS) without that
//! version is refused with 412 and `Tus-Version`. Errors have the usual `{code, message}` body.
//! Writes are transfers (429 beyond `--max-transfers`, 408 when the client stalls).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::Router;
use base64::Engine;
use futures_util::StreamExt;

use super::error::ApiError;
use crate::fs::tus::{Algorithm, Checksum, NewUpload, Status, TusError, TUS_EXTENSIONS, TUS_VERSION};
use crate::fs::FsError;
use crate::state::AppState;

/// The content type of every chunk.
const CHUNK_TYPE: &str = "application/offset+octet-stream";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION_H: HeaderName = HeaderName::from_static("tus-version");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    // The protocol headers on these two routes only (the router given holds others).
    let tus = || middleware::from_fn(tus_headers);
    r.route("/files/tus", post(create).options(options).route_layer(tus()))
        .route("/files/tus/{id}", patch(append).head(head).delete(terminate).route_layer(tus()))
}

/// Checks the client's protocol version (412 otherwise, OPTIONS exempt) and puts
/// `Tus-Resumable` on every answer.
async fn tus_headers(req: Request, next: Next) -> Response {
    let version_ok = req.method() == Method::OPTIONS
        || req.headers().get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok()).map(str::trim) == Some(TUS_VERSION);
    let mut resp = if version_ok {
        next.run(req).await
    } else {
        let mut r = ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            super::error::ErrorCode::UnsupportedVersion,
            format!("unsupported tus version: send Tus-Resumable: {TUS_VERSION}"),
        )
        .into_response();
        r.headers_mut().insert(TUS_VERSION_H, HeaderValue::from_static(TUS_VERSION));
        r
    };
    resp.headers_mut().insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    resp
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// `OPTIONS /files/tus`.
async fn options() -> Response {
    let mut h = HeaderMap::new();
    h.insert(TUS_VERSION_H, HeaderValue::from_static(TUS_VERSION));
    if let Ok(v) = HeaderValue::from_str(&TUS_EXTENSIONS.join(",")) {
        h.insert(HeaderName::from_static("tus-extension"), v);
    }
    h.insert(HeaderName::from_static("tus-checksum-algorithm"), HeaderValue::from_static("sha1,sha256"));
    h.insert(HeaderName::from_static("tus-max-size"), HeaderValue::from(crate::fs::tus::MAX_SIZE));
    (StatusCode::NO_CONTENT, h).into_response()
}

/// A header's value as a u64 (digits only), if present.
fn u64_header(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let text = v.to_str().unwrap_or("").trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("invalid {name} {text:?}: expected a non-negative integer")));
    }
    text.parse().map(Some).map_err(|_| bad(format!("invalid {name} {text:?}: out of range")))
}

/// Parses `Upload-Metadata`: `key base64,key base64,key` (RFC 4648 standard alphabet).
pub fn parse_metadata(raw: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().unwrap_or_default();
        let value = match parts.next() {
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| format!("Upload-Metadata value of {key:?} is not base64: {e}"))?,
            None => Vec::new(),
        };
        if parts.next().is_some() {
            return Err(format!("Upload-Metadata pair {pair:?} has more than a key and a value"));
        }
        if out.iter().any(|(k, _): &(String, Vec<u8>)| k == key) {
            return Err(format!("Upload-Metadata key {key:?} given twice"));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, ApiError> {
    let Some(v) = headers.get(&UPLOAD_CHECKSUM) else { return Ok(None) };
    let text = v.to_str().unwrap_or("").trim();
    let (alg, digest) = text.split_once(' ').ok_or_else(|| bad("Upload-Checksum must be \"<algorithm> <base64>\""))?;
    let algorithm = Algorithm::parse(alg.trim())
        .ok_or_else(|| bad(format!("unsupported checksum algorithm {alg:?}: use sha1 or sha256")))?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|e| bad(format!("Upload-Checksum digest is not base64: {e}")))?;
    Ok(Some(Checksum { algorithm, digest }))
}

fn is_chunk(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(CHUNK_TYPE))
}

/// `Upload-Offset`, and `Upload-Expires` while the upload is open.
fn progress_headers(h: &mut HeaderMap, s: &Status) {
    h.insert(UPLOAD_OFFSET, HeaderValue::from(s.offset));
    if !s.complete {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(s.expires)) {
            h.insert(UPLOAD_EXPIRES, v);
        }
    }
}

/// `POST /files/tus`: creation (and creation-with-upload).
async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    if headers.contains_key("upload-defer-length") {
        return Err(bad("Upload-Defer-Length is not supported: send Upload-Length"));
    }
    let length = u64_header(&headers, &UPLOAD_LENGTH)?.ok_or_else(|| bad("Upload-Length is required"))?;
    let raw = headers.get(&UPLOAD_METADATA).map(|v| v.to_str().unwrap_or("\u{0}")).unwrap_or("");
    if raw.contains('\u{0}') {
        return Err(bad("Upload-Metadata must be ASCII"));
    }
    let meta = parse_metadata(raw).map_err(bad)?;
    let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_slice());
    let path = get("path").ok_or_else(|| bad("Upload-Metadata must carry the target as `path` (base64)"))?;
    let path = String::from_utf8(path.to_vec()).map_err(|_| bad("Upload-Metadata `path` is not UTF-8"))?;
    if path.is_empty() || crate::fs::path::expand(&path).is_empty() {
        return Err(bad("Upload-Metadata `path` is empty"));
    }
    let mode = match get("mode") {
        None => None,
        Some(m) => {
            let text = std::str::from_utf8(m).unwrap_or("").trim();
            Some(
                text.parse::<i64>()
                    .map_err(|_| bad(format!("Upload-Metadata `mode` {text:?} is not an octal mode")))?,
            )
        }
    };
    let with_data = is_chunk(&headers);
    let sum = if with_data { checksum(&headers)? } else { None };
    let declared = u64_header(&headers, &header::CONTENT_LENGTH)?;
    let permit = if with_data && declared != Some(0) { Some(state.transfers.admit()?) } else { None };
    let (id, mut status) =
        state.tus.create(NewUpload { path, mode, length, metadata: raw.to_string() }).await.map_err(ApiError::from)?;
    if with_data && !status.complete {
        let (stream, stall) = body_stream(&state, body);
        match state.tus.append(&id, 0, declared, sum, stream).await {
            Ok(s) => status = s,
            Err(e) => {
                // The upload exists: the client learns its offset from HEAD and resumes.
                tracing::info!(error = %e, upload = %id, stalled = stall.stalled(), "first chunk of a creation failed");
                if let Ok(s) = state.tus.status(&id).await {
                    status = s;
                }
            }
        }
    }
    drop(permit);
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("tus/{id}")) {
        h.insert(header::LOCATION, v);
    }
    progress_headers(&mut h, &status);
    Ok((StatusCode::CREATED, h).into_response())
}

/// The request body, guarded against stalls, with errors as [`TusError`].
fn body_stream(
    state: &AppState,
    body: Body,
) -> (
    impl futures_util::Stream<Item = Result<bytes::Bytes, TusError>> + Send + Unpin + 'static,
    crate::fs::transfer::StallFlag,
) {
    let (stream, flag) = state.transfers.stall_guard(body.into_data_stream());
    let stall = state.transfers.limits().stall_timeout;
    let stream = stream.map(move |r| {
        r.map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => TusError::Fs(FsError::Stalled(stall)),
            _ => TusError::Invalid(format!("error reading the request body: {e}")),
        })
    });
    (stream, flag)
}

/// `HEAD /files/tus/{id}`.
async fn head(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match state.tus.status(&id).await {
        Ok(s) => {
            progress_headers(&mut h, &s);
            h.insert(UPLOAD_LENGTH, HeaderValue::from(s.length));
            if !s.metadata.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&s.metadata) {
                    h.insert(UPLOAD_METADATA, v);
                }
            }
            (StatusCode::OK, h).into_response()
        }
        Err(e) => {
            let mut r = ApiError::from(e).into_response();
            r.headers_mut().extend(h);
            r
        }
    }
}

/// `PATCH /files/tus/{id}`.
async fn append(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_chunk(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            super::error::ErrorCode::InvalidRequestBody,
            format!("a chunk must have Content-Type: {CHUNK_TYPE}"),
        ));
    }
    let offset = u64_header(&headers, &UPLOAD_OFFSET)?.ok_or_else(|| bad("Upload-Offset is required"))?;
    let sum = checksum(&headers)?;
    let declared = u64_header(&headers, &header::CONTENT_LENGTH)?;
    let _permit = state.transfers.admit()?;
    let (stream, _stall) = body_stream(&state, body);
    let status = state.tus.append(&id, offset, declared, sum, stream).await?;
    let mut h = HeaderMap::new();
    progress_headers(&mut h, &status);
    Ok((StatusCode::NO_CONTENT, h).into_response())
}

/// `DELETE /files/tus/{id}`: termination.
async fn terminate(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    state.tus.terminate(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x33_metadata_parses_pairs_and_refuses_junk() {
        let m = parse_metadata("path L3RtcC94,mode NjQ0, flag").unwrap();
        assert_eq!(m[0], ("path".to_string(), b"/tmp/x".to_vec()));
        assert_eq!(m[1], ("mode".to_string(), b"644".to_vec()));
        assert_eq!(m[2], ("flag".to_string(), Vec::new()));
        assert!(parse_metadata("path !!!").is_err());
        assert!(parse_metadata("path a b c").is_err());
        assert!(parse_metadata("path L3RtcC94,path L3RtcC94").is_err());
        assert!(parse_metadata("").unwrap().is_empty());
    }
}
