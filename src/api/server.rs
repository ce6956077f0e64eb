//! The accept loop and per-connection limits (issue #13 finding 5: slowloris and friends).
//!
//! `axum::serve` has no timeouts and no connection cap; this is its replacement, on hyper's HTTP/1.1
//! connection (with upgrades, for the WebSockets). No h2c: upstream serves HTTP/1.1 only, no SDK
//! speaks HTTP/2 to execd, and the h2 stack cost 339 KB of the 8 MiB static binary (issue #15).
//!
//! - **Header deadline.** A connection must deliver a complete request head within
//!   `header_timeout` of hyper starting to read it; hyper starts that clock when it waits for a
//!   head, so the same deadline closes idle keep-alive connections.
//! - **Connection cap.** At most `max_connections` connections (including upgraded WebSockets)
//!   are open, and never more than half of what the process's file-descriptor limit leaves after
//!   [`FD_RESERVE`], so commands, journals and files always find descriptors. When the cap is
//!   reached, the connection that has been idle longest (no request in progress: a keep-alive
//!   connection between requests, or one that has not finished sending its first head, which is
//!   what a slowloris client looks like) is closed to make room, and accepting waits until its
//!   socket is closed; if every connection is busy, accepting pauses until one ends (at most
//!   `header_timeout`, after which the new connection is dropped).
//! - **Stall deadlines.** A request body that delivers no byte for `stall_timeout` while a handler
//!   reads it fails with a timeout; a write to the socket that makes no progress for
//!   `stall_timeout` (a client that stopped reading a download, a stream or a WebSocket) fails and
//!   closes the connection.
//! - **Lingering close.** When hyper closes a connection after answering (a 401 before an
//!   upload's body was read, an error, `Connection: close`), the socket's write side is shut and
//!   what the client still sends is read and dropped for at most [`LINGER`] before it is closed
//!   (RFC 9112 section 9.6). Closed at once with body bytes unread or still arriving, the socket
//!   is reset by the kernel: the client's remaining writes fail (a client that sends its whole
//!   body before reading, as Python's `http.client` does, never sees the answer) and whatever of
//!   the answer was not yet sent is thrown away. At most [`MAX_LINGERING`] sockets, and half
//!   the connection cap, linger at once; beyond that they close at once as before.
//!
//! Each request carries `ConnectInfo<SocketAddr>` as `axum::serve` gave it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::App;

/// The limits the accept loop enforces (flags `--max-connections`, `--header-timeout`,
/// `--stall-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub stall_timeout: Duration,
}

/// Descriptors kept out of the connections' share of `RLIMIT_NOFILE`: what execd holds besides
/// them (~20 of its own, and on cgroup v1 two spare leaves of 12 each) and a command's pipes,
/// journal, record and leaf. Halving the whole limit left a command 22 of 128 (measured), and it
/// failed to start with `EMFILE` under a slowloris burst.
pub const FD_RESERVE: u64 = 64;

