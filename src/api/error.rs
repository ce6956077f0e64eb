//! The one place where errors become HTTP: [`ApiError`] is `{code, message}` JSON with a status,
//! and every domain error enum is mapped to it here (`impl From<XxxError> for ApiError`).
//! 5xx causes are logged; the client gets a stable code and a message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Error codes on the wire (upstream's strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequestBody,
    MissingQuery,
    RuntimeError,
    InvalidFile,
    InvalidFileContent,
    InvalidFileMetadata,
    FileNotFound,
    ContextNotFound,
    NotSupported,
    Unknown,
    Unauthorized,
    NotFound,
    AlreadyConnected,
    Conflict,
    InsufficientStorage,
    PayloadTooLarge,
    BadGateway,
    TooManyRequests,
    RequestTimeout,
    /// X23: limits asked for, no writable cgroup controller.
    LimitsUnavailable,
    SessionNotFound,
    ServiceUnavailable,
    Forbidden,
    PermissionDenied,
    /// X53: a bad `running`, `limit` or `cursor` on `GET /command` (upstream PR #1309).
    InvalidQuery,
    /// X11: the command has no open stdin.
    StdinClosed,
    /// X31: an archive entry that would escape the target directory (or is a device node).
    UnsafeArchiveEntry,
    /// X34: the body's digest differs from `Content-Digest`.
    DigestMismatch,
    /// X33: a tus chunk's checksum differs from `Upload-Checksum` (460).
    ChecksumMismatch,
    /// X33: the request's `Tus-Resumable` is not 1.0.0 (412).
    UnsupportedVersion,
    /// X40: the watch cap, or a kernel inotify limit, is reached.
    TooManyWatches,
    /// X40: no watch with that id (distinct from the router's `NOT_FOUND`).
    WatchNotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequestBody => "INVALID_REQUEST_BODY",
            ErrorCode::MissingQuery => "MISSING_QUERY",
            ErrorCode::RuntimeError => "RUNTIME_ERROR",
            ErrorCode::InvalidFile => "INVALID_FILE",
            ErrorCode::InvalidFileContent => "INVALID_FILE_CONTENT",
            ErrorCode::InvalidFileMetadata => "INVALID_FILE_METADATA",
            ErrorCode::FileNotFound => "FILE_NOT_FOUND",
            ErrorCode::ContextNotFound => "CONTEXT_NOT_FOUND",
            ErrorCode::NotSupported => "NOT_SUPPORTED",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyConnected => "ALREADY_CONNECTED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::InsufficientStorage => "INSUFFICIENT_STORAGE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::BadGateway => "BAD_GATEWAY",
            ErrorCode::TooManyRequests => "TOO_MANY_REQUESTS",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::LimitsUnavailable => "LIMITS_UNAVAILABLE",
            ErrorCode::SessionNotFound => "SESSION_NOT_FOUND",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::InvalidQuery => "INVALID_QUERY",
            ErrorCode::StdinClosed => "STDIN_CLOSED",
            ErrorCode::UnsafeArchiveEntry => "UNSAFE_ARCHIVE_ENTRY",
            ErrorCode::DigestMismatch => "DIGEST_MISMATCH",
            ErrorCode::ChecksumMismatch => "CHECKSUM_MISMATCH",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::TooManyWatches => "TOO_MANY_WATCHES",
            ErrorCode::WatchNotFound => "WATCH_NOT_FOUND",
        }
    }
}

/// An HTTP error answer: status plus `{code, message}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    /// 400 `INVALID_REQUEST_BODY`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody, message)
    }
    /// 400 `MISSING_QUERY` for a missing required query parameter.
    pub fn missing_query(name: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::MissingQuery, format!("missing query parameter '{name}'"))
    }
    /// 500 `RUNTIME_ERROR`.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError, message)
    }
    /// A JSON body decode failure, worded as upstream.
    pub fn invalid_body(err: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("error parsing request, MAYBE invalid body format. {err}"))
    }
    /// A validation failure, worded as upstream.
    pub fn validation(err: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("invalid request, validation error {err}"))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
    /// Only on 401 (DECISIONS D5): upstream sends `{"error": ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `application/json; charset=utf-8`, as upstream.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// Serialises `value` as a JSON response with upstream's content type.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE))], body).into_response()
        }
        Err(e) => ApiError::runtime(format!("error encoding response: {e}")).into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code.as_str(), message = %self.message, "request failed");
        }
        let error = (self.code == ErrorCode::Unauthorized).then_some(self.message.as_str());
        let body = ErrorBody { code: self.code.as_str(), message: &self.message, error };
        json_response(self.status, &body)
    }
}

