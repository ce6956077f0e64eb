//! `GET /terminal`: a terminal in the browser on a PTY session (EXTENSIONS X70), and its assets
//! under `/terminal/{asset}`.
//!
//! The page (`assets/terminal/index.html` with `terminal.js` inlined) is always compiled in; the
//! xterm.js files are embedded by `build.rs` when `scripts/fetch-xterm.sh` has fetched them, stored
//! gzipped and sent as they are to clients that accept gzip (decompressed for the others). A build
//! without them answers both routes with 404 `NOT_SUPPORTED` saying how to get them, and
//! `/capabilities` reports `"terminal": false`.
//!
//! The page's token arrives as `?access_token=` (a browser cannot set a header on the address bar);
//! [`page_takes_query_token`] lets `api::auth` accept it there, on GET and HEAD of the page only.
//! The page's script then sends it as the header for the assets and the REST calls, and as the
//! query parameter the PTY WebSocket already takes. The request log never has queries.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorCode};
use super::extract::AppPath;
use crate::pty::web_assets::ASSETS;
use crate::state::AppState;

const PAGE_HTML: &str = include_str!("../../assets/terminal/index.html");
const PAGE_JS: &str = include_str!("../../assets/terminal/terminal.js");
/// Where `index.html` takes the inlined script.
const SCRIPT_MARKER: &str = "<!-- terminal.js -->";

/// The answer of a build without the xterm.js files.
pub const NOT_BUILT: &str =
    "the terminal page is not built into this execd: run scripts/fetch-xterm.sh, then build execd again";

/// The `/terminal` routes.
pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/terminal", get(page)).route("/terminal/{asset}", get(asset))
}

/// Whether a request that is not a WebSocket upgrade may carry the token as `?access_token=`: a
/// GET or HEAD of the page itself, directly or through `/proxy/<execd's own port>/`. Its assets
/// and every other route still need the header.
pub fn page_takes_query_token(method: &Method, path: &str, own_port: u16) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let own_prefix = format!("/proxy/{own_port}");
    path == "/terminal" || path.strip_prefix(own_prefix.as_str()) == Some("/terminal")
}

/// The page with its script inlined, and the Content-Security-Policy that lets exactly that
/// script run (by hash) plus the blob: URLs it loads xterm.js from.
struct Page {
    html: String,
    csp: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(PAGE_JS.as_bytes()));
    let html = PAGE_HTML.replacen(SCRIPT_MARKER, &format!("<script>{PAGE_JS}</script>"), 1);
    // connect-src 'self' covers ws: and wss: to the same host (CSP level 3). xterm.js sets
    // inline styles, hence 'unsafe-inline' for styles only.
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{hash}' blob:; style-src 'self' 'unsafe-inline' blob:; \
         connect-src 'self'; img-src 'self' data: blob:; font-src 'self' data:; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'self'"
    );
    Page { html, csp }
});

fn not_built() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotSupported, NOT_BUILT)
}

/// Headers every answer of this module carries.
fn common_headers(content_type: &'static str, csp: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Some(csp) = csp.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h
}

/// `GET /terminal`: the page (its URL may carry the token, so nothing stores it).
async fn page() -> Result<Response, ApiError> {
    page_from(ASSETS)
}

/// [`page`] for a given set of embedded files (`&[]`: a build without them).
fn page_from(assets: &[(&str, &[u8])]) -> Result<Response, ApiError> {
    if assets.is_empty() {
        return Err(not_built());
    }
    let mut h = common_headers("text/html; charset=utf-8", Some(&PAGE.csp));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, h, PAGE.html.clone()).into_response())
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// A strong ETag per embedded file, from its gzipped bytes (computed once).
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, gz)| {
            let digest = Sha256::digest(gz);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// `GET /terminal/{asset}`: one embedded file, gzipped when the client accepts it, with an ETag
/// (the page revalidates: `no-cache`).
async fn asset(AppPath(name): AppPath<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    asset_from(ASSETS, &ETAGS, &name, &headers)
}

/// [`asset`] for a given set of embedded files and their ETags.
fn asset_from(
    assets: &[(&str, &'static [u8])],
    etags: &[String],
    name: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if assets.is_empty() {
        return Err(not_built());
    }
    let Some(i) = assets.iter().position(|(n, _)| *n == name) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, ErrorCode::FileNotFound, "no such terminal asset"));
    };
    let (name, gz) = assets[i];
    let etag = &etags[i];
    let mut h = common_headers(content_type(name), None);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if if_none_match(headers, etag) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let body = gzip_or_plain(gz, headers, &mut h)
        .map_err(|e| ApiError::runtime(format!("embedded terminal asset {name} is not valid gzip: {e}")))?;
    Ok((StatusCode::OK, h, body).into_response())
}