impl ServerLimits {
    /// `max_connections` lowered to half of the soft `RLIMIT_NOFILE` less [`FD_RESERVE`] (the rest
    /// is kept for commands, pipes, journals and files), and at least 1.
    pub fn effective_max_connections(&self) -> usize {
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let fd_room = nofile.map(|n| (n.saturating_sub(FD_RESERVE) / 2) as usize).unwrap_or(usize::MAX);
        self.max_connections.min(fd_room).max(1)
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, asks every
/// connection to finish its current request, and returns when all have closed.
pub async fn serve(listener: TcpListener, app: App, limits: ServerLimits, shutdown: CancellationToken) {
    let conns = Arc::new(Registry {
        slots: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        freed: Default::default(),
        lingering: Default::default(),
        linger_cap: AtomicUsize::new(MAX_LINGERING),
    });
    let epoch = Instant::now();
    // Every connection task holds a receiver; `closed()` on the sender resolves when all are gone.
    let (all_done_tx, all_done_rx) = tokio::sync::watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin (the cap should make
                    // this rare); ECONNABORTED and the like: just go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Read each time: the descriptor limit can change under a running process (prlimit).
        let cap = limits.effective_max_connections();
        conns.linger_cap.store(MAX_LINGERING.min(cap / 2), Ordering::Relaxed);
        if !conns.make_room(cap, limits.header_timeout, &shutdown).await {
            tracing::warn!(%peer, max_connections = cap, "every connection is busy; dropping a new one");
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let slot = conns.register(epoch);
        let io = ConnIo::new(tcp, limits.stall_timeout, Arc::clone(&conns), Arc::clone(&slot));
        let svc = ConnService { app: app.clone(), peer, slot: Arc::clone(&slot), epoch, stall: limits.stall_timeout };
        let shutdown = shutdown.clone();
        let done = all_done_rx.clone();
        let header_timeout = limits.header_timeout;
        let registry = Arc::clone(&conns);
        tokio::spawn(async move {
            {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
                let hyper_svc = hyper::service::service_fn(move |req| svc.clone().call(req));
                let conn = builder.serve_connection(TokioIo::new(io), hyper_svc).with_upgrades();
                let mut conn = std::pin::pin!(conn);
                let mut draining = false;
                loop {
                    tokio::select! {
                        res = conn.as_mut() => {
                            if let Err(e) = res {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                            break;
                        }
                        _ = shutdown.cancelled(), if !draining => {
                            draining = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        // Evicted to make room: dropping the connection closes the socket.
                        _ = slot.evict.cancelled() => break,
                    }
                }
            }
            // The connection is gone; its socket is here if hyper shut it (see `ConnIo`). Not
            // while execd shuts down: that waits for every connection task.
            let shut = slot.shut_socket.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let (Some(tcp), false) = (shut, shutdown.is_cancelled()) {
                registry.linger(tcp).await;
            }
            drop(done);
        });
    }
    drop(all_done_rx);
    all_done_tx.closed().await;
}

/// The open connections, for the cap and for eviction.
struct Registry {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next: AtomicU64,
    /// Notified when a connection closes.
    freed: tokio::sync::Notify,
    /// Closed connections still draining what their client sends ([`Registry::linger`]).
    lingering: AtomicUsize,
    /// Most of them at once: [`MAX_LINGERING`], and at most half the connection cap, since they
    /// hold descriptors outside it (a client closing 64 connections with `Connection: close`
    /// and sending nothing more would otherwise hold 64 more than the cap).
    linger_cap: AtomicUsize,
}

/// How long a closed connection keeps reading (and dropping) what its client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most connections lingering at once.
const MAX_LINGERING: usize = 64;

/// One connection's state, shared by its task, its I/O and its requests.
struct Slot {
    id: u64,
    /// Requests whose response has not been fully sent.
    busy: AtomicUsize,
    /// Upgraded (WebSocket): never idle.
    upgraded: AtomicBool,
    /// Milliseconds since the registry's epoch when the connection last went idle.
    idle_since: AtomicU64,
    evict: CancellationToken,
    /// The socket, once hyper shut it and let go of it, for its task to linger on.
    shut_socket: Mutex<Option<TcpStream>>,
}

impl Registry {
    fn register(&self, epoch: Instant) -> Arc<Slot> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            busy: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            idle_since: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            evict: CancellationToken::new(),
            shut_socket: Mutex::new(None),
        });
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::clone(&slot));
        slot
    }

    fn remove(&self, id: u64) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.freed.notify_waiters();
    }

    /// Reads and drops what the client of a connection whose write side is shut still sends,
    /// until it closes, fails or [`LINGER`] passes; then closes the socket (see the module
    /// documentation). Closes at once when `linger_cap` sockets already linger.
    async fn linger(&self, mut tcp: TcpStream) {
        use tokio::io::AsyncReadExt;
        if self.lingering.fetch_add(1, Ordering::AcqRel) < self.linger_cap.load(Ordering::Relaxed) {
            let mut buf = vec![0u8; 16 * 1024];
            let _ = tokio::time::timeout(LINGER, async { while let Ok(1..) = tcp.read(&mut buf).await {} }).await;
        }
        self.lingering.fetch_sub(1, Ordering::AcqRel);
    }

    /// Below `cap` open connections: true at once. At the cap: closes the connection idle the
    /// longest and waits until its socket is closed; with none idle, waits (up to `wait`) for one
    /// to close or go idle. An evicted connection counts until its task has dropped the socket
    /// (its slot goes then, [`ConnIo`]'s drop): taking it off at once let a burst of connections
    /// be accepted faster than the evicted ones closed, past the descriptor limit (`EMFILE` for
    /// `accept` and for a command's pipes, measured with 300 half-sent requests and 128 fds).
    async fn make_room(&self, cap: usize, wait: Duration, shutdown: &CancellationToken) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            {
                let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                if slots.len() < cap {
                    return true;
                }
                // No more evicted than it takes to get below the cap.
                let closing = slots.values().filter(|s| s.evict.is_cancelled()).count();
                if closing <= slots.len() - cap {
                    let victim = slots
                        .values()
                        .filter(|s| !s.evict.is_cancelled())
                        .filter(|s| s.busy.load(Ordering::Acquire) == 0 && !s.upgraded.load(Ordering::Acquire))
                        .min_by_key(|s| s.idle_since.load(Ordering::Relaxed));
                    if let Some(s) = victim {
                        s.evict.cancel();
                    }
                }
            }
            // An evicted connection closing, a request ending or a connection closing may free
            // one; poll as well, since a request finishing does not notify.
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = shutdown.cancelled() => return false,
            }
        }
    }
}

