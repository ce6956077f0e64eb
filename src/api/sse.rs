//! Stream framing. Two forms (DECISIONS D2):
//! - [`exec_stream`]: upstream's bare framing for `/command`, `/code` and `/session/{id}/run`:
//!   each event is one compact JSON object followed by an empty line (`{json}\n\n`), flushed per
//!   event; a `ping` right after `init` and then every 3 s (reference §3.1, §3.3); the body ends
//!   right after the last event (D3, no tail).
//! - [`standard_sse`]: standard SSE (`id:`, `event:`, `data:`) for the resumable
//!   `/command/{id}/events` and the watch streams, with a `: ping` comment as keep-alive (X3).
//!
//! Both set the headers of §3.1: `Content-Type: text/event-stream`, `Cache-Control: no-cache`,
//! `Connection: keep-alive`, `X-Accel-Buffering: no`, chunked body.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};

use crate::process::{EventKind, ExecEvent};

/// Heartbeat period of the bare stream (C23).
pub const PING_EVERY: Duration = Duration::from_secs(3);
/// Keep-alive comment period of the standard SSE streams (X3: at least every 15 s).
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);
/// The keep-alive comment of the standard SSE streams (X3).
pub const KEEPALIVE: &[u8] = b": ping\n\n";

/// Largest batch of ready events written at once by [`exec_stream`].
const BATCH_BYTES: usize = 256 * 1024;

/// One event in the bare framing: `{json}\n\n`.
pub fn frame(ev: &ExecEvent) -> Bytes {
    Bytes::from(frame_vec(ev))
}

fn frame_vec(ev: &ExecEvent) -> Vec<u8> {
    let mut v = Vec::with_capacity(ev.text.len() + 96);
    append_frame(&mut v, ev);
    v
}

fn append_frame(buf: &mut Vec<u8>, ev: &ExecEvent) {
    ev.write_json(buf);
    buf.extend_from_slice(b"\n\n");
}

/// One event in standard SSE framing: `id: N\nevent: <type>\ndata: {json}\n\n`.
pub fn sse_frame(id: Option<u64>, ev: &ExecEvent) -> Bytes {
    let mut v = Vec::with_capacity(ev.text.len() + 128);
    append_sse_frame(&mut v, id, ev);
    Bytes::from(v)
}

fn append_sse_frame(v: &mut Vec<u8>, id: Option<u64>, ev: &ExecEvent) {
    if let Some(id) = id {
        v.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    v.extend_from_slice(b"event: ");
    v.extend_from_slice(ev.kind.as_str().as_bytes());
    v.extend_from_slice(b"\ndata: ");
    ev.write_json(v);
    v.extend_from_slice(b"\n\n");
}

/// A `200` streaming response with the headers of §3.1.
pub(super) fn stream_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// The bare `{json}\n\n` stream of `events`. After the first event, if it is `init`, a ping
/// follows at once and then every [`PING_EVERY`] until `events` ends. Dropping the body (client
/// gone) drops `events`; what that means for the workload is the caller's business.
pub fn exec_stream<S>(events: S) -> Response
where
    S: Stream<Item = ExecEvent> + Send + 'static,
{
    let body = async_stream::stream! {
        let mut events = Box::pin(events);
        let Some(first) = events.next().await else { return };
        let pinging = first.kind == EventKind::Init;
        yield Ok::<Bytes, Infallible>(frame(&first));
        if !pinging {
            while let Some(ev) = events.next().await {
                yield Ok(frame(&ev));
            }
            return;
        }
        let ping = frame(&ExecEvent::ping());
        yield Ok(ping.clone());
        // The stream ends right after the last event (no tail, D3).
        let mut rest = std::pin::pin!(coalesced(events, append_frame, BATCH_BYTES, PING_EVERY, ping));
        while let Some(chunk) = rest.next().await {
            yield chunk;
        }
    };
    stream_response(Body::from_stream(body))
}

/// The standard-SSE stream of `(id, event)` items, with a keep-alive comment every
/// [`KEEPALIVE_EVERY`] while idle.
pub fn standard_sse<S>(events: S) -> Response
where
    S: Stream<Item = (Option<u64>, ExecEvent)> + Send + 'static,
{
    let append = |buf: &mut Vec<u8>, (id, ev): &(Option<u64>, ExecEvent)| append_sse_frame(buf, *id, ev);
    let body = coalesced(events, append, BATCH_BYTES, KEEPALIVE_EVERY, Bytes::from_static(KEEPALIVE));
    stream_response(Body::from_stream(body))
}

/// The body of a long-lived stream: `items` framed by `append`, those already available
/// coalesced into one chunk of up to about `max` bytes (an item is never held back waiting for
/// another, and items win over a due heartbeat, so a terminal event is never delayed), and
/// `heartbeat` after each `every` without one. Ends when `items` ends.
pub(super) fn coalesced<S, T>(
    items: S,
    append: impl Fn(&mut Vec<u8>, &T) + Send,
    max: usize,
    every: Duration,
    heartbeat: Bytes,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send
where
    S: Stream<Item = T> + Send,
    T: Send,
{
    async_stream::stream! {
        let mut items = std::pin::pin!(items);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                item = items.next() => match item {
                    Some(item) => {
                        let mut buf = Vec::with_capacity(256);
                        append(&mut buf, &item);
                        let mut ended = false;
                        while buf.len() < max {
                            match items.next().now_or_never() {
                                Some(Some(item)) => append(&mut buf, &item),
                                Some(None) => { ended = true; break }
                                None => break,
                            }
                        }
                        yield Ok(Bytes::from(buf));
                        if ended {
                            break;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => yield Ok(heartbeat.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let ev = ExecEvent::stdout("a\nb").at(7);
        assert_eq!(
            &frame(&ev)[..],
            br#"{"type":"stdout","text":"a\nb","timestamp":7}

"#
        );
        assert_eq!(
            &sse_frame(Some(12), &ev)[..],
            b"id: 12\nevent: stdout\ndata: {\"type\":\"stdout\",\"text\":\"a\\nb\",\"timestamp\":7}\n\n"
        );
    }
}
