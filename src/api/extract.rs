//! Extractors whose rejections are our JSON errors, and the lenient JSON decoding upstream's Go
//! `encoding/json` gives (§2.5): keys match case-insensitively, unknown keys are ignored, the first
//! JSON value is read and trailing bytes ignored, `null` means "absent".

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;

/// How deep the case folding of object keys goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFold {
    /// The body is a struct: fold its keys (`{"Command": ..}`).
    Struct,
    /// The body is a map of user keys (paths) to structs: fold the inner keys only.
    MapOfStructs,
    /// The body is an array of structs: fold each element's keys.
    ArrayOfStructs,
}

/// Reads the first JSON value of `body` (trailing bytes ignored, as Go's decoder does).
pub fn first_json_value(body: &[u8]) -> Result<Value, ApiError> {
    let mut it = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    match it.next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(ApiError::invalid_body(e)),
        None => Err(ApiError::invalid_body("EOF")),
    }
}

fn fold_struct(obj: &mut Map<String, Value>) {
    let old = std::mem::take(obj);
    for (k, v) in old {
        if v.is_null() {
            continue;
        }
        obj.insert(k.to_ascii_lowercase(), v);
    }
}

/// Lowercases struct keys and drops `null` members, as selected by `fold`.
pub fn fold_keys(value: &mut Value, fold: KeyFold) {
    match (fold, value) {
        (KeyFold::Struct, Value::Object(o)) => fold_struct(o),
        (KeyFold::MapOfStructs, Value::Object(o)) => {
            for v in o.values_mut() {
                if let Value::Object(inner) = v {
                    fold_struct(inner);
                }
            }
        }
        (KeyFold::ArrayOfStructs, Value::Array(a)) => {
            for v in a.iter_mut() {
                if let Value::Object(inner) = v {
                    fold_struct(inner);
                }
            }
        }
        _ => {}
    }
}

/// Decodes `body` leniently into `T`. Struct field names must be lowercase on the Rust side.
pub fn decode_lenient<T: DeserializeOwned>(body: &[u8], fold: KeyFold) -> Result<T, ApiError> {
    let mut value = first_json_value(body)?;
    fold_keys(&mut value, fold);
    serde_json::from_value(value).map_err(ApiError::invalid_body)
}

/// A body above this size is "large": only [`LARGE_BODY_SLOTS`] of them are buffered and decoded
/// at once (issue #13 finding 8: each costs a few times its size while it is decoded).
pub const LARGE_BODY: usize = 1024 * 1024;
/// How many large JSON bodies may be in memory at once.
pub const LARGE_BODY_SLOTS: usize = 2;
/// How long a large body waits for a slot before the request is refused with 429.
const LARGE_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn large_body_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LARGE_BODY_SLOTS);
    &SLOTS
}

async fn large_body_slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    match tokio::time::timeout(LARGE_BODY_WAIT, large_body_slots().acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            super::error::ErrorCode::TooManyRequests,
            format!("too many large request bodies at once (more than {LARGE_BODY_SLOTS} over {LARGE_BODY} bytes); retry later"),
        )),
    }
}

/// Reads the whole body of `req` (up to the router's body limit). A body that announces, or
/// reaches, [`LARGE_BODY`] bytes first takes one of the [`LARGE_BODY_SLOTS`], held (the returned
/// permit) until the caller has decoded it.
pub async fn read_body(req: Request) -> Result<(Bytes, Option<tokio::sync::SemaphorePermit<'static>>), ApiError> {
    use http_body_util::BodyExt;
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut permit = None;
    if announced.is_some_and(|n| n > LARGE_BODY as u64) {
        permit = Some(large_body_slot().await?);
    }
    // The router's DefaultBodyLimit, as `Bytes::from_request` would apply it.
    let mut body = axum::RequestExt::into_limited_body(req);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&*e.into_inner()))?;
        if let Ok(data) = frame.into_data() {
            if permit.is_none() && buf.len() + data.len() > LARGE_BODY {
                permit = Some(large_body_slot().await?);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((buf.freeze(), permit))
}

/// A body read error: over the limit is 413, anything else a 400 decode error.
fn body_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ApiError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e as &(dyn std::error::Error + 'static));
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                super::error::ErrorCode::PayloadTooLarge,
                format!("request body too large: {e}"),
            );
        }
        cur = err.source();
    }
    ApiError::invalid_body(e)
}

