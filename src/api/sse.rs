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
//!
//! Not axum's `Sse` + `KeepAlive` for the standard form: it writes one HTTP chunk per event. Both
//! forms share [`coalesced`]/[`filled`], which write the events already available as one chunk
//! (one chunk per event was 41 MiB/s against 53 for a line stream when measured; BENCHMARKS,
//! Commands) and send the keep-alive only while idle.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};

use crate::event::{EventKind, ExecEvent};

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
    buf.extend_from_slice(FRAME_END);
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

/// The bare stream of a command: `init`, a ping at once, then what `rest` renders (events
/// already framed, [`FRAME_END`] after each), with a ping every [`PING_EVERY`] as in
/// [`exec_stream`].
pub fn exec_stream_rendered<F: Fill + 'static>(init: &ExecEvent, rest: F) -> Response {
    let first = frame(init);
    let ping = frame(&ExecEvent::ping());
    let head = futures_util::stream::iter([Ok(first), Ok(ping.clone())]);
    stream_response(Body::from_stream(head.chain(filled(rest, BATCH_BYTES, PING_EVERY, ping))))
}

/// What follows each event's JSON in the bare framing.
pub const FRAME_END: &[u8] = b"\n\n";

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
pub(super) fn coalesced<S, T, A>(
    items: S,
    append: A,
    max: usize,
    every: Duration,
    heartbeat: Bytes,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send
where
    S: Stream<Item = T> + Send,
    T: Send,
    A: Fn(&mut Vec<u8>, &T) + Send,
{
    filled(StreamFill { items: Box::pin(items), append }, max, every, heartbeat)
}

/// A source of framed bytes for [`filled`].
pub trait Fill: Send {
    /// Appends what is ready to `buf` until it holds about `max` bytes, waiting only while
    /// nothing is ready; false once nothing more will come. Cancel-safe: nothing is lost when
    /// the future is dropped while it waits.
    fn fill(&mut self, buf: &mut Vec<u8>, max: usize) -> impl std::future::Future<Output = bool> + Send;
}

/// A stream of items as a [`Fill`]: each item framed by `append`.
struct StreamFill<S, A> {
    items: std::pin::Pin<Box<S>>,
    append: A,
}

impl<S, T, A> Fill for StreamFill<S, A>
where
    S: Stream<Item = T> + Send,
    T: Send,
    A: Fn(&mut Vec<u8>, &T) + Send,
{
    async fn fill(&mut self, buf: &mut Vec<u8>, max: usize) -> bool {
        let Some(item) = self.items.next().await else { return false };
        (self.append)(buf, &item);
        while buf.len() < max {
            match self.items.next().now_or_never() {
                Some(Some(item)) => (self.append)(buf, &item),
                Some(None) => return false,
                None => break,
            }
        }
        true
    }
}

/// The body of a long-lived stream filled by `source` (see [`coalesced`]): one chunk per fill of
/// up to about `max` bytes, `heartbeat` after each `every` without one, the end when `source`
/// says so.
pub(super) fn filled<F: Fill>(
    mut source: F,
    max: usize,
    every: Duration,
    heartbeat: Bytes,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    async_stream::stream! {
        let batches = BatchBuffers::default();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut buf = batches.take(max);
            let more = tokio::select! {
                biased;
                more = source.fill(&mut buf, max) => Some(more),
                _ = tick.tick() => None,
            };
            match more {
                Some(more) => {
                    if !buf.is_empty() {
                        yield Ok(batches.share(buf));
                    }
                    if !more {
                        break;
                    }
                }
                None => {
                    // A fill waits only while it has written nothing, but a source that broke
                    // that rule loses nothing either.
                    if buf.is_empty() {
                        batches.keep(buf);
                    } else {
                        yield Ok(batches.share(buf));
                    }
                    yield Ok(heartbeat.clone());
                }
            }
        }
    }
}

/// The batch buffers of one stream, used again once hyper has written and dropped them: a new
/// 256 KiB `Vec` per batch, grown by doubling, cost musl's allocator an `mmap`, `mremap`s and an
/// `munmap` (with page faults and TLB flushes) per batch, about 9 of those syscalls per batch in
/// a 200 MiB line stream. At most [`KEPT_BATCHES`] buffers are kept per stream, none larger than
/// [`KEPT_BATCH_BYTES`] (a batch holding a 1 MiB event is freed as before), all go with the
/// stream, and all streams together keep at most [`KEPT_TOTAL_BYTES`]: without that cap 200
/// concurrent streams raised execd's peak RSS from 24-26 MiB to 60-78 MiB; with 16 MiB it was
/// 46-52 MiB, with 4 MiB 29-30 MiB, at the same speed within noise (BENCHMARKS, Commands).
#[derive(Default, Clone)]
struct BatchBuffers(std::sync::Arc<Kept>);

