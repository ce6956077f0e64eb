//! The filesystem API's domain logic (§7, DECISIONS D30–D34): path expansion, FileInfo, simple
//! operations (rm, mv, mkdir, chmod/chown), listing, search, replace, streamed upload and download.
//! No HTTP here: functions take plain values, return [`FsError`], and `api/files.rs` /
//! `api/directories.rs` translate.
//!
//! Everything that touches the disk is blocking; callers run it on `spawn_blocking` (or use the
//! async wrappers here, which do). Nothing that waits for the network runs on a blocking thread
//! (issue #13): transfers hand the blocking pool one chunk or batch at a time ([`transfer`]).

pub mod archive;
pub mod batch;
pub mod bufpool;
pub mod download;
pub mod grep;
pub mod identity;
pub mod info;
pub mod list;
pub mod ops;
pub mod path;
pub mod range;
pub mod replace;
pub mod search;
pub mod temp;
pub mod transfer;
pub mod tus;
pub mod upload;

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use tokio::sync::mpsc;

pub use info::FileInfo;

/// What went wrong in a filesystem operation. Messages name the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path (or a parent) does not exist.
    #[error("file not found: {path}: {op}: {source}")]
    NotFound { op: &'static str, path: String, source: io::Error },
    /// The disk or quota is full (ENOSPC, EDQUOT).
    #[error("no space left on device: {op} {path}: {source}")]
    NoSpace { op: &'static str, path: String, source: io::Error },
    /// Refused by the kernel (EACCES, EPERM) to work run as another identity ([`identity`]).
    /// For execd's own identity these stay [`FsError::Io`], as upstream.
    #[error("permission denied: {op} {path}: {source}")]
    PermissionDenied { op: &'static str, path: String, source: io::Error },
    /// Any other I/O failure.
    #[error("error {op} {path}: {source}")]
    Io { op: &'static str, path: String, source: io::Error },
    /// The request is wrong for this path (a symlink or file where a directory is needed, a
    /// directory download, an empty `old`, a bad depth, ...).
    #[error("{0}")]
    Invalid(String),
    /// Deleting `/` is refused (DECISIONS D32).
    #[error("refusing to delete the root directory: {0}")]
    RootRefused(String),
    /// The operation cannot be done as asked (a directory given to `DELETE /files`, an existing
    /// mv destination, a non-octal mode, an invalid glob, ...). Upstream answers these with 500.
    #[error("{0}")]
    Failed(String),
    /// A blocking task died (panicked or was cancelled).
    #[error("internal error: {0}")]
    Internal(String),
    /// Already `max` transfers in flight (issue #13 finding 6): try again later.
    #[error("too many transfers in progress (limit {0}); try again later")]
    TooManyTransfers(usize),
    /// The client sent nothing for the stall timeout.
    #[error("no data received for {0:?}: transfer abandoned")]
    Stalled(std::time::Duration),
}

impl FsError {
    /// Classifies an I/O error on `path` during `op` (NotFound, NoSpace or Io).
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> FsError {
        let path = path.display().to_string();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => FsError::NoSpace { op, path, source },
            Some(libc::EACCES) | Some(libc::EPERM) if identity::current().is_some() => {
                FsError::PermissionDenied { op, path, source }
            }
            _ if source.kind() == io::ErrorKind::NotFound => FsError::NotFound { op, path, source },
            // A path the kernel cannot even take (an interior NUL byte): the client's mistake.
            _ if source.kind() == io::ErrorKind::InvalidInput && path.contains('\0') => {
                FsError::Invalid(format!("invalid path {path:?}: {source}"))
            }
            _ => FsError::Io { op, path, source },
        }
    }

    /// Like [`FsError::io`] but a missing path is a plain failure (routes where upstream answers
    /// 500 rather than 404, such as chmod).
    pub fn io_no_404(op: &'static str, path: &Path, source: io::Error) -> FsError {
        match FsError::io(op, path, source) {
            FsError::NotFound { op, path, source } => FsError::Io { op, path, source },
            other => other,
        }
    }
}

/// Runs blocking filesystem work on tokio's blocking pool (as the request's identity, if it has
/// one: [`identity`]).
pub async fn blocking<T, F>(f: F) -> Result<T, FsError>
where
    F: FnOnce() -> Result<T, FsError> + Send + 'static,
    T: Send + 'static,
{
    identity::spawn_blocking(f).await.map_err(|e| FsError::Internal(e.to_string()))?
}

/// A stream of FileInfo batches produced by a walk (list) running on a blocking thread.
/// An `Err` item ends the stream. Dropping the receiver stops the walk at its next batch.
pub type InfoStream = mpsc::Receiver<Result<Vec<FileInfo>, FsError>>;

/// Entries per batch: one channel hand-off (and reader wake-up) per batch, not per entry.
const WALK_BATCH: usize = 256;
/// Batches a walk may run ahead of its reader (bounds memory to about 1000 entries).
const WALK_CHANNEL: usize = 4;

/// Where a walk sends its entries. `send` returns false once the reader is gone.
pub struct InfoSink {
    tx: mpsc::Sender<Result<Vec<FileInfo>, FsError>>,
    batch: Vec<FileInfo>,
}

impl InfoSink {
    /// Queues one entry; sends a full batch, waiting while the channel is full.
    /// False: the reader went away.
    pub fn send(&mut self, info: FileInfo) -> bool {
        self.batch.push(info);
        self.batch.len() < WALK_BATCH || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(WALK_BATCH));
        self.tx.blocking_send(Ok(batch)).is_ok()
    }
}

/// Runs `walk` on a blocking thread; its entries and its final error (if any) go to the stream.
pub(crate) fn spawn_walk<F>(walk: F) -> InfoStream
where
    F: FnOnce(&mut InfoSink) -> Result<(), FsError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(WALK_CHANNEL);
    identity::spawn_blocking(move || {
        let mut sink = InfoSink { tx, batch: Vec::with_capacity(WALK_BATCH) };
        let res = walk(&mut sink);
        // Entries found before an error are delivered first, as upstream would have listed them.
        if sink.flush() {
            if let Err(e) = res {
                let _ = sink.tx.blocking_send(Err(e));
            }
        }
    });
    rx
}

/// Opens `p` (following symlinks) for reading, but only if it is a regular file (issue #13
/// finding 7): a FIFO would block the open (and later reads) forever, a device can have side
/// effects on open or never end. The type is checked on an `O_PATH` handle, which opens nothing,
/// and the file is then reopened through that very handle (`/proc/self/fd`), so a swap in between
/// cannot slip another file in; `O_NONBLOCK` covers the fallback without `/proc`. A directory
/// gives `dir_error()`, any other non-regular file 400.
pub(crate) fn open_regular(p: &Path, dir_error: impl FnOnce() -> FsError) -> Result<(File, Metadata), FsError> {
    use rustix::fs::{FileType, Mode, OFlags, CWD};
    let not_regular = || FsError::Invalid(format!("not a regular file: {}", p.display()));
    let handle = rustix::fs::openat(CWD, p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| FsError::io("open", p, e.into()))?;
    let st = rustix::fs::fstat(&handle).map_err(|e| FsError::io("stat", p, e.into()))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(dir_error()),
        _ => return Err(not_regular()),
    }
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let via_handle = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let fd = match rustix::fs::openat(CWD, via_handle.as_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(_) => rustix::fs::openat(CWD, p, flags, Mode::empty()).map_err(|e| FsError::io("open", p, e.into()))?,
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| FsError::io("stat", p, e))?;
    if meta.is_dir() {
        return Err(dir_error());
    }
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((file, meta))
}
