//! `PUT /files/content?path=P` (EXTENSIONS X34): the request body is the file, no multipart.
//!
//! The body streams into a temporary file beside the target (the multipart upload's writer,
//! `fs::upload`: same target resolution, parent creation, refusals, mode and owner handling), is
//! fsynced, and replaces the target with one atomic rename. With `Content-Digest: sha-256=:…:`
//! (RFC 9530) the SHA-256 of the body is compared before the rename: a mismatch answers
//! `400 DIGEST_MISMATCH` and nothing is written. Optional query parameters `mode` (`644`, as the
//! other routes), `owner`, `group`. `201` with the FileInfo when the file is new, `200` when it
//! replaced one. A transfer like the other uploads (429 beyond the cap, 408 on a stalled body).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::put;
use axum::Router;
use base64::Engine;
use futures_util::StreamExt;
use sha2::Digest;

use super::error::{json_response, ApiError, ErrorCode};
use super::extract::QueryPairs;
use crate::fs::info::{self, Accounts};
use crate::fs::ops::Permission;
use crate::fs::upload::{Received, StagedSet, UploadSpec, UploadWriter};
use crate::fs::{self, FsError};
use crate::state::AppState;

/// After a refusal, at most this much of the body is read and discarded, for at most this long,
/// so that a client still sending reads the answer instead of a reset.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/files/content", put(put_content))
}

/// The expected SHA-256 from a `Content-Digest` field (an RFC 8941 dictionary such as
/// `sha-256=:BASE64:, sha-512=:…:`). A field without a `sha-256` member is refused: the client
/// asked for an integrity check this server cannot make.
pub fn expected_sha256(field: &str) -> Result<Vec<u8>, String> {
    for member in field.split(',') {
        let Some((key, value)) = member.split_once('=') else {
            return Err(format!("invalid Content-Digest member {:?}", member.trim()));
        };
        if !key.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let value = value.trim();
        let b64 = value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or_else(|| "Content-Digest sha-256 must be a byte sequence, :BASE64:".to_string())?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("Content-Digest sha-256 is not base64: {e}"))?;
        if digest.len() != 32 {
            return Err(format!("Content-Digest sha-256 has {} bytes, not 32", digest.len()));
        }
        return Ok(digest);
    }
    Err("Content-Digest has no sha-256 member (the only algorithm supported)".into())
}

async fn drain(body: Body) {
    drain_stream(body.into_data_stream()).await
}

async fn drain_stream<E>(mut stream: impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin) {
    let discard = async {
        let mut n = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            n += chunk.len();
            if n > DRAIN_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// `PUT /files/content?path=P[&mode=644][&owner=u][&group=g]`.
async fn put_content(
    State(state): State<AppState>,
    q: QueryPairs,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Refused before the body is read: the body is drained so the connection stays usable.
    let admitted = async {
        let (spec, expected) = check(&q, &headers)?;
        let permit = state.transfers.admit()?;
        let existed = target_exists(spec.path.clone()).await?;
        Ok::<_, ApiError>((spec, expected, permit, existed))
    }
    .await;
    let (spec, expected, permit, existed) = match admitted {
        Ok(v) => v,
        Err(e) => {
            drain(body).await;
            return Err(e);
        }
    };
    let given = spec.path.clone();
    let (mut stream, stall) = state.transfers.stall_guard(body.into_data_stream());
    let mut writer = match UploadWriter::to_target(spec, state.transfers.scratch()).await {
        Ok(w) => w,
        Err(e) => {
            drain_stream(stream).await;
            return Err(e.into());
        }
    };
    let mut hasher = expected.as_ref().map(|_| sha2::Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(_) if stall.stalled() => return Err(FsError::Stalled(state.transfers.limits().stall_timeout).into()),
            Err(e) => return Err(ApiError::bad_request(format!("error reading the request body: {e}"))),
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        // An error drops the writer, and with it the temporary file.
        writer.write(chunk).await?;
    }
    let staged = match writer.finish().await? {
        Received::Staged(s) => s,
        Received::Spooled(_) => return Err(ApiError::runtime("internal error: raw upload spooled")),
    };
    if let (Some(want), Some(h)) = (expected, hasher) {
        let got = h.finalize();
        if got.as_slice() != want.as_slice() {
            // Dropping the staged file removes it: nothing was written.
            drop(staged);
            return Err(digest_mismatch(&got, &want));
        }
    }
    let mut set = StagedSet::default();
    set.push(staged).await?;
    let info = fs::blocking(move || {
        set.commit()?;
        let abs = fs::path::resolve_checked(&given)?;
        let meta = std::fs::metadata(&abs).map_err(|e| FsError::io("stat", &abs, e))?;
        Ok(info::from_metadata(&abs, &meta, &Accounts::load()))
    })
    .await?;
    drop(permit);
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json_response(status, &info))
}

/// Whether the target exists already (200 rather than 201); a directory there is a 400, not
/// the multipart upload's (upstream's) 500: this route has no upstream.
async fn target_exists(given: String) -> Result<bool, FsError> {
    fs::blocking(move || match std::fs::metadata(fs::path::expanded_checked(&given)?) {
        Ok(m) if m.is_dir() => Err(FsError::Invalid(format!("cannot upload to {given}: is a directory"))),
        Ok(_) => Ok(true),
        Err(_) => Ok(false),
    })
    .await
}

fn digest_mismatch(got: &[u8], want: &[u8]) -> ApiError {
    let b64 = base64::engine::general_purpose::STANDARD;
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::DigestMismatch,
        format!(
            "Content-Digest mismatch: the body's sha-256 is :{}:, the header says :{}:; nothing was written",
            b64.encode(got),
            b64.encode(want)
        ),
    )
}

/// The upload spec from the query and the expected digest from the headers.
fn check(q: &QueryPairs, headers: &HeaderMap) -> Result<(UploadSpec, Option<Vec<u8>>), ApiError> {
    let path = q.require("path")?.to_string();
    if fs::path::expand(&path).is_empty() {
        return Err(ApiError::bad_request("path is empty"));
    }
    let mode = match q.get("mode").filter(|m| !m.is_empty()) {
        None => 0,
        Some(m) => {
            let v = m.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid mode {m:?}: not octal")))?;
            info::mode_from_wire(v).map_err(|e| ApiError::bad_request(e.to_string()))?;
            v
        }
    };
    let owner = q.get("owner").map(str::to_string);
    let group = q.get("group").map(str::to_string);
    let expected = match headers.get("content-digest") {
        None => None,
        Some(v) => Some(
            expected_sha256(v.to_str().map_err(|_| ApiError::bad_request("Content-Digest is not ASCII"))?)
                .map_err(ApiError::bad_request)?,
        ),
    };
    Ok((UploadSpec { path, perm: Permission { owner, group, mode } }, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x34_content_digest_parsing() {
        let abc = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
        assert_eq!(expected_sha256(&format!("sha-256=:{abc}:")).unwrap()[..2], [0xba, 0x78]);
        assert!(expected_sha256(&format!("sha-512=:AAAA:, sha-256=:{abc}:")).is_ok());
        assert!(expected_sha256("sha-512=:AAAA:").is_err());
        assert!(expected_sha256(&format!("sha-256={abc}")).is_err());
        assert!(expected_sha256("sha-256=:AAAA:").is_err());
        assert!(expected_sha256("garbage").is_err());
    }
}
