//! `GET /files/search` (§7.6, C126–C128): walk a tree (pre-order, names sorted, symlinks never
//! followed, hidden entries included) and report every non-directory entry whose **base name**
//! matches a glob. Runs on a blocking thread and streams entries, so memory stays bounded and the
//! walk stops at the next entry once the reader is gone.
//!
//! Glob dialect (upstream uses a doublestar fork): `*`, `?`, `**`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`,
//! `{a,b}`, `\` escapes, and a leading `!(pat)rest`, which matches when `pat rest` does not.
//! Because only the base name is matched, `**/x` matches `x` and `dir/*.go` matches nothing.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use tokio::sync::mpsc;

use super::info::{Accounts, InfoJsonWriter, StatFields};
use super::{path, FsError};

/// A compiled base-name pattern.
#[derive(Debug, Clone)]
pub enum NameMatcher {
    /// A one-glob set: GlobSet picks a fast strategy (extension, literal, ...) where it can.
    Glob(GlobSet),
    /// `!(pat)rest`: matches what `pat rest` does not.
    Not(GlobSet),
}

impl NameMatcher {
    /// Compiles `pattern` (empty means `**`).
    pub fn new(pattern: &str) -> Result<NameMatcher, FsError> {
        let pattern = if pattern.is_empty() { "**" } else { pattern };
        if let Some(inner) = pattern.strip_prefix("!(") {
            if let Some(close) = matching_paren(inner) {
                let positive = format!("{}{}", &inner[..close], &inner[close + 1..]);
                return Ok(NameMatcher::Not(compile(pattern, &positive)?));
            }
        }
        Ok(NameMatcher::Glob(compile(pattern, pattern)?))
    }

    /// Whether the base name `name` matches.
    pub fn is_match(&self, name: &str) -> bool {
        match self {
            NameMatcher::Glob(g) => g.is_match(name),
            NameMatcher::Not(g) => !g.is_match(name),
        }
    }
}

fn compile(original: &str, glob: &str) -> Result<GlobSet, FsError> {
    let invalid =
        |e: globset::Error| FsError::Failed(format!("error searching files. invalid pattern {original:?}: {e}"));
    let glob = GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
        .map_err(invalid)?;
    GlobSetBuilder::new().add(glob).build().map_err(invalid)
}

fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The search result as JSON text: chunks of comma-separated FileInfo objects (the caller adds
/// the brackets). An `Err` item ends the stream. Dropping the receiver stops the walk.
pub type SearchStream = mpsc::Receiver<Result<Vec<u8>, FsError>>;

/// JSON bytes per chunk handed to the reader (about 290 entries).
const CHUNK: usize = 64 * 1024;
/// Chunks the walk may run ahead of its reader (bounds memory to about 256 KiB of output).
const CHANNEL: usize = 4;
/// Directories kept open (for `openat`/`fstatat` relative to them) along the current branch;
/// deeper ones are read, closed, and their entries reached by full path.
const MAX_OPEN_DIRS: usize = 48;
/// Entries between checks that the reader is still there when nothing matches.
const CLOSED_CHECK: u32 = 4096;

/// Starts searching under `root` (expanded, made absolute; must exist by stat, else 404).
/// An invalid pattern is reported when the first entry is tested, as upstream.
///
/// The walk runs on a blocking thread with its own `openat`/`fstatat` walker and writes the JSON
/// itself: per hit one `fstatat` relative to the open parent directory and about 220 bytes
/// appended to a chunk buffer, no other allocation.
pub fn search(root: &str, pattern: &str) -> SearchStream {
    let root_given = root.to_string();
    let pattern = pattern.to_string();
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::task::spawn_blocking(move || {
        let mut out = Output { tx, buf: Vec::with_capacity(CHUNK + 4096), first: true };
        let res = run(&root_given, &pattern, &mut out);
        // Entries found before an error are delivered first, as upstream would have listed them.
        if out.flush() {
            if let Err(e) = res {
                let _ = out.tx.blocking_send(Err(e));
            }
        }
    });
    rx
}

/// The chunk being filled and where it goes.
struct Output {
    tx: mpsc::Sender<Result<Vec<u8>, FsError>>,
    buf: Vec<u8>,
    first: bool,
}

impl Output {
    /// Sends the pending chunk (waiting while the channel is full). False: the reader is gone.
    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return !self.tx.is_closed();
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        self.tx.blocking_send(Ok(chunk)).is_ok()
    }
}

