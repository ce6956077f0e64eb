//! Limits on file transfers (issue #13, finding 6): how many may run at once, and how long one
//! may make no progress.
//!
//! - **Cap.** [`Transfers::admit`] hands out one of `max_concurrent` permits per transfer
//!   (download, upload, or a list/search answer too long to buffer); beyond that a transfer is
//!   refused at once ([`FsError::TooManyTransfers`], 429) instead of queueing.
//! - **Stalled readers (downloads).** A response body cannot time out by itself: once the socket
//!   and hyper's buffer are full, hyper stops polling the body. So the stall is caught where it
//!   happens, in the connection's writes: every accepted connection is wrapped in a
//!   [`WatchedIo`], and admitting a transfer arms its connection's watch. An armed connection
//!   whose write has been pending for `stall_timeout` fails with `TimedOut`; hyper then drops
//!   the connection, the response body, its permit and its file. The watch stays armed for the
//!   rest of the connection (an idle keep-alive connection has no pending write, so it is never
//!   affected).
//! - **Stalled writers (uploads).** The request body is read through a [`StallStream`], which
//!   fails with [`FsError::Stalled`] (408) when no byte arrives for `stall_timeout`.
//!
//! Neither side ever waits for the network on a blocking thread: file I/O runs on the blocking
//! pool one chunk (or batch) at a time, and the waiting is done by async tasks.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::temp::Scratch;
use super::FsError;

/// Environment variable: most transfers at once (default 256).
pub const MAX_TRANSFERS_ENV: &str = "EXECD_MAX_TRANSFERS";
/// Environment variable: a transfer with no progress for this long is cut off (Go duration,
/// default `60s`; `0s` disables the timeout).
pub const STALL_TIMEOUT_ENV: &str = "EXECD_TRANSFER_STALL_TIMEOUT";

/// The knobs (a flag can feed them later; today they come from the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Transfers in flight at once; more are answered 429.
    pub max_concurrent: usize,
    /// No progress for this long ends a transfer (zero: never).
    pub stall_timeout: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits { max_concurrent: 256, stall_timeout: Duration::from_secs(60) }
    }
}

impl TransferLimits {
    /// The defaults, overridden by [`MAX_TRANSFERS_ENV`] and [`STALL_TIMEOUT_ENV`] as `get`
    /// reports them. A value that does not parse is an error (execd refuses to start).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<TransferLimits, String> {
        let mut limits = TransferLimits::default();
        if let Some(v) = get(MAX_TRANSFERS_ENV) {
            limits.max_concurrent = match v.trim().parse::<usize>() {
                Ok(n) if (1..=Semaphore::MAX_PERMITS).contains(&n) => n,
                _ => return Err(format!("{MAX_TRANSFERS_ENV}={v:?}: expected a positive integer")),
            };
        }
        if let Some(v) = get(STALL_TIMEOUT_ENV) {
            limits.stall_timeout =
                crate::config::parse_go_duration(v.trim()).map_err(|e| format!("{STALL_TIMEOUT_ENV}={v:?}: {e}"))?;
        }
        Ok(limits)
    }
}

/// The transfer limits in force, the permits, the connections' watches and the scratch space
/// for temporary files. Cheap to clone.
#[derive(Clone)]
pub struct Transfers(Arc<Inner>);

struct Inner {
    limits: TransferLimits,
    permits: Arc<Semaphore>,
    /// Live connections by peer address (unique among the listener's open connections).
    conns: Mutex<HashMap<SocketAddr, Weak<ConnWatch>>>,
    scratch: Arc<Scratch>,
}

/// Held while a transfer runs; dropping it lets the next one in.
#[derive(Debug)]
pub struct TransferPermit {
    _permit: OwnedSemaphorePermit,
}

impl Transfers {
    /// Limits plus the scratch space under `state_dir` (prepared and swept, see
    /// [`Scratch::open`]).
    pub fn new(state_dir: &Path, limits: TransferLimits) -> io::Result<Transfers> {
        let scratch = Arc::new(Scratch::open(state_dir)?);
        Ok(Transfers(Arc::new(Inner {
            limits,
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
            conns: Mutex::new(HashMap::new()),
            scratch,
        })))
    }

