//! Streamed, atomic uploads (§7.8, DECISIONS D33; issue #13 findings 6, 10, 11).
//!
//! Each file is written to a temporary file in its target's directory (anonymous where the
//! filesystem allows, see [`super::temp`]) that already has the mode and owner the result must
//! have. The network side copies chunks into a batch buffer; each full batch is written by one
//! short task on the blocking pool while the next batch fills, so no thread ever waits for the
//! client. A finished file is fsynced and *staged*: it replaces its target only when the whole
//! form has been read and every part paired and validated ([`StagedSet::commit`]), so a form with
//! a missing or bad part writes nothing. A reader sees the old file or the new one, never a
//! prefix. Whatever ends an upload early (client gone, parse error, handler cancelled) drops its
//! temporary files, which removes them.
//!
//! A file part that arrives before its metadata part is spooled (0600) to the private spool
//! directory under the state directory and staged once its metadata arrives: on the same
//! filesystem it is given the target's mode and owner and later renamed into place, otherwise
//! copied into a prepared temporary file beside the target.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{BatchSink, Batcher};
use super::info::{mode_from_wire, Accounts};
use super::ops::{mkdir_p, Permission};
use super::temp::{Scratch, TempFile};
use super::{path, FsError};

/// Finished files waiting for the end of the form keep their descriptor open up to this many;
/// beyond, they are parked under a journaled name (see [`TempFile::park`]).
const MAX_OPEN_STAGED: usize = 16;

/// Where one uploaded file goes and with what permissions (the metadata part).
#[derive(Debug, Clone, Default)]
pub struct UploadSpec {
    /// Target path as given (expanded, not made absolute, as upstream).
    pub path: String,
    pub perm: Permission,
}

/// A complete file, ready to replace its target.
#[derive(Debug)]
pub struct Staged {
    tmp: TempFile,
    target: PathBuf,
}

/// A complete uploaded file waiting for its metadata; removed on drop.
#[derive(Debug)]
pub struct SpooledFile(TempFile);

/// What a finished [`UploadWriter`] produced.
#[derive(Debug)]
pub enum Received {
    /// Written beside its target.
    Staged(Staged),
    /// Spooled; waiting for its metadata.
    Spooled(SpooledFile),
}

/// Writes one uploaded file in batches ([`super::batch`]); see the module docs.
pub struct UploadWriter {
    batches: Batcher<TempFile>,
    /// `None` for a spool file.
    target: Option<PathBuf>,
}

impl BatchSink for TempFile {
    fn write_batch(&mut self, batch: &[u8]) -> Result<(), FsError> {
        self.file()?.write_all(batch).map_err(|e| FsError::io("writing", self.location(), e))
    }
}

impl UploadWriter {
    /// Starts writing a file for `spec`: resolves and prepares the target (on the blocking pool).
    pub async fn to_target(spec: UploadSpec, scratch: &Arc<Scratch>) -> Result<UploadWriter, FsError> {
        let scratch = scratch.clone();
        let (tmp, target) = super::blocking(move || prepare_target(&spec, &scratch)).await?;
        Ok(Self::new(tmp, Some(target)))
    }

    /// Starts spooling a file whose metadata has not arrived yet.
    pub async fn to_spool(scratch: &Arc<Scratch>) -> Result<UploadWriter, FsError> {
        let scratch = scratch.clone();
        let tmp = super::blocking(move || TempFile::spool(&scratch)).await?;
        Ok(Self::new(tmp, None))
    }

    fn new(tmp: TempFile, target: Option<PathBuf>) -> UploadWriter {
        UploadWriter { batches: Batcher::new(tmp), target }
    }

    /// Queues one chunk; writes a full batch (waiting only for the previous batch's write).
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), FsError> {
        self.batches.push(chunk).await
    }

    /// Completes the file: writes the rest and fsyncs it. It replaces nothing yet.
    pub async fn finish(self) -> Result<Received, FsError> {
        // On an error the file is dropped, which removes it.
        let (tmp, res) = self.batches.finish().await;
        res?;
        let tmp = tmp.ok_or_else(|| FsError::Internal("upload writer lost its file".into()))?;
        let target = self.target;
        super::blocking(move || {
            let mut tmp = tmp;
            tmp.file()?.sync_all().map_err(|e| FsError::io("fsync", tmp.location(), e))?;
            Ok(match target {
                Some(target) => Received::Staged(Staged { tmp, target }),
                None => {
                    // A spool file is named: its descriptor is not needed any more.
                    tmp.park()?;
                    Received::Spooled(SpooledFile(tmp))
                }
            })
        })
        .await
    }
}

