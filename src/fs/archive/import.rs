//! Safe, all-or-nothing directory import (X31).
//!
//! 1. A hidden staging directory `DIR/.execd-archive-<uuid>` (0700, same filesystem) is made.
//! 2. Each entry's path is checked ([`components`]: no absolute path, no `..`) and it is written
//!    into the staging directory by walking directory descriptors opened with `O_NOFOLLOW`: a
//!    path through a symlink (the tar-slip pair "link -> /etc" then "link/passwd") fails to open
//!    and is refused. Hard links must name an entry already in the archive; device nodes and
//!    FIFOs are refused. Files get their mode and mtime (owner with `preserve_owner`).
//! 3. Only when the whole archive is read and valid (its end-of-archive marker seen, every
//!    checksum right), the staged tree is checked against `DIR` (no directory replaced by a file
//!    or the other way round, no existing symlink walked through) and then merged: what does not
//!    exist is renamed in whole, existing directories are merged into, files replaced by rename.
//!    Directory modes and mtimes are applied last.
//! 4. Any refusal or failure (also a truncated archive, ENOSPC) removes the staging directory
//!    (and `DIR` itself if this import created it): nothing of that archive is left.
//!
//! Zip needs random access: its body is spooled to an anonymous file in the staging directory
//! (bounded by the disk, not memory), gone when closed.
//!
//! The staging directory is journaled in the state directory before it is made
//! ([`crate::fs::temp::Scratch::journal_staging_dir`]): after a `kill -9` mid-import the next
//! start removes it.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, CWD};
use rustix::io::Errno;
use serde::Serialize;

use super::pipe::{ChannelReader, Chunks, EofWatch};
use super::{ArchiveError, Format};
use crate::fs::temp::{Scratch, STAGING_PREFIX};
use crate::fs::{path, FsError};

/// Deepest path accepted in an archive (the merge recurses once per level).
const MAX_DEPTH: usize = 256;
/// After the end-of-archive marker, at most this much of the rest is read (padding; for
/// compressed streams this also checks their trailer).
const TRAILER_LIMIT: u64 = 16 * 1024 * 1024;
/// Longest symlink target read from a zip entry.
const MAX_LINK: u64 = 4096;

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Where to import and how.
#[derive(Debug, Clone)]
pub struct ImportOpts {
    /// The target directory, as given (expanded, made absolute); created if missing.
    pub dir: String,
    pub format: Format,
    /// Give entries the numeric owner and group the archive records (and keep setuid/setgid).
    pub preserve_owner: bool,
    /// Journals the staging directory (swept at the next start after a crash).
    pub scratch: std::sync::Arc<crate::fs::temp::Scratch>,
}

/// What an import wrote: regular files, symlinks and hard links; directories created; bytes of
/// file content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Imports the archive arriving on `body` into `opts.dir` (see the module docs). Runs on a
/// blocking thread; returns once the archive is in place or refused (and cleaned up).
pub async fn import(opts: ImportOpts, body: Chunks) -> Result<ImportSummary, ArchiveError> {
    crate::fs::identity::spawn_blocking(move || run(&opts, body))
        .await
        .map_err(|e| ArchiveError::Fs(FsError::Internal(e.to_string())))?
}

fn run(opts: &ImportOpts, body: Chunks) -> Result<ImportSummary, ArchiveError> {
    let target = path::resolve_checked(&opts.dir)?;
    let created = make_dirs(&target)?;
    let result = (|| {
        let dest =
            rustix::fs::openat(CWD, &target, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| FsError::io("opening", &target, e.into()))?;
        let mut stage = Stage::create(&target, dest.as_fd(), opts.preserve_owner, &opts.scratch)?;
        let res = match opts.format {
            Format::Tar => stage.read_tar(ChannelReader::new(body)),
            Format::TarGz => stage.read_tar(flate2::read::MultiGzDecoder::new(ChannelReader::new(body))),
            Format::TarZst => {
                let dec = zstd::stream::read::Decoder::new(ChannelReader::new(body)).map_err(ArchiveError::reading)?;
                stage.read_tar(dec)
            }
            Format::Zip => stage.read_zip(ChannelReader::new(body)),
        };
        let res = res.and_then(|()| stage.commit(dest.as_fd()));
        stage.remove();
        res.map(|()| stage.summary.clone())
    })();
    if result.is_err() {
        if let Some(top) = created {
            let _ = std::fs::remove_dir_all(top);
        }
    }
    result
}

