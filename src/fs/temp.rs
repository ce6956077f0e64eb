//! Temporary files for uploads and replaces, and what a crash can leave of them (issue #13,
//! finding 11).
//!
//! A file that will replace a target is written first as a temporary file in the target's
//! directory, then renamed (or linked) into place. Where the filesystem allows it the temporary
//! file is anonymous (`O_TMPFILE`): it has no name until it is linked, so a `kill -9` leaves
//! nothing behind. Where it does not (or when `linkat` of an open file is not possible), it is a
//! named `.execd-<uuid>.tmp`; its name is then written to a journal under the state directory
//! before the file is created and removed after it is renamed or deleted, and the next start
//! removes every journaled file ([`Scratch::open`]). The one named moment of an anonymous file,
//! linking it under a temporary name to rename it over an existing target, is journaled too.
//!
//! An archive import stages its tree in a directory `.execd-archive-<uuid>` beside its target
//! (`fs::archive::import`); that directory is journaled the same way, and the next start removes
//! it whole ([`Scratch::journal_staging_dir`]).
//!
//! Upload parts that arrive before their metadata are spooled to `<state_dir>/uploads/` (0700;
//! files 0600), whose contents the next start removes.
//!
//! Not the `tempfile` crate: its files always have a name (no `O_TMPFILE` + `linkat`), and it
//! keeps no journal, so a `kill -9` would leave its files behind.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::FsError;

/// The name prefix of an archive import's staging directory (the journal id follows).
pub const STAGING_PREFIX: &str = ".execd-archive-";

/// How an anonymous (`O_TMPFILE`) file is given a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkMode {
    /// `linkat("/proc/self/fd/N", AT_SYMLINK_FOLLOW)`: needs `/proc`, no capability.
    Proc,
    /// `linkat(fd, "", AT_EMPTY_PATH)`: needs `CAP_DAC_READ_SEARCH` (or a recent kernel).
    EmptyPath,
    /// Neither works here: temporary files are always named (and journaled).
    Never,
}

/// The state-directory side of temporary files: the spool directory, the journal of named
/// temporary files, and whether anonymous files can be linked. One per process (in `AppState`).
#[derive(Debug)]
pub struct Scratch {
    spool: PathBuf,
    journal: PathBuf,
    /// Found out on first use: the probe creates and links a file (~0.05 ms on ext4), which a
    /// start need not wait for.
    link: OnceLock<LinkMode>,
}

impl Scratch {
    /// Prepares `<state_dir>/uploads/` (the spool, 0700) and `<state_dir>/uploads/journal/`,
    /// removes what an earlier run left there (spooled files, and every journaled temporary file
    /// wherever it is); whether anonymous temporary files can be linked is found out on first use.
    pub fn open(state_dir: &Path) -> io::Result<Scratch> {
        let spool = state_dir.join("uploads");
        let journal = spool.join("journal");
        for dir in [&spool, &journal] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            let meta = std::fs::symlink_metadata(dir)?;
            if !meta.is_dir() {
                return Err(io::Error::other(format!("{} is not a directory", dir.display())));
            }
            if meta.mode() & 0o777 != 0o700 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        let scratch = Scratch { spool, journal, link: OnceLock::new() };
        let swept = scratch.sweep()?;
        if swept > 0 {
            tracing::info!(files = swept, "removed temporary files left by an earlier run");
        }
        Ok(scratch)
    }

    /// Where upload parts wait for their metadata.
    pub fn spool_dir(&self) -> &Path {
        &self.spool
    }

    /// Whether temporary files beside their targets can be anonymous (else they are named).
    pub fn anonymous_temp_files(&self) -> bool {
        self.link() != LinkMode::Never
    }