/// An upload's target (multipart, raw or resumable): expanded (empty refused), an existing
/// symlink followed, absolute; its directory created (0777 &^ umask); with its metadata when it
/// exists. A non-regular file other than a directory is refused (400: renaming over a FIFO or
/// device node is never what was meant); a directory is the caller's to refuse (the multipart
/// upload answers 500 for it, as upstream; the resumable one, which has no upstream, 400).
pub(super) fn resolve_target(given: &str) -> Result<(PathBuf, Option<std::fs::Metadata>), FsError> {
    let given = path::expanded_checked(given)?;
    let target = match std::fs::symlink_metadata(&given) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(&given).unwrap_or(given),
        _ => given,
    };
    let target = path::absolute(&target);
    let dir = target.parent().unwrap_or(Path::new("/"));
    mkdir_p(dir, 0o777).map_err(|e| FsError::io_no_404("mkdir", dir, e))?;
    let existing = std::fs::metadata(&target).ok();
    if existing.as_ref().is_some_and(|m| !m.is_dir() && !m.is_file()) {
        return Err(FsError::Invalid(format!("cannot upload to {}: not a regular file", target.display())));
    }
    Ok((target, existing))
}

/// Resolves the target ([`resolve_target`]; a directory refused with 500, as upstream),
/// validates the mode, and creates the temporary file beside it with the owner and mode the
/// result must have.
fn prepare_target(spec: &UploadSpec, scratch: &Arc<Scratch>) -> Result<(TempFile, PathBuf), FsError> {
    let (target, existing) = resolve_target(&spec.path)?;
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(FsError::Failed(format!("cannot upload to {}: is a directory", target.display())));
    }
    let dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mode = match spec.perm.mode {
        0 => existing.as_ref().map(|m| m.mode() & 0o7777),
        m => Some(mode_from_wire(m)?),
    };
    // A new file without a mode gets 0777 &^ umask, like upstream's create.
    let tmp = TempFile::beside(&dir, 0o777, scratch)?;
    let file = tmp.file()?;
    let (uid, gid) = spec.perm.ids(&Accounts::load());
    // Ownership unchanged when not asked for (D30): an existing file keeps its owner.
    let uid = uid.or(existing.as_ref().map(|m| m.uid()));
    let gid = gid.or(existing.as_ref().map(|m| m.gid()));
    // Owner first: a chown clears set-id bits, which the mode may ask for.
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(file, uid, gid).map_err(|e| FsError::io("chown", &dir, e))?;
    }
    if let Some(mode) = mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| FsError::io("chmod", &dir, e))?;
    }
    Ok((tmp, target))
}

impl SpooledFile {
    /// Pairs the spooled file with its metadata (blocking): prepares the target as for any
    /// upload, then either gives the spool file the prepared mode and owner (same filesystem: it
    /// will be renamed into place) or copies it into the prepared file (another filesystem).
    pub fn stage(self, spec: &UploadSpec, scratch: &Arc<Scratch>) -> Result<Staged, FsError> {
        let (prepared, target) = prepare_target(spec, scratch)?;
        let spool = self.0;
        let spool_name =
            spool.name().map(Path::to_path_buf).ok_or_else(|| FsError::Internal("spool file has no name".into()))?;
        // Under another identity the spool (execd's private directory) is out of its reach:
        // the file is copied, never renamed out of it.
        if super::identity::current().is_none() && spool.dev()? == prepared.dev()? {
            let meta = prepared.file()?.metadata().map_err(|e| FsError::io("stat", &target, e))?;
            // By name, safely: the spool directory is private (0700, execd's own).
            std::os::unix::fs::chown(&spool_name, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| FsError::io("chown", &spool_name, e))?;
            std::fs::set_permissions(&spool_name, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| FsError::io("chmod", &spool_name, e))?;
            return Ok(Staged { tmp: spool, target });
        }
        let mut src = super::identity::as_execd(|| std::fs::File::open(&spool_name))
            .map_err(|e| FsError::io("open", &spool_name, e))?;
        let mut dst = prepared.file()?;
        std::io::copy(&mut src, &mut dst).map_err(|e| FsError::io("writing", &target, e))?;
        dst.sync_all().map_err(|e| FsError::io("fsync", &target, e))?;
        Ok(Staged { tmp: prepared, target })
    }
}

/// The staged files of one form, in pair order, committed together once the form is complete
/// and valid. Dropping the set (an error, a cancelled request) removes every temporary file.
#[derive(Debug, Default)]
pub struct StagedSet {
    staged: Vec<Staged>,
}

impl StagedSet {
    /// Adds a staged file; parks it if too many already hold a descriptor (on the blocking
    /// pool).
    pub async fn push(&mut self, mut s: Staged) -> Result<(), FsError> {
        if self.staged.iter().filter(|s| s.tmp.is_open()).count() >= MAX_OPEN_STAGED {
            s = super::blocking(move || {
                let mut s = s;
                s.tmp.park()?;
                Ok(s)
            })
            .await?;
        }
        self.staged.push(s);
        Ok(())
    }

    /// Moves every file into place, in order (blocking). An I/O failure here stops at that file;
    /// the earlier ones stay in place (nothing is left to validate at this point).
    pub fn commit(mut self) -> Result<(), FsError> {
        for s in std::mem::take(&mut self.staged) {
            s.tmp.persist(&s.target)?;
        }
        Ok(())
    }
}

impl Drop for StagedSet {
    fn drop(&mut self) {
        // Removing named temporary files is disk work: off the async threads when possible.
        let staged = std::mem::take(&mut self.staged);
        if staged.iter().any(|s| s.tmp.name().is_some()) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || drop(staged));
            }
        }
    }
}