    /// [`Transfers::new`] with the limits from execd's environment; a bad value is an
    /// `InvalidInput` error (execd does not start).
    pub fn from_env(state_dir: &Path) -> io::Result<Transfers> {
        let limits = TransferLimits::from_env(|k| std::env::var(k).ok())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Transfers::new(state_dir, limits)
    }

    /// The limits in force.
    pub fn limits(&self) -> TransferLimits {
        self.0.limits
    }

    /// Where temporary files are journaled and spooled.
    pub fn scratch(&self) -> &Arc<Scratch> {
        &self.0.scratch
    }

    /// Admits one transfer for the client at `peer` (if known): a permit, or 429 when
    /// `max_concurrent` are running. Also arms the stall watch of the client's connection.
    pub fn admit(&self, peer: Option<SocketAddr>) -> Result<TransferPermit, FsError> {
        let permit = self
            .0
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| FsError::TooManyTransfers(self.0.limits.max_concurrent))?;
        if let Some(peer) = peer {
            self.guard_connection(peer);
        }
        Ok(TransferPermit { _permit: permit })
    }

    /// Arms the write-stall timeout of the connection from `peer`, for the rest of it.
    pub fn guard_connection(&self, peer: SocketAddr) {
        let watch = self.0.conns.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).and_then(Weak::upgrade);
        if let Some(w) = watch {
            w.stall_ms.store(self.0.limits.stall_timeout.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        }
    }

    /// Wraps an accepted connection from `peer` so that its writes can be watched.
    pub fn watch<T>(&self, io: T, peer: SocketAddr) -> WatchedIo<T> {
        let watch = Arc::new(ConnWatch { stall_ms: AtomicU64::new(0) });
        self.0.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, Arc::downgrade(&watch));
        WatchedIo { io, watch, sleep: None, armed: false, registry: Arc::downgrade(&self.0), peer }
    }

    /// Wraps a request body so that it fails when no data arrives for the stall timeout. The
    /// flag tells afterwards whether that is what ended it.
    pub fn stall_guard<S>(&self, inner: S) -> (StallStream<S>, StallFlag) {
        let flag = StallFlag(Arc::new(AtomicBool::new(false)));
        let stream = StallStream {
            inner,
            timeout: self.0.limits.stall_timeout,
            sleep: None,
            armed: false,
            flag: flag.clone(),
            done: false,
        };
        (stream, flag)
    }
}

/// One connection's watch: zero, or the stall timeout in milliseconds once armed.
#[derive(Debug)]
struct ConnWatch {
    stall_ms: AtomicU64,
}

/// An accepted connection whose writes fail with `TimedOut` once its watch is armed and a
/// write has been pending for the stall timeout. Reads pass through.
pub struct WatchedIo<T> {
    io: T,
    watch: Arc<ConnWatch>,
    /// Allocated at the first stall of an armed connection, then reset for each later one.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` runs for the current pending write.
    armed: bool,
    registry: Weak<Inner>,
    peer: SocketAddr,
}

