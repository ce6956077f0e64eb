//! Resumable uploads, the domain side of the tus 1.0 protocol (EXTENSIONS X33; `api::tus` speaks
//! the wire protocol).
//!
//! An upload is created with its length and target path. Its bytes go to a hidden partial file
//! beside the target (`.execd-tus-<id>.part`, mode 0600, same filesystem), written at explicit
//! offsets, and the file lands on the target with one atomic rename when the last byte is in; a
//! reader never sees a prefix. Its record (target, length, offset, expiry, mode, metadata) is a
//! small JSON file in `<state_dir>/tus/`, rewritten (temporary file + rename) after each chunk.
//!
//! Durability is checkpointed: the partial file is fdatasynced once at least [`CHECKPOINT`] bytes
//! arrived since the last sync (and the whole file when the upload completes), and the record
//! carries both the acknowledged offset and the synced one (`durable`), with the boot it was
//! written in. At start, in the same boot (execd restarted, the machine did not: the page cache
//! kept every acknowledged byte) an upload resumes at its acknowledged offset; after a reboot or a
//! machine crash, at its durable one, so it never counts bytes that may not be on disk (tus: the
//! client asks for the offset and resends from there). Either way the partial file is cut back to
//! that offset (bytes beyond it were never acknowledged), and records whose file is gone or that
//! have expired are dropped. One sync per 64 MiB instead of one per PATCH keeps the client from
//! waiting for the disk after every chunk (BENCHMARKS.md, "Resumable upload").
//!
//! One request writes to an upload at a time (a per-upload lock; a second writer waits a little,
//! then gets [`TusError::Busy`]). A chunk with a checksum is kept only when it matches; a chunk
//! cut off by the client without one keeps what arrived (tus core: the client asks for the offset
//! and resumes from there). Uploads expire [`TusOpts::expiry`] after their last write; a sweeper
//! (and every lookup) removes expired ones with their partial files. At most
//! [`TusOpts::max_uploads`] exist at once.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::batch::{BatchSink, Batcher};
use super::info::mode_from_wire;
use super::FsError;

/// The protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions supported, as `Tus-Extension` lists them.
pub const TUS_EXTENSIONS: &[&str] = &["creation", "creation-with-upload", "termination", "checksum", "expiration"];
/// The largest upload accepted (advertised as `Tus-Max-Size`).
pub const MAX_SIZE: u64 = 1 << 40;
/// Largest `Upload-Metadata` value kept (it is echoed on every HEAD).
pub const MAX_METADATA: usize = 16 * 1024;
/// How long a second request waits for the one writing to the same upload.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The partial file is fdatasynced once this many bytes arrived since its last sync.
pub const CHECKPOINT: u64 = 64 << 20;

/// The knobs (`--tus-expiry`, `--tus-max-uploads`).
#[derive(Debug, Clone)]
pub struct TusOpts {
    /// Where the records live (`<state_dir>/tus`).
    pub dir: PathBuf,
    /// An upload not written to for this long is removed.
    pub expiry: Duration,
    /// Uploads that may exist at once.
    pub max_uploads: usize,
}

/// What went wrong with a resumable upload.
#[derive(Debug, thiserror::Error)]
pub enum TusError {
    /// Unknown id, or the upload finished, was terminated or expired.
    #[error("upload {0:?} not found (unknown, finished, terminated or expired)")]
    NotFound(String),
    /// The chunk does not start where the upload is.
    #[error("offset mismatch: the upload is at offset {current}, the request starts at {given}")]
    OffsetMismatch { current: u64, given: u64 },
    /// The chunk's checksum did not match; the chunk was discarded.
    #[error("checksum mismatch: the {algorithm} of the chunk differs from Upload-Checksum; chunk discarded")]
    ChecksumMismatch { algorithm: &'static str },
    /// A bad header value or metadata.
    #[error("{0}")]
    Invalid(String),
    /// Longer than allowed, or more bytes than the upload has left.
    #[error("{0}")]
    TooLarge(String),
    /// `max_uploads` exist already.
    #[error("too many open uploads (limit {0}); finish or terminate one first")]
    TooMany(usize),
    /// Another request is writing to this upload.
    #[error("upload {0:?} is busy: another request is writing to it")]
    Busy(String),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// A checksum algorithm of the tus checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    /// `sha1` or `sha256` (the names in `Tus-Checksum-Algorithm`).
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
        }
    }
}

