//! The observation middleware (EXTENSIONS X61, X62): per request, the duration until the response
//! body has ended (streams included, as upstream's gin middleware measures), by route template,
//! method and status; the filesystem operation's duration; the duration of executions the command
//! observer does not see (session runs, Jupyter code); and one audit line per file mutation.
//!
//! Route labels use upstream's (gin's) template spelling, `/command/status/:id`; a request that
//! matched no route is `unknown`. Methods outside the standard set are `OTHER`, so a client cannot
//! grow the label space.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::observability::{FileMutation, RequestContext, REQUEST};
use crate::state::AppState;

/// Largest JSON body read ahead for the audit log's paths; larger bodies are audited without them.
const AUDIT_JSON_PEEK: usize = 1024 * 1024;
/// Paths kept per audit line.
const AUDIT_MAX_PATHS: usize = 1000;
/// How long the audit line of an upload waits for its metadata parser after the response.
const UPLOAD_PARSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The middleware (installed by `api::with_layers`).
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let obs = state.observability.clone();
    let method = method_label(req.method());
    let template = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let route = template.as_deref().map(route_label).unwrap_or_else(|| "unknown".to_string());
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let (identity, area) = split_identity(template.as_deref().unwrap_or(""), req.uri().path());
    let fs_op = filesystem_operation(req.method(), area);
    let execution = match (req.method(), area) {
        (&Method::POST, "/session/{id}/run") => Some("run_in_session"),
        (&Method::POST, "/code") => Some("run_code"),
        _ => None,
    };

    // The audit log's view of a file mutation: the paths it names and the bytes it sent.
    let mut audit = None;
    let mut req = req;
    if obs.audit_enabled() {
        if let Some((op, true)) = fs_op {
            let (r, paths) = audit_paths(op, req).await;
            let bytes = Arc::new(AtomicU64::new(0));
            req = r.map(|b| Body::new(Counted { inner: b, bytes: bytes.clone() }));
            audit = Some((op, paths, bytes));
        }
    }

    let ctx = Arc::new(RequestContext {
        peer,
        method: method.to_string(),
        route: route.clone(),
        execution_observed: AtomicBool::new(false),
    });
    let resp = REQUEST.scope(ctx.clone(), next.run(req)).await;
    let status = resp.status().as_u16();
    let scan_errors = execution.is_some();
    let error_seen = Arc::new(AtomicBool::new(false));
    let error_flag = error_seen.clone();
    let done = move || {
        let d = started.elapsed();
        let m = obs.metrics();
        m.observe_http(method, &route, status, d);
        let ok = status < 400;
        if let Some((op, _)) = fs_op {
            m.observe_filesystem(op, ok, d);
        }
        if let Some(op) = execution {
            if !ctx.execution_observed.load(Ordering::Relaxed) && status < 500 {
                obs.execution_by_request(op, ok && !error_flag.load(Ordering::Relaxed), d);
            }
        }
        if let Some((op, paths, bytes)) = audit {
            let m = FileMutation {
                peer,
                method: method.to_string(),
                route,
                operation: op,
                paths: Vec::new(),
                paths_complete: false,
                bytes: bytes.load(Ordering::Relaxed),
                status,
                uid: identity.map(|i| i.0),
                gid: identity.map(|i| i.1),
                duration: d,
            };
            audit_mutation(obs, m, paths);
        }
    };
    resp.map(|b| Body::new(Observed { inner: b, done: Some(Box::new(done)), scan_errors, error_seen }))
}

/// Writes the audit line of a file mutation once its paths are known. The upload parser has
/// normally finished by the end of the response: the line is then written at once, in the order
/// of the requests; else when it has (waiting at most [`UPLOAD_PARSE_WAIT`]).
fn audit_mutation(obs: crate::observability::Observability, mut m: FileMutation, paths: Paths) {
    let mut rx = match paths {
        Paths::Known(p, complete) => {
            m.paths = p;
            m.paths_complete = complete;
            return obs.file_mutation(m);
        }
        Paths::Later(rx) => rx,
    };
    match rx.try_recv() {
        Ok((p, complete)) => {
            m.paths = p;
            m.paths_complete = complete;
            obs.file_mutation(m);
        }
        Err(_) => {
            tokio::spawn(async move {
                if let Ok(Ok((p, complete))) = tokio::time::timeout(UPLOAD_PARSE_WAIT, rx).await {
                    m.paths = p;
                    m.paths_complete = complete;
                }
                obs.file_mutation(m);
            });
        }
    }
}

