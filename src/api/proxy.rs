//! The reverse proxy `/proxy/{port}/{rest…}` (§10, C170–C173, DECISIONS D52): any method, to
//! `http://127.0.0.1:<port>/<rest>?<query>`, streamed both ways, WebSocket upgrades relayed.
//!
//! * Requests pass the access-token middleware once, before this handler; the token header (and a
//!   WebSocket's `access_token` query parameter carrying the configured token) is stripped before
//!   forwarding, so other local services never see it.
//! * Proxying to execd's own port is dispatched **in process**: the request, with the same
//!   connection's upgrade handle, goes back into the router marked [`Authenticated`], so it is
//!   neither re-authenticated (the stripped token would fail) nor sent over a second TCP hop. This is
//!   how SDKs reach execd in the Docker runtime (`/proxy/44772/command`), so SSE and the PTY
//!   WebSocket work through it exactly as they do directly.
//! * Hop-by-hop headers are dropped in both directions as an HTTP proxy must (RFC 9110 §7.6.1), except
//!   `Connection: Upgrade` + `Upgrade` on an upgrade. `X-Forwarded-For` and `X-Forwarded-Proto` are
//!   set as upstream's Go proxy sets them; `X-Forwarded-Host` is removed; `Host` is kept (once),
//!   or `127.0.0.1:<port>` when the client sent none.
//! * The upstream gets the request line in origin form (`GET /ws?x=1 HTTP/1.1`), WebSocket upgrades
//!   included: apps route on the path and many refuse the absolute form.
//! * Framing is re-decided per hop (RFC 9112 §6.3): a message carrying `Transfer-Encoding` loses its
//!   `Content-Length` before relaying, in both directions, since the decoded body it stands beside
//!   is not that length.
//!
//! The port must be a number from 1 to 65535 (400 otherwise; upstream dials anything and answers
//! 502). A missing port is 400 `MISSING_QUERY` "port is required" (a missing path parameter, §2.3);
//! nobody listening or a broken upstream is 502 `BAD_GATEWAY`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Response as HttpResponse, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;

use super::auth::{Authenticated, TOKEN_HEADER};
use super::error::ApiError;
use super::App;
use crate::state::AppState;

/// Bound on connecting to the upstream port (loopback: refusals are immediate; this only bounds a
/// listener whose accept queue is full).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled upstream connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// `/proxy/<own port>/proxy/<own port>/…` nests in-process dispatches; deeper than this is a loop.
const MAX_SELF_DEPTH: u8 = 8;

/// Why a proxy request was refused or failed before the upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("port is required")]
    MissingPort,
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    InvalidPort(String),
    #[error("Bad Gateway: cannot reach 127.0.0.1:{port}: {reason}")]
    Unreachable { port: u16, reason: String },
    #[error("Bad Gateway: the proxy to execd's own port is nested more than {MAX_SELF_DEPTH} times")]
    TooDeep,
    #[error("invalid proxy target path: {0}")]
    BadPath(String),
    #[error("the proxy is not initialised (the API made without api::proxy::with_self_dispatch)")]
    NotInitialised,
}

/// What the handler needs besides [`AppState`]: the pooled upstream client and the finished
/// router for in-process dispatch. Added as a request extension by [`with_self_dispatch`].
#[derive(Clone)]
pub struct ProxyContext(Arc<ContextInner>);

struct ContextInner {
    client: Client<HttpConnector, Body>,
    /// The complete API (all layers); set once right after it is made.
    app: OnceLock<App>,
}

/// How many in-process dispatches this request has been through.
#[derive(Clone, Copy)]
struct SelfDepth(u8);

/// The proxy routes; the handler needs [`with_self_dispatch`] around the final router.
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/proxy/", any(missing_port))
        .route("/proxy//{*rest}", any(missing_port))
        .route("/proxy/{port}", any(proxy))
        .route("/proxy/{port}/", any(proxy))
        .route("/proxy/{port}/{*rest}", any(proxy))
}

/// The layer that gives the proxy handler its [`ProxyContext`].
pub type Context = Extension<ProxyContext>;

/// Makes the complete API with `build` (which installs the context layer it is given) so the
/// proxy can reach the upstream client and dispatch requests for execd's own port back into the
/// API itself.
pub fn with_self_dispatch(build: impl FnOnce(Context) -> App) -> App {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector);
    let ctx = ProxyContext(Arc::new(ContextInner { client, app: OnceLock::new() }));
    let app = build(Extension(ctx.clone()));
    // The API holds the context and the context the API: a cycle that lives as long as the
    // process, like the API itself.
    let _ = ctx.0.app.set(app.clone());
    app
}

async fn missing_port() -> ApiError {
    ProxyError::MissingPort.into()
}