/// A chunk checksum to verify: the algorithm and the expected digest.
#[derive(Debug, Clone)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(a: Algorithm) -> Hasher {
        use sha2::Digest;
        match a {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
    fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }
    fn finish(self) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// What a creation asks for.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Target path as given (expanded like every filesystem route).
    pub path: String,
    /// Final mode in the wire form of the other routes (`755`), if given.
    pub mode: Option<i64>,
    pub length: u64,
    /// The raw `Upload-Metadata` value, echoed on HEAD.
    pub metadata: String,
}

/// The persistent record of one upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    target: PathBuf,
    partial: PathBuf,
    length: u64,
    /// Acknowledged bytes.
    offset: u64,
    /// Bytes of the partial file known to be on disk (fdatasynced). Absent in the records of
    /// earlier execds, which synced every acknowledged byte.
    #[serde(default)]
    durable: Option<u64>,
    /// The boot the record was written in ([`crate::os::boot_id`]).
    #[serde(default)]
    boot_id: Option<String>,
    /// Milliseconds since the epoch.
    expires_ms: u64,
    mode: Option<u32>,
    metadata: String,
}

/// What HEAD (and the answer of a write) reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub offset: u64,
    pub length: u64,
    pub expires: SystemTime,
    pub metadata: String,
    /// The file is in place (the upload is gone from the store).
    pub complete: bool,
}

struct Entry {
    id: String,
    target: PathBuf,
    partial: PathBuf,
    length: u64,
    mode: Option<u32>,
    metadata: String,
    offset: AtomicU64,
    /// Bytes fdatasynced (at most `offset`).
    durable: AtomicU64,
    expires_ms: AtomicU64,
    /// Held by the one request writing (or terminating); holds the partial file between
    /// requests, when kept ([`KeptPartial`]).
    write: tokio::sync::Mutex<Option<KeptPartial>>,
}

/// Partial files kept open between requests, at most (each is one file descriptor).
const KEEP_OPEN: usize = 16;
static KEPT_OPEN: AtomicU64 = AtomicU64::new(0);

/// An upload's partial file kept open for its next `PATCH`: opening it on the blocking pool was
/// the largest fixed cost of a `PATCH` (p50 0.1 ms, p90 0.9 ms; 41 ms of a 1 GiB upload in 8 MiB
/// chunks). Reused only by a request of the same identity (the one whose permissions opened it),
/// and only [`KEEP_OPEN`] are kept at once, so open uploads (up to `--tus-max-uploads`) cannot
/// hold a descriptor each.
struct KeptPartial {
    file: Arc<File>,
    identity: Option<Arc<super::identity::Identity>>,
}

impl KeptPartial {
    /// Keeps `file` if fewer than [`KEEP_OPEN`] are kept.
    fn keep(file: Arc<File>, identity: Option<Arc<super::identity::Identity>>) -> Option<KeptPartial> {
        KEPT_OPEN
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < KEEP_OPEN as u64).then_some(n + 1))
            .ok()
            .map(|_| KeptPartial { file, identity })
    }
}