/// The per-connection service: marks the connection busy for each request until its response
/// has been sent, applies the request body stall deadline, adds `ConnectInfo`.
#[derive(Clone)]
struct ConnService {
    app: App,
    peer: SocketAddr,
    slot: Arc<Slot>,
    epoch: Instant,
    stall: Duration,
}

impl ConnService {
    fn call(self, req: Request<Incoming>) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send {
        self.slot.busy.fetch_add(1, Ordering::AcqRel);
        let guard = BusyGuard { slot: Arc::clone(&self.slot), epoch: self.epoch };
        let mut req = req.map(|b| Body::new(StallBody::new(b, self.stall)));
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let app = self.app;
        async move {
            let resp = match tower::ServiceExt::oneshot(app, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                guard.slot.upgraded.store(true, Ordering::Release);
            }
            Ok(resp.map(|b| Body::new(Tracked { inner: b, _guard: guard })))
        }
    }
}

/// Marks its connection idle again when the response body is done (or dropped).
struct BusyGuard {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        // The request's and the response's large buffers may wait in the allocator's cache now
        // (the response body, a field before this guard, is already dropped).
        crate::alloc::arm_trimmer();
        self.slot.idle_since.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its connection's [`BusyGuard`] until it ends.
struct Tracked {
    inner: Body,
    _guard: BusyGuard,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when no frame arrives for `stall` while it is being read.
struct StallBody {
    inner: Incoming,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl StallBody {
    fn new(inner: Incoming, stall: Duration) -> StallBody {
        StallBody { inner, stall, timer: None }
    }
}

/// The error a stalled request body reads as.
#[derive(Debug, thiserror::Error)]
#[error("the request body made no progress for {0:?}")]
pub struct BodyStalled(pub Duration);

impl hyper::body::Body for StallBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.timer = None;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
                Poll::Ready(Some(Err(BodyStalled(stall).into())))
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket: writes that make no progress for `stall` fail with `TimedOut`;
/// dropping it (also after an upgrade) frees its place under the connection cap, and after hyper
/// shut it, hands the socket to the connection's task to linger on ([`Registry::linger`]).
struct ConnIo {
    /// Taken only when dropped.
    tcp: Option<TcpStream>,
    /// hyper shut the write side: it closed the connection after its last response.
    shut: bool,
    stall: Duration,
    write_timer: Option<Pin<Box<Sleep>>>,
    registry: Arc<Registry>,
    slot: Arc<Slot>,
}

impl ConnIo {
    fn new(tcp: TcpStream, stall: Duration, registry: Arc<Registry>, slot: Arc<Slot>) -> ConnIo {
        ConnIo { tcp: Some(tcp), shut: false, stall, write_timer: None, registry, slot }
    }

    fn tcp(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.tcp.as_mut().expect("the socket is taken only on drop"))
    }

    /// Called when a write-side operation is pending: arms the stall timer, fails once it fires.
    fn pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let stall = self.stall;
        let timer = self.write_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(timer.as_mut().poll(cx));
        self.write_timer = None;
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, format!("the client read nothing for {stall:?}")))
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        self.registry.remove(self.slot.id);
        // Not when evicted: that is a connection closed to make room, not one that answered.
        // (After an upgrade the connection's task has ended: the socket goes with the slot.)
        if let (true, false, Some(tcp)) = (self.shut, self.slot.evict.is_cancelled(), self.tcp.take()) {
            *self.slot.shut_socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(tcp);
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.tcp().poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_write(cx).map(Err),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.tcp().poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_write(cx).map(Err),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|t| t.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.tcp().poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => self.pending_write(cx).map(Err),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.tcp().poll_shutdown(cx) {
            Poll::Ready(r) => {
                self.shut = r.is_ok();
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_write(cx).map(Err),
        }
    }
}