/// Buffers kept per stream: one being filled, one hyper is writing.
const KEPT_BATCHES: usize = 2;
/// Largest buffer kept for reuse.
const KEPT_BATCH_BYTES: usize = 2 * BATCH_BYTES;
/// Most bytes of buffer capacity kept by all streams together.
const KEPT_TOTAL_BYTES: usize = 4 << 20;

/// Capacity kept by every stream's [`Kept`].
static KEPT_TOTAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One stream's kept buffers; their capacity is counted in [`KEPT_TOTAL`] while kept.
#[derive(Default)]
struct Kept(std::sync::Mutex<Vec<Vec<u8>>>);

impl Kept {
    fn pop(&self) -> Option<Vec<u8>> {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        KEPT_TOTAL.fetch_sub(buf.capacity(), std::sync::atomic::Ordering::Relaxed);
        Some(buf)
    }

    /// Keeps `buf` if this stream and all streams are under their caps.
    fn push(&self, buf: Vec<u8>) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= KEPT_BATCHES {
            return;
        }
        let cap = buf.capacity();
        let fits = KEPT_TOTAL.fetch_update(Relaxed, Relaxed, |t| (t + cap <= KEPT_TOTAL_BYTES).then_some(t + cap));
        if fits.is_ok() {
            kept.push(buf);
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let bufs = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        let bytes: usize = bufs.iter().map(Vec::capacity).sum();
        KEPT_TOTAL.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl BatchBuffers {
    /// An empty buffer with room for about `max` bytes of frames.
    fn take(&self, max: usize) -> Vec<u8> {
        self.0.pop().unwrap_or_else(|| Vec::with_capacity(max.min(BATCH_BYTES) + 4096))
    }

    /// Keeps `buf` for a later [`BatchBuffers::take`] (unless too large or enough are kept).
    fn keep(&self, mut buf: Vec<u8>) {
        if buf.capacity() > KEPT_BATCH_BYTES {
            return;
        }
        buf.clear();
        self.0.push(buf);
    }

    /// `buf` as a body chunk that comes back here when dropped.
    fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Batch { buf, home: self.clone() })
    }
}

/// A batch on its way to the socket (see [`BatchBuffers`]).
struct Batch {
    buf: Vec<u8>,
    home: BatchBuffers,
}

impl AsRef<[u8]> for Batch {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.home.keep(std::mem::take(&mut self.buf));
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

    #[test]
    fn batch_buffers_come_back_bounded() {
        let pool = BatchBuffers::default();
        let mut a = pool.take(BATCH_BYTES);
        a.extend_from_slice(b"frame");
        let ptr = a.as_ptr();
        let chunk = pool.share(a);
        assert_eq!(&chunk[..], b"frame");
        drop(chunk);
        let b = pool.take(BATCH_BYTES);
        assert_eq!((b.as_ptr(), b.len()), (ptr, 0), "the dropped batch's buffer is used again");
        // Oversized buffers are not kept, and no more than KEPT_BATCHES.
        drop(pool.share(vec![0; KEPT_BATCH_BYTES + 1]));
        assert!(pool.0 .0.lock().unwrap().is_empty());
        let chunks: Vec<_> = (0..4).map(|_| pool.share(pool.take(16))).collect();
        drop(chunks);
        assert_eq!(pool.0 .0.lock().unwrap().len(), KEPT_BATCHES);
        // All streams together keep at most KEPT_TOTAL_BYTES (in the same test as the above: it
        // fills the shared total).
        let pools: Vec<BatchBuffers> = (0..100).map(|_| BatchBuffers::default()).collect();
        for p in &pools {
            let two: Vec<_> = (0..2).map(|_| p.share(Vec::with_capacity(KEPT_BATCH_BYTES))).collect();
            drop(two);
        }
        let ours: usize =
            pools.iter().flat_map(|p| p.0 .0.lock().unwrap().iter().map(Vec::capacity).collect::<Vec<_>>()).sum();
        assert!((KEPT_TOTAL_BYTES / 2..=KEPT_TOTAL_BYTES).contains(&ours), "{ours}");
        assert!(KEPT_TOTAL.load(std::sync::atomic::Ordering::Relaxed) <= KEPT_TOTAL_BYTES);
        let before = KEPT_TOTAL.load(std::sync::atomic::Ordering::Relaxed);
        drop(pools);
        assert!(KEPT_TOTAL.load(std::sync::atomic::Ordering::Relaxed) + ours <= before + BATCH_BYTES * 8);
    }
}