impl Drop for KeptPartial {
    fn drop(&mut self) {
        KEPT_OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Entry {
    fn record(&self) -> Record {
        Record {
            id: self.id.clone(),
            target: self.target.clone(),
            partial: self.partial.clone(),
            length: self.length,
            offset: self.offset.load(Ordering::SeqCst),
            durable: Some(self.durable.load(Ordering::SeqCst)),
            boot_id: crate::os::boot_id(),
            expires_ms: self.expires_ms.load(Ordering::SeqCst),
            mode: self.mode,
            metadata: self.metadata.clone(),
        }
    }

    fn status(&self, complete: bool) -> Status {
        Status {
            offset: self.offset.load(Ordering::SeqCst),
            length: self.length,
            expires: UNIX_EPOCH + Duration::from_millis(self.expires_ms.load(Ordering::SeqCst)),
            metadata: self.metadata.clone(),
            complete,
        }
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.load(Ordering::SeqCst) <= now_ms
    }
}

/// Every open upload. Cheap to clone.
#[derive(Clone)]
pub struct TusStore(Arc<Inner>);

struct Inner {
    opts: TusOpts,
    uploads: Mutex<HashMap<String, Arc<Entry>>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn partial_name(id: &str) -> String {
    format!(".execd-tus-{id}.part")
}

/// Ids are 32 lowercase hex digits (a v4 UUID); anything else is unknown.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The process umask, read from `/proc/self/status` (022 when unreadable).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

impl TusStore {
    /// Creates `opts.dir` (0700), loads the records an earlier run left (see the module docs) and
    /// starts the expiry sweeper (needs a tokio runtime).
    pub fn new(opts: TusOpts) -> io::Result<TusStore> {
        crate::state_dir::create_dir(&opts.dir)?;
        let mut uploads = HashMap::new();
        let now = now_ms();
        for entry in std::fs::read_dir(&opts.dir)?.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                // A record half written when an earlier run died.
                let _ = std::fs::remove_file(&p);
                continue;
            };
            match load_record(&p, id, now) {
                Some(rec) => {
                    let e = Entry {
                        id: rec.id.clone(),
                        target: rec.target,
                        partial: rec.partial,
                        length: rec.length,
                        mode: rec.mode,
                        metadata: rec.metadata,
                        offset: AtomicU64::new(rec.offset),
                        durable: AtomicU64::new(rec.durable.unwrap_or(rec.offset)),
                        expires_ms: AtomicU64::new(rec.expires_ms),
                        write: tokio::sync::Mutex::new(None),
                    };
                    uploads.insert(rec.id, Arc::new(e));
                }
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        if !uploads.is_empty() {
            tracing::info!(uploads = uploads.len(), "resumable uploads restored from the state directory");
        }
        let inner = Arc::new(Inner { opts, uploads: Mutex::new(uploads) });
        spawn_sweeper(Arc::downgrade(&inner));
        Ok(TusStore(inner))
    }

    /// The configured expiry.
    pub fn expiry(&self) -> Duration {
        self.0.opts.expiry
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.0.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live upload `id`; an expired one is removed on the way (404).
    async fn get(&self, id: &str) -> Result<Arc<Entry>, TusError> {
        let not_found = || TusError::NotFound(id.to_string());
        if !valid_id(id) {
            return Err(not_found());
        }
        let entry = self.map().get(id).cloned().ok_or_else(not_found)?;
        if entry.expired(now_ms()) {
            self.sweep().await;
            return Err(not_found());
        }
        Ok(entry)
    }

    /// Creates an upload (blocking work on the blocking pool): checks and prepares the target's
    /// directory, creates the partial file, writes the record. An upload of length 0 lands at once.
    pub async fn create(&self, req: NewUpload) -> Result<(String, Status), TusError> {
        if req.length > MAX_SIZE {
            return Err(TusError::TooLarge(format!(
                "Upload-Length {} is over the limit of {MAX_SIZE} bytes",
                req.length
            )));
        }
        if req.metadata.len() > MAX_METADATA {
            return Err(TusError::Invalid(format!("Upload-Metadata is longer than {MAX_METADATA} bytes")));
        }
        let mode = req.mode.map(mode_from_wire).transpose().map_err(|e| TusError::Invalid(e.to_string()))?;
        self.sweep().await;
        let max = self.0.opts.max_uploads;
        if self.map().len() >= max {
            return Err(TusError::TooMany(max));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.0.opts.dir.clone();
        let expires_ms = now_ms() + self.0.opts.expiry.as_millis() as u64;
        let id2 = id.clone();
        let identity = super::identity::current();
        let entry = super::blocking(move || {
            let target = resolve_target(&req.path)?;
            let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
            let partial = parent.join(partial_name(&id2));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&partial)
                .map_err(|e| FsError::io("creating the partial file", &partial, e))?;
            let entry = Entry {
                id: id2,
                target,
                partial,
                length: req.length,
                mode,
                metadata: req.metadata,
                offset: AtomicU64::new(0),
                durable: AtomicU64::new(0),
                expires_ms: AtomicU64::new(expires_ms),
                // Kept for the first chunk, which usually follows at once.
                write: tokio::sync::Mutex::new(KeptPartial::keep(Arc::new(file), identity)),
            };
            if let Err(e) = save_record(&dir, &entry.record()) {
                let _ = std::fs::remove_file(&entry.partial);
                return Err(e);
            }
            Ok(entry)
        })
        .await?;
        let entry = Arc::new(entry);
        let admitted = {
            let mut map = self.map();
            let room = map.len() < max;
            if room {
                map.insert(id.clone(), entry.clone());
            }
            room
        };
        if !admitted {
            self.discard(entry).await;
            return Err(TusError::TooMany(max));
        }
        if entry.length == 0 {
            let mut guard = entry.write.lock().await;
            *guard = None;
            let status = self.complete(&entry).await;
            drop(guard);
            return Ok((id, status?));
        }
        Ok((id, entry.status(false)))
    }

    /// The upload's offset, length, expiry and metadata (HEAD).
    pub async fn status(&self, id: &str) -> Result<Status, TusError> {
        Ok(self.get(id).await?.status(false))
    }

    /// Appends `body` at `offset` (PATCH, and the body of a creation-with-upload). `declared` is
    /// the request's Content-Length, if any. The body's errors (a client gone, a stall) end the
    /// chunk: without a checksum what arrived is kept, with one the chunk is discarded; the error
    /// is returned after the offset is saved. The work runs on its own task, so a handler dropped
    /// mid-body still records the progress made.
    pub async fn append<S, E>(
        &self,
        id: &str,
        offset: u64,
        declared: Option<u64>,
        checksum: Option<Checksum>,
        body: S,
    ) -> Result<Status, TusError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: Into<TusError> + Send + 'static,
    {
        let entry = self.get(id).await?;
        let store = self.clone();
        let task = tokio::spawn(async move { store.append_locked(entry, offset, declared, checksum, body).await });
        task.await.map_err(|e| TusError::Fs(FsError::Internal(e.to_string())))?
    }

    /// A write may start (caller holds the write lock): the upload still exists, `offset` is
    /// its offset, and a `declared` length fits. Returns the offset.
    fn check_start(&self, entry: &Entry, offset: u64, declared: Option<u64>) -> Result<u64, TusError> {
        // Terminated or swept while this request waited.
        if !self.map().contains_key(&entry.id) {
            return Err(TusError::NotFound(entry.id.clone()));
        }
        let current = entry.offset.load(Ordering::SeqCst);
        if offset != current {
            return Err(TusError::OffsetMismatch { current, given: offset });
        }
        let left = entry.length - current;
        if let Some(n) = declared.filter(|n| *n > left) {
            return Err(TusError::TooLarge(format!(
                "the chunk has {n} bytes but the upload has only {left} bytes left"
            )));
        }
        Ok(current)
    }

    async fn append_locked<S, E>(
        &self,
        entry: Arc<Entry>,
        offset: u64,
        declared: Option<u64>,
        checksum: Option<Checksum>,
        body: S,
    ) -> Result<Status, TusError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: Into<TusError> + Send + 'static,
    {
        let mut guard =
            tokio::time::timeout(LOCK_WAIT, entry.write.lock()).await.map_err(|_| TusError::Busy(entry.id.clone()))?;
        let current = self.check_start(&entry, offset, declared)?;
        let identity = super::identity::current();
        let file = match guard.take() {
            Some(kept) if kept.identity.as_deref() == identity.as_deref() => kept.file.clone(),
            _ => {
                let partial = entry.partial.clone();
                let file = super::blocking(move || {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&partial)
                        .map_err(|e| FsError::io("opening the partial file", &partial, e))
                })
                .await?;
                Arc::new(file)
            }
        };
        let mut w = ChunkWriter::new(
            file.clone(),
            entry.partial.clone(),
            current,
            checksum.as_ref().map(|c| Hasher::new(c.algorithm)),
        );
        let (received, failure) = receive(&mut w, body, entry.length - current).await;
        // A checkpoint: enough unsynced bytes (the last chunk's are synced with the whole file
        // when the upload completes).
        let durable = entry.durable.load(Ordering::SeqCst);
        let reached = current + received;
        let sync = reached < entry.length && reached - durable >= CHECKPOINT;
        let written = w.flush(current, sync).await;
        if written.result.is_ok() && reached < entry.length {
            // Kept for the next chunk (a failed write or sync opens the file afresh).
            *guard = KeptPartial::keep(file, identity);
        }
        let written_to = written.at;
        let (keep, failure) = verdict(failure, written, checksum.as_ref());
        let new_offset = if keep { written_to } else { current };
        if new_offset != written_to {
            // Cut the discarded bytes off (HEAD never counted them, but the file should not
            // carry them either).
            let partial = entry.partial.clone();
            let _ = super::blocking(move || {
                let f = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&partial);
                if let Ok(f) = f {
                    let _ = f.set_len(new_offset);
                }
                Ok(())
            })
            .await;
        }
        if sync && keep {
            entry.durable.store(new_offset, Ordering::SeqCst);
        }
        if new_offset != current {
            entry.offset.store(new_offset, Ordering::SeqCst);
            entry.expires_ms.store(now_ms() + self.0.opts.expiry.as_millis() as u64, Ordering::SeqCst);
            let dir = self.0.opts.dir.clone();
            let rec = entry.record();
            super::blocking(move || save_record(&dir, &rec)).await?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let status = if new_offset == entry.length { self.complete(&entry).await? } else { entry.status(false) };
        drop(guard);
        Ok(status)
    }

    /// Moves the complete file onto its target (caller holds the write lock): mode (given, else
    /// the existing target's, else 0777 &^ umask as the other uploads), the existing target's
    /// owner, atomic rename, directory fsync; then forgets the upload.
    async fn complete(&self, entry: &Arc<Entry>) -> Result<Status, TusError> {
        let (partial, target, mode) = (entry.partial.clone(), entry.target.clone(), entry.mode);
        super::blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&partial)
                .map_err(|e| FsError::io("opening the partial file", &partial, e))?;
            let existing = std::fs::metadata(&target).ok();
            match &existing {
                Some(m) if m.is_dir() => {
                    return Err(FsError::Invalid(format!("cannot upload to {}: is a directory", target.display())))
                }
                Some(m) if !m.is_file() => {
                    return Err(FsError::Invalid(format!("cannot upload to {}: not a regular file", target.display())))
                }
                _ => {}
            }
            if let Some(m) = &existing {
                // Keeps the owner of the file it replaces (D30); only root may, others keep theirs.
                let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
            }
            let mode = mode.or(existing.as_ref().map(|m| m.mode() & 0o7777)).unwrap_or(0o777 & !umask());
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| FsError::io("chmod", &partial, e))?;
            file.sync_all().map_err(|e| FsError::io("fsync", &partial, e))?;
            std::fs::rename(&partial, &target).map_err(|e| FsError::io("renaming into place", &target, e))?;
            if let Some(dir) = target.parent() {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })
        .await?;
        self.forget(entry).await;
        Ok(entry.status(true))
    }