/// `mkdir -p target`; returns the topmost directory it created, if any.
fn make_dirs(target: &Path) -> Result<Option<PathBuf>, FsError> {
    let mut missing = Vec::new();
    let mut p = target;
    loop {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(FsError::Invalid(format!("not a directory: {}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p.to_path_buf());
                match p.parent() {
                    Some(parent) => p = parent,
                    None => break,
                }
            }
            Err(e) => return Err(FsError::io("stat", p, e)),
        }
    }
    let top = missing.last().cloned();
    for dir in missing.iter().rev() {
        if let Err(e) = std::fs::create_dir(dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                if let Some(t) = &top {
                    let _ = std::fs::remove_dir_all(t);
                }
                return Err(FsError::io("creating directory", dir, e));
            }
        }
    }
    Ok(top)
}

/// The checked parts of an entry path: `Ok(None)` for the archive's root (`.`, `./`); refused
/// when absolute or with a `..` part. `.` parts and repeated slashes are dropped.
pub(super) fn components(raw: &[u8]) -> Result<Option<Vec<&[u8]>>, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw[0] == b'/' {
        return Err("absolute path");
    }
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path with a `..` component"),
            p => out.push(p),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err("path too deep");
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Mode, mtime (seconds, nanoseconds) and owner of an entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    mtime: Option<(i64, u32)>,
    owner: Option<(u32, u32)>,
}

enum Kind<'a> {
    Dir,
    File(&'a mut dyn Read, u64),
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
}

struct Stage {
    path: PathBuf,
    root: OwnedFd,
    /// The parent directory of the last entry (entries come grouped by directory).
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Explicit directory entries: their metadata is applied after the merge.
    dirs: Vec<(Vec<Vec<u8>>, Meta)>,
    preserve_owner: bool,
    summary: ImportSummary,
    scratch: std::sync::Arc<Scratch>,
    /// The staging directory's entry in the temporary file journal.
    journal: PathBuf,
    /// The buffer every file's bytes go through, allocated once: a fresh 64 KiB block per file
    /// cost 16 page faults each under musl (444 000 for a 100 000-file import).
    copy_buf: Vec<u8>,
}

