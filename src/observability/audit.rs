//! The audit log (EXTENSIONS X62): one JSON line per execution and per file mutation, appended to
//! `--audit-log PATH` (mode 0600, never through a symlink), rotated once to `PATH.1` when the next
//! line would take it past `--audit-log-max-bytes`.
//!
//! Every line is written with one `write` under a mutex by whichever task finishes the event, so
//! concurrent writers never interleave or tear a line, and the rotation decision and the write are
//! one step (no line can land in a file that is being renamed away).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default size bound of the audit file before it is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest accepted `--audit-log-max-bytes`.
pub const MIN_MAX_BYTES: u64 = 1024;

/// Why the audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write audit log {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

struct Current {
    file: File,
    size: u64,
}

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: u64,
    /// A std mutex: held for one `write` (and, at the limit, a rename and an open); never across
    /// an await.
    current: Mutex<Current>,
}

impl AuditLog {
    /// Opens (creating with mode 0600, or tightening an existing file to 0600) `path` for
    /// appending. A symlink at `path` is refused.
    pub fn open(path: &Path, max_bytes: u64) -> Result<AuditLog, AuditError> {
        let file = open_private(path).map_err(|source| AuditError::Open { path: path.to_path_buf(), source })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        Ok(AuditLog {
            path: path.to_path_buf(),
            rotated: PathBuf::from(rotated),
            max_bytes: max_bytes.max(MIN_MAX_BYTES),
            current: Mutex::new(Current { file, size }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line.
    pub fn write(&self, record: &serde_json::Value) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        let err = |source| AuditError::Write { path: self.path.clone(), source };
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.size > 0 && cur.size + line.len() as u64 > self.max_bytes {
            std::fs::rename(&self.path, &self.rotated).map_err(err)?;
            let file = open_private(&self.path).map_err(err)?;
            *cur = Current { file, size: 0 };
        }
        // One write of the whole line: O_APPEND regular files take it whole.
        cur.file.write_all(&line).map_err(err)?;
        cur.size += line.len() as u64;
        Ok(())
    }
}

fn open_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x62_rotates_once_and_keeps_lines_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 2048).unwrap();
        for i in 0..40 {
            log.write(&serde_json::json!({"i": i, "pad": "x".repeat(60)})).unwrap();
        }
        let cur = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
        assert!(cur.len() <= 2048 && old.len() <= 2048);
        for l in cur.lines().chain(old.lines()) {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        let last: serde_json::Value = serde_json::from_str(cur.lines().last().unwrap()).unwrap();
        assert_eq!(last["i"], 39);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn x62_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("audit.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(AuditLog::open(&link, 4096).is_err());
    }
}