    /// Terminates an upload: removes its partial file and record (DELETE).
    pub async fn terminate(&self, id: &str) -> Result<(), TusError> {
        let entry = self.get(id).await?;
        let mut guard =
            tokio::time::timeout(LOCK_WAIT, entry.write.lock()).await.map_err(|_| TusError::Busy(entry.id.clone()))?;
        if !self.map().contains_key(&entry.id) {
            return Err(TusError::NotFound(id.to_string()));
        }
        *guard = None;
        self.discard(entry.clone()).await;
        drop(guard);
        Ok(())
    }

    /// Removes the upload from the map and its record from disk.
    async fn forget(&self, entry: &Arc<Entry>) {
        self.map().remove(&entry.id);
        let rec = self.0.opts.dir.join(format!("{}.json", entry.id));
        let _ = super::blocking(move || {
            let _ = std::fs::remove_file(rec);
            Ok(())
        })
        .await;
    }

    /// Forgets the upload and removes its partial file.
    async fn discard(&self, entry: Arc<Entry>) {
        self.forget(&entry).await;
        let partial = entry.partial.clone();
        let _ = super::blocking(move || {
            let _ = std::fs::remove_file(partial);
            Ok(())
        })
        .await;
    }

    /// Removes every expired upload that no request is writing to. Returns how many went.
    pub async fn sweep(&self) -> usize {
        let now = now_ms();
        let expired: Vec<Arc<Entry>> = self.map().values().filter(|e| e.expired(now)).cloned().collect();
        let mut n = 0;
        for e in expired {
            let Ok(mut guard) = e.write.try_lock() else { continue };
            if self.map().get(&e.id).is_some_and(|cur| Arc::ptr_eq(cur, &e)) {
                *guard = None;
                self.discard(e.clone()).await;
                n += 1;
            }
            drop(guard);
        }
        if n > 0 {
            tracing::info!(uploads = n, "expired resumable uploads removed");
        }
        n
    }
}