impl Stage {
    fn create(
        target: &Path,
        dest: BorrowedFd<'_>,
        preserve_owner: bool,
        scratch: &std::sync::Arc<Scratch>,
    ) -> Result<Stage, ArchiveError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{STAGING_PREFIX}{id}");
        let path = target.join(&name);
        let journal = scratch.journal_staging_dir(&id, target)?;
        let made = rustix::fs::mkdirat(dest, name.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| FsError::io("creating staging directory", &path, e.into()))
            .and_then(|()| {
                rustix::fs::openat(dest, name.as_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| FsError::io("opening staging directory", &path, e.into()))
            });
        let root = match made {
            Ok(root) => root,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                scratch.forget(&journal);
                return Err(e.into());
            }
        };
        Ok(Stage {
            path,
            root,
            cache: None,
            dirs: Vec::new(),
            preserve_owner,
            summary: ImportSummary::default(),
            scratch: scratch.clone(),
            journal,
            copy_buf: vec![0u8; COPY_BUF],
        })
    }

    /// Removes the staging directory and what is left in it, then its journal entry.
    fn remove(&mut self) {
        self.cache = None;
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => self.scratch.forget(&self.journal),
            // Left journaled: the next start tries again.
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the archive staging directory")
            }
        }
    }

    fn io_err(&self, op: &'static str, entry: &[u8], e: Errno) -> ArchiveError {
        let p = self.path.join(Path::new(std::ffi::OsStr::from_bytes(entry)));
        ArchiveError::Fs(FsError::io(op, &p, e.into()))
    }

    fn mode_mask(&self) -> u32 {
        if self.preserve_owner {
            0o7777
        } else {
            0o1777
        }
    }

    /// Opens (creating with `create`) the directory `parts` below the staging root, never
    /// following a symlink.
    fn walk(&mut self, entry: &[u8], parts: &[&[u8]], create: bool) -> Result<OwnedFd, ArchiveError> {
        let mut cur = rustix::fs::openat(&self.root, c".", DIR_FLAGS, Mode::empty())
            .map_err(|e| self.io_err("opening", b".", e))?;
        for part in parts {
            let next = match rustix::fs::openat(&cur, *part, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, *part, Mode::from_raw_mode(0o755)) {
                        Ok(()) => self.summary.dirs += 1,
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.io_err("creating directory", entry, e)),
                    }
                    rustix::fs::openat(&cur, *part, DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.io_err("opening directory", entry, e))?
                }
                Err(Errno::NOENT) => return Err(ArchiveError::unsafe_entry(entry, "its target is not in the archive")),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let is_link = rustix::fs::statat(&cur, *part, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                    return Err(if is_link {
                        ArchiveError::unsafe_entry(entry, "it would be written through a symlink of the archive")
                    } else {
                        ArchiveError::Invalid(format!(
                            "entry {:?}: a parent is not a directory",
                            String::from_utf8_lossy(entry)
                        ))
                    });
                }
                Err(e) => return Err(self.io_err("opening directory", entry, e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// The parent directory of an entry (cached for runs of entries in one directory).
    fn parent(&mut self, entry: &[u8], parts: &[&[u8]]) -> Result<(), ArchiveError> {
        let key = parts.join(&b'/');
        if self.cache.as_ref().is_some_and(|(k, _)| *k == key) {
            return Ok(());
        }
        self.cache = None;
        let fd = self.walk(entry, parts, true)?;
        self.cache = Some((key, fd));
        Ok(())
    }

    /// Writes one entry into the staging directory.
    fn add(&mut self, raw: &[u8], kind: Kind<'_>, meta: Meta) -> Result<(), ArchiveError> {
        let parts = components(raw).map_err(|r| ArchiveError::unsafe_entry(raw, r))?;
        let Some(parts) = parts else {
            // The archive's root (`./`): DIR itself, left as it is.
            return match kind {
                Kind::Dir => Ok(()),
                _ => Err(ArchiveError::Invalid(format!(
                    "entry {:?} names the target directory itself",
                    String::from_utf8_lossy(raw)
                ))),
            };
        };
        let (name, parents) = parts.split_last().expect("components are never empty");
        let name: &[u8] = name;
        self.parent(raw, parents)?;
        match kind {
            Kind::Dir => self.add_dir(raw, &parts, meta),
            Kind::File(data, size) => self.add_file(raw, name, data, size, meta),
            Kind::Symlink(target) => self.add_symlink(raw, name, &target, meta),
            Kind::HardLink(target) => self.add_hard_link(raw, name, &target),
        }
    }

    /// The entry's parent directory, opened by [`Self::parent`].
    fn parent_fd(&self) -> Result<BorrowedFd<'_>, ArchiveError> {
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(FsError::Internal("lost parent".into()).into()),
        }
    }

    /// The owner to give an entry, when owners are kept.
    fn owner(&self, meta: &Meta) -> Option<(u32, u32)> {
        meta.owner.filter(|_| self.preserve_owner)
    }

    /// A directory (its mode and mtime are set at the end, once its content is in).
    fn add_dir(&mut self, raw: &[u8], parts: &[&[u8]], meta: Meta) -> Result<(), ArchiveError> {
        let name = *parts.last().expect("components are never empty");
        let pfd = self.parent_fd()?;
        match rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => self.summary.dirs += 1,
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io_err("stat", raw, e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    return Err(ArchiveError::Invalid(format!(
                        "entry {:?}: a directory where the archive already has a file",
                        String::from_utf8_lossy(raw)
                    )));
                }
            }
            Err(e) => return Err(self.io_err("creating directory", raw, e)),
        }
        let owned = parts.iter().map(|p| p.to_vec()).collect();
        let mask = self.mode_mask();
        self.dirs.push((owned, Meta { mode: meta.mode & mask, ..meta }));
        Ok(())
    }

    fn add_file(
        &mut self,
        raw: &[u8],
        name: &[u8],
        data: &mut dyn Read,
        size: u64,
        meta: Meta,
    ) -> Result<(), ArchiveError> {
        let fd = create_file(self.parent_fd()?, name).map_err(|e| self.entry_err("creating", raw, e))?;
        let mut file = File::from(fd);
        copy_exact(data, &mut file, size, &mut self.copy_buf).map_err(|e| match e {
            CopyError::Read(e) => ArchiveError::reading(e),
            CopyError::Short => ArchiveError::Invalid(format!(
                "entry {:?} is truncated (archive cut short?)",
                String::from_utf8_lossy(raw)
            )),
            CopyError::Long => ArchiveError::Invalid(format!(
                "entry {:?} is longer than its header says",
                String::from_utf8_lossy(raw)
            )),
            CopyError::Write(e) => self.io_err("writing", raw, Errno::from_io_error(&e).unwrap_or(Errno::IO)),
        })?;
        if let Some((uid, gid)) = self.owner(&meta) {
            rustix::fs::fchown(&file, Some(uid_of(uid)), Some(gid_of(gid)))
                .map_err(|e| self.io_err("chown", raw, e))?;
        }
        rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode & self.mode_mask()))
            .map_err(|e| self.io_err("chmod", raw, e))?;
        if let Some(t) = meta.mtime {
            rustix::fs::futimens(&file, &times(t)).map_err(|e| self.io_err("setting mtime of", raw, e))?;
        }
        self.summary.files += 1;
        self.summary.bytes += size;
        Ok(())
    }

    fn add_symlink(&mut self, raw: &[u8], name: &[u8], target: &[u8], meta: Meta) -> Result<(), ArchiveError> {
        if target.is_empty() || target.contains(&0) {
            return Err(ArchiveError::Invalid(format!(
                "symlink {:?} has an invalid target",
                String::from_utf8_lossy(raw)
            )));
        }
        let pfd = self.parent_fd()?;
        replacing(pfd, name, |d, n| rustix::fs::symlinkat(target, d, n))
            .map_err(|e| self.entry_err("creating symlink", raw, e))?;
        if let Some((uid, gid)) = self.owner(&meta) {
            rustix::fs::chownat(pfd, name, Some(uid_of(uid)), Some(gid_of(gid)), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io_err("chown", raw, e))?;
        }
        if let Some(t) = meta.mtime {
            rustix::fs::utimensat(pfd, name, &times(t), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io_err("setting mtime of", raw, e))?;
        }
        self.summary.files += 1;
        Ok(())
    }

    /// A hard link to an entry already extracted (never to a directory or outside the target).
    fn add_hard_link(&mut self, raw: &[u8], name: &[u8], target: &[u8]) -> Result<(), ArchiveError> {
        let tparts = components(target)
            .map_err(|r| ArchiveError::unsafe_entry(raw, format!("hard link target: {r}")))?
            .ok_or_else(|| ArchiveError::unsafe_entry(raw, "hard link to the target directory"))?;
        let (tname, tparents) = tparts.split_last().expect("components are never empty");
        let tname: &[u8] = tname;
        let tdir = self.walk(raw, tparents, false)?;
        match rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(ArchiveError::unsafe_entry(raw, "hard link to a directory"))
            }
            Ok(_) => {}
            Err(Errno::NOENT) => {
                return Err(ArchiveError::unsafe_entry(raw, "hard link to something not in the archive"))
            }
            Err(e) => return Err(self.io_err("stat", target, e)),
        }
        replacing(self.parent_fd()?, name, |d, n| rustix::fs::linkat(&tdir, tname, d, n, AtFlags::empty()))
            .map_err(|e| self.entry_err("creating hard link", raw, e))?;
        self.summary.files += 1;
        Ok(())
    }

    /// A failure to create an entry: a directory in the way is the archive's own inconsistency.
    fn entry_err(&self, op: &'static str, raw: &[u8], e: Errno) -> ArchiveError {
        match e {
            Errno::ISDIR => ArchiveError::Invalid(format!(
                "entry {:?}: a file where the archive already has a directory",
                String::from_utf8_lossy(raw)
            )),
            e => self.io_err(op, raw, e),
        }
    }

    fn read_tar<R: Read>(&mut self, reader: R) -> Result<(), ArchiveError> {
        let mut watch = EofWatch::new(reader);
        {
            let mut archive = tar::Archive::new(&mut watch);
            for entry in archive.entries().map_err(ArchiveError::reading)? {
                let mut entry = entry.map_err(ArchiveError::reading)?;
                let raw = entry.path_bytes().into_owned();
                let invalid = |what: &str, e: io::Error| {
                    ArchiveError::Invalid(format!("entry {:?}: bad {what}: {e}", String::from_utf8_lossy(&raw)))
                };
                let h = entry.header();
                let kind = h.entry_type();
                let mode = h.mode().map_err(|e| invalid("mode", e))?;
                let mut mtime = Some((i64::try_from(h.mtime().map_err(|e| invalid("mtime", e))?).unwrap_or(0), 0));
                let owner = match (h.uid(), h.gid()) {
                    (Ok(u), Ok(g)) => u32::try_from(u).ok().zip(u32::try_from(g).ok()),
                    _ => None,
                };
                if let Ok(Some(pax)) = entry.pax_extensions() {
                    for ext in pax.flatten() {
                        if ext.key_bytes() == b"mtime" {
                            if let Some(t) = parse_pax_time(ext.value_bytes()) {
                                mtime = Some(t);
                            }
                        }
                    }
                }
                let meta = Meta { mode, mtime, owner };
                use tar::EntryType as T;
                match kind {
                    T::Regular | T::Continuous => {
                        let size = entry.size();
                        self.add(&raw, Kind::File(&mut entry, size), meta)?
                    }
                    T::Directory => self.add(&raw, Kind::Dir, meta)?,
                    T::Symlink => {
                        let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                        self.add(&raw, Kind::Symlink(target), meta)?
                    }
                    T::Link => {
                        let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                        self.add(&raw, Kind::HardLink(target), meta)?
                    }
                    T::Char | T::Block => return Err(ArchiveError::unsafe_entry(&raw, "device node")),
                    T::Fifo => return Err(ArchiveError::unsafe_entry(&raw, "FIFO")),
                    T::XGlobalHeader => {}
                    other => {
                        return Err(ArchiveError::Invalid(format!(
                            "entry {:?}: unsupported entry type {:?}",
                            String::from_utf8_lossy(&raw),
                            other.as_byte() as char
                        )))
                    }
                }
            }
        }
        if watch.hit_eof {
            return Err(ArchiveError::Invalid(
                "the archive ends without its end-of-archive marker (truncated?)".into(),
            ));
        }
        // The rest: zero padding; reading it also checks a compressed stream's trailer.
        io::copy(&mut (&mut watch).take(TRAILER_LIMIT), &mut io::sink()).map_err(ArchiveError::reading)?;
        Ok(())
    }

    fn read_zip(&mut self, mut body: ChannelReader) -> Result<(), ArchiveError> {
        // Anonymous, in the staging directory: on DIR's filesystem, gone when closed.
        let spool = rustix::fs::openat(
            &self.root,
            c".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .or_else(|_| {
            let fd = rustix::fs::openat(
                &self.root,
                c".zip-spool",
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            rustix::fs::unlinkat(&self.root, c".zip-spool", AtFlags::empty())?;
            Ok::<_, Errno>(fd)
        })
        .map_err(|e| self.io_err("creating the zip spool in", b"", e))?;
        let mut spool = File::from(spool);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::reading(e)),
            };
            spool.write_all(&buf[..n]).map_err(|e| self.io_err("spooling the zip", b"", errno(&e)))?;
        }
        drop(buf);
        spool.rewind().map_err(|e| self.io_err("spooling the zip", b"", errno(&e)))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(spool))?;
        for i in 0..archive.len() {
            let mut file = archive.by_index(i)?;
            let raw = file.name_raw().to_vec();
            if file.encrypted() {
                return Err(ArchiveError::Invalid(format!("entry {:?} is encrypted", String::from_utf8_lossy(&raw))));
            }
            let mtime = zip_mtime(&file);
            let is_dir = file.is_dir();
            let default_mode = if is_dir { 0o755 } else { 0o644 };
            let mode = file.unix_mode().map_or(default_mode, |m| m & 0o7777);
            let meta = Meta { mode, mtime, owner: None };
            if is_dir {
                self.add(&raw, Kind::Dir, meta)?;
            } else if file.is_symlink() {
                let mut target = Vec::new();
                (&mut file).take(MAX_LINK).read_to_end(&mut target).map_err(ArchiveError::reading)?;
                self.add(&raw, Kind::Symlink(target), meta)?;
            } else {
                let size = file.size();
                self.add(&raw, Kind::File(&mut file, size), meta)?;
            }
        }
        Ok(())
    }

    /// Checks the staged tree against `dest`, then merges it in (see the module docs) and applies
    /// the directories' metadata.
    fn commit(&mut self, dest: BorrowedFd<'_>) -> Result<(), ArchiveError> {
        self.cache = None;
        let root = rustix::fs::openat(&self.root, c".", DIR_FLAGS, Mode::empty())
            .map_err(|e| self.io_err("opening", b".", e))?;
        let mut prefix = Vec::new();
        self.check(root.as_fd(), dest, &mut prefix, 0)?;
        self.merge(root.as_fd(), dest, &mut prefix)?;
        let mask = self.mode_mask();
        for (parts, meta) in self.dirs.iter().rev() {
            let Ok(mut cur) = rustix::fs::openat(dest, c".", DIR_FLAGS, Mode::empty()) else { break };
            let mut ok = true;
            for p in parts {
                match rustix::fs::openat(&cur, p.as_slice(), DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => cur = fd,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            if let Some((uid, gid)) = meta.owner.filter(|_| self.preserve_owner) {
                let _ = rustix::fs::fchown(&cur, Some(uid_of(uid)), Some(gid_of(gid)));
            }
            let _ = rustix::fs::fchmod(&cur, Mode::from_raw_mode(meta.mode & mask));
            if let Some(t) = meta.mtime {
                let _ = rustix::fs::futimens(&cur, &times(t));
            }
        }
        Ok(())
    }

    /// Refuses, before anything moves, a staged entry that would replace a directory by a
    /// non-directory (or the reverse) or go through an existing symlink in the target.
    fn check(
        &self,
        staged: BorrowedFd<'_>,
        dest: BorrowedFd<'_>,
        prefix: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), ArchiveError> {
        if depth > MAX_DEPTH {
            return Err(ArchiveError::Invalid("archive too deep".into()));
        }
        for (name, staged_is_dir) in list(staged).map_err(|e| self.io_err("listing", prefix, e))? {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name.to_bytes());
            let there = match rustix::fs::statat(dest, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(self.io_err("stat", prefix, e)),
            };
            let conflict = |reason: &str| ArchiveError::Conflict {
                path: String::from_utf8_lossy(prefix).into_owned(),
                reason: reason.to_string(),
            };
            match (staged_is_dir, there) {
                (_, None) => {}
                (true, Some(FileType::Directory)) => {
                    let s = rustix::fs::openat(staged, name.as_c_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.io_err("opening", prefix, e))?;
                    let d = rustix::fs::openat(dest, name.as_c_str(), DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.io_err("opening", prefix, e))?;
                    self.check(s.as_fd(), d.as_fd(), prefix, depth + 1)?;
                }
                (true, Some(FileType::Symlink)) => {
                    return Err(ArchiveError::unsafe_entry(
                        prefix,
                        "the target has a symlink there, and it is never followed",
                    ))
                }
                (true, Some(_)) => {
                    return Err(conflict("exists and is not a directory; the archive has a directory there"))
                }
                (false, Some(FileType::Directory)) => {
                    return Err(conflict("is a directory; the archive has a file there"))
                }
                (false, Some(_)) => {}
            }
            prefix.truncate(len);
        }
        Ok(())
    }

    /// Moves the staged tree into `dest`: new names by rename (whole subtrees at once), existing
    /// directories merged into, other existing entries replaced by rename.
    fn merge(
        &mut self,
        staged: BorrowedFd<'_>,
        dest: BorrowedFd<'_>,
        prefix: &mut Vec<u8>,
    ) -> Result<(), ArchiveError> {
        for (name, staged_is_dir) in list(staged).map_err(|e| self.io_err("listing", prefix, e))? {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name.to_bytes());
            let dest_is_dir = rustix::fs::statat(dest, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
            if staged_is_dir && dest_is_dir {
                let s = rustix::fs::openat(staged, name.as_c_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| self.io_err("opening", prefix, e))?;
                let d = rustix::fs::openat(dest, name.as_c_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| self.io_err("opening", prefix, e))?;
                self.merge(s.as_fd(), d.as_fd(), prefix)?;
            } else {
                rustix::fs::renameat(staged, name.as_c_str(), dest, name.as_c_str())
                    .map_err(|e| self.io_err("moving into place", prefix, e))?;
            }
            prefix.truncate(len);
        }
        Ok(())
    }
}

