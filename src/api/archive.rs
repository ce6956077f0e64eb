//! `/files/archive` (EXTENSIONS X30, X31): `GET` streams a directory as an archive, `POST`
//! imports an archive body into a directory. Both are transfers (429 beyond the cap). The
//! archive work is `fs::archive`; this file parses the query, bridges the bodies to its channels
//! and maps the result.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::error::{json_response, ApiError};
use super::extract::QueryPairs;
use crate::fs::archive::{self, ExportOpts, Format, ImportOpts};
use crate::fs::bufpool::BufPool;
use crate::fs::FsError;
use crate::state::AppState;

/// Buffers an import's pump keeps for the chunks it copies: the channel's eight, the one the
/// reader holds, one being filled.
const IMPORT_POOL_KEEP: usize = 10;
/// A buffer larger than this (hyper reads at most ~400 KiB at once) is freed, not kept.
const IMPORT_POOL_MAX: usize = 512 * 1024;
/// After an import is refused, at most this much of the rest of the body is read and discarded
/// (so that the client, still sending, reads the answer instead of a reset) ...
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// ... for at most this long.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/files/archive", get(export).post(import))
}

fn format(q: &QueryPairs) -> Result<Format, ApiError> {
    Ok(Format::parse(q.get("format").filter(|f| !f.is_empty()).unwrap_or("tar"))?)
}

/// `GET /files/archive?path=DIR&format=tar|tar.gz|tar.zst|zip&exclude=GLOB…&gitignore=true`.
/// A missing or non-directory `path` is answered before the body starts; after that an error
/// cuts the body off (never a clean end-of-archive).
async fn export(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let dir = q.require("path")?.to_string();
    let format = format(&q)?;
    let opts = ExportOpts {
        dir,
        format,
        exclude: q.all("exclude"),
        gitignore: q.flag("gitignore", false)?,
        stall: state.transfers.limits().stall_timeout,
    };
    let permit = state.transfers.admit()?;
    let base = std::path::Path::new(&opts.dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "archive".into());
    let mut rx = archive::export(opts).await?;
    let body = async_stream::stream! {
        let _permit = permit;
        while let Some(item) = rx.recv().await {
            let failed = item.is_err();
            yield item;
            if failed {
                break;
            }
        }
    };
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.media_type()));
    let name = format!("{base}.{}", format.as_str());
    if let Ok(v) = HeaderValue::from_str(&crate::fs::download::content_disposition(&name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((StatusCode::OK, h, Body::from_stream(body)).into_response())
}

/// `POST /files/archive?path=DIR&format=…&owner=preserve` with the archive as the body:
/// `200 {"files","dirs","bytes"}`, or an error with nothing of the archive left.
async fn import(State(state): State<AppState>, q: QueryPairs, body: Body) -> Result<Response, ApiError> {
    let dir = q.require("path")?.to_string();
    let format = format(&q)?;
    let preserve_owner = match q.get("owner") {
        None | Some("") => false,
        Some("preserve") => true,
        Some(other) => return Err(ApiError::bad_request(format!("invalid owner {other:?}: expected preserve"))),
    };
    let _permit = state.transfers.admit()?;
    let (mut stream, stall) = state.transfers.stall_guard(body.into_data_stream());
    let (tx, rx) = mpsc::channel(8);
    let scratch = state.transfers.scratch().clone();
    let job = archive::import(ImportOpts { dir, format, preserve_owner, scratch }, rx);
    // Each network chunk is copied into a recycled buffer and dropped at once: a chunk waiting
    // in the channel kept hyper from reusing its read buffer, so every ~400 KiB of the archive
    // arrived in a fresh allocation that musl maps and unmaps (1 311 `mmap`s and page faults on
    // every byte of a 512 MiB import).
    let pool = BufPool::new(IMPORT_POOL_KEEP, IMPORT_POOL_MAX);
    let pump = async move {
        while let Some(item) = stream.next().await {
            let item = item.map(|chunk| {
                let mut buf = pool.take(chunk.len());
                buf.extend_from_slice(&chunk);
                Bytes::from_owner(pool.chunk(buf, 0))
            });
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        // The import stopped early (refused): read the rest so the client gets the answer.
        let mut drained = 0usize;
        let discard = async {
            while let Some(Ok(chunk)) = stream.next().await {
                drained += chunk.len();
                if drained > DRAIN_LIMIT {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
    };
    let (result, ()) = tokio::join!(job, pump);
    if stall.stalled() {
        return Err(FsError::Stalled(state.transfers.limits().stall_timeout).into());
    }
    Ok(json_response(StatusCode::OK, &result?))
}