/// A JSON body decoded leniently as a struct (see module docs). Empty body: 400.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (body, _slot) = read_body(req).await?;
        decode_lenient(&body, KeyFold::Struct).map(AppJson)
    }
}

/// Like [`AppJson`] but an empty body decodes as `T::default()` (`POST /session`, `POST /pty`).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (body, _slot) = read_body(req).await?;
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(OptionalJson(T::default()));
        }
        decode_lenient(&body, KeyFold::Struct).map(OptionalJson)
    }
}

/// A path parameter whose rejection (for example invalid UTF-8 after percent-decoding) is our
/// JSON 400 rather than axum's plain text.
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(AppPath(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// The raw query pairs, in order, with repeated keys kept (`?path=a&path=b`).
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }
    /// The first value of `key`, or 400 `MISSING_QUERY`.
    pub fn require(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| ApiError::missing_query(key))
    }
    /// A boolean parameter of execd's own routes: `true`/`false` (any case) or `1`/`0`; absent or
    /// empty is `default`; anything else a 400 naming it.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!("invalid {key} {v:?}: expected true or false"))),
        }
    }
    /// A non-negative integer parameter; absent or empty is `None`; anything else a 400 naming it.
    pub fn uint(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid {key} {v:?}: expected a non-negative integer"))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(QueryPairs(url_decode_pairs(q)))
    }
}

/// Decodes `a=b&c=d` (`application/x-www-form-urlencoded`: `+` as space, percent escapes, empty
/// pairs skipped, a pair without `=` has an empty value); invalid UTF-8 is replaced.
pub fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default)]
    struct Req {
        command: String,
        envs: std::collections::HashMap<String, String>,
    }

    #[test]
    fn keys_fold_case_but_map_keys_do_not() {
        let r: Req =
            decode_lenient(br#"{"Command":"ls","ENVS":{"Foo":"x"},"junk":1} trailing"#, KeyFold::Struct).unwrap();
        assert_eq!(r.command, "ls");
        assert_eq!(r.envs["Foo"], "x");
    }

    #[test]
    fn null_is_absent_and_empty_is_eof() {
        let r: Req = decode_lenient(br#"{"command":null}"#, KeyFold::Struct).unwrap();
        assert_eq!(r.command, "");
        let e = decode_lenient::<Req>(b"", KeyFold::Struct).unwrap_err();
        assert!(e.message.contains("EOF"), "{}", e.message);
    }

    #[test]
    fn query_flags_and_integers_read_one_way_everywhere() {
        let q = QueryPairs(url_decode_pairs("a=TRUE&b=0&c=&d=yes&n=42&m=-1&e=+7+"));
        assert!(q.flag("a", false).unwrap());
        assert!(!q.flag("b", true).unwrap());
        assert!(q.flag("c", true).unwrap(), "empty is the default");
        assert!(q.flag("absent", true).unwrap());
        assert!(q.flag("d", false).unwrap_err().message.contains("invalid d \"yes\""));
        assert_eq!(q.uint("n").unwrap(), Some(42));
        assert_eq!(q.uint("e").unwrap(), Some(7), "`+` is a space, trimmed");
        assert_eq!((q.uint("c").unwrap(), q.uint("absent").unwrap()), (None, None));
        assert!(q.uint("m").unwrap_err().message.contains("invalid m \"-1\""));
    }

    #[test]
    fn query_pairs_keep_repeats() {
        let p = url_decode_pairs("path=a%20b&path=c+d&x=");
        assert_eq!(p, vec![("path".into(), "a b".into()), ("path".into(), "c d".into()), ("x".into(), "".into())]);
    }
}