/// Feeds `body` to `w` until it ends, fails, or passes `left` bytes. Returns the bytes received
/// and why it stopped early, if it did.
async fn receive<S, E>(w: &mut ChunkWriter, mut body: S, left: u64) -> (u64, Option<TusError>)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<TusError>,
{
    let mut received = 0u64;
    while let Some(item) = body.next().await {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => return (received, Some(e.into())),
        };
        received += chunk.len() as u64;
        if received > left {
            let e = TusError::TooLarge(format!("the chunk is longer than the {left} bytes the upload has left"));
            return (received, Some(e));
        }
        if let Err(e) = w.push(chunk).await {
            return (received, Some(e.into()));
        }
    }
    (received, None)
}

/// Whether the bytes of a chunk count, and the error to answer: a chunk that was too long or
/// failed to write counts for nothing, a checksummed one only whole and matching, and one cut off
/// by the client without a checksum keeps what arrived (tus core).
fn verdict(failure: Option<TusError>, written: ChunkWritten, checksum: Option<&Checksum>) -> (bool, Option<TusError>) {
    let ChunkWritten { hasher, result: flushed, .. } = written;
    let (keep, mut failure) = match (failure, &flushed, checksum) {
        (f @ Some(TusError::TooLarge(_)), _, _) => (false, f),
        (f, Err(_), _) => (false, f),
        (f @ Some(_), _, Some(_)) => (false, f),
        (None, Ok(()), Some(c)) => {
            if hasher.map(Hasher::finish).unwrap_or_default() == c.digest {
                (true, None)
            } else {
                (false, Some(TusError::ChecksumMismatch { algorithm: c.algorithm.name() }))
            }
        }
        (f, _, _) => (true, f),
    };
    if let Err(e) = flushed {
        failure.get_or_insert(e.into());
    }
    (keep, failure)
}