impl<T> WatchedIo<T> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Passes a ready result on (progress: the stall clock stops); on a pending one, runs the
    /// stall clock if the watch is armed and fails once it has run out.
    fn check<R>(&mut self, cx: &mut Context<'_>, res: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if res.is_ready() {
            self.armed = false;
            return res;
        }
        let ms = self.watch.stall_ms.load(Ordering::Relaxed);
        if ms == 0 {
            return res;
        }
        let deadline = Instant::now() + Duration::from_millis(ms);
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                tracing::info!(peer = %self.peer, "transfer stalled: no write progress; closing the connection");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no write progress: connection closed")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for WatchedIo<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.registry.upgrade() {
            let mut conns = inner.conns.lock().unwrap_or_else(|e| e.into_inner());
            // Only our own entry: the address may already belong to a newer connection.
            if conns.get(&self.peer).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.watch))) {
                conns.remove(&self.peer);
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.io).poll_flush(cx);
        if res.is_ready() {
            // A finished flush moved no byte: it stops no stall clock.
            return res;
        }
        self.check(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Tells whether a [`StallStream`] gave up.
#[derive(Debug, Clone)]
pub struct StallFlag(Arc<AtomicBool>);

impl StallFlag {
    /// Whether the stream ended because no data came for the stall timeout.
    pub fn stalled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A byte stream that fails with `TimedOut` when its source yields nothing for the stall
/// timeout (see [`Transfers::stall_guard`]).
pub struct StallStream<S> {
    inner: S,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    flag: StallFlag,
    done: bool,
}

impl<S, E> Stream for StallStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                this.armed = false;
                return Poll::Ready(item.map(|r| r.map_err(io::Error::other)));
            }
            Poll::Pending if this.timeout.is_zero() => return Poll::Pending,
            Poll::Pending => {}
        }
        let deadline = Instant::now() + this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.armed {
            sleep.as_mut().reset(deadline);
            this.armed = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                this.flag.0.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::TimedOut, "request body stalled"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn limits_from_env() {
        assert_eq!(TransferLimits::from_env(env(&[])).unwrap(), TransferLimits::default());
        let l = TransferLimits::from_env(env(&[(MAX_TRANSFERS_ENV, "8"), (STALL_TIMEOUT_ENV, "1m30s")])).unwrap();
        assert_eq!(l, TransferLimits { max_concurrent: 8, stall_timeout: Duration::from_secs(90) });
        assert_eq!(TransferLimits::from_env(env(&[(STALL_TIMEOUT_ENV, "0")])).unwrap().stall_timeout, Duration::ZERO);
        for bad in
            [(MAX_TRANSFERS_ENV, "0"), (MAX_TRANSFERS_ENV, "x"), (STALL_TIMEOUT_ENV, "5"), (STALL_TIMEOUT_ENV, "-1s")]
        {
            assert!(TransferLimits::from_env(env(&[bad])).is_err(), "{bad:?}");
        }
    }

    fn transfers(max: usize, stall: Duration) -> (tempfile::TempDir, Transfers) {
        let dir = tempfile::tempdir().unwrap();
        let t = Transfers::new(dir.path(), TransferLimits { max_concurrent: max, stall_timeout: stall }).unwrap();
        (dir, t)
    }

    #[tokio::test]
    async fn permits_are_capped_and_come_back() {
        let (_d, t) = transfers(2, Duration::from_secs(60));
        let a = t.admit(None).unwrap();
        let _b = t.admit(None).unwrap();
        assert!(matches!(t.admit(None), Err(FsError::TooManyTransfers(2))));
        drop(a);
        assert!(t.admit(None).is_ok());
    }

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn an_armed_connection_fails_a_write_that_stays_pending() {
        let (_d, t) = transfers(2, SHORT);
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut io = t.watch(ours, peer);
        // Not armed: a full pipe just waits.
        io.write_all(&[0u8; 16]).await.unwrap();
        assert!(tokio::time::timeout(SHORT * 3, io.write_all(b"x")).await.is_err());
        // Armed: the pending write fails after the stall timeout; progress resets the clock.
        t.guard_connection(peer);
        let mut buf = [0u8; 16];
        theirs.read_exact(&mut buf).await.unwrap();
        io.write_all(&[1u8; 16]).await.unwrap();
        let started = Instant::now();
        let err = io.write_all(b"y").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= SHORT, "{:?}", started.elapsed());
        drop(io);
        assert!(t.0.conns.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_stream_fails_when_nothing_arrives() {
        let (_d, t) = transfers(2, SHORT);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
        let (mut stream, flag) = t.stall_guard(tokio_stream::wrappers::ReceiverStream::new(rx));
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "a");
        let started = Instant::now();
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= SHORT, "{:?}", started.elapsed());
        assert!(flag.stalled());
        assert!(stream.next().await.is_none());
    }
}
