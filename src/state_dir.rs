//! The state directory: where command journals, session state and upload spools live. It is
//! private to execd's uid (issue #13, findings 1 and 2): a process inside the sandbox running as
//! another uid must neither read it (session state holds the user's variables, journals hold
//! output) nor swap a file in it (a root session run sources its state file).
//!
//! - [`default_candidates`]: `/var/lib/execd` for root (then `/run/execd`, then
//!   `$TMPDIR/execd-0` when those cannot be created, e.g. a read-only image); for other uids
//!   `$XDG_RUNTIME_DIR/execd`, then `$TMPDIR/execd-<uid>`.
//! - [`prepare`] creates the directory 0700 and refuses one that is a symlink, is not owned by
//!   execd's uid, or is writable by group or others, or whose ancestors someone else could
//!   rename (not owned by root or execd's uid, or group/other-writable without the sticky bit).
//! - [`create_dir`], [`create_file`] and [`open_file`] are how every module makes and reads files
//!   under it: directories 0700, files 0600, `O_NOFOLLOW`, and the owner checked on open.
//!
//! This module knows no HTTP; `main.rs` turns a [`StateDirError`] into one line and exit code 2.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {path}: cannot create: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("state directory {path} is a symlink; refusing it (give the real directory)")]
    Symlink { path: PathBuf },
    #[error("state directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("state directory {path} is owned by uid {owner}, not execd's uid {uid}; refusing it (someone else may control its content)")]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error("state directory {path} has mode {mode:04o}, writable by group or others; refusing it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("state directory {path}: its ancestor {ancestor} (uid {owner}, mode {mode:04o}) could be renamed by another user; refusing it")]
    UnsafeAncestor { path: PathBuf, ancestor: PathBuf, owner: u32, mode: u32 },
}

/// The effective uid execd runs as.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Where the state directory goes when `--state-dir` is not given, best first. `env` looks up an
/// environment variable.
pub fn default_candidates(uid: u32, env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let tmp = env("TMPDIR").filter(|t| t.starts_with('/')).unwrap_or_else(|| "/tmp".into());
    let tmp_dir = PathBuf::from(tmp).join(format!("execd-{uid}"));
    if uid == 0 {
        return vec![PathBuf::from("/var/lib/execd"), PathBuf::from("/run/execd"), tmp_dir];
    }
    let mut out = Vec::new();
    if let Some(run) = env("XDG_RUNTIME_DIR").filter(|t| t.starts_with('/')) {
        out.push(PathBuf::from(run).join("execd"));
    }
    out.push(tmp_dir);
    out
}

/// Prepares the first of `candidates` that can be created and returns it. A candidate that
/// exists but fails a safety check stops the search (it is an attack or a mistake, and quietly
/// moving elsewhere would hide it); one that cannot be created (read-only or missing filesystem)
/// passes to the next.
pub fn prepare_first(candidates: &[PathBuf]) -> Result<PathBuf, StateDirError> {
    let mut last = None;
    for c in candidates {
        match prepare(c) {
            Ok(()) => return Ok(c.clone()),
            Err(e @ StateDirError::Create { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StateDirError::Create {
        path: PathBuf::new(),
        source: io::Error::new(io::ErrorKind::NotFound, "no candidate state directory"),
    }))
}

/// Creates `dir` (and missing parents) 0700 and checks it is safe to keep secrets in: not a
/// symlink, a directory, owned by execd's uid, not writable by group or others, with ancestors
/// only root or execd's uid can rename. A group- or other-readable directory of ours is
/// tightened to 0700.
pub fn prepare(dir: &Path) -> Result<(), StateDirError> {
    let uid = euid();
    let path = dir.to_path_buf();
    if let Err(source) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        return Err(StateDirError::Create { path, source });
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| StateDirError::Create { path: path.clone(), source })?;
    if meta.file_type().is_symlink() {
        return Err(StateDirError::Symlink { path });
    }
    if !meta.is_dir() {
        return Err(StateDirError::NotADirectory { path });
    }
    if meta.uid() != uid {
        return Err(StateDirError::NotOwned { path, owner: meta.uid(), uid });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StateDirError::Writable { path, mode });
    }
    let absolute = std::fs::canonicalize(dir).map_err(|source| StateDirError::Create { path: path.clone(), source })?;
    for ancestor in absolute.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(ancestor) else { continue };
        let (owner, mode) = (m.uid(), m.mode() & 0o7777);
        let trusted_owner = owner == 0 || owner == uid;
        let sticky = mode & 0o1000 != 0;
        if !trusted_owner || (mode & 0o022 != 0 && !sticky) {
            return Err(StateDirError::UnsafeAncestor { path, ancestor: ancestor.to_path_buf(), owner, mode });
        }
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| StateDirError::Create { path, source })?;
    }
    Ok(())
}

