//! Streamed, atomic uploads (§7.8, DECISIONS D33). Each file is written by its own blocking
//! thread into a temporary file in the target's directory, fed through a small bounded channel;
//! on [`UploadWriter::finish`] the temporary file gets its mode and owner, is fsynced and renamed
//! over the target. A reader sees the old file or the new one, never a prefix. If the writer is
//! dropped without `finish` (client gone, parse error, handler cancelled) or any step fails, the
//! thread removes the temporary file: nothing is left behind. Memory per upload is the channel
//! plus one write buffer, whatever the file size.
//!
//! A file part that arrives before its metadata part is spooled to a temporary file in the
//! system temp directory and installed (renamed, or copied across filesystems) once its
//! metadata arrives ([`SpooledFile::install`]).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::info::{mode_from_wire, Accounts};
use super::ops::{mkdir_p, Permission};
use super::{path, FsError, TempFile};

/// Batches buffered between the network and the writer thread.
const CHANNEL: usize = 4;
/// Network chunks are copied into batches of this many bytes, handed to the writer thread one
/// batch at a time (one wake-up and one write per batch, not per chunk).
const BATCH: usize = 256 * 1024;
/// Batches are carved from this many reusable buffers of `BATCH` bytes. Copying (instead of
/// passing the network's `Bytes` on) lets hyper reuse its read buffer at once, and reusing our
/// own buffers (`try_reclaim`) means no fresh, page-faulting allocation per batch; with musl's
/// allocator that was 40% of an upload's CPU time. Memory per upload: about `POOL * BATCH`.
const POOL: usize = 6;

/// Where one uploaded file goes and with what permissions (the metadata part).
#[derive(Debug, Clone, Default)]
pub struct UploadSpec {
    /// Target path as given (expanded, not made absolute, as upstream).
    pub path: String,
    pub perm: Permission,
}

/// The result of a finished write.
#[derive(Debug)]
pub enum Written {
    /// Renamed into place at its target.
    Installed,
    /// Spooled; waiting for its metadata.
    Spooled(SpooledFile),
}

/// A complete uploaded file waiting for its metadata; removed on drop.
#[derive(Debug)]
pub struct SpooledFile(TempFile);

enum Msg {
    Data(Bytes),
    Finish,
}

/// Writes one uploaded file; see the module docs.
pub struct UploadWriter {
    tx: mpsc::Sender<Msg>,
    result: oneshot::Receiver<Result<Written, FsError>>,
    pool: Vec<BytesMut>,
    slot: usize,
}

/// A target prepared for writing: the temporary file and what to do at the end.
struct Prepared {
    tmp: TempFile,
    file: std::fs::File,
    /// `None` for a spool file.
    target: Option<PathBuf>,
}

impl UploadWriter {
    /// Starts writing a file for `spec`.
    pub fn to_target(spec: UploadSpec) -> UploadWriter {
        Self::start(move || prepare_target(&spec))
    }

    /// Starts spooling a file whose metadata has not arrived yet.
    pub fn to_spool() -> UploadWriter {
        Self::start(|| {
            let (tmp, file) = TempFile::create_in(&std::env::temp_dir(), 0o777)?;
            Ok(Prepared { tmp, file, target: None })
        })
    }

    fn start(prepare: impl FnOnce() -> Result<Prepared, FsError> + Send + 'static) -> UploadWriter {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let (result_tx, result) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            // If the receiver is gone nobody cares about the result; the temp file is removed
            // by TempFile's drop either way.
            let _ = result_tx.send(prepare().and_then(|p| write_all(p, rx)));
        });
        UploadWriter { tx, result, pool: (0..POOL).map(|_| BytesMut::new()).collect(), slot: 0 }
    }

    /// Queues one chunk (waits while the writer is behind). On error the temporary file is
    /// already gone.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), FsError> {
        let mut data = &chunk[..];
        while !data.is_empty() {
            let buf = &mut self.pool[self.slot];
            if buf.capacity() == buf.len() && !buf.try_reclaim(BATCH) {
                // Still being written (or first use): a fresh buffer; the old one is freed when
                // the writer drops its last batch.
                *buf = BytesMut::with_capacity(BATCH);
            }
            let n = (buf.capacity() - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if buf.len() >= BATCH {
                self.send_batch().await?;
            }
        }
        Ok(())
    }

    async fn send_batch(&mut self) -> Result<(), FsError> {
        let batch = self.pool[self.slot].split().freeze();
        self.slot = (self.slot + 1) % POOL;
        if batch.is_empty() {
            return Ok(());
        }
        if self.tx.send(Msg::Data(batch)).await.is_err() {
            return Err(self.failure().await);
        }
        Ok(())
    }

    /// Completes the file: permissions, fsync, rename into place (or spool).
    pub async fn finish(mut self) -> Result<Written, FsError> {
        self.send_batch().await?;
        if self.tx.send(Msg::Finish).await.is_err() {
            return Err(self.failure().await);
        }
        (&mut self.result).await.unwrap_or_else(|_| Err(FsError::Internal("upload writer stopped".into())))
    }

    async fn failure(&mut self) -> FsError {
        match (&mut self.result).await {
            Ok(Err(e)) => e,
            _ => FsError::Internal("upload writer stopped".into()),
        }
    }
}