/// The standard methods as themselves, anything else `OTHER`.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// axum's template in gin's spelling: `{id}` → `:id`, `{*rest}` → `*rest`.
pub fn route_label(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { break };
        let name = &rest[open + 1..open + close];
        match name.strip_prefix('*') {
            Some(n) => {
                out.push('*');
                out.push_str(n);
            }
            None => {
                out.push(':');
                out.push_str(name);
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// For a per-identity route (`/v1/filesystem/{uid}/{gid}/…`): the uid and gid from the request
/// path and the template after the prefix; otherwise no identity and the template itself.
fn split_identity<'a>(template: &'a str, path: &str) -> (Option<(u32, u32)>, &'a str) {
    let Some(area) = template.strip_prefix("/v1/filesystem/{uid}/{gid}") else {
        return (None, template);
    };
    let mut parts = path.trim_start_matches('/').split('/').skip(2);
    let ids = match (parts.next().and_then(|u| u.parse().ok()), parts.next().and_then(|g| g.parse().ok())) {
        (Some(u), Some(g)) => Some((u, g)),
        _ => None,
    };
    (ids, area)
}

/// The filesystem operation of a files or directories route, and whether it changes anything.
fn filesystem_operation(method: &Method, area: &str) -> Option<(&'static str, bool)> {
    let op = match (method, area) {
        (&Method::GET, "/files/info") => ("get_file_info", false),
        (&Method::DELETE, "/files") => ("remove_files", true),
        (&Method::POST, "/files/permissions") => ("set_permissions", true),
        (&Method::POST, "/files/mv") => ("move_files", true),
        (&Method::GET, "/files/search") => ("search_files", false),
        (&Method::POST, "/files/replace") => ("replace_content", true),
        (&Method::POST, "/files/upload") => ("upload_file", true),
        (&Method::GET, "/files/download") => ("download_file", false),
        (&Method::GET, "/directories/list") => ("list_directory", false),
        (&Method::POST, "/directories") => ("make_directories", true),
        (&Method::DELETE, "/directories") => ("remove_directories", true),
        // Routes other work adds under /files and /directories: any method but GET/HEAD mutates.
        (m, a) if a.starts_with("/files") || a.starts_with("/directories") => {
            ("other", !matches!(*m, Method::GET | Method::HEAD))
        }
        _ => return None,
    };
    Some(op)
}

/// The paths a mutation names, known now or after its body has been parsed.
enum Paths {
    /// The paths and whether they are all of them.
    Known(Vec<String>, bool),
    Later(tokio::sync::oneshot::Receiver<(Vec<String>, bool)>),
}

/// Reads the paths of `op` from the query or a read-ahead of the JSON body (which is handed on
/// unchanged), or sets up the upload's metadata parser.
async fn audit_paths(op: &'static str, req: Request) -> (Request, Paths) {
    let query: Vec<String> = super::extract::url_decode_pairs(req.uri().query().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == "path")
        .map(|(_, v)| v)
        .take(AUDIT_MAX_PATHS + 1)
        .collect();
    match op {
        "remove_files" | "remove_directories" => {
            let complete = query.len() <= AUDIT_MAX_PATHS;
            (req, Paths::Known(query.into_iter().take(AUDIT_MAX_PATHS).collect(), complete))
        }
        "set_permissions" | "replace_content" | "make_directories" | "move_files" => {
            let (parts, body) = req.into_parts();
            let (body, peeked) = peek(body, AUDIT_JSON_PEEK).await;
            let paths = peeked.and_then(|b| json_paths(&b));
            let req = Request::from_parts(parts, body);
            match paths {
                Some(p) => {
                    let complete = p.len() <= AUDIT_MAX_PATHS;
                    (req, Paths::Known(p.into_iter().take(AUDIT_MAX_PATHS).collect(), complete))
                }
                None => (req, Paths::Known(Vec::new(), false)),
            }
        }
        "upload_file" => upload_paths(req),
        _ => (req, Paths::Known(Vec::new(), false)),
    }
}

/// The keys of a JSON object (`{"<path>": …}`) or the `src`/`dest` of an array of moves.
fn json_paths(body: &[u8]) -> Option<Vec<String>> {
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::Object(map) => Some(map.keys().cloned().collect()),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_object())
                .flat_map(|o| {
                    // Source first, then destination (the map's own order is alphabetical).
                    ["src", "dest"].into_iter().filter_map(move |want| {
                        o.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(want))
                            .and_then(|(_, v)| v.as_str())
                            .map(String::from)
                    })
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Reads `body` up to `cap` bytes. Whole: a body of those bytes and the bytes. Larger (or an
/// error): a body that replays what was read and goes on with the rest, and `None`.
async fn peek(body: Body, cap: usize) -> (Body, Option<Bytes>) {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    loop {
        match stream.next().await {
            None => {
                let b = buf.freeze();
                return (Body::from(b.clone()), Some(b));
            }
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > cap {
                    let head = futures_util::stream::once(async move { Ok::<Bytes, axum::Error>(buf.freeze()) });
                    return (Body::from_stream(head.chain(stream)), None);
                }
            }
            Some(Err(e)) => {
                let head = futures_util::stream::once(async move { Ok::<Bytes, axum::Error>(buf.freeze()) });
                let err = futures_util::stream::once(async move { Err::<Bytes, axum::Error>(e) });
                return (Body::from_stream(head.chain(err)), None);
            }
        }
    }
}

/// Sends a copy of each chunk of an upload to a multipart parser task that collects the `path`
/// of every `metadata` part. The copy is dropped (and the paths marked incomplete) when the
/// parser falls behind: the upload itself never waits for it.
fn upload_paths(req: Request) -> (Request, Paths) {
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        return (req, Paths::Known(Vec::new(), false));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    let lagged = Arc::new(AtomicBool::new(false));
    let lagged_parser = lagged.clone();
    tokio::spawn(async move {
        let constraints =
            multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("metadata", 64 * 1024));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
        let mut paths = Vec::new();
        let mut complete = true;
        loop {
            match mp.next_field().await {
                Ok(Some(field)) if field.name() == Some("metadata") => {
                    let path = field.bytes().await.ok().and_then(|b| {
                        let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
                        v.as_object()?
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("path"))?
                            .1
                            .as_str()
                            .map(String::from)
                    });
                    match path {
                        Some(p) if paths.len() < AUDIT_MAX_PATHS => paths.push(p),
                        _ => complete = false,
                    }
                }
                Ok(Some(mut field)) => while let Ok(Some(_)) = field.chunk().await {},
                Ok(None) => break,
                Err(_) => {
                    complete = false;
                    break;
                }
            }
        }
        let _ = result_tx.send((paths, complete && !lagged_parser.load(Ordering::Relaxed)));
    });
    let tee = Tee { tx: Some(tx), lagged };
    let req = req.map(|b| {
        Body::from_stream(b.into_data_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                tee.send(c.clone());
            }
            chunk
        }))
    });
    (req, Paths::Later(result_rx))
}

