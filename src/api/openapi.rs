//! `GET /openapi.json` (EXTENSIONS X1): execd's own OpenAPI 3.1 document, `docs/openapi.json`,
//! embedded at build time, gzipped (`build.rs`: 342 KB of JSON in 46 KB of a static binary that
//! has little room under its 8 MiB), sent so to clients that accept gzip and decompressed for the
//! others. It describes every route execd serves; the tests below hold it to the router (every
//! routed path and method documented, every documented one routed) and to the error codes of
//! `api::error` (X4). Behind the access token like every route (DECISIONS D60).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::{ApiError, JSON_CONTENT_TYPE};
use crate::state::AppState;

/// The document, gzipped by `build.rs` from the repository's `docs/openapi.json`.
const DOCUMENT_GZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi.json.gz"));

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/openapi.json", get(document))
}

async fn document(request: HeaderMap) -> Result<Response, ApiError> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    let body = super::terminal::gzip_or_plain(DOCUMENT_GZ, &request, &mut h)
        .map_err(|e| ApiError::runtime(format!("the embedded OpenAPI document is not valid gzip: {e}")))?;
    Ok((StatusCode::OK, h, body).into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::super::error::ErrorCode;
    use super::DOCUMENT_GZ;

    /// The document as kept in the repository.
    const DOCUMENT: &str = include_str!("../../docs/openapi.json");

    /// X1: what is embedded and served is the repository's document, byte for byte.
    #[test]
    fn x1_the_embedded_document_is_the_repository_s() {
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(DOCUMENT_GZ), &mut plain).unwrap();
        assert_eq!(plain, DOCUMENT);
        assert!(DOCUMENT_GZ.len() * 5 < DOCUMENT.len(), "{} bytes gzipped", DOCUMENT_GZ.len());
    }

    /// The HTTP methods an OpenAPI path item can describe (CONNECT it cannot).
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

    /// Router paths that are spellings of a documented path OpenAPI cannot express.
    const ALIASES: &[(&str, &str)] = &[("/proxy//{*rest}", "/proxy/")];

    /// Documented path prefixes whose routes are being built on another branch: documented but not
    /// routed is allowed only while *no* route under the prefix exists; once one does, all must.
    const PENDING_PREFIXES: &[&str] = &["/v1/filesystem/"];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/openapi.json is valid JSON")
    }

    /// `{anything}` and `{*rest}` → `{}`, so that parameter names do not matter.
    fn shape(path: &str) -> String {
        regex::Regex::new(r"\{[^}]*\}").unwrap().replace_all(path, "{}").into_owned()
    }

    /// `(path, method)` pairs the router serves, read from axum's `Debug` output of the unlayered
    /// router (axum has no route listing API). The parse is checked for plausibility so that a
    /// change in that output fails loudly instead of passing with nothing enumerated.
    fn routed() -> BTreeSet<(String, String)> {
        let dbg = format!("{:?}", super::super::routes());
        // `node: Node { paths: {RouteId(3): "/ping", ...} }` of the path router (the first one).
        let node = &dbg[dbg.find("node: Node { paths: {").expect("axum Debug output has the route node")..];
        let paths: BTreeMap<String, String> = regex::Regex::new(r#"RouteId\((\d+)\): "([^"]*)""#)
            .unwrap()
            .captures_iter(&node[..node.find("} }").unwrap()])
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
        // `RouteId(3): MethodRouter(MethodRouter { get: BoxedHandler, head: None, ..., fallback: ...,
        // allow_header: ...`; `any(h)` leaves every method `None`, puts `h` in the fallback and
        // sets `allow_header: Skip`.
        let endpoint = regex::Regex::new(
            r"RouteId\((\d+)\): MethodRouter\(MethodRouter \{ (.*?), fallback: .*?, allow_header: (\w+)",
        )
        .unwrap();
        let mut out = BTreeSet::new();
        let mut endpoints = 0;
        for c in endpoint.captures_iter(&dbg) {
            endpoints += 1;
            let path = paths.get(&c[1]).unwrap_or_else(|| panic!("route id {} has no path", &c[1]));
            if &c[3] == "Skip" {
                out.extend(METHODS.iter().map(|m| (path.clone(), m.to_string())));
                continue;
            }
            for field in c[2].split(", ") {
                let (method, handler) = field.split_once(": ").expect("method: handler");
                if handler != "None" && METHODS.contains(&method) {
                    out.insert((path.clone(), method.to_string()));
                }
            }
        }
        assert_eq!(endpoints, paths.len(), "every route is a MethodRouter: {dbg}");
        assert!(paths.len() > 30 && out.len() > paths.len(), "implausible route parse: {out:?}");
        out
    }

    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if item.get(method).is_some() {
                    out.insert((path.clone(), method.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn x1_every_routed_operation_is_documented_and_every_documented_one_routed() {
        let doc = document();
        let docs: BTreeSet<(String, String)> = documented(&doc).into_iter().map(|(p, m)| (shape(&p), m)).collect();
        let routes = routed();
        let routed: BTreeSet<(String, String)> = routes
            .iter()
            .map(|(p, m)| {
                let p = ALIASES.iter().find(|(from, _)| from == p).map_or(p.as_str(), |(_, to)| to);
                (shape(p), m.clone())
            })
            .collect();

        // axum answers HEAD wherever GET is routed: a documented GET covers it.
        let undocumented: Vec<_> = routed
            .iter()
            .filter(|(p, m)| !docs.contains(&(p.clone(), m.clone())))
            .filter(|(p, m)| !(m == "head" && docs.contains(&(p.clone(), "get".to_string()))))
            .collect();
        assert!(undocumented.is_empty(), "routed but not in docs/openapi.json: {undocumented:?}");

        let pending_active = |p: &str| {
            PENDING_PREFIXES.iter().any(|pre| p.starts_with(pre) && !routed.iter().any(|(r, _)| r.starts_with(pre)))
        };
        let unrouted: Vec<_> = docs.iter().filter(|op| !routed.contains(*op) && !pending_active(&op.0)).collect();
        assert!(unrouted.is_empty(), "in docs/openapi.json but not routed: {unrouted:?}");
    }

    /// Every code the server can send (X4). The exhaustive match makes a new variant a compile
    /// error here until it is added to [`ALL_CODES`] (and so checked against the document).
    const ALL_CODES: [ErrorCode; 32] = [
        ErrorCode::InvalidRequestBody,
        ErrorCode::MissingQuery,
        ErrorCode::RuntimeError,
        ErrorCode::InvalidFile,
        ErrorCode::InvalidFileContent,
        ErrorCode::InvalidFileMetadata,
        ErrorCode::FileNotFound,
        ErrorCode::ContextNotFound,
        ErrorCode::NotSupported,
        ErrorCode::Unknown,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::AlreadyConnected,
        ErrorCode::Conflict,
        ErrorCode::InsufficientStorage,
        ErrorCode::PayloadTooLarge,
        ErrorCode::BadGateway,
        ErrorCode::TooManyRequests,
        ErrorCode::RequestTimeout,
        ErrorCode::LimitsUnavailable,
        ErrorCode::SessionNotFound,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Forbidden,
        ErrorCode::PermissionDenied,
        ErrorCode::InvalidQuery,
        ErrorCode::StdinClosed,
        ErrorCode::UnsafeArchiveEntry,
        ErrorCode::DigestMismatch,
        ErrorCode::ChecksumMismatch,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TooManyWatches,
        ErrorCode::WatchNotFound,
    ];

    fn _listed(c: ErrorCode) {
        match c {
            ErrorCode::InvalidRequestBody
            | ErrorCode::MissingQuery
            | ErrorCode::RuntimeError
            | ErrorCode::InvalidFile
            | ErrorCode::InvalidFileContent
            | ErrorCode::InvalidFileMetadata
            | ErrorCode::FileNotFound
            | ErrorCode::ContextNotFound
            | ErrorCode::NotSupported
            | ErrorCode::Unknown
            | ErrorCode::Unauthorized
            | ErrorCode::NotFound
            | ErrorCode::AlreadyConnected
            | ErrorCode::Conflict
            | ErrorCode::InsufficientStorage
            | ErrorCode::PayloadTooLarge
            | ErrorCode::BadGateway
            | ErrorCode::TooManyRequests
            | ErrorCode::RequestTimeout
            | ErrorCode::LimitsUnavailable
            | ErrorCode::SessionNotFound
            | ErrorCode::ServiceUnavailable
            | ErrorCode::Forbidden
            | ErrorCode::PermissionDenied
            | ErrorCode::InvalidQuery
            | ErrorCode::StdinClosed
            | ErrorCode::UnsafeArchiveEntry
            | ErrorCode::DigestMismatch
            | ErrorCode::ChecksumMismatch
            | ErrorCode::UnsupportedVersion
            | ErrorCode::TooManyWatches
            | ErrorCode::WatchNotFound => {}
        }
    }

    #[test]
    fn x4_every_error_code_is_in_the_document() {
        let doc = document();
        let listed: BTreeSet<&str> = doc["components"]["schemas"]["ErrorResponse"]["properties"]["code"]["enum"]
            .as_array()
            .expect("ErrorResponse.code has an enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for code in ALL_CODES {
            assert!(listed.contains(code.as_str()), "{} is not in ErrorResponse.code", code.as_str());
        }
    }

    /// Structural checks a generic validator would not make: the version, unique operation ids,
    /// every `$ref` resolving, every path template parameter declared, every operation answering
    /// 401 (the token guards every route).
    #[test]
    fn x1_document_is_self_consistent() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"), "info.version follows Cargo.toml");
        let mut ids = BTreeSet::new();
        let param = regex::Regex::new(r"\{([^}]*)\}").unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let wanted: BTreeSet<String> = param.captures_iter(path).map(|c| c[1].to_string()).collect();
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
                assert!(ids.insert(id.to_string()), "operationId {id} twice");
                let declared: BTreeSet<String> = [&item["parameters"], &op["parameters"]]
                    .into_iter()
                    .filter_map(|p| p.as_array())
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(declared, wanted, "{method} {path}: path parameters");
                assert!(op["responses"].get("401").is_some(), "{method} {path}: no 401");
            }
        }
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 100);
        for r in refs {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| collect_refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
