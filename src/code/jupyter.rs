//! A small Jupyter server REST client (reference §6.3, §6.5): kernelspecs, sessions, kernels and
//! interrupt, over a hyper-util client. Every call carries `Authorization: Token <token>`, is
//! bounded by a timeout, and reads at most [`MAX_BODY`] bytes of answer.
//!
//! Connection failures (Jupyter not up yet, or down) are retried with a short backoff until the
//! retry budget is spent, then reported: a request never takes longer than about
//! `retry_budget + request_timeout` (DECISIONS D50: no hang, C93). Only `http://` hosts are
//! supported: execd has no TLS client (the code-interpreter image uses a loopback Jupyter).
//!
//! Unlike upstream (§18.28), the base path of `JUPYTER_HOST` is kept for the WebSocket URL too.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::CodeError;

/// What we percent-encode in ids and the token: everything but RFC 3986's unreserved characters
/// (Jupyter's URL patterns match the raw path, so `-` in a kernel id must stay as it is).
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Largest Jupyter REST answer we read (kernelspec lists with logos inline stay far below).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The parsed `JUPYTER_HOST` plus token and limits.
#[derive(Clone)]
pub struct JupyterClient {
    /// `http://host:port` (no trailing slash).
    origin: String,
    /// `host:port`, for the WebSocket URL.
    authority: String,
    /// The host's path with no trailing slash (`""` or `/prefix`).
    prefix: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
    request_timeout: Duration,
    retry_budget: Duration,
}

/// One REST answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self, what: &str) -> Result<Value, CodeError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| CodeError::Jupyter(format!("{what}: the Jupyter server sent invalid JSON: {e}")))
    }

    /// Whether the status is 200 or 201 (or 204 when `allow_204`).
    pub fn ok(&self, allow_204: bool) -> bool {
        matches!(self.status, 200 | 201) || (allow_204 && self.status == 204)
    }

    /// An error for an unexpected status, with a short excerpt of the body.
    pub fn unexpected(&self, what: &str) -> CodeError {
        let excerpt: String = String::from_utf8_lossy(&self.body).chars().take(300).collect();
        CodeError::Jupyter(format!("{what}: the Jupyter server answered {}: {excerpt}", self.status))
    }
}