struct Tee {
    tx: Option<tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>>,
    lagged: Arc<AtomicBool>,
}

impl Tee {
    fn send(&self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Ok(chunk)).is_err() {
                self.lagged.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A request body that counts the bytes read through it.
struct Counted {
    inner: Body,
    bytes: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(d) = frame.data_ref() {
                self.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that calls `done` once: at its end, on an error, or when it is dropped (the
/// client went away). For executions it notes whether an `error` event went by.
struct Observed {
    inner: Body,
    done: Option<Box<dyn FnOnce() + Send>>,
    scan_errors: bool,
    error_seen: Arc<AtomicBool>,
}

impl Observed {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done();
        }
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if self.scan_errors {
                    if let Some(d) = frame.data_ref() {
                        if memchr::memmem::find(d, b"{\"type\":\"error\"").is_some() {
                            self.error_seen.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x61_route_labels_use_gin_spelling() {
        assert_eq!(route_label("/command/status/{id}"), "/command/status/:id");
        assert_eq!(route_label("/proxy/{port}/{*rest}"), "/proxy/:port/*rest");
        assert_eq!(route_label("/ping"), "/ping");
    }

    #[test]
    fn x62_identity_prefix_and_paths() {
        let (ids, area) = split_identity("/v1/filesystem/{uid}/{gid}/files/mv", "/v1/filesystem/1000/100/files/mv");
        assert_eq!((ids, area), (Some((1000, 100)), "/files/mv"));
        assert_eq!(split_identity("/files/mv", "/files/mv"), (None, "/files/mv"));
        assert_eq!(json_paths(br#"[{"src":"/a","dest":"/b"}]"#), Some(vec!["/a".to_string(), "/b".to_string()]));
        assert_eq!(json_paths(br#"{"/x":{"mode":755}}"#), Some(vec!["/x".to_string()]));
        assert_eq!(json_paths(b"nope"), None);
    }
}
