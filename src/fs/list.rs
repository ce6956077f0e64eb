//! `GET /directories/list` (§7.10): a pre-order walk of a directory to a depth, each directory's
//! entries sorted byte-wise by name, every entry from lstat. Symlinks are reported and never
//! descended. Runs on a blocking thread and streams entries (see [`super::spawn_walk`]), so memory
//! is bounded by one directory's names at each open level.

use std::path::{Path, PathBuf};

use super::info::{from_metadata, Accounts};
use super::{path, spawn_walk, FsError, InfoSink, InfoStream};

/// Starts listing `root` (expanded, made absolute) down to `depth` levels (1 = direct children).
/// The root must be a directory and not a symlink (400), and must exist (404).
pub fn list(root: &str, depth: u32) -> InfoStream {
    let root_given = root.to_string();
    spawn_walk(move |sink| {
        let abs = path::resolve_checked(&root_given)?;
        let meta = std::fs::symlink_metadata(&abs).map_err(|e| FsError::io("lstat", &abs, e))?;
        if meta.file_type().is_symlink() {
            return Err(FsError::Invalid(format!("path is a symbolic link, refusing to traverse: {}", abs.display())));
        }
        if !meta.is_dir() {
            return Err(FsError::Invalid(format!("path is not a directory: {}", abs.display())));
        }
        let accounts = Accounts::load();
        walk(&abs, 1, depth, &accounts, sink)?;
        Ok(())
    })
}

/// Lists `dir` (at `level`), descending into subdirectories while `level < depth`.
/// Returns Ok(false) when the reader went away.
fn walk(dir: &Path, level: u32, depth: u32, accounts: &Accounts, sink: &mut InfoSink) -> Result<bool, FsError> {
    if level > depth {
        return Ok(true);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FsError::io_no_404("reading directory", dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| FsError::io_no_404("reading directory", dir, e))?;
    names.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    for child in names {
        let meta = match std::fs::symlink_metadata(&child) {
            Ok(m) => m,
            // Removed while we walk: not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FsError::io_no_404("lstat", &child, e)),
        };
        if !sink.send(from_metadata(&child, &meta, accounts)) {
            return Ok(false);
        }
        if meta.is_dir() && level < depth && !walk(&child, level + 1, depth, accounts, sink)? {
            return Ok(false);
        }
    }
    Ok(true)
}