/// An empty 200 with `Content-Length: 0` and no content type (upstream; openapi-fetch needs it).
pub fn empty_ok() -> Response {
    (StatusCode::OK, [(header::CONTENT_LENGTH, HeaderValue::from_static("0"))]).into_response()
}

// ---- domain error mappings (one impl per domain error enum; keep them all in this file) ----

impl From<crate::fs::FsError> for ApiError {
    fn from(e: crate::fs::FsError) -> Self {
        use crate::fs::FsError;
        let (status, code) = match &e {
            FsError::NotFound { .. } => (StatusCode::NOT_FOUND, ErrorCode::FileNotFound),
            FsError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::InsufficientStorage),
            FsError::Invalid(_) | FsError::RootRefused(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody),
            FsError::Io { .. } | FsError::Failed(_) | FsError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError)
            }
            FsError::TooManyTransfers(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests),
            FsError::Stalled(_) => (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout),
            FsError::PermissionDenied { .. } => (StatusCode::FORBIDDEN, ErrorCode::PermissionDenied),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Archives (X30, X31): an unsafe entry 400 `UNSAFE_ARCHIVE_ENTRY`, a malformed or truncated
/// archive 400 `INVALID_FILE`, a type clash with what is in the target 409 `CONFLICT`, file errors
/// as `/files` (ENOSPC 507).
impl From<crate::fs::archive::ArchiveError> for ApiError {
    fn from(e: crate::fs::archive::ArchiveError) -> Self {
        use crate::fs::archive::ArchiveError;
        let (status, code) = match e {
            ArchiveError::Fs(fs) => return ApiError::from(fs),
            ArchiveError::Unsafe { .. } => (StatusCode::BAD_REQUEST, ErrorCode::UnsafeArchiveEntry),
            ArchiveError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidFile),
            ArchiveError::Conflict { .. } => (StatusCode::CONFLICT, ErrorCode::Conflict),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Resumable uploads (X33): unknown upload 404, offset mismatch 409, checksum mismatch 460, a
/// chunk too long 413, too many uploads 429, a busy upload 423; filesystem errors as usual.
impl From<crate::fs::tus::TusError> for ApiError {
    fn from(e: crate::fs::tus::TusError) -> Self {
        use crate::fs::tus::TusError;
        let (status, code) = match &e {
            TusError::Fs(_) => {
                let TusError::Fs(fs) = e else { unreachable!() };
                return fs.into();
            }
            TusError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::FileNotFound),
            TusError::OffsetMismatch { .. } => (StatusCode::CONFLICT, ErrorCode::Conflict),
            TusError::ChecksumMismatch { .. } => {
                (StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST), ErrorCode::ChecksumMismatch)
            }
            TusError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody),
            TusError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            TusError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests),
            TusError::Busy(_) => (StatusCode::LOCKED, ErrorCode::Conflict),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Per-identity filesystem routes: ids out of range 400; an execd that cannot take the
/// credentials 503 `NOT_SUPPORTED` (upstream's answer when identity switching is unavailable).
impl From<crate::fs::identity::IdentityError> for ApiError {
    fn from(e: crate::fs::identity::IdentityError) -> Self {
        use crate::fs::identity::IdentityError;
        match &e {
            IdentityError::Invalid(_) => ApiError::bad_request(e.to_string()),
            IdentityError::Unavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotSupported, e.to_string())
            }
        }
    }
}