/// Resolves the target (following an existing symlink), creates its parent directories
/// (0777 &^ umask), validates the mode, and creates the temporary file next to it with the mode
/// and owner the result must have.
fn prepare_target(spec: &UploadSpec) -> Result<Prepared, FsError> {
    let given = path::expanded(&spec.path);
    let target = match std::fs::symlink_metadata(&given) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(&given).unwrap_or(given),
        _ => given,
    };
    let target = path::absolute(&target);
    let dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    mkdir_p(&dir, 0o777).map_err(|e| FsError::io_no_404("mkdir", &dir, e))?;
    let existing = std::fs::metadata(&target).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(FsError::Failed(format!("cannot upload to {}: is a directory", target.display())));
    }
    let mode = match spec.perm.mode {
        0 => existing.as_ref().map(|m| m.mode() & 0o7777),
        m => Some(mode_from_wire(m)?),
    };
    // A new file without a mode gets 0777 &^ umask, like upstream's create.
    let (tmp, file) = TempFile::create_in(&dir, 0o777)?;
    if let Some(mode) = mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| FsError::io("chmod", tmp.path(), e))?;
    }
    let (uid, gid) = spec.perm.ids(&Accounts::load());
    // Ownership unchanged when not asked for (D30): an existing file keeps its owner.
    let uid = uid.or(existing.as_ref().map(|m| m.uid()));
    let gid = gid.or(existing.as_ref().map(|m| m.gid()));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&file, uid, gid).map_err(|e| FsError::io("chown", tmp.path(), e))?;
    }
    Ok(Prepared { tmp, file, target: Some(target) })
}

/// The writer thread's loop: write chunks until `Finish` (install) or a closed channel (abort).
fn write_all(p: Prepared, mut rx: mpsc::Receiver<Msg>) -> Result<Written, FsError> {
    let Prepared { tmp, mut file, target } = p;
    let werr = |e| FsError::io("writing", tmp.path(), e);
    loop {
        match rx.blocking_recv() {
            Some(Msg::Data(batch)) => file.write_all(&batch).map_err(werr)?,
            Some(Msg::Finish) => break,
            // The request ended without finishing: drop the temporary file.
            None => return Err(FsError::Failed("upload aborted".into())),
        }
    }
    let Some(target) = target else { return Ok(Written::Spooled(SpooledFile(tmp))) };
    file.sync_all().map_err(werr)?;
    drop(file);
    tmp.persist(&target)?;
    Ok(Written::Installed)
}

impl SpooledFile {
    /// Installs the spooled file at `spec`'s target with its permissions (blocking).
    pub fn install(self, spec: &UploadSpec) -> Result<(), FsError> {
        let Prepared { tmp, file, target } = prepare_target(spec)?;
        let target = target.unwrap_or_default();
        let spooled = &self.0;
        // Same filesystem: the spooled file itself gets the prepared mode/owner and is renamed.
        let meta = file.metadata().map_err(|e| FsError::io("stat", tmp.path(), e))?;
        if std::fs::rename(spooled.path(), tmp.path()).is_ok() {
            std::fs::set_permissions(tmp.path(), meta.permissions())
                .map_err(|e| FsError::io("chmod", tmp.path(), e))?;
            std::os::unix::fs::chown(tmp.path(), Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| FsError::io("chown", tmp.path(), e))?;
        } else {
            // Another filesystem: copy into the prepared temporary file (keeps its mode/owner).
            let mut src = std::fs::File::open(spooled.path()).map_err(|e| FsError::io("open", spooled.path(), e))?;
            let mut dst = &file;
            std::io::copy(&mut src, &mut dst).map_err(|e| FsError::io("writing", tmp.path(), e))?;
        }
        file.sync_all().map_err(|e| FsError::io("fsync", tmp.path(), e))?;
        drop(file);
        tmp.persist(&target)
    }
}