/// `(port text, rest of the path including its leading '/')` from `/proxy/<port>[/<rest>]`.
fn split_target(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/proxy/")?;
    Some(match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    })
}

/// Parses the port: 1–65535 only.
fn parse_port(text: &str) -> Result<u16, ProxyError> {
    if text.is_empty() {
        return Err(ProxyError::MissingPort);
    }
    match text.parse::<u16>() {
        Ok(p) if p > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(ProxyError::InvalidPort(text.to_string())),
    }
}

/// `/<rest>?<query>` for the upstream, without `access_token=<token>` pairs when a token is set.
fn upstream_path(rest: &str, query: Option<&str>, token: &str) -> String {
    let mut out = if rest.is_empty() { "/".to_string() } else { rest.to_string() };
    match query {
        None | Some("") => {}
        // Without a token the query passes through byte for byte (§10).
        Some(q) if token.is_empty() => {
            out.push('?');
            out.push_str(q);
        }
        Some(q) => {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|pair| {
                    let decoded = super::extract::url_decode_pairs(pair);
                    !decoded.first().is_some_and(|(k, v)| k == "access_token" && v == token)
                })
                .collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
    }
    out
}

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy ones Go's proxy also drops).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The upgrade protocol when `headers` ask for one (`Connection: upgrade` + `Upgrade: x`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, including those `Connection` names; re-adds the upgrade pair when
/// the message is an upgrade.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrade = upgrade_protocol(headers);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if let Some(proto) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, proto);
    }
}

/// Drops `Content-Length` from a message that also carries `Transfer-Encoding`: the transfer coding
/// decided how the body was read (RFC 9112 §6.3), so the length describes nothing this hop relays;
/// kept, it would make the next hop cut the body short (or wait for bytes that never come). Must
/// run before [`strip_hop_by_hop`], which removes `Transfer-Encoding` itself.
fn drop_length_beside_transfer_encoding(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// Exactly one `Host` for the upstream: the client's own (upstream execd keeps it, §10; apps such
/// as Jupyter compare it with `Origin`), else `127.0.0.1:<port>` (HTTP/1.0 or HTTP/2 clients send
/// none, and an HTTP/1.1 request without it is invalid).
fn set_upstream_host(headers: &mut HeaderMap, port: u16) {
    let host = match headers.get(header::HOST) {
        Some(h) => h.clone(),
        // Digits, dots and a colon: always a valid header value.
        None => match HeaderValue::try_from(format!("127.0.0.1:{port}")) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    // `insert` replaces every value: a second Host line never reaches the upstream.
    headers.insert(header::HOST, host);
}

/// The forwarding headers of §10: the token is removed, `X-Forwarded-For` is
/// `<first incoming X-Forwarded-For | X-Real-IP | peer ip:port>, <peer ip>`,
/// `X-Forwarded-Proto: http`, and `X-Forwarded-Host` is removed.
fn set_forwarding_headers(headers: &mut HeaderMap, peer: Option<SocketAddr>) {
    headers.remove(TOKEN_HEADER);
    headers.remove("x-forwarded-host");
    let first_xff = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let real_ip = headers.get("x-real-ip").and_then(|v| v.to_str().ok()).map(str::to_string);
    let origin = first_xff.or(real_ip).or_else(|| peer.map(|p| p.to_string()));
    let xff = match (origin, peer) {
        (Some(o), Some(p)) => Some(format!("{o}, {}", p.ip())),
        (Some(o), None) => Some(o),
        (None, _) => None,
    };
    headers.remove("x-forwarded-for");
    if let Some(v) = xff.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
}

async fn proxy(State(state): State<AppState>, ctx: Option<Extension<ProxyContext>>, req: Request) -> Response {
    match forward(&state, ctx.map(|Extension(c)| c), req).await {
        Ok(resp) => resp,
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn forward(state: &AppState, ctx: Option<ProxyContext>, mut req: Request) -> Result<Response, ProxyError> {
    let (port_text, rest) = split_target(req.uri().path()).ok_or(ProxyError::MissingPort)?;
    let port = parse_port(port_text)?;
    let path = upstream_path(rest, req.uri().query(), &state.config.access_token);
    let ctx = ctx.ok_or(ProxyError::NotInitialised)?;
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if port == state.config.port {
        return dispatch_to_self(&ctx, req, &path, peer).await;
    }
    // An upgrade (WebSocket) takes the client connection's upgrade handle before the request is
    // taken apart; the tunnel is set up once the upstream agreed (101).
    let client_upgrade = upgrade_protocol(req.headers()).is_some().then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let bad_path = |e: axum::http::uri::InvalidUri| ProxyError::BadPath(e.to_string());
    let mut upstream_req = axum::http::Request::new(body);
    *upstream_req.method_mut() = parts.method;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = parts.headers;
    let headers = upstream_req.headers_mut();
    drop_length_beside_transfer_encoding(headers);
    strip_hop_by_hop(headers);
    set_forwarding_headers(headers, peer);
    set_upstream_host(headers, port);

    let unreachable = |e: &dyn std::fmt::Display| ProxyError::Unreachable { port, reason: e.to_string() };
    let resp = match client_upgrade {
        None => {
            // The pooled client dials the authority of an absolute URI and writes the request line
            // in origin form itself (it is not configured for a forward proxy).
            *upstream_req.uri_mut() = format!("http://127.0.0.1:{port}{path}").parse().map_err(bad_path)?;
            ctx.0.client.request(upstream_req).await.map_err(|e| unreachable(&error_chain(&e)))?
        }
        Some(client_upgrade) => {
            // A bare connection writes the URI as given: origin form, or path-routing apps
            // (Jupyter, Python `websockets`) see `http://127.0.0.1:P/ws` as the path.
            *upstream_req.uri_mut() = path.parse().map_err(bad_path)?;
            let mut resp = send_upgrade(port, upstream_req).await?;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client_upgrade, upstream_upgrade, state.shutdown.clone(), port));
            }
            resp
        }
    };
    Ok(relay_response(resp))
}

/// The upstream response with hop-by-hop headers removed (an upgrade keeps its pair) and the body
/// streamed as it arrives.
fn relay_response(resp: HttpResponse<Incoming>) -> Response {
    let (mut parts, body) = resp.into_parts();
    drop_length_beside_transfer_encoding(&mut parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, Body::new(body))
}

/// Sends an upgrade request on a fresh connection of its own (a pooled one cannot be handed over).
async fn send_upgrade(port: u16, req: axum::http::Request<Body>) -> Result<HttpResponse<Incoming>, ProxyError> {
    let unreachable = |reason: String| ProxyError::Unreachable { port, reason };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| unreachable(format!("connect timed out after {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(error_chain(&e)))?;
    // The connection task drives the exchange and, after a 101, hands the socket to the upgrade.
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxy: upstream upgrade connection ended");
        }
    });
    sender.send_request(req).await.map_err(|e| unreachable(error_chain(&e)))
}