/// Writes a chunk's bytes at increasing offsets through a [`Batcher`], hashing them on the way,
/// and syncs them at the end when asked.
struct ChunkWriter {
    batches: Batcher<PartialSink>,
    /// The same file, for the sync at the end (the sink travels with the batch in flight).
    file: Arc<File>,
    path: PathBuf,
}

/// The partial file from the batches' point of view: where the next batch goes, and the hasher,
/// which travels with the batch in flight so the bytes are hashed in order.
struct PartialSink {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes written for sure.
    at: u64,
    hasher: Option<Hasher>,
}

impl BatchSink for PartialSink {
    fn write_batch(&mut self, batch: &[u8]) -> Result<(), FsError> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(batch);
        }
        self.file.write_all_at(batch, self.at).map_err(|e| FsError::io("writing", &self.path, e))?;
        // Starts the writeback of this batch now (a hint, not a wait; errors ignored), so the
        // fdatasync that ends the PATCH finds little left to write: without it every PATCH waited
        // for its whole chunk to reach the disk while the client sat idle. On Linux, DONTNEED
        // starts writeback of the range's dirty pages (the ones under writeback stay cached);
        // rustix has no safe sync_file_range.
        let len = std::num::NonZeroU64::new(batch.len() as u64);
        let _ = rustix::fs::fadvise(&*self.file, self.at, len, rustix::fs::Advice::DontNeed);
        self.at += batch.len() as u64;
        Ok(())
    }
}

/// What a chunk's writing left: the offset written to for sure, the hasher, and the first error.
struct ChunkWritten {
    at: u64,
    hasher: Option<Hasher>,
    result: Result<(), FsError>,
}

impl ChunkWriter {
    fn new(file: Arc<File>, path: PathBuf, at: u64, hasher: Option<Hasher>) -> ChunkWriter {
        let sink = PartialSink { file: file.clone(), path: path.clone(), at, hasher };
        ChunkWriter { batches: Batcher::new(sink), file, path }
    }