impl JupyterClient {
    /// Parses `host` (`http://127.0.0.1:44771[/prefix]`).
    pub fn new(
        host: &str,
        token: &str,
        request_timeout: Duration,
        retry_budget: Duration,
    ) -> Result<JupyterClient, CodeError> {
        let bad = |why: &str| CodeError::BadHost(format!("{host}: {why}"));
        let uri: Uri = host.trim().parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported (execd has no TLS client); use http://")),
            _ => return Err(bad("must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.to_string();
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(JupyterClient {
            origin: format!("http://{authority}"),
            authority,
            prefix,
            token: token.to_string(),
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            request_timeout,
            retry_budget,
        })
    }

    /// The token (for the WebSocket handshake).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The kernel channels WebSocket URL (`ws://host:port[/prefix]/api/kernels/<id>/channels`),
    /// with the token as a query parameter (upstream's form; the header is sent too).
    pub fn channels_url(&self, kernel_id: &str) -> String {
        let token = percent_encoding::utf8_percent_encode(&self.token, COMPONENT);
        let kernel = percent_encoding::utf8_percent_encode(kernel_id, COMPONENT);
        format!("ws://{}{}/api/kernels/{kernel}/channels?token={token}", self.authority, self.prefix)
    }

    /// One request to `path` (below the host's base path). Connection failures are retried
    /// until the retry budget is spent; every attempt is bounded by the request timeout.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, CodeError> {
        let url = format!("{}{}{}", self.origin, self.prefix, path);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(&url)
                .header("authorization", format!("Token {}", self.token))
                .header("accept", "application/json");
            if !body.is_empty() {
                builder = builder.header("content-type", "application/json");
            }
            let req = builder.body(Full::new(body.clone())).map_err(|e| CodeError::BadHost(format!("{url}: {e}")))?;
            let attempt = async {
                let resp = self.http.request(req).await?;
                let status = resp.status().as_u16();
                let collected = Limited::new(resp.into_body(), MAX_BODY).collect().await;
                Ok::<_, AttemptError>(Answer { status, body: collected.map_err(AttemptError::Body)?.to_bytes() })
            };
            match tokio::time::timeout(self.request_timeout, attempt).await {
                // A GET that hit a transient server error (Jupyter answers 500 while it tears
                // another kernel down) is retried like a connection failure.
                Ok(Ok(answer))
                    if method == Method::GET
                        && answer.status >= 500
                        && started.elapsed() + backoff < self.retry_budget.min(Duration::from_secs(2)) =>
                {
                    tracing::debug!(url = %url, status = answer.status, "jupyter answered a server error; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 3 / 2).min(Duration::from_secs(1));
                }
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(AttemptError::Http(e))) if e.is_connect() && started.elapsed() + backoff < self.retry_budget => {
                    tracing::debug!(url = %url, error = %e, "jupyter not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 3 / 2).min(Duration::from_secs(1));
                }
                Ok(Err(e)) => {
                    return Err(CodeError::Unreachable(format!("{method} {}{path}: {e}", self.prefix)));
                }
                Err(_) => {
                    return Err(CodeError::Unreachable(format!(
                        "{method} {}{path}: no answer within {:?}",
                        self.prefix, self.request_timeout
                    )));
                }
            }
        }
    }

    /// `GET /api/kernelspecs`.
    pub async fn kernelspecs(&self) -> Result<Value, CodeError> {
        let a = self.request(Method::GET, "/api/kernelspecs", None).await?;
        if !a.ok(false) {
            return Err(a.unexpected("listing kernel specs"));
        }
        a.json("listing kernel specs")
    }

    /// `POST /api/sessions`: starts a kernel of `kernel_name` for notebook `path`. Returns the
    /// Jupyter session id and kernel id.
    pub async fn create_session(
        &self,
        path: &str,
        name: &str,
        kernel_name: &str,
    ) -> Result<(String, String), CodeError> {
        let body = serde_json::json!({"path": path, "name": name, "type": "notebook", "kernel": {"name": kernel_name}});
        let a = self.request(Method::POST, "/api/sessions", Some(&body)).await?;
        if !a.ok(false) {
            return Err(a.unexpected("creating a session"));
        }
        let v = a.json("creating a session")?;
        let sid = v.get("id").and_then(Value::as_str).unwrap_or_default();
        let kid = v.pointer("/kernel/id").and_then(Value::as_str).unwrap_or_default();
        if sid.is_empty() || kid.is_empty() {
            return Err(CodeError::Jupyter("creating a session: the answer has no session or kernel id".into()));
        }
        Ok((sid.to_string(), kid.to_string()))
    }

    /// `GET /api/kernels/{id}`: whether the kernel is running (asking for the one kernel, not
    /// the whole list: listing races with other kernels' shutdown inside Jupyter and can fail).
    pub async fn kernel_exists(&self, kernel_id: &str) -> Result<bool, CodeError> {
        let id = percent_encoding::utf8_percent_encode(kernel_id, COMPONENT);
        let a = self.request(Method::GET, &format!("/api/kernels/{id}"), None).await?;
        match a.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(a.unexpected("looking up the kernel")),
        }
    }

    /// `DELETE /api/sessions/{id}` (also shuts the kernel down). A session Jupyter no longer knows
    /// (404) counts as deleted.
    pub async fn delete_session(&self, session_id: &str) -> Result<(), CodeError> {
        let id = percent_encoding::utf8_percent_encode(session_id, COMPONENT);
        let a = self.request(Method::DELETE, &format!("/api/sessions/{id}"), None).await?;
        if a.ok(true) || a.status == 404 {
            return Ok(());
        }
        Err(a.unexpected("deleting a session"))
    }

    /// `POST /api/kernels/{id}/interrupt` (200 or 204 accepted).
    pub async fn interrupt(&self, kernel_id: &str) -> Result<(), CodeError> {
        let id = percent_encoding::utf8_percent_encode(kernel_id, COMPONENT);
        let a = self.request(Method::POST, &format!("/api/kernels/{id}/interrupt"), None).await?;
        if a.ok(true) {
            return Ok(());
        }
        Err(a.unexpected("interrupting the kernel"))
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("{0}")]
    Http(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(host: &str) -> Result<JupyterClient, CodeError> {
        JupyterClient::new(host, "t k", Duration::from_secs(1), Duration::from_secs(1))
    }

    #[tokio::test]
    async fn parses_hosts_and_builds_ws_urls() {
        let c = client("http://127.0.0.1:44771").unwrap();
        assert_eq!(c.channels_url("k-1"), "ws://127.0.0.1:44771/api/kernels/k-1/channels?token=t%20k");
        let c = client("http://h:1/jupyter/").unwrap();
        assert_eq!(c.prefix, "/jupyter");
        assert!(c.channels_url("k").starts_with("ws://h:1/jupyter/api/kernels/k/channels"));
        assert!(matches!(client("https://h:1"), Err(CodeError::BadHost(_))));
        assert!(matches!(client("h:1"), Err(CodeError::BadHost(_))));
    }

    #[tokio::test]
    async fn dead_port_fails_within_the_budget() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = client(&format!("http://127.0.0.1:{port}")).unwrap();
        let t = Instant::now();
        let e = c.kernelspecs().await.unwrap_err();
        assert!(matches!(e, CodeError::Unreachable(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
}
