//! File watches with a cursor (EXTENSIONS X40–X42): watches are resources that outlive
//! connections. Each has an inotify instance read by its own thread ([`engine`]), a bounded ring of
//! numbered events ([`ring`]) that any number of readers follow and resume from a sequence number,
//! and a "what changed since" fold of that ring. No HTTP here: `api/watch.rs` translates.
//!
//! Lifetime: a watch lives until it is deleted, until shutdown, or until it has had no reader and
//! no request for the TTL (`--watch-ttl`, default 1 h). At most `--max-watches` (64) exist at once.
//! When the watched directory itself is deleted the watch reports a final `delete` and ends (its
//! events stay readable until it is deleted or collected).

pub mod engine;
pub mod ring;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use ring::Ring;
pub use ring::{Changes, EventType, WatchEvent};

/// Path bytes a ring may hold besides its count bound (long paths cannot make a ring huge).
const RING_BYTES: usize = 8 * 1024 * 1024;
/// Events a reader takes from the ring at once.
const READ_BATCH: usize = 512;

/// Settings of the [`WatchManager`] (from `--watch-ttl`, `--max-watches`, `--watch-ring-size`).
#[derive(Debug, Clone)]
pub struct WatchOpts {
    /// A watch with no reader and no request for this long is collected.
    pub ttl: Duration,
    /// At most this many watches at once.
    pub max_watches: usize,
    /// Events kept per watch.
    pub ring_events: usize,
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// Absolute directory path.
    pub path: PathBuf,
    pub recursive: bool,
    /// globset globs relative to `path`.
    pub exclude: Vec<String>,
}

/// Why a watch operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch not found: {0}")]
    NotFound(String),
    #[error("directory not found: {0}")]
    PathNotFound(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("{0}")]
    Invalid(String),
    #[error("permission denied: {path}: {source}")]
    PermissionDenied {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("too many watches: at most {0} at once (delete one first)")]
    TooMany(usize),
    /// A kernel inotify limit (instances or watches per user) is reached.
    #[error("{0}")]
    KernelLimit(String),
    #[error("cursor {after} is ahead of the watch's cursor {cursor}")]
    CursorAhead { after: u64, cursor: u64 },
    #[error("inotify unavailable: {0}")]
    Unavailable(#[source] std::io::Error),
    #[error("shutting down")]
    ShuttingDown,
    /// A system call failed; the cause kept.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whether inotify works here (checked once): `/capabilities` `watch`.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| inotify::Inotify::init().is_ok())
}

/// What is shared between a watch's thread, its readers and the manager.
pub struct Shared {
    id: String,
    path: String,
    recursive: bool,
    exclude: Vec<String>,
    created_ms: i64,
    ring: Mutex<Ring>,
    /// The newest sequence number; readers wait on it.
    tick: tokio::sync::watch::Sender<u64>,
    readers: AtomicUsize,
    last_used: Mutex<Instant>,
    kernel_watches: AtomicUsize,
}

impl Shared {
    /// Appends `events` to the ring (numbering them) and wakes the readers.
    fn publish(&self, events: &mut Vec<WatchEvent>) {
        let cursor = {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            for ev in events.drain(..) {
                ring.push(ev);
            }
            ring.cursor()
        };
        self.tick.send_replace(cursor);
    }

    /// The watch ended: readers finish once they have read everything.
    fn end(&self) {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
        self.tick.send_modify(|_| {});
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn cursor(&self) -> (u64, bool) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (ring.cursor(), ring.ended)
    }

    fn check_cursor(&self, after: u64) -> Result<(), WatchError> {
        let (cursor, _) = self.cursor();
        if after > cursor {
            return Err(WatchError::CursorAhead { after, cursor });
        }
        Ok(())
    }
}

/// A live watch in the registry. Dropping it closes `_stop`, which ends its thread.
struct Watch {
    shared: Arc<Shared>,
    _stop: OwnedFd,
}