/// The entries of a directory (without `.` and `..`), with whether each is a directory.
fn list(dir: BorrowedFd<'_>) -> Result<Vec<(std::ffi::CString, bool)>, Errno> {
    let mut out = Vec::new();
    let mut d = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Unknown => rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            t => t == FileType::Directory,
        };
        out.push((name.to_owned(), is_dir));
    }
    Ok(out)
}

/// Creates `name` for writing (0600 until its mode is applied), replacing a non-directory there.
fn create_file(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = None;
    replacing(dir, name, |d, n| {
        fd = Some(rustix::fs::openat(d, n, flags, Mode::from_raw_mode(0o600))?);
        Ok(())
    })?;
    fd.ok_or(Errno::IO)
}

/// Runs `make`; if the name exists (an earlier entry of the same archive), removes it and tries
/// once more (a later entry wins, as with `tar -x`). A directory there is not removed (EISDIR).
fn replacing(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mut make: impl FnMut(BorrowedFd<'_>, &[u8]) -> Result<(), Errno>,
) -> Result<(), Errno> {
    match make(dir, name) {
        Err(Errno::EXIST) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            make(dir, name)
        }
        other => other,
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Short,
    Long,
}

/// The size of [`Stage`]'s copy buffer.
const COPY_BUF: usize = 64 * 1024;

/// Copies exactly `size` bytes through `buf`, then checks that the entry really ends there (which also makes a
/// zip entry verify its CRC).
fn copy_exact(src: &mut dyn Read, dst: &mut File, size: u64, buf: &mut [u8]) -> Result<(), CopyError> {
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => return Err(CopyError::Short),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(CopyError::Short),
            Err(e) => return Err(CopyError::Read(e)),
        };
        dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    match src.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(CopyError::Long),
        Err(e) => Err(CopyError::Read(e)),
    }
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

