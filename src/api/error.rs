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
            IsolatedError::Unavailable(_) | IsolatedError::Setup(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable)
            }
            IsolatedError::NotSupported(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotSupported),
            IsolatedError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestBody),
            IsolatedError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::SessionNotFound),
            IsolatedError::Gone(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            IsolatedError::ReadOnly(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            IsolatedError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests),
            IsolatedError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError),
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
            WatchError::PermissionDenied(_) => (StatusCode::FORBIDDEN, ErrorCode::PermissionDenied),
            WatchError::TooMany(_) | WatchError::KernelLimit(_) => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyWatches)
            }
            WatchError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotSupported),
            WatchError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::RuntimeError),
            WatchError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::RuntimeError),
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
}