    /// Removes the journaled temporary files and the spool's files. Returns how many files went.
    fn sweep(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.journal)?.flatten() {
            let id = entry.file_name();
            // The journal names only files called `.execd-<its own id>.tmp`: nothing else is
            // ever removed, whatever the entry says.
            if let Ok(text) = std::fs::read(entry.path()) {
                let path = PathBuf::from(OsStr::from_bytes(&text));
                let expected = format!(".execd-{}.tmp", id.to_string_lossy());
                let staging = format!("{STAGING_PREFIX}{}", id.to_string_lossy());
                if path.is_absolute() && path.file_name() == Some(OsStr::new(&staging)) {
                    // `remove_dir_all` does not follow a symlink put in its place.
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover staging directory")
                        }
                    }
                } else if path.is_absolute() && path.file_name() == Some(OsStr::new(&expected)) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary file")
                        }
                    }
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
        for entry in std::fs::read_dir(&self.spool)?.flatten() {
            if entry.file_type().is_ok_and(|t| !t.is_dir()) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Tries both ways of linking an anonymous file, in the spool directory.
    /// How anonymous files are linked here (probed on the first call).
    fn link(&self) -> LinkMode {
        *self.link.get_or_init(|| self.probe_link())
    }

    fn probe_link(&self) -> LinkMode {
        for mode in [LinkMode::Proc, LinkMode::EmptyPath] {
            let Ok(file) = open_anonymous(&self.spool, 0o600) else { return LinkMode::Never };
            let probe = self.spool.join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
            if link_file(mode, &file, &probe).is_ok() {
                let _ = std::fs::remove_file(&probe);
                return mode;
            }
        }
        LinkMode::Never
    }

    /// Journals the staging directory `DIR/.execd-archive-<id>` of an archive import before it is
    /// made, so that the next start removes it if execd dies meanwhile. Returns the journal entry,
    /// for [`Scratch::forget`] once the directory is gone.
    pub fn journal_staging_dir(&self, id: &str, dir: &Path) -> Result<PathBuf, FsError> {
        self.journal(id, &dir.join(format!("{STAGING_PREFIX}{id}")))
    }

    /// Removes a journal entry (the file or directory it names is gone).
    pub fn forget(&self, entry: &Path) {
        let _ = super::identity::as_execd(|| std::fs::remove_file(entry));
    }

    /// Writes a journal entry for a named temporary file `.execd-<id>.tmp`; returns its path.
    fn journal(&self, id: &str, name: &Path) -> Result<PathBuf, FsError> {
        let entry = self.journal.join(id);
        // execd's private directory: written as execd even in a job for another identity.
        super::identity::as_execd(|| std::fs::write(&entry, name.as_os_str().as_bytes()))
            .map_err(|e| FsError::io("writing the temporary file journal", &entry, e))?;
        Ok(entry)
    }
}

/// `O_TMPFILE` in `dir` with `mode` (before umask).
fn open_anonymous(dir: &Path, mode: u32) -> Result<File, Errno> {
    let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
    rustix::fs::openat(CWD, dir, flags, Mode::from_raw_mode(mode)).map(File::from)
}

/// Gives the anonymous `file` the name `dest` (fails with EEXIST if `dest` exists).
fn link_file(mode: LinkMode, file: &File, dest: &Path) -> Result<(), Errno> {
    match mode {
        LinkMode::Proc => {
            let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
            rustix::fs::linkat(CWD, proc_path.as_str(), CWD, dest, AtFlags::SYMLINK_FOLLOW)
        }
        LinkMode::EmptyPath => rustix::fs::linkat(file, "", CWD, dest, AtFlags::EMPTY_PATH),
        LinkMode::Never => Err(Errno::OPNOTSUPP),
    }
}

/// A temporary file, removed on drop unless [`TempFile::persist`]ed: every exit path (an error,
/// a dropped future's task finishing, a panic) leaves nothing behind, and a crash leaves nothing
/// that the next start does not remove (see the module docs).
pub(crate) struct TempFile {
    /// The open file; `None` once parked ([`TempFile::park`]).
    file: Option<File>,
    /// The directory the file belongs to (where its name is, or will be, created).
    dir: PathBuf,
    /// Its name, if it has one; removed on drop.
    name: Option<PathBuf>,
    /// The journal entry for `name`, if any; removed with it.
    journal: Option<PathBuf>,
    scratch: Arc<Scratch>,
}