/// Creates directory `dir` 0700 inside the state directory (parents too), or accepts an existing
/// one that is a real directory owned by execd's uid (and tightens it to 0700).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory owned by execd's uid", dir.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates (or truncates) `path` for writing: mode 0600, never through a symlink, and only a file
/// owned by execd's uid (an existing file with wider permissions is narrowed to 0600).
pub fn create_file(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = checked_owner(&file, path)?;
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Writes `content` to `path` as [`create_file`] does.
pub fn write_file(path: &Path, content: &[u8]) -> io::Result<()> {
    io::Write::write_all(&mut create_file(path)?, content)
}

/// Fails when the filesystem of `dir` can take no new file or byte: mounted read-only, or no free
/// block or inode left for execd's uid (one `statvfs`, ~1 µs). A command checks it before it starts, since its
/// journal's files are only created with its first output: a full state directory is a clear
/// error up front instead of output dropped later.
pub fn check_room(dir: &Path) -> io::Result<()> {
    let st = rustix::fs::statvfs(dir)?;
    if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(io::Error::new(
            io::ErrorKind::ReadOnlyFilesystem,
            format!("{} is on a read-only filesystem", dir.display()),
        ));
    }
    // The blocks and inodes kept for root are not execd's unless it runs as root.
    let (blocks, inodes) =
        if nix::unistd::geteuid().is_root() { (st.f_bfree, st.f_ffree) } else { (st.f_bavail, st.f_favail) };
    if blocks == 0 || (st.f_files > 0 && inodes == 0) {
        return Err(io::Error::new(io::ErrorKind::StorageFull, format!("no space left for {}", dir.display())));
    }
    Ok(())
}

/// Opens the existing file `path` for writing over it (no create, no truncate), never through a
/// symlink, and only if it is a regular file execd's uid owns.
pub fn open_existing(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    checked_owner(&file, path)?;
    Ok(file)
}

/// Opens `path` for reading, never through a symlink, and only if execd's uid owns it.
pub fn open_file(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    checked_owner(&file, path)?;
    Ok(file)
}

fn checked_owner(file: &File, path: &Path) -> io::Result<std::fs::Metadata> {
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a regular file owned by execd's uid; not using it", path.display()),
        ));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_put_root_outside_tmp_and_others_under_their_uid() {
        let env = |k: &str| match k {
            "TMPDIR" => Some("/scratch".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1000".to_string()),
            _ => None,
        };
        assert_eq!(
            default_candidates(0, env),
            vec![PathBuf::from("/var/lib/execd"), PathBuf::from("/run/execd"), PathBuf::from("/scratch/execd-0")]
        );
        assert_eq!(
            default_candidates(1000, env),
            vec![PathBuf::from("/run/user/1000/execd"), PathBuf::from("/scratch/execd-1000")]
        );
        assert_eq!(default_candidates(7, |_| None), vec![PathBuf::from("/tmp/execd-7")]);
    }

    #[test]
    fn prepare_creates_0700_and_tightens_a_readable_dir() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        prepare(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn prepare_refuses_writable_symlinked_or_file() {
        let t = tempfile::tempdir().unwrap();
        let w = t.path().join("w");
        std::fs::create_dir(&w).unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(prepare(&w), Err(StateDirError::Writable { .. })));
        let l = t.path().join("l");
        std::os::unix::fs::symlink(t.path(), &l).unwrap();
        assert!(matches!(prepare(&l), Err(StateDirError::Symlink { .. })));
        let f = t.path().join("f");
        std::fs::write(&f, b"").unwrap();
        assert!(matches!(prepare(&f), Err(StateDirError::Create { .. } | StateDirError::NotADirectory { .. })));
    }

    #[test]
    fn prepare_refuses_a_dir_under_a_non_sticky_world_writable_parent() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&open.join("state")).unwrap_err();
        assert!(matches!(e, StateDirError::UnsafeAncestor { .. }), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        prepare(&open.join("state2")).unwrap();
    }

    #[test]
    fn files_are_0600_and_symlinks_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write_file(&p, b"secret").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&p, b"again").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let target = t.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_file(&link).is_err());
        assert!(open_file(&link).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
        assert_eq!(std::io::read_to_string(open_file(&p).unwrap()).unwrap(), "again");
    }
}