/// One watch as `GET /files/watches` lists it.
#[derive(Debug, Serialize)]
pub struct WatchInfo {
    pub id: String,
    pub path: String,
    pub recursive: bool,
    pub exclude: Vec<String>,
    /// Newest sequence number.
    pub cursor: u64,
    /// Open event streams.
    pub readers: usize,
    /// Kernel (inotify) watches this watch holds.
    pub kernel_watches: usize,
    /// The watched directory is gone; no new events will come.
    pub ended: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// The answer to a create: the id and the cursor to start from.
#[derive(Debug, Serialize)]
pub struct Created {
    pub id: String,
    pub cursor: u64,
}

/// All watches; cheap to clone.
#[derive(Clone)]
pub struct WatchManager {
    inner: Arc<Inner>,
}

struct Inner {
    opts: WatchOpts,
    registry: Mutex<Registry>,
    sweeper: AtomicBool,
    stopped: AtomicBool,
}

#[derive(Default)]
struct Registry {
    watches: HashMap<String, Watch>,
    /// Creations under way (counted against the cap).
    reserved: usize,
}

impl WatchManager {
    pub fn new(opts: WatchOpts) -> WatchManager {
        WatchManager {
            inner: Arc::new(Inner {
                opts,
                registry: Mutex::new(Registry::default()),
                sweeper: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a watch: every kernel watch of the tree is in place when this returns (a kernel
    /// limit refuses the whole watch). Runs the tree walk on the blocking pool.
    pub async fn create(&self, spec: WatchSpec) -> Result<Created, WatchError> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(WatchError::ShuttingDown);
        }
        let exclude = engine::Exclude::new(&spec.path, &spec.exclude)?;
        {
            let mut reg = self.registry();
            if reg.watches.len() + reg.reserved >= self.inner.opts.max_watches {
                return Err(WatchError::TooMany(self.inner.opts.max_watches));
            }
            reg.reserved += 1;
        }
        let result = self.start(spec, exclude).await;
        let mut reg = self.registry();
        reg.reserved -= 1;
        let watch = result?;
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(WatchError::ShuttingDown);
        }
        let created = Created { id: watch.shared.id.clone(), cursor: watch.shared.cursor().0 };
        reg.watches.insert(created.id.clone(), watch);
        drop(reg);
        self.start_sweeper();
        Ok(created)
    }

    async fn start(&self, spec: WatchSpec, exclude: engine::Exclude) -> Result<Watch, WatchError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            id: id.clone(),
            path: spec.path.to_string_lossy().into_owned(),
            recursive: spec.recursive,
            exclude: spec.exclude,
            created_ms: ring::now_ms(),
            ring: Mutex::new(Ring::new(self.inner.opts.ring_events, RING_BYTES)),
            tick: tokio::sync::watch::Sender::new(0),
            readers: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            kernel_watches: AtomicUsize::new(0),
        });
        let for_engine = shared.clone();
        let (path, recursive) = (spec.path, spec.recursive);
        let engine = tokio::task::spawn_blocking(move || engine::Engine::start(path, recursive, exclude, for_engine))
            .await
            .map_err(|e| WatchError::Internal(format!("watch setup task: {e}")))??;
        let (stop_rx, stop_tx) =
            nix::unistd::pipe().map_err(|e| WatchError::Io { what: "pipe".into(), source: e.into() })?;
        std::thread::Builder::new()
            .name(format!("watch-{}", &id[..8]))
            .spawn(move || engine.run(stop_rx))
            .map_err(|source| WatchError::Io { what: "starting the watch thread".into(), source })?;
        Ok(Watch { shared, _stop: stop_tx })
    }