impl TempFile {
    /// A temporary file in `dir` (the target's directory) with `mode` (before umask): anonymous
    /// where possible, else `.execd-<uuid>.tmp`, journaled.
    pub(crate) fn beside(dir: &Path, mode: u32, scratch: &Arc<Scratch>) -> Result<TempFile, FsError> {
        if scratch.anonymous_temp_files() {
            match open_anonymous(dir, mode) {
                Ok(file) => {
                    return Ok(TempFile {
                        file: Some(file),
                        dir: dir.to_path_buf(),
                        name: None,
                        journal: None,
                        scratch: scratch.clone(),
                    })
                }
                // No O_TMPFILE on this filesystem (or kernel): a named file.
                Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {}
                Err(e) => return Err(FsError::io("creating temporary file in", dir, e.into())),
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = dir.join(format!(".execd-{id}.tmp"));
        let journal = scratch.journal(&id, &name)?;
        let mut tmp = TempFile {
            file: None,
            dir: dir.to_path_buf(),
            name: None,
            journal: Some(journal),
            scratch: scratch.clone(),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&name)
            .map_err(|e| FsError::io("creating temporary file in", dir, e))?;
        tmp.file = Some(file);
        tmp.name = Some(name);
        Ok(tmp)
    }

    /// A spool file (0600) in the private spool directory. Named, not journaled: the next start
    /// empties the spool directory.
    pub(crate) fn spool(scratch: &Arc<Scratch>) -> Result<TempFile, FsError> {
        let dir = scratch.spool_dir().to_path_buf();
        let name = dir.join(format!(".execd-{}.tmp", uuid::Uuid::new_v4().simple()));
        // execd's private directory: created as execd even in a job for another identity.
        let file = super::identity::as_execd(|| {
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&name)
        })
        .map_err(|e| FsError::io("creating spool file in", &dir, e))?;
        Ok(TempFile { file: Some(file), dir, name: Some(name), journal: None, scratch: scratch.clone() })
    }

    /// The open file.
    pub(crate) fn file(&self) -> Result<&File, FsError> {
        self.file.as_ref().ok_or_else(|| FsError::Internal("temporary file already closed".into()))
    }

    /// Where it is, for messages: its name, or its directory.
    pub(crate) fn location(&self) -> &Path {
        self.name.as_deref().unwrap_or(&self.dir)
    }

    /// The device it is on (for "same filesystem" checks).
    pub(crate) fn dev(&self) -> Result<u64, FsError> {
        let meta = match (&self.file, &self.name) {
            (Some(f), _) => f.metadata(),
            (None, Some(n)) => std::fs::symlink_metadata(n),
            (None, None) => return Err(FsError::Internal("temporary file lost".into())),
        };
        meta.map(|m| m.dev()).map_err(|e| FsError::io("stat", &self.dir, e))
    }

    /// Its name, if it has one.
    pub(crate) fn name(&self) -> Option<&Path> {
        self.name.as_deref()
    }

    /// Whether it holds an open file descriptor.
    pub(crate) fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Closes the file descriptor of a finished file. An anonymous file is first given a
    /// journaled name (it would vanish otherwise). Used when many finished files wait together.
    pub(crate) fn park(&mut self) -> Result<(), FsError> {
        if self.name.is_none() {
            let file = self.file.as_ref().ok_or_else(|| FsError::Internal("temporary file already closed".into()))?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            let name = self.dir.join(format!(".execd-{id}.tmp"));
            let journal = self.scratch.journal(&id, &name)?;
            if let Err(e) = link_file(self.scratch.link(), file, &name) {
                let _ = super::identity::as_execd(|| std::fs::remove_file(&journal));
                return Err(FsError::io("naming temporary file", &name, e.into()));
            }
            self.name = Some(name);
            self.journal = Some(journal);
        }
        self.file = None;
        Ok(())
    }

    /// Moves it to `dest` atomically (same filesystem), replacing what is there, and keeps it.
    /// Then syncs `dest`'s directory (best effort, as upstream). The caller has fsynced the data.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), FsError> {
        match self.name.clone() {
            Some(name) => {
                std::fs::rename(&name, dest).map_err(|e| FsError::io("renaming into place", dest, e))?;
                self.name = None;
            }
            None => self.link_over(dest)?,
        }
        if let Some(dir) = dest.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Links the anonymous file at `dest`: directly if nothing is there, else under a journaled
    /// temporary name that is then renamed over `dest`.
    fn link_over(&mut self, dest: &Path) -> Result<(), FsError> {
        // The field itself (not `file()`), so that the other fields stay assignable.
        let file = self.file.as_ref().ok_or_else(|| FsError::Internal("temporary file already closed".into()))?;
        match link_file(self.scratch.link(), file, dest) {
            Ok(()) => return Ok(()),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(FsError::io("linking into place", dest, e.into())),
        }
        let dir = dest.parent().unwrap_or(Path::new("/"));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = dir.join(format!(".execd-{id}.tmp"));
        self.journal = Some(self.scratch.journal(&id, &name)?);
        link_file(self.scratch.link(), file, &name).map_err(|e| FsError::io("linking into place", &name, e.into()))?;
        self.name = Some(name.clone());
        std::fs::rename(&name, dest).map_err(|e| FsError::io("renaming into place", dest, e))?;
        self.name = None;
        Ok(())
    }
}

impl std::fmt::Debug for TempFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempFile").field("dir", &self.dir).field("name", &self.name).finish()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.name.take() {
            if self.dir == self.scratch.spool {
                let _ = super::identity::as_execd(|| std::fs::remove_file(p));
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
        if let Some(j) = self.journal.take() {
            let _ = super::identity::as_execd(|| std::fs::remove_file(j));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn anonymous_temp_file_is_invisible_until_persisted() {
        let state = tempfile::tempdir().unwrap();
        let scratch = Arc::new(Scratch::open(state.path()).unwrap());
        assert!(scratch.anonymous_temp_files(), "this test machine supports O_TMPFILE + linkat");
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        // New target: linked straight in.
        let tmp = TempFile::beside(dir.path(), 0o640, &scratch).unwrap();
        tmp.file().unwrap().write_all(b"one").unwrap();
        assert!(entries(dir.path()).is_empty());
        tmp.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        // Existing target: replaced, and no name or journal entry remains.
        let tmp = TempFile::beside(dir.path(), 0o640, &scratch).unwrap();
        tmp.file().unwrap().write_all(b"two").unwrap();
        tmp.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        assert_eq!(entries(dir.path()), ["out.txt"]);
        assert!(entries(&scratch.journal).is_empty());
        // Dropped without persisting: nothing at all.
        let tmp = TempFile::beside(dir.path(), 0o640, &scratch).unwrap();
        drop(tmp);
        assert_eq!(entries(dir.path()), ["out.txt"]);
    }

    #[test]
    fn parked_and_named_files_are_journaled_and_a_crash_is_swept_at_the_next_start() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let scratch = Arc::new(Scratch::open(state.path()).unwrap());
        // A parked file has a journaled name.
        let mut parked = TempFile::beside(dir.path(), 0o600, &scratch).unwrap();
        parked.park().unwrap();
        assert_eq!(entries(dir.path()).len(), 1);
        assert_eq!(entries(&scratch.journal).len(), 1);
        // The fallback (no O_TMPFILE): named and journaled from the start.
        let named_scratch = Arc::new(Scratch {
            spool: scratch.spool.clone(),
            journal: scratch.journal.clone(),
            link: OnceLock::from(LinkMode::Never),
        });
        let named = TempFile::beside(dir.path(), 0o600, &named_scratch).unwrap();
        assert!(named.name().is_some());
        assert_eq!(entries(dir.path()).len(), 2);
        let spooled = TempFile::spool(&scratch).unwrap();
        assert_eq!(std::fs::metadata(spooled.name().unwrap()).unwrap().mode() & 0o777, 0o600);
        // A crash: no destructor runs.
        std::mem::forget(parked);
        std::mem::forget(named);
        std::mem::forget(spooled);
        // An entry that names some other file is ignored (and dropped).
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"v").unwrap();
        std::fs::write(scratch.journal.join("0123"), victim.as_os_str().as_bytes()).unwrap();
        let again = Scratch::open(state.path()).unwrap();
        assert_eq!(entries(dir.path()), ["victim.txt"]);
        assert!(entries(&again.journal).is_empty());
        assert_eq!(entries(&again.spool), ["journal"]);
    }

    #[test]
    fn named_fallback_persists_and_cleans_its_journal() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let scratch =
            Arc::new(Scratch { link: OnceLock::from(LinkMode::Never), ..Scratch::open(state.path()).unwrap() });
        let tmp = TempFile::beside(dir.path(), 0o600, &scratch).unwrap();
        tmp.file().unwrap().write_all(b"x").unwrap();
        tmp.persist(&dir.path().join("t")).unwrap();
        assert_eq!(entries(dir.path()), ["t"]);
        assert!(entries(&scratch.journal).is_empty());
        let tmp = TempFile::beside(dir.path(), 0o600, &scratch).unwrap();
        drop(tmp);
        assert_eq!(entries(dir.path()), ["t"]);
        assert!(entries(&scratch.journal).is_empty());
    }
}