/// Command errors (reference §4): validation 400, unknown id 404 `INVALID_REQUEST_BODY` (sic),
/// interrupt of a finished or unknown id 500. `/logs` maps every failure to 400 itself.
impl From<crate::command::CommandError> for ApiError {
    fn from(e: crate::command::CommandError) -> Self {
        use crate::command::CommandError;
        match &e {
            CommandError::Invalid(m) => ApiError::validation(m),
            CommandError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::InvalidRequestBody, e.to_string())
            }
            CommandError::NoLog(_) => ApiError::bad_request(e.to_string()),
            CommandError::LimitsUnavailable(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::LimitsUnavailable, e.to_string())
            }
            CommandError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RuntimeError, e.to_string())
            }
            CommandError::StdinClosed(_) => ApiError::new(StatusCode::CONFLICT, ErrorCode::StdinClosed, e.to_string()),
            CommandError::StdinTimeout { .. } => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout, e.to_string())
            }
            CommandError::StdinBody(_) => ApiError::bad_request(e.to_string()),
            CommandError::Finished(_) => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string()),
            CommandError::NoTerminal(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::NotSupported, e.to_string())
            }
            CommandError::StdinWrite { .. }
            | CommandError::NotRunning(_)
            | CommandError::NoSuchSession
            | CommandError::Journal { .. }
            | CommandError::Read { .. } => ApiError::runtime(e.to_string()),
        }
    }
}

/// Session errors (reference §5): unknown id on delete 404 `CONTEXT_NOT_FOUND`, on run 500 (C81);
/// a busy session 409 (D21); bad run input 400; the rest 500.
impl From<crate::session::SessionError> for ApiError {
    fn from(e: crate::session::SessionError) -> Self {
        use crate::session::SessionError;
        match &e {
            SessionError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ContextNotFound, e.to_string())
            }
            SessionError::Busy { .. } => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string()),
            SessionError::EmptyCommand | SessionError::CwdMissing { .. } | SessionError::CwdNotDir { .. } => {
                ApiError::validation(&e)
            }
            SessionError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RuntimeError, e.to_string())
            }
            SessionError::RunContextNotFound { .. }
            | SessionError::CreateDir { .. }
            | SessionError::Io { .. }
            | SessionError::NoBash
            | SessionError::Spawn(_) => ApiError::runtime(e.to_string()),
            SessionError::Limits(crate::cgroup::CgroupError::InvalidLimit { .. }) => {
                ApiError::validation(e.to_string())
            }
            SessionError::Limits(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::LimitsUnavailable, e.to_string())
            }
        }
    }
}