    async fn push(&mut self, data: Bytes) -> Result<(), FsError> {
        self.batches.push(data).await
    }

    /// Writes the rest and, with `sync`, syncs the file (also after a failed write: what was
    /// written before it counts). `from` is the offset the chunk started at, what is left when a
    /// write job panicked.
    async fn flush(self, from: u64, sync: bool) -> ChunkWritten {
        let (sink, res) = self.batches.finish().await;
        let (at, hasher) = sink.map_or((from, None), |s| (s.at, s.hasher));
        let (file, path) = (self.file, self.path);
        let synced = if sync {
            super::blocking(move || file.sync_data().map_err(|e| FsError::io("fsync", &path, e))).await
        } else {
            Ok(())
        };
        ChunkWritten { at, hasher, result: res.and(synced) }
    }
}

/// The target of an upload ([`super::upload::resolve_target`]); a directory refused (400).
fn resolve_target(given: &str) -> Result<PathBuf, FsError> {
    match super::upload::resolve_target(given)? {
        (target, Some(m)) if m.is_dir() => {
            Err(FsError::Invalid(format!("cannot upload to {}: is a directory", target.display())))
        }
        (target, _) => Ok(target),
    }
}

/// Writes a record: temporary file, rename (a crash leaves the old record or the new one).
///
/// Not fsynced: its `durable` offset was synced before it was written, and after a machine crash
/// the partial file is cut back to the durable offset of whichever record survived, so an older
/// record only makes the client resume earlier; a lost creation record makes its upload unknown
/// (`404`), which a tus client answers with a new upload.
fn save_record(dir: &Path, rec: &Record) -> Result<(), FsError> {
    let path = dir.join(format!("{}.json", rec.id));
    let tmp = dir.join(format!("{}.json.tmp", rec.id));
    let text = serde_json::to_vec(rec).map_err(|e| FsError::Internal(e.to_string()))?;
    super::identity::as_execd(|| -> io::Result<()> {
        let mut f = crate::state_dir::create_file(&tmp)?;
        io::Write::write_all(&mut f, &text)?;
        std::fs::rename(&tmp, &path)
    })
    .map_err(|e| FsError::io("writing the upload record", &path, e))
}

/// Reads and checks one record at start; cuts its partial file back to the offset it resumes
/// from ([`resume_offset`]). `None`: drop it (and its partial file, when it has a valid one).
fn load_record(p: &Path, id: &str, now: u64) -> Option<Record> {
    let text = std::io::read_to_string(crate::state_dir::open_file(p).ok()?).ok()?;
    let rec: Record = serde_json::from_str(&text).ok()?;
    // Only a partial file named for this very id, beside an absolute target, is ever touched.
    let sane = valid_id(id)
        && rec.id == id
        && rec.target.is_absolute()
        && rec.partial.file_name().is_some_and(|n| n.to_string_lossy() == partial_name(id))
        && rec.partial.parent() == rec.target.parent()
        && rec.offset <= rec.length;
    if !sane {
        return None;
    }
    let meta = std::fs::symlink_metadata(&rec.partial).ok().filter(|m| m.is_file())?;
    if rec.expires_ms <= now {
        let _ = std::fs::remove_file(&rec.partial);
        return None;
    }
    let mut rec = rec;
    rec.offset = resume_offset(&rec, crate::os::boot_id().as_deref());
    if meta.len() != rec.offset {
        let f = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&rec.partial).ok()?;
        if meta.len() > rec.offset {
            f.set_len(rec.offset).ok()?;
        } else {
            // Never happens in the same boot, nor below the durable offset; trust the file then.
            rec.offset = meta.len();
        }
    }
    rec.durable = Some(rec.durable.unwrap_or(rec.offset).min(rec.offset));
    Some(rec)
}

/// Where an upload resumes after a restart: its acknowledged offset when the record was written in
/// this boot (`boot`; the page cache kept the bytes), else its durable one.
fn resume_offset(rec: &Record, boot: Option<&str>) -> u64 {
    let durable = rec.durable.unwrap_or(rec.offset).min(rec.offset);
    match (rec.boot_id.as_deref(), boot) {
        (Some(written), Some(now)) if written == now => rec.offset,
        _ => durable,
    }
}