/// The body of an embedded gzipped file: the gzip as it is, with `Content-Encoding: gzip`, for
/// a client whose `Accept-Encoding` takes it, else decompressed. Adds `Vary: Accept-Encoding`.
pub(crate) fn gzip_or_plain(
    gz: &'static [u8],
    request: &HeaderMap,
    h: &mut HeaderMap,
) -> std::io::Result<axum::body::Body> {
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if accepts_gzip(request.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("")) {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return Ok(axum::body::Body::from(gz));
    }
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut plain)?;
    Ok(axum::body::Body::from(plain))
}

/// Whether `If-None-Match` lists `etag` (or is `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag)))
}

/// Whether an `Accept-Encoding` value accepts gzip (RFC 9110 §12.5.3): `gzip` (or `x-gzip`, or
/// `*`) listed without `q=0`. An explicit `gzip;q=0` wins over `*`.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("").to_ascii_lowercase();
        let zero = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
        });
        match coding.as_str() {
            "gzip" | "x-gzip" => return !zero,
            "*" => star = !zero,
            _ => {}
        }
    }
    star
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x70_accept_encoding() {
        for (value, want) in [
            ("gzip", true),
            ("gzip, deflate, br", true),
            ("br;q=1.0, GZIP;q=0.5", true),
            ("x-gzip", true),
            ("*", true),
            ("gzip;q=0", false),
            ("gzip; q=0.000, *", false),
            ("*;q=0", false),
            ("deflate, br", false),
            ("identity", false),
            ("", false),
            ("gzipx", false),
        ] {
            assert_eq!(accepts_gzip(value), want, "{value:?}");
        }
    }

    #[test]
    fn x70_query_token_only_on_the_page() {
        for (method, path, want) in [
            (Method::GET, "/terminal", true),
            (Method::HEAD, "/terminal", true),
            (Method::GET, "/proxy/44772/terminal", true),
            (Method::POST, "/terminal", false),
            (Method::GET, "/terminal/xterm.js", false),
            (Method::GET, "/terminal/", false),
            (Method::GET, "/proxy/8080/terminal", false),
            (Method::GET, "/proxy/447720/terminal", false),
            (Method::GET, "/terminalx", false),
            (Method::GET, "/pty", false),
        ] {
            assert_eq!(page_takes_query_token(&method, path, 44772), want, "{method} {path}");
        }
    }

    #[test]
    fn x70_page_inlines_the_script_it_allows() {
        assert!(PAGE_HTML.contains(SCRIPT_MARKER));
        // The script cannot end its own <script> element early.
        assert!(!PAGE_JS.to_ascii_lowercase().contains("</script"));
        assert!(PAGE.html.contains(PAGE_JS) && !PAGE.html.contains(SCRIPT_MARKER));
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(PAGE_JS.as_bytes()));
        assert!(PAGE.csp.contains(&format!("'sha256-{hash}'")), "{}", PAGE.csp);
        assert!(HeaderValue::from_str(&PAGE.csp).is_ok());
    }

    #[tokio::test]
    async fn x70_without_assets_both_routes_say_how_to_get_them() {
        let answers = [page_from(&[]).unwrap_err(), asset_from(&[], &[], "xterm.js", &HeaderMap::new()).unwrap_err()];
        for e in answers {
            let resp = e.into_response();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND);
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["code"], "NOT_SUPPORTED");
            assert!(v["message"].as_str().unwrap().contains("scripts/fetch-xterm.sh"), "{v}");
        }
    }

    #[tokio::test]
    async fn x70_asset_encoding_and_revalidation() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"console.log(1)").unwrap();
        let gz: &'static [u8] = Box::leak(gz.finish().unwrap().into_boxed_slice());
        let assets = [("a.js", gz)];
        let etags = ["\"abc\"".to_string()];
        let get = |pairs: &[(header::HeaderName, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), HeaderValue::from_static(v));
            }
            asset_from(&assets, &etags, "a.js", &h).unwrap()
        };
        let zipped = get(&[(header::ACCEPT_ENCODING, "gzip, br")]);
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(zipped.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(axum::body::to_bytes(zipped.into_body(), 1 << 16).await.unwrap(), gz);
        let plain = get(&[]);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(plain.headers()[header::ETAG], "\"abc\"");
        assert_eq!(&axum::body::to_bytes(plain.into_body(), 1 << 16).await.unwrap()[..], b"console.log(1)");
        assert_eq!(get(&[(header::IF_NONE_MATCH, "\"x\", \"abc\"")]).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get(&[(header::IF_NONE_MATCH, "\"x\"")]).status(), StatusCode::OK);
        let e = asset_from(&assets, &etags, "b.js", &HeaderMap::new()).unwrap_err();
        assert_eq!(e.into_response().status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn x70_embedded_assets_are_the_fetched_set() {
        if !crate::pty::web_assets::embedded() {
            return;
        }
        let names: Vec<&str> = ASSETS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["xterm.js", "addon-fit.js", "xterm.css", "LICENSE.txt"]);
        for (name, gz) in ASSETS {
            assert_eq!(&gz[..2], [0x1f, 0x8b], "{name} is gzip");
        }
    }
}
