//! File operations of an isolated session (I21–I23). They run on a thread that has joined the
//! session's mount namespace ([`super::IsolatedManager::in_session`]), so every path resolves as
//! the session sees it: symlinks inside the session stay inside it, overlay writes copy up and
//! deletions leave whiteouts (the kernel's own overlay semantics), `ro` mounts refuse writes with
//! EROFS (403), and API writes are visible to the session's processes at once (I-Q1).
//!
//! Simple operations reuse `crate::fs` directly; listing, search, upload and replace are done
//! here because the shared versions hand work to other threads or use execd's scratch space,
//! neither of which is inside the namespace.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fs::info::{from_metadata, Accounts};
use crate::fs::{path, FileInfo, FsError};

use super::IsolatedError;

/// Most entries one list or search answer may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// Largest file `replace` rewrites (it is held in memory).
pub const MAX_REPLACE: u64 = 64 * 1024 * 1024;

/// What a file operation knows about its session.
pub struct SessionView {
    /// The primary mount: relative paths resolve against it.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Host directory for upload spool files (opened before entering the namespace).
    pub spool: PathBuf,
    /// Every overlay mount of the session, and whether it is ephemeral (`persist:false`).
    pub mounts: Vec<(PathBuf, bool)>,
}

impl SessionView {
    /// Refuses an API write into a `persist:false` overlay (I23: such a mount's upper layer is
    /// the session's own scratch; the API does not write into it). `p` is resolved as the session
    /// sees it (this runs inside its mount namespace): relative to the primary mount, symlinks of
    /// the existing part followed; the deepest mount containing it decides.
    pub fn refuse_ephemeral(&self, p: &str) -> Result<(), IsolatedError> {
        let abs = if p.starts_with('/') { PathBuf::from(p) } else { self.cwd.join(p) };
        let mut real = abs.clone();
        let mut rest = Vec::new();
        while !real.exists() {
            match (real.file_name().map(|n| n.to_owned()), real.parent()) {
                (Some(n), Some(parent)) => {
                    rest.push(n);
                    real = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut real = std::fs::canonicalize(&real).unwrap_or(real);
        for n in rest.into_iter().rev() {
            real.push(n);
        }
        let deepest = self.mounts.iter().filter(|(m, _)| real.starts_with(m)).max_by_key(|(m, _)| m.as_os_str().len());
        match deepest {
            Some((m, true)) => Err(IsolatedError::ReadOnly(format!(
                "{} is in the persist:false overlay {}: the files API does not write into ephemeral mounts",
                abs.display(),
                m.display()
            ))),
            _ => Ok(()),
        }
    }

    pub fn refuse_ephemeral_all<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Result<(), IsolatedError> {
        paths.into_iter().try_for_each(|p| self.refuse_ephemeral(p))
    }

    /// Files the API creates belong to the session's uid/gid (I22).
    pub fn own(&self, p: &Path) {
        if self.uid != 0 || self.gid != 0 {
            let _ = std::os::unix::fs::lchown(p, Some(self.uid), Some(self.gid));
        }
    }
}

/// A failed file operation, with writes into a read-only view singled out (403).
pub fn fs_error(e: FsError) -> IsolatedError {
    let erofs = match &e {
        FsError::Io { source, .. } | FsError::NotFound { source, .. } => source.raw_os_error() == Some(libc::EROFS),
        _ => false,
    };
    if erofs {
        IsolatedError::ReadOnly(format!("read-only file system: {e}"))
    } else {
        IsolatedError::Fs(e)
    }
}

/// `GET directories/list`: entries of `root` down to `depth`, pre-order, sorted by name.
pub fn list(root: &str, depth: u32) -> Result<Vec<FileInfo>, FsError> {
    let abs = path::resolve_checked(root)?;
    let meta = std::fs::symlink_metadata(&abs).map_err(|e| FsError::io("lstat", &abs, e))?;
    if !meta.is_dir() {
        return Err(FsError::Invalid(format!("path is not a directory: {}", abs.display())));
    }
    let accounts = Accounts::load();
    let mut out = Vec::new();
    walk(&abs, 1, depth, &accounts, &mut out, &mut |_, _| true)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    level: u32,
    depth: u32,
    accounts: &Accounts,
    out: &mut Vec<FileInfo>,
    keep: &mut dyn FnMut(&Path, &std::fs::Metadata) -> bool,
) -> Result<(), FsError> {
    if level > depth {
        return Ok(());
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FsError::io_no_404("reading directory", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for child in names {
        let Ok(meta) = std::fs::symlink_metadata(&child) else { continue };
        if keep(&child, &meta) {
            if out.len() >= MAX_ENTRIES {
                return Err(FsError::Invalid(format!("more than {MAX_ENTRIES} entries; narrow the request")));
            }
            out.push(from_metadata(&child, &meta, accounts));
        }
        if meta.is_dir() && level < depth {
            walk(&child, level + 1, depth, accounts, out, keep)?;
        }
    }
    Ok(())
}

/// `GET files/search`: regular files under `root` whose base name matches `pattern` (I22).
pub fn search(root: &str, pattern: &str) -> Result<Vec<FileInfo>, FsError> {
    let abs = path::resolve_checked(root)?;
    let meta = std::fs::metadata(&abs).map_err(|e| FsError::io("stat", &abs, e))?;
    if !meta.is_dir() {
        return Err(FsError::Invalid(format!("path is not a directory: {}", abs.display())));
    }
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map_err(|e| FsError::Invalid(format!("invalid pattern {pattern:?}: {e}")))?
        .compile_matcher();
    let accounts = Accounts::load();
    let mut out = Vec::new();
    let mut keep = |p: &Path, m: &std::fs::Metadata| m.is_file() && p.file_name().is_some_and(|n| glob.is_match(n));
    walk(&abs, 1, u32::MAX, &accounts, &mut out, &mut keep)?;
    Ok(out)
}

/// One uploaded file: where it goes, its mode, and the spooled bytes.
pub struct Upload {
    pub path: String,
    pub mode: u32,
    pub spooled: std::fs::File,
}

/// `POST files/upload`: writes each spooled file to its path (parents made), through a temporary
/// name in the same directory and a rename.
pub fn write_uploads(view: &SessionView, items: Vec<Upload>) -> Result<(), FsError> {
    for mut u in items {
        let abs = path::resolve_checked(&u.path)?;
        let dir = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !dir.exists() {
            crate::fs::ops::mkdir_p(&dir, 0o755).map_err(|e| FsError::io("mkdir", &dir, e))?;
            view.own(&dir);
        }
        replace_file(&abs, "upload", |f, tmp| {
            u.spooled.rewind().map_err(|e| FsError::io("rewind spool", &abs, e))?;
            std::io::copy(&mut u.spooled, f).map_err(|e| FsError::io("write", &abs, e))?;
            f.set_permissions(std::fs::Permissions::from_mode(u.mode)).map_err(|e| FsError::io("chmod", &abs, e))?;
            view.own(tmp);
            Ok(())
        })?;
    }
    Ok(())
}

/// Replaces `abs` with a file that `fill` writes: a new 0600 file `.execd-<what>-<uuid>` in the
/// same directory, filled (and given its mode and owner) by `fill`, then renamed over `abs`;
/// removed again when anything fails.
fn replace_file(
    abs: &Path,
    what: &str,
    fill: impl FnOnce(&mut std::fs::File, &Path) -> Result<(), FsError>,
) -> Result<(), FsError> {
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".execd-{what}-{}", uuid::Uuid::new_v4().simple()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| FsError::io("create", abs, e))?;
        fill(&mut f, &tmp)?;
        std::fs::rename(&tmp, abs).map_err(|e| FsError::io("rename", abs, e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// `POST directories`: `mkdir -p` each path with its mode, owned by the session's uid/gid.
pub fn make_dirs(view: &SessionView, items: &[(String, u32)]) -> Result<(), FsError> {
    for (p, mode) in items {
        let abs = path::resolve_checked(p)?;
        crate::fs::ops::mkdir_p(&abs, 0o755).map_err(|e| FsError::io("mkdir", &abs, e))?;
        std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| FsError::io("chmod", &abs, e))?;
        view.own(&abs);
    }
    Ok(())
}

/// `POST files/replace`: replaces every `old` with `new`; returns the count.
pub fn replace(given: &str, old: &str, new: &str) -> Result<u64, FsError> {
    let abs = path::resolve_checked(given)?;
    let meta = std::fs::metadata(&abs).map_err(|e| FsError::io("stat", &abs, e))?;
    if old.is_empty() {
        return Err(FsError::Invalid("old content must not be empty".into()));
    }
    if !meta.is_file() {
        return Err(FsError::Invalid(format!("not a regular file: {}", abs.display())));
    }
    if meta.len() > MAX_REPLACE {
        return Err(FsError::Invalid(format!("file larger than {MAX_REPLACE} bytes: {}", abs.display())));
    }
    let mut content = Vec::new();
    std::fs::File::open(&abs)
        .and_then(|f| f.take(MAX_REPLACE).read_to_end(&mut content))
        .map_err(|e| FsError::io("read", &abs, e))?;
    let finder = memchr::memmem::Finder::new(old.as_bytes());
    let hits: Vec<usize> = finder.find_iter(&content).collect();
    if hits.is_empty() {
        return Ok(0);
    }
    let count = hits.len() as u64;
    let mut out = Vec::with_capacity(content.len() + hits.len() * new.len());
    let mut at = 0;
    for h in hits {
        out.extend_from_slice(&content[at..h]);
        out.extend_from_slice(new.as_bytes());
        at = h + old.len();
    }
    out.extend_from_slice(&content[at..]);
    replace_file(&abs, "replace", |f, _| {
        f.write_all(&out).map_err(|e| FsError::io("write", &abs, e))?;
        use std::os::unix::fs::MetadataExt;
        f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| FsError::io("chmod", &abs, e))?;
        let _ = std::os::unix::fs::fchown(&*f, Some(meta.uid()), Some(meta.gid()));
        Ok(())
    })?;
    Ok(count)
}