    /// Every watch.
    pub fn list(&self) -> Vec<WatchInfo> {
        let reg = self.registry();
        let mut out: Vec<WatchInfo> = reg
            .watches
            .values()
            .map(|w| {
                let s = &w.shared;
                let (cursor, ended) = s.cursor();
                WatchInfo {
                    id: s.id.clone(),
                    path: s.path.clone(),
                    recursive: s.recursive,
                    exclude: s.exclude.clone(),
                    cursor,
                    readers: s.readers.load(Ordering::Relaxed),
                    kernel_watches: s.kernel_watches.load(Ordering::Relaxed),
                    ended,
                    created_at: s.created_ms,
                }
            })
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Deletes a watch: its kernel watches go, its readers' streams end.
    pub fn delete(&self, id: &str) -> Result<(), WatchError> {
        let watch = self.registry().watches.remove(id).ok_or_else(|| WatchError::NotFound(id.to_string()))?;
        watch.shared.end();
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Arc<Shared>, WatchError> {
        let shared = self.registry().watches.get(id).map(|w| w.shared.clone());
        let shared = shared.ok_or_else(|| WatchError::NotFound(id.to_string()))?;
        shared.touch();
        Ok(shared)
    }

    /// A reader of the events after `after` (replay, then follow). A cursor older than the ring
    /// starts with one `overflow`.
    pub fn events(&self, id: &str, after: u64) -> Result<WatchEvents, WatchError> {
        let shared = self.get(id)?;
        shared.check_cursor(after)?;
        shared.readers.fetch_add(1, Ordering::SeqCst);
        let rx = shared.tick.subscribe();
        Ok(WatchEvents { shared, after, rx, buf: std::collections::VecDeque::new() })
    }

    /// X42: what changed after `since`, per path.
    pub fn changes(&self, id: &str, since: u64) -> Result<Changes, WatchError> {
        let shared = self.get(id)?;
        shared.check_cursor(since)?;
        let ring = shared.ring.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ring.changes(since))
    }

    /// Shutdown: every watch ends, every reader's stream finishes.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        let watches: Vec<Watch> = self.registry().watches.drain().map(|(_, w)| w).collect();
        for w in watches {
            w.shared.end();
        }
    }

    /// Collects watches with no reader and no request for the TTL. Started with the first watch;
    /// ends with the manager or at shutdown.
    fn start_sweeper(&self) {
        if self.inner.sweeper.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = (self.inner.opts.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.stopped.load(Ordering::SeqCst) {
                    return;
                }
                WatchManager { inner }.sweep(Instant::now());
            }
        });
    }

    fn sweep(&self, now: Instant) {
        let ttl = self.inner.opts.ttl;
        let expired: Vec<Watch> = {
            let mut reg = self.registry();
            let ids: Vec<String> = reg
                .watches
                .iter()
                .filter(|(_, w)| {
                    let s = &w.shared;
                    let idle = now.saturating_duration_since(*s.last_used.lock().unwrap_or_else(|e| e.into_inner()));
                    s.readers.load(Ordering::SeqCst) == 0 && idle >= ttl
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| reg.watches.remove(id)).collect()
        };
        for w in expired {
            tracing::info!(id = %w.shared.id, path = %w.shared.path, "watch collected after its TTL");
            w.shared.end();
        }
    }
}

/// One reader of a watch's events: replays from its cursor, then follows. Counts as a reader
/// (the watch is not collected) until dropped.
pub struct WatchEvents {
    shared: Arc<Shared>,
    after: u64,
    rx: tokio::sync::watch::Receiver<u64>,
    buf: std::collections::VecDeque<WatchEvent>,
}

impl WatchEvents {
    /// The events as a stream (ends as [`WatchEvents::next`] does).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = WatchEvent> + Send {
        futures_util::stream::unfold(self, |mut events| async move { events.next().await.map(|ev| (ev, events)) })
    }

    /// The next event; `None` once the watch ended (deleted, collected, directory gone, shutdown)
    /// and everything was read.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return Some(ev);
            }
            // Marked seen before the ring is read: a publish after the read wakes `changed`.
            self.rx.borrow_and_update();
            let (out, ended) = {
                let ring = self.shared.ring.lock().unwrap_or_else(|e| e.into_inner());
                (ring.read_after(self.after, READ_BATCH), ring.ended)
            };
            if let Some(lost) = out.lost_up_to {
                let mut ev = WatchEvent::new(EventType::Overflow, self.shared.path.clone(), true);
                ev.seq = lost;
                self.after = lost;
                self.buf.push_back(ev);
            }
            if let Some(last) = out.events.last() {
                self.after = last.seq;
            }
            self.buf.extend(out.events);
            if !self.buf.is_empty() {
                continue;
            }
            if ended || self.rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for WatchEvents {
    fn drop(&mut self) {
        self.shared.touch();
        self.shared.readers.fetch_sub(1, Ordering::SeqCst);
    }
}
