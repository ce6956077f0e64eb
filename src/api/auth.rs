//! Access-token middleware (`X-EXECD-ACCESS-TOKEN`), applied to every route, the 404 fallback and
//! the proxy alike (§2.2, DECISIONS D5, D51, D60).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The header SDKs send the token in.
pub const TOKEN_HEADER: &str = "x-execd-access-token";
/// Upstream's 401 text.
pub const UNAUTHORIZED_MESSAGE: &str = "Unauthorized: invalid or missing header X-EXECD-ACCESS-TOKEN";

/// Constant-time token comparison (D60). Length differences still return early, which leaks only
/// the length.
pub fn token_matches(configured: &str, given: &[u8]) -> bool {
    configured.as_bytes().ct_eq(given).into()
}

fn is_websocket_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether `path` is a WebSocket route that takes the token from the query (issue #13 finding 4):
/// the PTY socket `/pty/{id}/ws` and the WebSocket exec routes `/command/ws`, `/command/{id}/ws`
/// (X15), directly or through `/proxy/<execd's port>/`, and WebSockets of
/// other local apps through `/proxy/<port>/` (a browser cannot set headers on those either; the
/// proxy strips the parameter before forwarding). Besides these only the `/terminal` page takes it
/// (`api::terminal::page_takes_query_token`).
pub fn takes_query_token(path: &str, own_port: u16) -> bool {
    let mut path = path;
    if let Some(rest) = path.strip_prefix("/proxy/") {
        let (port, _) = rest.split_once('/').unwrap_or((rest, ""));
        match port.parse::<u16>() {
            Ok(p) if p == own_port => path = &rest[port.len()..],
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    let mut segs = path.strip_prefix('/').unwrap_or("").split('/');
    match (segs.next(), segs.next(), segs.next(), segs.next()) {
        (Some("pty"), Some(id), Some("ws"), None) => !id.is_empty(),
        // WebSocket exec (X15): `/command/ws` and `/command/{id}/ws`.
        (Some("command"), Some("ws"), None, None) => true,
        (Some("command"), Some(id), Some("ws"), None) => !id.is_empty(),
        _ => false,
    }
}

/// Browsers cannot set headers on a WebSocket (or on the address bar), so an upgrade and the
/// terminal page may carry `?access_token=` (D51, X70).
fn query_token(req: &Request) -> Option<String> {
    let q = req.uri().query()?;
    super::extract::url_decode_pairs(q).into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v)
}

/// Request extension marking a request that execd dispatches to itself after the outer request
/// passed this middleware (the proxy to execd's own port, `api::proxy`). Only server code can
/// insert extensions, so a client cannot forge it.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated;

/// Rejects the request with 401 unless the configured token (if any) is presented.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let configured = state.config.access_token.as_str();
    if configured.is_empty() || req.extensions().get::<Authenticated>().is_some() {
        return next.run(req).await;
    }
    let ok = match req.headers().get(TOKEN_HEADER) {
        Some(v) => token_matches(configured, v.as_bytes()),
        None => {
            let path = req.uri().path();
            let query_allowed = if is_websocket_upgrade(&req) {
                takes_query_token(path, state.config.port)
            } else {
                super::terminal::page_takes_query_token(req.method(), path, state.config.port)
            };
            query_allowed && query_token(&req).is_some_and(|t| token_matches(configured, t.as_bytes()))
        }
    };
    if ok {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, UNAUTHORIZED_MESSAGE).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h4_only_websocket_routes_take_the_query_token() {
        for (path, want) in [
            ("/pty/abc/ws", true),
            ("/proxy/44772/pty/abc/ws", true),
            ("/proxy/8080/anything", true),
            ("/pty//ws", false),
            ("/pty/abc/ws/x", false),
            ("/pty/abc", false),
            ("/files/download", false),
            ("/command", false),
            ("/command/ws", true),
            ("/command/abc/ws", true),
            ("/proxy/44772/command/ws", true),
            ("/command//ws", false),
            ("/command/abc/ws/x", false),
            ("/command/abc/events", false),
            ("/command/status/abc", false),
            ("/proxy/44772/files/download", false),
            ("/proxy/x/pty/a/ws", false),
        ] {
            assert_eq!(takes_query_token(path, 44772), want, "{path}");
        }
    }

    #[test]
    fn token_compare() {
        assert!(token_matches("abc", b"abc"));
        assert!(!token_matches("abc", b"abd"));
        assert!(!token_matches("abc", b"ab"));
        assert!(!token_matches("abc", b""));
    }
}