fn times((secs, nanos): (i64, u32)) -> Timestamps {
    let t = Timespec { tv_sec: secs, tv_nsec: nanos.into() };
    Timestamps { last_access: t, last_modification: t }
}

/// A pax time value: `seconds[.fraction]` (possibly negative).
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    if secs < 0 && nanos > 0 {
        // -1.5 is 1.5 s before the epoch: -2 s + 0.5 s.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

/// A zip entry's mtime: its extended-timestamp field if any (exact seconds, UTC), else its DOS
/// time read as UTC.
fn zip_mtime<R: Read>(file: &zip::read::ZipFile<'_, R>) -> Option<(i64, u32)> {
    for field in file.extra_data_fields() {
        if let zip::ExtraField::ExtendedTimestamp(ts) = field {
            if let Some(m) = ts.mod_time() {
                return Some((i64::from(m), 0));
            }
        }
    }
    let t = file.last_modified()?;
    let date = chrono::NaiveDate::from_ymd_opt(i32::from(t.year()), u32::from(t.month()), u32::from(t.day()))?;
    let dt = date.and_hms_opt(u32::from(t.hour()), u32::from(t.minute()), u32::from(t.second()))?;
    Some((dt.and_utc().timestamp(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x31_entry_path_table() {
        let ok = |s: &str| components(s.as_bytes()).unwrap().map(|v| v.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
        assert_eq!(ok("a/b"), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(ok("./a//b/"), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(ok("./"), None);
        assert_eq!(ok("."), None);
        assert_eq!(ok("a/./b"), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", "a\0b"] {
            assert!(components(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        let deep = "a/".repeat(MAX_DEPTH + 1);
        assert!(components(deep.as_bytes()).is_err());
    }

    #[test]
    fn x31_pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_pax_time(b"1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(parse_pax_time(b"1700000000.123456789123"), Some((1_700_000_000, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
    }
}