/// One directory being walked: its entries (names sorted bytewise, as Go's `filepath.Walk`
/// and walkdir's `sort_by_file_name`), read in full before any is visited.
struct Frame {
    /// Open while the branch is at most [`MAX_OPEN_DIRS`] deep.
    dir: Option<Dir>,
    /// Length of the walker's path buffer for this directory, trailing `/` included.
    prefix: usize,
    /// NUL-terminated names, back to back.
    names: Vec<u8>,
    /// (start in `names`, length without the NUL, d_type), sorted by name.
    entries: Vec<(u32, u32, Option<Type>)>,
    next: usize,
}

impl Frame {
    fn read(mut dir: Dir, prefix: usize, keep_open: bool) -> nix::Result<Frame> {
        let mut names = Vec::new();
        let mut entries = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            entries.push((names.len() as u32, (name.len() - 1) as u32, entry.file_type()));
            names.extend_from_slice(name);
        }
        entries.sort_unstable_by(|a, b| {
            names[a.0 as usize..(a.0 + a.1) as usize].cmp(&names[b.0 as usize..(b.0 + b.1) as usize])
        });
        Ok(Frame { dir: keep_open.then_some(dir), prefix, names, entries, next: 0 })
    }
}

/// `lstat` of an entry: relative to its open directory, else by full path.
fn lstat_at(dirfd: Option<RawFd>, name: &CStr, full: &[u8]) -> nix::Result<libc::stat> {
    match dirfd {
        Some(fd) => nix::sys::stat::fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW),
        None => nix::sys::stat::lstat(full),
    }
}

fn open_dir(dirfd: Option<RawFd>, name: &CStr, full: &[u8]) -> nix::Result<Dir> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match dirfd {
        Some(fd) => Dir::openat(Some(fd), name, flags, Mode::empty()),
        None => Dir::open(full, flags, Mode::empty()),
    }
}

fn walk_error(at: &[u8], e: Errno) -> FsError {
    FsError::io_no_404("error searching files: walking", Path::new(&*String::from_utf8_lossy(at)), e.into())
}

/// Pre-order walk of one search.
struct Walker<'a> {
    matcher: Result<&'a NameMatcher, &'a FsError>,
    json: InfoJsonWriter<'a>,
    out: &'a mut Output,
    /// The current entry's absolute path.
    path: Vec<u8>,
    visited: u32,
}