/// Proxy: a missing port is a missing path parameter (400 `MISSING_QUERY`), a bad port 400,
/// an unreachable upstream 502 `BAD_GATEWAY`.
impl From<crate::api::proxy::ProxyError> for ApiError {
    fn from(e: crate::api::proxy::ProxyError) -> Self {
        use crate::api::proxy::ProxyError;
        let (status, code) = match &e {
            ProxyError::MissingPort => (StatusCode::BAD_REQUEST, ErrorCode::MissingQuery),
            ProxyError::InvalidPort(_) | ProxyError::BadPath(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody)
            }
            ProxyError::Unreachable { .. } | ProxyError::TooDeep => (StatusCode::BAD_GATEWAY, ErrorCode::BadGateway),
            ProxyError::NotInitialised => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// PTY errors (reference §11): unknown session 404 `CONTEXT_NOT_FOUND`, a held session 409
/// `ALREADY_CONNECTED`, the rest 500 (503 while shutting down).
impl From<crate::pty::PtyError> for ApiError {
    fn from(e: crate::pty::PtyError) -> Self {
        use crate::pty::PtyError;
        let (status, code) = match &e {
            PtyError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::ContextNotFound),
            PtyError::AlreadyConnected(_) => (StatusCode::CONFLICT, ErrorCode::AlreadyConnected),
            PtyError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RuntimeError),
            PtyError::CreateDir { .. } | PtyError::Start(_) | PtyError::StdinWrite(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError)
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Metrics collection failures are 500 `RUNTIME_ERROR` (upstream); 503 while shutting down.
impl From<crate::metrics::MetricsError> for ApiError {
    fn from(e: crate::metrics::MetricsError) -> Self {
        let status = match e {
            crate::metrics::MetricsError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, ErrorCode::RuntimeError, format!("error collecting metrics: {e}"))
    }
}

/// Code interpreting (reference §6, D50): unknown context on get/delete 404 `CONTEXT_NOT_FOUND`;
/// a busy context 409 `CONFLICT` (before `init`, §18.8); bad input 400; shutting down 503; every
/// Jupyter failure (not configured, unreachable, no kernelspec, unknown run context) 500.
impl From<crate::code::CodeError> for ApiError {
    fn from(e: crate::code::CodeError) -> Self {
        use crate::code::CodeError;
        let (status, code) = match &e {
            CodeError::ContextNotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::ContextNotFound),
            CodeError::Busy(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            CodeError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody),
            CodeError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RuntimeError),
            CodeError::NotConfigured
            | CodeError::BadHost(_)
            | CodeError::Unreachable(_)
            | CodeError::Jupyter(_)
            | CodeError::Kernel(_)
            | CodeError::NoKernelSpec(_)
            | CodeError::UnsupportedLanguage(_)
            | CodeError::RunContextNotFound(_)
            | CodeError::CreateDir { .. } => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Isolated sessions (ISOLATED.md I3, I5, I8): unavailable host and setup failures 503
/// `SERVICE_UNAVAILABLE`, unsupported identity modes 503 `NOT_SUPPORTED`, unknown session or run
/// 404 `SESSION_NOT_FOUND`, writes into a read-only view 403 `FORBIDDEN`, file errors as `/files`.
impl From<crate::isolated::IsolatedError> for ApiError {
    fn from(e: crate::isolated::IsolatedError) -> Self {
        use crate::isolated::IsolatedError;
        let (status, code) = match &e {
            IsolatedError::Unavailable(_) | IsolatedError::Setup(_) | IsolatedError::SetupIo { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable)
            }
            IsolatedError::NotSupported(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotSupported),
            IsolatedError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody),
            IsolatedError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::SessionNotFound),
            IsolatedError::Gone(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            IsolatedError::ReadOnly(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            IsolatedError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests),
            IsolatedError::Internal(_) | IsolatedError::Io { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError)
            }
            IsolatedError::Fs(_) => {
                let IsolatedError::Fs(fs) = e else { unreachable!() };
                return ApiError::from(fs);
            }
        };
        let message = match &e {
            IsolatedError::Unavailable(m) if m.is_empty() => "isolation unavailable".to_string(),
            _ => e.to_string(),
        };
        ApiError::new(status, code, message)
    }
}

/// Inventory query errors (X53): 400 `INVALID_QUERY`, as upstream.
impl From<crate::command::inventory::InventoryError> for ApiError {
    fn from(e: crate::command::inventory::InventoryError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, e.to_string())
    }
}

