//! Limits on file transfers (issue #13, finding 6): how many may run at once, and how long one
//! may make no progress.
//!
//! - **Cap.** [`Transfers::admit`] hands out one of `max_concurrent` permits per transfer
//!   (download, upload, or a list/search answer too long to buffer); beyond that a transfer is
//!   refused at once ([`FsError::TooManyTransfers`], 429) instead of queueing.
//! - **Stalled readers (downloads).** A response body cannot time out by itself: once the socket
//!   and hyper's buffer are full, hyper stops polling the body. The server catches that stall
//!   where it happens, in the connection's writes (`api::server`: a write pending for the stall
//!   timeout closes the connection); hyper then drops the response body, its permit and its
//!   file. Over HTTP/2, where one stream's stall does not block the socket, the download itself
//!   gives up when no chunk is taken for the stall timeout (`fs::download`).
//! - **Stalled writers (uploads).** The request body is read through a [`StallStream`], which
//!   fails with [`FsError::Stalled`] (408) when no byte arrives for `stall_timeout`.
//!
//! Neither side ever waits for the network on a blocking thread: file I/O runs on the blocking
//! pool one chunk (or batch) at a time, and the waiting is done by async tasks.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::temp::Scratch;
use super::FsError;

/// The knobs (`--max-transfers`, `--stall-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Transfers in flight at once; more are answered 429.
    pub max_concurrent: usize,
    /// No progress for this long ends a transfer (zero: never).
    pub stall_timeout: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            max_concurrent: crate::config::DEFAULT_MAX_TRANSFERS,
            stall_timeout: crate::config::DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// The transfer limits in force, the permits and the scratch space for temporary files. Cheap to
/// clone.
#[derive(Clone)]
pub struct Transfers(Arc<Inner>);

struct Inner {
    limits: TransferLimits,
    permits: Arc<Semaphore>,
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
        Ok(Transfers(Arc::new(Inner { limits, permits: Arc::new(Semaphore::new(limits.max_concurrent)), scratch })))
    }

    /// The limits in force.
    pub fn limits(&self) -> TransferLimits {
        self.0.limits
    }

    /// Where temporary files are journaled and spooled.
    pub fn scratch(&self) -> &Arc<Scratch> {
        &self.0.scratch
    }

    /// Admits one transfer: a permit, or 429 when `max_concurrent` are running.
    pub fn admit(&self) -> Result<TransferPermit, FsError> {
        let permit = self
            .0
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| FsError::TooManyTransfers(self.0.limits.max_concurrent))?;
        Ok(TransferPermit { _permit: permit })
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

    use super::*;

    fn transfers(max: usize, stall: Duration) -> (tempfile::TempDir, Transfers) {
        let dir = tempfile::tempdir().unwrap();
        let t = Transfers::new(dir.path(), TransferLimits { max_concurrent: max, stall_timeout: stall }).unwrap();
        (dir, t)
    }

    #[tokio::test]
    async fn permits_are_capped_and_come_back() {
        let (_d, t) = transfers(2, Duration::from_secs(60));
        let a = t.admit().unwrap();
        let _b = t.admit().unwrap();
        assert!(matches!(t.admit(), Err(FsError::TooManyTransfers(2))));
        drop(a);
        assert!(t.admit().is_ok());
    }

    const SHORT: Duration = Duration::from_millis(300);

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