impl Walker<'_> {
    /// Tests one non-directory entry (`name_z`: its NUL-terminated name in `dirfd`; its full
    /// path is in `self.path`) and emits it when it matches. `stat`: its lstat when already
    /// known. False: the reader is gone.
    fn test(&mut self, dirfd: Option<RawFd>, name_z: &[u8], stat: Option<StatFields>) -> Result<bool, FsError> {
        let matcher = self.matcher.map_err(|e| FsError::Failed(e.to_string()))?;
        if !matcher.is_match(&String::from_utf8_lossy(&name_z[..name_z.len() - 1])) {
            return Ok(true);
        }
        let st = match stat {
            Some(st) => st,
            None => match lstat_at(dirfd, CStr::from_bytes_with_nul(name_z).unwrap_or_default(), &self.path) {
                Ok(st) => StatFields::from_stat(&st),
                Err(Errno::ENOENT) => return Ok(true),
                Err(e) => {
                    return Err(FsError::io_no_404("lstat", Path::new(&*String::from_utf8_lossy(&self.path)), e.into()))
                }
            },
        };
        let out = &mut *self.out;
        if !std::mem::take(&mut out.first) {
            out.buf.push(b',');
        }
        self.json.write(&mut out.buf, &String::from_utf8_lossy(&self.path), &st);
        Ok(out.buf.len() < CHUNK || out.flush())
    }

    /// Walks the directory at `self.path` (opened as `root`) to the end, or until the reader
    /// goes away.
    fn walk(&mut self, root: Dir) -> Result<(), FsError> {
        if self.path.last() != Some(&b'/') {
            self.path.push(b'/');
        }
        let root_len = self.path.len();
        let mut stack = vec![Frame::read(root, root_len, true).map_err(|e| walk_error(&self.path[..root_len - 1], e))?];
        loop {
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else { break };
            let Some(&(start, len, dtype)) = frame.entries.get(frame.next) else {
                stack.pop();
                continue;
            };
            frame.next += 1;
            let name_z = &frame.names[start as usize..(start + len + 1) as usize];
            let name = CStr::from_bytes_with_nul(name_z).unwrap_or_default();
            self.path.truncate(frame.prefix);
            self.path.extend_from_slice(&name_z[..name_z.len() - 1]);
            let dirfd = frame.dir.as_ref().map(|d| d.as_raw_fd());

            self.visited = self.visited.wrapping_add(1);
            if self.visited.is_multiple_of(CLOSED_CHECK) && self.out.tx.is_closed() {
                return Ok(());
            }
            // The type from getdents; filesystems that do not report it need an lstat.
            let (is_dir, stat) = match dtype {
                Some(Type::Directory) => (true, None),
                Some(_) => (false, None),
                None => match lstat_at(dirfd, name, &self.path) {
                    Ok(st) => {
                        let st = StatFields::from_stat(&st);
                        (st.is_dir(), Some(st))
                    }
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(walk_error(&self.path, e)),
                },
            };
            if is_dir {
                let keep_open = depth < MAX_OPEN_DIRS;
                let frame = match open_dir(dirfd, name, &self.path) {
                    Ok(dir) => {
                        let prefix = self.path.len() + 1;
                        Frame::read(dir, prefix, keep_open)
                    }
                    Err(e) => Err(e),
                };
                match frame {
                    Ok(frame) => {
                        self.path.push(b'/');
                        stack.push(frame);
                    }
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(walk_error(&self.path, e)),
                }
                continue;
            }
            if !self.test(dirfd, name_z, stat)? {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn run(root_given: &str, pattern: &str, out: &mut Output) -> Result<(), FsError> {
    let matcher = NameMatcher::new(pattern);
    let abs = path::resolve(root_given);
    std::fs::metadata(&abs).map_err(|e| FsError::io("stat", &abs, e))?;
    let accounts = Accounts::load();
    // The root itself by lstat: a symlink (even to a directory) or a file is one entry, tested
    // by its base name; only a real directory is walked.
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io_no_404("error searching files: walking", &abs, e)),
    };
    let mut walker = Walker {
        matcher: matcher.as_ref(),
        json: InfoJsonWriter::new(&accounts),
        out,
        path: abs.as_os_str().as_encoded_bytes().to_vec(),
        visited: 0,
    };
    if !meta.is_dir() {
        let mut name_z = abs.file_name().unwrap_or(abs.as_os_str()).as_encoded_bytes().to_vec();
        name_z.push(0);
        walker.test(None, &name_z, Some(StatFields::from_metadata(&meta)))?;
        return Ok(());
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match Dir::open(abs.as_path(), flags, Mode::empty()) {
        Ok(dir) => walker.walk(dir),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(walk_error(abs.as_os_str().as_encoded_bytes(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_name_matching_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.txt", "a.txt", true),
            ("*.txt", "a.go", false),
            ("*", ".hidden", true),
            ("**", "anything", true),
            ("", "anything", true),
            ("**/a.txt", "a.txt", true),
            ("**/a.txt", "b.txt", false),
            ("sub/*.txt", "a.txt", false),
            ("?.go", "x.go", true),
            ("?.go", "xy.go", false),
            ("[abc].md", "b.md", true),
            ("[a-c].md", "d.md", false),
            ("[!a].md", "a.md", false),
            ("[!a].md", "b.md", true),
            ("[^a].md", "b.md", true),
            ("{foo,bar}.rs", "bar.rs", true),
            ("{foo,bar}.rs", "baz.rs", false),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("!(*.txt)", "a.go", true),
            ("!(*.txt)", "a.txt", false),
            ("!(a)*.go", "b.go", true),
            ("!(a)*.go", "ab.go", false),
            ("*.TXT", "a.txt", false),
        ];
        for (pattern, name, want) in cases {
            let m = NameMatcher::new(pattern).unwrap();
            assert_eq!(m.is_match(name), *want, "pattern {pattern:?} name {name:?}");
        }
    }

    #[test]
    fn invalid_pattern_is_an_error() {
        assert!(NameMatcher::new("[").is_err());
    }
}