/// File watches (X40–X42): unknown watch 404 `WATCH_NOT_FOUND`, missing directory 404
/// `FILE_NOT_FOUND`, not a directory or bad input 400, the watch cap and kernel inotify limits 429
/// `TOO_MANY_WATCHES`, no inotify 503 `NOT_SUPPORTED`.
impl From<crate::watch::WatchError> for ApiError {
    fn from(e: crate::watch::WatchError) -> Self {
        use crate::watch::WatchError;
        let (status, code) = match &e {
            WatchError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::WatchNotFound),
            WatchError::PathNotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::FileNotFound),
            WatchError::NotADirectory(_) | WatchError::Invalid(_) | WatchError::CursorAhead { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody)
            }
            WatchError::PermissionDenied { .. } => (StatusCode::FORBIDDEN, ErrorCode::PermissionDenied),
            WatchError::TooMany(_) | WatchError::KernelLimit(_) => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyWatches)
            }
            WatchError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotSupported),
            WatchError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RuntimeError),
            WatchError::Internal(_) | WatchError::Io { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError)
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_body_has_code_and_message() {
        let resp = ApiError::bad_request("nope").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], JSON_CONTENT_TYPE);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"code": "INVALID_REQUEST_BODY", "message": "nope"}));
    }

    #[tokio::test]
    async fn unauthorized_carries_error_key() {
        let resp = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "m").into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"code": "UNAUTHORIZED", "message": "m", "error": "m"}));
    }

    /// Every domain error variant, converted as handlers convert it: the status and code the
    /// client sees. One row per variant, so a new variant or a changed mapping shows up here.
    #[test]
    fn every_domain_error_maps_to_its_status_and_code() {
        use crate::code::CodeError;
        use crate::command::inventory::InventoryError;
        use crate::command::CommandError;
        use crate::fs::archive::ArchiveError;
        use crate::fs::identity::IdentityError;
        use crate::fs::tus::TusError;
        use crate::fs::FsError;
        use crate::isolated::IsolatedError;
        use crate::metrics::MetricsError;
        use crate::pty::PtyError;
        use crate::session::SessionError;
        use crate::watch::WatchError;
        use std::io;
        use std::time::Duration;

        let io = || io::Error::other("cause");
        let p = || "/x".to_string();
        let fs_not_found = || FsError::NotFound { op: "open", path: p(), source: io() };
        let rows: Vec<(ApiError, u16, &str)> = vec![
            // Files (reference §7; X33 uploads; identity routes).
            (fs_not_found().into(), 404, "FILE_NOT_FOUND"),
            (FsError::NoSpace { op: "write", path: p(), source: io() }.into(), 507, "INSUFFICIENT_STORAGE"),
            (FsError::PermissionDenied { op: "open", path: p(), source: io() }.into(), 403, "PERMISSION_DENIED"),
            (FsError::Io { op: "read", path: p(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (FsError::Invalid("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (FsError::RootRefused("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (FsError::Failed("m".into()).into(), 500, "RUNTIME_ERROR"),
            (FsError::Internal("m".into()).into(), 500, "RUNTIME_ERROR"),
            (FsError::TooManyTransfers(8).into(), 429, "TOO_MANY_REQUESTS"),
            (FsError::Stalled(Duration::from_secs(1)).into(), 408, "REQUEST_TIMEOUT"),
            (ArchiveError::Unsafe { entry: "../x".into(), reason: "r".into() }.into(), 400, "UNSAFE_ARCHIVE_ENTRY"),
            (ArchiveError::Invalid("m".into()).into(), 400, "INVALID_FILE"),
            (ArchiveError::Conflict { path: p(), reason: "r".into() }.into(), 409, "CONFLICT"),
            (ArchiveError::Fs(fs_not_found()).into(), 404, "FILE_NOT_FOUND"),
            (TusError::NotFound("u".into()).into(), 404, "FILE_NOT_FOUND"),
            (TusError::OffsetMismatch { current: 1, given: 2 }.into(), 409, "CONFLICT"),
            (TusError::ChecksumMismatch { algorithm: "sha1" }.into(), 460, "CHECKSUM_MISMATCH"),
            (TusError::Invalid("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (TusError::TooLarge("m".into()).into(), 413, "PAYLOAD_TOO_LARGE"),
            (TusError::TooMany(4).into(), 429, "TOO_MANY_REQUESTS"),
            (TusError::Busy("u".into()).into(), 423, "CONFLICT"),
            (TusError::Fs(fs_not_found()).into(), 404, "FILE_NOT_FOUND"),
            (IdentityError::Invalid("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (IdentityError::Unavailable { uid: 1, gid: 1, source: io() }.into(), 503, "NOT_SUPPORTED"),
            // Commands (reference §4, X10–X16, X20–X23, X53).
            (CommandError::Invalid("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (CommandError::NotFound("c".into()).into(), 404, "INVALID_REQUEST_BODY"),
            (CommandError::NotRunning("c".into()).into(), 500, "RUNTIME_ERROR"),
            (CommandError::NoSuchSession.into(), 500, "RUNTIME_ERROR"),
            (CommandError::NoLog("c".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (CommandError::Journal { id: "c".into(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (CommandError::Read { id: "c".into(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (CommandError::ShuttingDown.into(), 503, "RUNTIME_ERROR"),
            (CommandError::LimitsUnavailable("m".into()).into(), 400, "LIMITS_UNAVAILABLE"),
            (CommandError::StdinClosed("c".into()).into(), 409, "STDIN_CLOSED"),
            (CommandError::StdinTimeout { id: "c".into(), written: 1 }.into(), 408, "REQUEST_TIMEOUT"),
            (CommandError::StdinBody("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (CommandError::StdinWrite { id: "c".into(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (CommandError::Finished("c".into()).into(), 409, "CONFLICT"),
            (CommandError::NoTerminal("c".into()).into(), 400, "NOT_SUPPORTED"),
            (InventoryError::Limit(5000).into(), 400, "INVALID_QUERY"),
            (InventoryError::Cursor("m").into(), 400, "INVALID_QUERY"),
            // Sessions (reference §5, D21).
            (SessionError::NotFound { id: "s".into() }.into(), 404, "CONTEXT_NOT_FOUND"),
            (SessionError::RunContextNotFound { id: "s".into() }.into(), 500, "RUNTIME_ERROR"),
            (SessionError::Busy { id: "s".into(), waited_ms: 1 }.into(), 409, "CONFLICT"),
            (SessionError::EmptyCommand.into(), 400, "INVALID_REQUEST_BODY"),
            (SessionError::CwdMissing { path: p() }.into(), 400, "INVALID_REQUEST_BODY"),
            (SessionError::CwdNotDir { path: p() }.into(), 400, "INVALID_REQUEST_BODY"),
            (SessionError::CreateDir { path: p(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (SessionError::Io { op: "write", path: p(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (SessionError::NoBash.into(), 500, "RUNTIME_ERROR"),
            (SessionError::Spawn(crate::process::SpawnError::Pipe(io())).into(), 500, "RUNTIME_ERROR"),
            (SessionError::ShuttingDown.into(), 503, "RUNTIME_ERROR"),
            (SessionError::Limits(crate::cgroup::CgroupError::Unavailable("memory")).into(), 400, "LIMITS_UNAVAILABLE"),
            (
                SessionError::Limits(crate::cgroup::CgroupError::InvalidLimit { field: "cpu", reason: "r".into() })
                    .into(),
                400,
                "INVALID_REQUEST_BODY",
            ),
            // Proxy, PTY, metrics (reference §9–§11).
            (super::super::proxy::ProxyError::MissingPort.into(), 400, "MISSING_QUERY"),
            (super::super::proxy::ProxyError::InvalidPort("x".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (super::super::proxy::ProxyError::BadPath("x".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (super::super::proxy::ProxyError::Unreachable { port: 1, reason: "r".into() }.into(), 502, "BAD_GATEWAY"),
            (super::super::proxy::ProxyError::TooDeep.into(), 502, "BAD_GATEWAY"),
            (super::super::proxy::ProxyError::NotInitialised.into(), 500, "RUNTIME_ERROR"),
            (PtyError::NotFound("s".into()).into(), 404, "CONTEXT_NOT_FOUND"),
            (PtyError::AlreadyConnected("s".into()).into(), 409, "ALREADY_CONNECTED"),
            (PtyError::CreateDir { path: p(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (PtyError::Start(io()).into(), 500, "RUNTIME_ERROR"),
            (PtyError::StdinWrite(io()).into(), 500, "RUNTIME_ERROR"),
            (PtyError::ShuttingDown.into(), 503, "RUNTIME_ERROR"),
            (MetricsError::Read { path: p().into(), reason: "r".into() }.into(), 500, "RUNTIME_ERROR"),
            (MetricsError::Parse { path: p().into(), reason: "r".into() }.into(), 500, "RUNTIME_ERROR"),
            (MetricsError::Timeout(Duration::from_secs(1)).into(), 500, "RUNTIME_ERROR"),
            (MetricsError::ShuttingDown.into(), 503, "RUNTIME_ERROR"),
            // Code interpreting (reference §6, D50).
            (CodeError::NotConfigured.into(), 500, "RUNTIME_ERROR"),
            (CodeError::BadHost("h".into()).into(), 500, "RUNTIME_ERROR"),
            (CodeError::Unreachable("h".into()).into(), 500, "RUNTIME_ERROR"),
            (CodeError::Jupyter("m".into()).into(), 500, "RUNTIME_ERROR"),
            (CodeError::Kernel("m".into()).into(), 500, "RUNTIME_ERROR"),
            (CodeError::NoKernelSpec("cobol".into()).into(), 500, "RUNTIME_ERROR"),
            (CodeError::UnsupportedLanguage("bash".into()).into(), 500, "RUNTIME_ERROR"),
            (CodeError::Invalid("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (CodeError::ContextNotFound("c".into()).into(), 404, "CONTEXT_NOT_FOUND"),
            (CodeError::RunContextNotFound("c".into()).into(), 500, "RUNTIME_ERROR"),
            (CodeError::Busy("c".into()).into(), 409, "CONFLICT"),
            (CodeError::CreateDir { path: p().into(), source: io() }.into(), 500, "RUNTIME_ERROR"),
            (CodeError::ShuttingDown.into(), 503, "RUNTIME_ERROR"),
            // Isolated sessions (ISOLATED.md I3, I5, I8).
            (IsolatedError::Unavailable(String::new()).into(), 503, "SERVICE_UNAVAILABLE"),
            (IsolatedError::NotSupported("m".into()).into(), 503, "NOT_SUPPORTED"),
            (IsolatedError::Invalid("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (IsolatedError::NotFound("s".into()).into(), 404, "SESSION_NOT_FOUND"),
            (IsolatedError::Gone("s".into()).into(), 409, "CONFLICT"),
            (IsolatedError::ReadOnly("m".into()).into(), 403, "FORBIDDEN"),
            (IsolatedError::TooMany(4).into(), 429, "TOO_MANY_REQUESTS"),
            (IsolatedError::Setup("m".into()).into(), 503, "SERVICE_UNAVAILABLE"),
            (IsolatedError::SetupIo { what: "w", source: io() }.into(), 503, "SERVICE_UNAVAILABLE"),
            (IsolatedError::io("w", io()).into(), 500, "RUNTIME_ERROR"),
            (IsolatedError::Fs(fs_not_found()).into(), 404, "FILE_NOT_FOUND"),
            (IsolatedError::Internal("m".into()).into(), 500, "RUNTIME_ERROR"),
            // File watches (X40–X42).
            (WatchError::NotFound("w".into()).into(), 404, "WATCH_NOT_FOUND"),
            (WatchError::PathNotFound("p".into()).into(), 404, "FILE_NOT_FOUND"),
            (WatchError::NotADirectory("p".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (WatchError::Invalid("m".into()).into(), 400, "INVALID_REQUEST_BODY"),
            (WatchError::PermissionDenied { path: "p".into(), source: io() }.into(), 403, "PERMISSION_DENIED"),
            (WatchError::TooMany(4).into(), 429, "TOO_MANY_WATCHES"),
            (WatchError::KernelLimit("m".into()).into(), 429, "TOO_MANY_WATCHES"),
            (WatchError::CursorAhead { after: 2, cursor: 1 }.into(), 400, "INVALID_REQUEST_BODY"),
            (WatchError::Unavailable(io()).into(), 503, "NOT_SUPPORTED"),
            (WatchError::ShuttingDown.into(), 503, "RUNTIME_ERROR"),
            (WatchError::Internal("m".into()).into(), 500, "RUNTIME_ERROR"),
            (WatchError::Io { what: "w".into(), source: io() }.into(), 500, "RUNTIME_ERROR"),
        ];
        for (i, (err, status, code)) in rows.iter().enumerate() {
            assert_eq!((err.status.as_u16(), err.code.as_str()), (*status, *code), "row {i}: {err:?}");
            assert!(!err.message.trim().is_empty(), "row {i}: a message for the client: {err:?}");
        }
        // An unavailable isolation host without a reason still says something.
        let e: ApiError = IsolatedError::Unavailable(String::new()).into();
        assert_eq!(e.message, "isolation unavailable");
    }
}
