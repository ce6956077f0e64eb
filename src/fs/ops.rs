//! The simple filesystem operations (§7.3–7.5, 7.11, 7.12): delete files, delete directories,
//! chmod/chown, move, mkdir. Each works through its items in order and stops at the first failure
//! (earlier items stay applied), as upstream. All functions here block.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use serde::Deserialize;

use super::info::{mode_from_wire, Accounts};
use super::{path, FsError};

/// Owner, group and mode to apply to a path (`POST /files/permissions`, `POST /directories`,
/// upload metadata). Absent owner and group leave ownership unchanged (DECISIONS D30); mode 0
/// leaves the mode unchanged.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Permission {
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Octal digits as a decimal number (755).
    pub mode: i64,
}

impl Permission {
    /// The uid/gid to chown to; `None` where that side stays unchanged (absent, empty, or not a
    /// known name: upstream only warns about an unknown name).
    pub fn ids(&self, accounts: &Accounts) -> (Option<u32>, Option<u32>) {
        let lookup = |name: &Option<String>, what: &str, f: &dyn Fn(&str) -> Option<u32>| {
            let name = name.as_deref().filter(|n| !n.is_empty())?;
            let id = f(name);
            if id.is_none() {
                tracing::warn!(name, what, "unknown {what}; leaving it unchanged");
            }
            id
        };
        (lookup(&self.owner, "owner", &|n| accounts.uid(n)), lookup(&self.group, "group", &|n| accounts.gid(n)))
    }
}

/// chmod (when `mode` ≠ 0) then chown (when owner or group resolves) of `abs`, following symlinks.
/// A missing path is a plain failure (upstream: 500, not 404).
pub fn apply_permission(abs: &Path, perm: &Permission, accounts: &Accounts) -> Result<(), FsError> {
    if perm.mode != 0 {
        let mode = mode_from_wire(perm.mode)?;
        std::fs::set_permissions(abs, std::fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::io_no_404("chmod", abs, e))?;
    }
    let (uid, gid) = perm.ids(accounts);
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(abs, uid, gid).map_err(|e| FsError::io_no_404("chown", abs, e))?;
    }
    Ok(())
}

/// `POST /files/permissions`.
pub fn set_permissions(items: &[(String, Permission)]) -> Result<(), FsError> {
    path::check_all(items.iter().map(|(p, _)| p.as_str()))?;
    let accounts = Accounts::load();
    for (p, perm) in items {
        apply_permission(&path::resolve_checked(p)?, perm, &accounts)?;
    }
    Ok(())
}

/// `DELETE /files`: unlink each path. Missing paths (stat, following symlinks, so a dangling link
/// too) are skipped; directories (or links to them) are refused; `/` is refused (D32), and so is
/// an empty path (before anything is removed).
pub fn remove_files(paths: &[String]) -> Result<(), FsError> {
    path::check_all(paths.iter().map(String::as_str))?;
    for p in paths {
        let abs = path::resolve_checked(p)?;
        if abs == Path::new("/") {
            return Err(FsError::RootRefused(p.clone()));
        }
        match std::fs::metadata(&abs) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FsError::io_no_404("stat", &abs, e)),
            Ok(m) if m.is_dir() => {
                return Err(FsError::Failed(format!("error removing file {p}. path is a directory: {}", abs.display())))
            }
            Ok(_) => std::fs::remove_file(&abs).map_err(|e| FsError::io_no_404("remove", &abs, e))?,
        }
    }
    Ok(())
}

/// `DELETE /directories`: `rm -rf` each path (plain files too). Missing paths are fine; `/` is
/// refused (D32), and so is an empty path (upstream: a no-op; refused here before anything is
/// removed, like every empty path); a path ending in `.` or `..` is an error, as in Go.
pub fn remove_dirs(paths: &[String]) -> Result<(), FsError> {
    path::check_all(paths.iter().map(String::as_str))?;
    for p in paths {
        let target = path::expanded_checked(p)?;
        if path::is_root(&target) {
            return Err(FsError::RootRefused(p.clone()));
        }
        let last = target.to_string_lossy().trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
        if last == "." || last == ".." {
            return Err(FsError::Failed(format!("error removing directory {p}: invalid argument")));
        }
        let meta = match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FsError::io_no_404("lstat", &target, e)),
            Ok(m) => m,
        };
        let res = if meta.is_dir() { std::fs::remove_dir_all(&target) } else { std::fs::remove_file(&target) };
        match res {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::io_no_404("remove", &target, e)),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// One `POST /files/mv` item.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Move {
    pub src: String,
    pub dest: String,
}

/// `POST /files/mv`: for each item, src must exist (404), the parent of dest is created, dest must
/// not exist (500, no overwrite), then rename(2). An empty `src` or `dest` anywhere in the list is
/// refused before the first item is moved.
pub fn move_all(items: &[Move]) -> Result<(), FsError> {
    path::check_all(items.iter().flat_map(|m| [m.src.as_str(), m.dest.as_str()]))?;
    for m in items {
        let src = path::resolve_checked(&m.src)?;
        let dest = path::resolve_checked(&m.dest)?;
        std::fs::metadata(&src).map_err(|e| FsError::io("stat", &src, e))?;
        if let Some(parent) = dest.parent() {
            mkdir_p(parent, 0o755).map_err(|e| FsError::io_no_404("mkdir", parent, e))?;
        }
        rename_noreplace(&src, &dest).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                FsError::Failed(format!("destination path already exists: {}", dest.display()))
            }
            _ => FsError::io_no_404("rename", &src, e),
        })?;
    }
    Ok(())
}

/// rename(2) that never replaces `dest`: `renameat2(RENAME_NOREPLACE)`, so no file created at
/// `dest` between a check and the rename is lost. Where the filesystem does not support the flag
/// (`EINVAL`: some FUSE and network filesystems), a check and a plain rename.
fn rename_noreplace(src: &Path, dest: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, src, CWD, dest, RenameFlags::NOREPLACE) {
        Err(rustix::io::Errno::INVAL) => {
            if std::fs::symlink_metadata(dest).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(src, dest)
        }
        r => r.map_err(std::io::Error::from),
    }
}

/// `mkdir -p` with `mode` (before umask).
pub fn mkdir_p(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// `POST /directories`: `mkdir -p` each (0777 &^ umask), then apply the permission to the leaf.
/// An existing directory is fine; an existing file is an error.
pub fn make_dirs(items: &[(String, Permission)]) -> Result<(), FsError> {
    path::check_all(items.iter().map(|(p, _)| p.as_str()))?;
    let accounts = Accounts::load();
    for (p, perm) in items {
        let abs = path::resolve_checked(p)?;
        mkdir_p(&abs, 0o777).map_err(|e| FsError::io("mkdir", &abs, e))?;
        apply_permission(&abs, perm, &accounts)?;
    }
    Ok(())
}