/// Copies bytes both ways between the client's and the upstream's upgraded connections until one
/// side closes or execd shuts down.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    shutdown: tokio_util::sync::CancellationToken,
    port: u16,
) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            tracing::debug!(port, client_ok = c.is_ok(), upstream_ok = u.is_ok(), "proxy: upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    // Either the tunnel ends by itself, or shutdown closes both sides (dropping them).
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(port, error = %e, "proxy: tunnel ended with an error");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

/// Serves a request for execd's own port by handing it back to the router, marked authenticated.
/// A fresh request is built: the outer route's path parameters must not leak into the inner one;
/// only the peer address and the connection's upgrade handle (for WebSockets) are carried over.
async fn dispatch_to_self(
    ctx: &ProxyContext,
    mut req: Request,
    path: &str,
    peer: Option<SocketAddr>,
) -> Result<Response, ProxyError> {
    let depth = req.extensions().get::<SelfDepth>().map_or(0, |d| d.0);
    if depth >= MAX_SELF_DEPTH {
        return Err(ProxyError::TooDeep);
    }
    let app = ctx.0.app.get().cloned().ok_or(ProxyError::NotInitialised)?;
    let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let (parts, body) = req.into_parts();
    let mut inner = Request::new(body);
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = path.parse().map_err(|e| ProxyError::BadPath(format!("{e}")))?;
    *inner.version_mut() = parts.version;
    *inner.headers_mut() = parts.headers;
    // The body is handed over already decoded, so a length beside a transfer coding would lie to
    // the inner handler as it would to an upstream.
    drop_length_beside_transfer_encoding(inner.headers_mut());
    set_forwarding_headers(inner.headers_mut(), peer);
    let ext = inner.extensions_mut();
    ext.insert(Authenticated);
    ext.insert(SelfDepth(depth + 1));
    if let Some(p) = peer {
        ext.insert(ConnectInfo(p));
    }
    if let Some(u) = on_upgrade {
        ext.insert(u);
    }
    Ok(app.oneshot(inner).await.unwrap_or_else(|never| match never {}))
}

/// `e` and its sources, joined (hyper's top-level messages alone say little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
    use axum::routing::get;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    async fn ws_echo(ws: WebSocketUpgrade) -> Response {
        ws.on_upgrade(|mut socket| async move {
            while let Some(Ok(WsMessage::Text(t))) = socket.recv().await {
                if socket.send(WsMessage::Text(format!("inner:{}", t.as_str()).into())).await.is_err() {
                    break;
                }
            }
        })
    }

    /// The PTY WebSocket reaches execd as `/proxy/44772/pty/{id}/ws` (C172): an upgrade dispatched
    /// in process must reach the inner handler with the connection's upgrade handle, and must not
    /// be re-authenticated.
    #[tokio::test]
    async fn self_proxy_websocket_upgrade_reaches_the_inner_handler() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::for_tests(dir.path().join("state"));
        config.port = port;
        config.access_token = "tok".into();
        let state = AppState::new(config).unwrap();
        fn echo(r: Router<AppState>) -> Router<AppState> {
            r.route("/echo", get(ws_echo))
        }
        static AREAS: &[super::super::Area] = &[
            super::super::Area { segment: "proxy", modules: &[routes] },
            super::super::Area { segment: "echo", modules: &[echo] },
        ];
        let app = with_self_dispatch(|context| super::super::App::with_areas(AREAS, state.clone(), Some(context)));
        let app = Router::new().fallback_service(app);
        let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>());
        tokio::spawn(async move { server.await.unwrap() });

        let mut req = format!("ws://127.0.0.1:{port}/proxy/{port}/echo").into_client_request().unwrap();
        req.headers_mut().insert(TOKEN_HEADER, HeaderValue::from_static("tok"));
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::Text("a".into())).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m, Message::Text("inner:a".into()));

        // Without the token the outer request is refused.
        let err = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/proxy/{port}/echo")).await;
        assert!(err.unwrap_err().to_string().contains("401"));
        state.shutdown.cancel();
    }

    #[test]
    fn targets_and_ports() {
        assert_eq!(split_target("/proxy/8080/a/b"), Some(("8080", "/a/b")));
        assert_eq!(split_target("/proxy/8080"), Some(("8080", "")));
        assert_eq!(split_target("/proxy/8080/"), Some(("8080", "/")));
        assert_eq!(split_target("/proxy/"), Some(("", "")));
        assert_eq!(split_target("/proxy//x"), Some(("", "/x")));
        assert!(matches!(parse_port(""), Err(ProxyError::MissingPort)));
        assert_eq!(parse_port("65535").unwrap(), 65535);
        for bad in ["0", "65536", "abc", "+80", "-1", "8080a"] {
            assert!(matches!(parse_port(bad), Err(ProxyError::InvalidPort(_))), "{bad}");
        }
    }

    #[test]
    fn upstream_paths_keep_query_but_not_the_token() {
        assert_eq!(upstream_path("", None, ""), "/");
        assert_eq!(upstream_path("/a%20b/c", Some("q=1&r=%2F"), ""), "/a%20b/c?q=1&r=%2F");
        assert_eq!(upstream_path("/ws", Some("access_token=s3&x=1"), "s3"), "/ws?x=1");
        assert_eq!(upstream_path("/ws", Some("access_token=s3"), "s3"), "/ws");
        assert_eq!(upstream_path("/ws", Some("access_token=other"), "s3"), "/ws?access_token=other");
        assert_eq!(upstream_path("/x", Some(""), ""), "/x");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_but_upgrades_kept() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, X-Private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "2");

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["connection"], "Upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    #[test]
    fn length_goes_when_a_transfer_coding_is_present() {
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        drop_length_beside_transfer_encoding(&mut h);
        assert!(h.get("content-length").is_none());
        assert_eq!(h["transfer-encoding"], "chunked");

        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("5"));
        drop_length_beside_transfer_encoding(&mut h);
        assert_eq!(h["content-length"], "5");
    }

    #[test]
    fn upstream_host_is_the_clients_once_or_loopback() {
        let mut h = HeaderMap::new();
        h.append("host", HeaderValue::from_static("sandbox.example:8080"));
        h.append("host", HeaderValue::from_static("evil"));
        set_upstream_host(&mut h, 3000);
        assert_eq!(h.get_all("host").iter().collect::<Vec<_>>(), ["sandbox.example:8080"]);

        let mut h = HeaderMap::new();
        set_upstream_host(&mut h, 3000);
        assert_eq!(h["host"], "127.0.0.1:3000");
    }

    #[test]
    fn forwarding_headers() {
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(TOKEN_HEADER, HeaderValue::from_static("secret"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        set_forwarding_headers(&mut h, Some(peer));
        assert!(h.get(TOKEN_HEADER).is_none());
        assert!(h.get("x-forwarded-host").is_none());
        assert_eq!(h["x-forwarded-for"], "10.1.2.3:5555, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1, 2.2.2.2"));
        h.insert("x-real-ip", HeaderValue::from_static("3.3.3.3"));
        set_forwarding_headers(&mut h, Some(peer));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("3.3.3.3"));
        set_forwarding_headers(&mut h, Some(peer));
        assert_eq!(h["x-forwarded-for"], "3.3.3.3, 10.1.2.3");
    }
}