/// Removes expired uploads periodically; ends when the store is dropped.
fn spawn_sweeper(inner: Weak<Inner>) {
    let Some(strong) = inner.upgrade() else { return };
    let period = (strong.opts.expiry / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    drop(strong);
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    rt.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { break };
            TusStore(inner).sweep().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::batch::BATCH;

    #[test]
    fn ids_are_uuid_hex_only() {
        assert!(valid_id(&uuid::Uuid::new_v4().simple().to_string()));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id("ABCDEF0123456789abcdef0123456789"));
        assert!(!valid_id(""));
    }

    #[test]
    fn x33_resume_at_the_acknowledged_offset_in_the_same_boot_else_at_the_durable_one() {
        let rec = |durable: Option<u64>, boot: Option<&str>| Record {
            id: "a".repeat(32),
            target: "/t/f".into(),
            partial: "/t/.p".into(),
            length: 1000,
            offset: 700,
            durable,
            boot_id: boot.map(str::to_string),
            expires_ms: 0,
            mode: None,
            metadata: String::new(),
        };
        assert_eq!(resume_offset(&rec(Some(128), Some("b1")), Some("b1")), 700, "execd restarted");
        assert_eq!(resume_offset(&rec(Some(128), Some("b1")), Some("b2")), 128, "the machine rebooted");
        assert_eq!(resume_offset(&rec(Some(128), None), Some("b1")), 128, "boot unknown");
        assert_eq!(resume_offset(&rec(Some(128), Some("b1")), None), 128);
        assert_eq!(resume_offset(&rec(None, None), Some("b1")), 700, "an earlier execd's record: all synced");
        assert_eq!(resume_offset(&rec(Some(900), Some("b0")), Some("b1")), 700, "never past the acknowledged");
        let old: Record = serde_json::from_str(
            r#"{"id":"x","target":"/t","partial":"/p","length":5,"offset":3,"expires_ms":1,"mode":null,"metadata":""}"#,
        )
        .unwrap();
        assert_eq!((old.durable, old.boot_id), (None, None));
    }

    #[test]
    fn algorithms_parse() {
        assert_eq!(Algorithm::parse("sha1"), Some(Algorithm::Sha1));
        assert_eq!(Algorithm::parse("sha256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("md5"), None);
    }

    /// Odd-sized pieces across several batches, at an offset: the bytes land in order, `at`
    /// counts them and the hasher (which travels with each batch in flight) sees them in order.
    #[tokio::test]
    async fn x33_chunk_writer_writes_and_hashes_batches_in_order() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"head").unwrap();
        let data: Vec<u8> = (0..BATCH * 4 + 1234).map(|i| (i * 31 % 251) as u8).collect();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut w = ChunkWriter::new(Arc::new(file), path.clone(), 4, Some(Hasher::new(Algorithm::Sha256)));
        for piece in data.chunks(100_003) {
            w.push(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let done = w.flush(4, true).await;
        done.result.unwrap();
        assert_eq!(done.at, 4 + data.len() as u64);
        assert_eq!(done.hasher.unwrap().finish(), sha2::Sha256::digest(&data).to_vec());
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..4], b"head");
        assert!(on_disk[4..] == data[..]);
    }

    /// A failed write: nothing after it is written (no batch at a wrong offset), `at` stays at
    /// the bytes written before it.
    #[tokio::test]
    async fn x33_chunk_writer_stops_at_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"").unwrap();
        // Read-only: every write fails with EBADF.
        let file = std::fs::File::open(&path).unwrap();
        let mut w = ChunkWriter::new(Arc::new(file), path.clone(), 0, None);
        let pushed = w.push(Bytes::from(vec![7u8; BATCH * 3])).await;
        assert!(pushed.is_err(), "the failed first batch surfaces when the second is handed over");
        let done = w.flush(0, true).await;
        done.result.unwrap();
        assert_eq!(done.at, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn hashers_match_known_digests() {
        let mut h = Hasher::new(Algorithm::Sha1);
        h.update(b"abc");
        assert_eq!(h.finish()[..4], [0xa9, 0x99, 0x3e, 0x36]);
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"abc");
        assert_eq!(h.finish()[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
