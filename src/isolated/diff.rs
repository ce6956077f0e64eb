//! Diff and commit of a session's persistent overlays (I24, I25), read from their upper layers on
//! the host. An upper layer holds exactly what the session changed: new and modified entries as
//! themselves, deletions as whiteouts (character device 0:0), replaced directories marked opaque
//! (`trusted.overlay.opaque=y`).
//!
//! Commit rule (ours, I-Q2): each change is applied atomically per file (temporary name in the
//! target directory, then rename; a whiteout unlinks), but a host path that changed after the
//! session was created (or after its last commit) is not overwritten: it is reported as a conflict
//! and the rest is applied.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::IsolatedError;

/// Most changes one diff or commit handles.
const MAX_CHANGES: usize = 200_000;

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Absolute path as the session sees it.
    pub path: String,
    /// `created`, `modified` or `deleted`.
    pub kind: &'static str,
    /// `file`, `directory` or `symlink`.
    #[serde(rename = "type")]
    pub kind_of: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct CommitReport {
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Serialize)]
pub struct Conflict {
    pub path: String,
    pub reason: String,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> IsolatedError {
    IsolatedError::io(&format!("{what} {}", p.display()), e)
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut buf), Ok(n) if &buf[..n] == b"y")
}

fn type_name(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "file"
    }
}

/// Entries of `dir`, sorted.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, IsolatedError> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| io("read", dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Every change in the given `(mount path, upper dir)` pairs.
pub fn changes(uppers: &[(PathBuf, PathBuf)]) -> Result<Vec<Change>, IsolatedError> {
    let mut out = Vec::new();
    for (mount, upper) in uppers {
        walk_changes(mount, upper, &mut out)?;
    }
    Ok(out)
}

fn walk_changes(lower: &Path, upper: &Path, out: &mut Vec<Change>) -> Result<(), IsolatedError> {
    for u in entries(upper)? {
        let Some(name) = u.file_name() else { continue };
        let l = lower.join(name);
        let Ok(um) = std::fs::symlink_metadata(&u) else { continue };
        let lm = std::fs::symlink_metadata(&l).ok();
        if out.len() >= MAX_CHANGES {
            return Err(IsolatedError::Invalid(format!("more than {MAX_CHANGES} changes")));
        }
        let path = l.display().to_string();
        if is_whiteout(&um) {
            if let Some(lm) = lm {
                out.push(Change { path, kind: "deleted", kind_of: type_name(&lm) });
            }
            continue;
        }
        let kind = match &lm {
            Some(lm) if lm.is_dir() == um.is_dir() => "modified",
            Some(_) | None => "created",
        };
        if um.is_dir() {
            if kind == "created" || is_opaque(&u) {
                out.push(Change { path, kind, kind_of: "directory" });
            }
            walk_changes(&l, &u, out)?;
        } else {
            out.push(Change { path, kind, kind_of: type_name(&um) });
        }
    }
    Ok(())
}

fn changed_since(m: &std::fs::Metadata, since: SystemTime) -> bool {
    let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32);
    t(m.mtime(), m.mtime_nsec()) > since || t(m.ctime(), m.ctime_nsec()) > since
}

/// Applies every change to the host (see the module doc for the conflict rule).
pub fn commit(uppers: &[(PathBuf, PathBuf)], since: SystemTime) -> Result<CommitReport, IsolatedError> {
    let mut report = CommitReport::default();
    for (mount, upper) in uppers {
        commit_dir(mount, upper, since, &mut report)?;
    }
    Ok(report)
}

fn conflict(report: &mut CommitReport, p: &Path) {
    report.conflicts.push(Conflict {
        path: p.display().to_string(),
        reason: "changed on the host after the session started".into(),
    });
}

fn commit_dir(host: &Path, upper: &Path, since: SystemTime, report: &mut CommitReport) -> Result<(), IsolatedError> {
    if is_opaque(upper) {
        // A replaced directory: host entries the session does not have are deleted.
        for h in entries(host).unwrap_or_default() {
            let Some(name) = h.file_name() else { continue };
            if std::fs::symlink_metadata(upper.join(name)).is_err() {
                remove_host(&h, since, report)?;
            }
        }
    }
    for u in entries(upper)? {
        let Some(name) = u.file_name() else { continue };
        let h = host.join(name);
        let Ok(um) = std::fs::symlink_metadata(&u) else { continue };
        if is_whiteout(&um) {
            remove_host(&h, since, report)?;
            continue;
        }
        let hm = std::fs::symlink_metadata(&h).ok();
        if um.is_dir() {
            match &hm {
                Some(hm) if hm.is_dir() => {}
                Some(hm) if changed_since(hm, since) => {
                    conflict(report, &h);
                    continue;
                }
                Some(_) => {
                    std::fs::remove_file(&h).map_err(|e| io("remove", &h, e))?;
                    make_dir(&h, &um, report)?;
                }
                None => make_dir(&h, &um, report)?,
            }
            commit_dir(&h, &u, since, report)?;
            continue;
        }
        if hm.as_ref().is_some_and(|hm| changed_since(hm, since)) {
            conflict(report, &h);
            continue;
        }
        if hm.as_ref().is_some_and(|hm| hm.is_dir()) {
            std::fs::remove_dir_all(&h).map_err(|e| io("remove", &h, e))?;
        }
        let tmp = host.join(format!(".execd-commit-{}", uuid::Uuid::new_v4().simple()));
        let res = if um.file_type().is_symlink() {
            std::fs::read_link(&u).and_then(|t| std::os::unix::fs::symlink(t, &tmp))
        } else {
            std::fs::copy(&u, &tmp).and_then(|_| {
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(um.mode() & 0o7777))?;
                let _ = std::os::unix::fs::lchown(&tmp, Some(um.uid()), Some(um.gid()));
                std::fs::File::open(&tmp)?.sync_all()
            })
        };
        match res.and_then(|()| std::fs::rename(&tmp, &h)) {
            Ok(()) => report.applied.push(h.display().to_string()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io("commit", &h, e));
            }
        }
    }
    Ok(())
}

fn make_dir(h: &Path, um: &std::fs::Metadata, report: &mut CommitReport) -> Result<(), IsolatedError> {
    std::fs::create_dir(h).map_err(|e| io("mkdir", h, e))?;
    let _ = std::fs::set_permissions(h, std::fs::Permissions::from_mode(um.mode() & 0o7777));
    let _ = std::os::unix::fs::lchown(h, Some(um.uid()), Some(um.gid()));
    report.applied.push(h.display().to_string());
    Ok(())
}

fn remove_host(h: &Path, since: SystemTime, report: &mut CommitReport) -> Result<(), IsolatedError> {
    let Ok(hm) = std::fs::symlink_metadata(h) else { return Ok(()) };
    if changed_since(&hm, since) {
        conflict(report, h);
        return Ok(());
    }
    let res = if hm.is_dir() { std::fs::remove_dir_all(h) } else { std::fs::remove_file(h) };
    res.map_err(|e| io("remove", h, e))?;
    report.deleted.push(h.display().to_string());
    Ok(())
}
