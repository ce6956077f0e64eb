//! `GET /files/search` (§7.6, C126–C128): walk a tree (pre-order, names sorted, symlinks never
//! followed, hidden entries included) and report every non-directory entry whose **base name**
//! matches a glob. Runs on a blocking thread and streams entries, so memory stays bounded and the
//! walk stops at the next entry once the reader is gone.
//!
//! Glob dialect (upstream uses a doublestar fork): `*`, `?`, `**`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`,
//! `{a,b}`, `\` escapes, and a leading `!(pat)rest`, which matches when `pat rest` does not.
//! Because only the base name is matched, `**/x` matches `x` and `dir/*.go` matches nothing.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, CWD};
use rustix::io::Errno;
use tokio::sync::mpsc;

use super::bufpool::{BufPool, PooledChunk};
use super::info::{put, Accounts, InfoJsonWriter, StatFields};
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

/// Matches per batch of `lstat` and JSON work (about 56 KiB of JSON).
const BATCH: usize = 256;
/// Directories a batch may refer to (each holds its directory open until the batch is done).
const BATCH_DIRS: usize = 32;
/// Directories kept open (for `openat`/`fstatat` relative to them) along the current branch;
/// deeper ones are read, closed, and their entries reached by full path.
const MAX_OPEN_DIRS: usize = 48;
/// Entries between checks that the reader is still there when nothing matches.
const CLOSED_CHECK: u32 = 4096;

/// Buffers a search's pool keeps: more than can be in flight at once.
const POOL_MAX: usize = 16;

/// Part of the search result (JSON text); its buffer goes back to the search's pool when it
/// is dropped.
pub type SearchChunk = PooledChunk;

fn new_pool() -> BufPool {
    BufPool::new(POOL_MAX, 4 * BATCH * 256)
}

/// The result of one batch: comma-prefixed FileInfo objects, then the error that cut it short.
struct BatchOut {
    json: Vec<u8>,
    error: Option<FsError>,
}

/// One step of the result, in walk order: done by the walker, or running on a worker.
enum Piece {
    Ready(BatchOut),
    Pending(tokio::task::JoinHandle<BatchOut>),
}

/// The search result as JSON text: chunks of comma-separated FileInfo objects (the caller adds
/// the brackets), in walk order. An `Err` item ends the stream. Dropping it stops the walk.
pub struct SearchStream {
    rx: mpsc::Receiver<Piece>,
    pool: BufPool,
    first: bool,
    error: Option<FsError>,
    /// After an error: nothing more comes, whatever the walk had queued.
    ended: bool,
}

impl SearchStream {
    /// The next chunk; `None` at the end.
    pub async fn recv(&mut self) -> Option<Result<SearchChunk, FsError>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(e) = self.error.take() {
                self.rx.close();
                self.ended = true;
                return Some(Err(e));
            }
            let out = match self.rx.recv().await? {
                Piece::Ready(out) => out,
                Piece::Pending(task) => task.await.unwrap_or_else(|e| BatchOut {
                    json: Vec::new(),
                    error: Some(FsError::Failed(format!("error searching files: worker failed: {e}"))),
                }),
            };
            self.error = out.error;
            if out.json.is_empty() {
                continue;
            }
            // The first object has no comma before it.
            let start = usize::from(std::mem::take(&mut self.first));
            return Some(Ok(self.pool.chunk(out.json, start)));
        }
    }
}

/// Starts searching under `root` (expanded, made absolute; must exist by stat, else 404).
/// An invalid pattern is reported when the first entry is tested, as upstream.
///
/// One blocking thread walks (`getdents`, names sorted, matching) and hands the hits in batches
/// to the blocking pool, which does the `fstatat` (relative to the open parent directory) and
/// writes the JSON; the stream yields the batches in walk order. At most `2 × cores` batches are
/// in flight, so memory and open directories stay bounded whatever the tree.
pub fn search(root: &str, pattern: &str) -> SearchStream {
    let root_given = root.to_string();
    let pattern = pattern.to_string();
    let in_flight = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4) * 2;
    let (tx, rx) = mpsc::channel(in_flight);
    let runtime = tokio::runtime::Handle::current();
    let pool = new_pool();
    let walker_pool = pool.clone();
    super::identity::spawn_blocking_on(&runtime.clone(), move || {
        let accounts = Arc::new(Accounts::load());
        let mut walker = Walker {
            matcher: Ok(NameMatcher::Glob(GlobSet::empty())),
            accounts,
            pool: walker_pool,
            runtime,
            tx,
            batch: Batch::default(),
            group: None,
            dispatched: false,
            path: Vec::new(),
            dirbuf: Vec::with_capacity(32 * 1024),
            visited: 0,
        };
        let res = run(&root_given, &pattern, &mut walker);
        // Entries found before an error are delivered first, as upstream would have listed them.
        if walker.finish() {
            if let Err(e) = res {
                let _ = walker.tx.blocking_send(Piece::Ready(BatchOut { json: Vec::new(), error: Some(e) }));
            }
        }
    });
    SearchStream { rx, pool, first: true, error: None, ended: false }
}

/// A directory hits of a batch live in: its open fd (while the walk keeps one) and its path
/// with a trailing `/`.
struct Group {
    dir: Option<Arc<OwnedFd>>,
    prefix: Vec<u8>,
}

/// Hits waiting for their `lstat`.
#[derive(Default)]
struct Batch {
    groups: Vec<Group>,
    /// NUL-terminated names, back to back.
    names: Vec<u8>,
    /// (group, start in `names`, length without the NUL, lstat when the walk already did it).
    entries: Vec<(u32, u32, u32, Option<StatFields>)>,
}

impl Batch {
    /// `lstat` of every hit and its FileInfo JSON, each object preceded by a comma. Entries
    /// gone since the walk saw them are skipped; another error ends the batch.
    fn run(&self, accounts: &Accounts, pool: &BufPool) -> BatchOut {
        let mut json = InfoJsonWriter::new(accounts);
        let mut out = pool.take(self.entries.len() * 240);
        let mut path = Vec::with_capacity(256);
        for &(group, start, len, stat) in &self.entries {
            let group = &self.groups[group as usize];
            let name_z = &self.names[start as usize..(start + len + 1) as usize];
            path.clear();
            put(&mut path, &group.prefix);
            put(&mut path, &name_z[..name_z.len() - 1]);
            let st = match stat {
                Some(st) => st,
                None => {
                    let dirfd = group.dir.as_ref().map(|d| d.as_fd());
                    match lstat_at(dirfd, CStr::from_bytes_with_nul(name_z).unwrap_or_default(), &path) {
                        Ok(st) => StatFields::from_rustix(&st),
                        Err(Errno::NOENT) => continue,
                        Err(e) => {
                            let path = String::from_utf8_lossy(&path);
                            return BatchOut {
                                json: out,
                                error: Some(FsError::io_no_404("lstat", Path::new(&*path), e.into())),
                            };
                        }
                    }
                }
            };
            out.push(b',');
            json.write(&mut out, &String::from_utf8_lossy(&path), &st);
        }
        BatchOut { json: out, error: None }
    }
}

/// One directory being walked: its entries (names sorted bytewise, as Go's `filepath.Walk`
/// and walkdir's `sort_by_file_name`), read in full before any is visited.
struct Frame {
    /// Open while the branch is at most [`MAX_OPEN_DIRS`] deep.
    dir: Option<Arc<OwnedFd>>,
    /// Length of the walker's path buffer for this directory, trailing `/` included.
    prefix: usize,
    /// NUL-terminated names, back to back.
    names: Vec<u8>,
    /// ([`sort_key`], start in `names`, length without the NUL, d_type), sorted by name.
    entries: Vec<(u64, u32, u32, FileType)>,
    next: usize,
}

impl Frame {
    /// Reads the directory `fd` with `getdents64` into `buf` (any size above one entry works;
    /// 32 KiB takes about 1 000 names per call), copying each name once.
    fn read(fd: OwnedFd, prefix: usize, keep_open: bool, buf: &mut Vec<u8>) -> rustix::io::Result<Frame> {
        let mut names = Vec::new();
        let mut entries = Vec::new();
        let mut dir = RawDir::new(&fd, buf.spare_capacity_mut());
        while let Some(entry) = dir.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            let len = name.len() - 1;
            entries.push((sort_key(&name[..len]), names.len() as u32, len as u32, entry.file_type()));
            put(&mut names, name);
        }
        entries.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| names[a.1 as usize..(a.1 + a.2) as usize].cmp(&names[b.1 as usize..(b.1 + b.2) as usize]))
        });
        Ok(Frame { dir: keep_open.then(|| Arc::new(fd)), prefix, names, entries, next: 0 })
    }
}

/// The first 8 bytes of a name as a big-endian number, zero-padded: names hold no NUL, so
/// comparing keys orders names bytewise up to their first 8 bytes, and only names that share
/// those need the full comparison.
fn sort_key(name: &[u8]) -> u64 {
    let n = name.len().min(8);
    let key = name[..n].iter().fold(0u64, |key, &b| key << 8 | u64::from(b));
    match n {
        0 => 0,
        8 => key,
        _ => key << (8 * (8 - n)),
    }
}

/// `lstat` of an entry: relative to its open directory, else by full path.
fn lstat_at(dirfd: Option<BorrowedFd<'_>>, name: &CStr, full: &[u8]) -> rustix::io::Result<rustix::fs::Stat> {
    match dirfd {
        Some(fd) => rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW),
        None => rustix::fs::statat(CWD, full, AtFlags::SYMLINK_NOFOLLOW),
    }
}

/// Opens a directory (never through a symlink) relative to `dirfd`, else by full path.
fn open_dir(dirfd: Option<BorrowedFd<'_>>, name: &CStr, full: &[u8]) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match dirfd {
        Some(fd) => rustix::fs::openat(fd, name, flags, Mode::empty()),
        None => rustix::fs::openat(CWD, full, flags, Mode::empty()),
    }
}

fn walk_error(at: &[u8], e: Errno) -> FsError {
    FsError::io_no_404("error searching files: walking", Path::new(&*String::from_utf8_lossy(at)), e.into())
}

/// Pre-order walk of one search, feeding batches of hits to the blocking pool.
struct Walker {
    /// The compiled pattern, or why it does not compile (reported at the first entry tested).
    matcher: Result<NameMatcher, FsError>,
    accounts: Arc<Accounts>,
    pool: BufPool,
    runtime: tokio::runtime::Handle,
    tx: mpsc::Sender<Piece>,
    batch: Batch,
    /// The current directory's index in `batch.groups`, once it has a hit there.
    group: Option<u32>,
    /// Whether a batch went to the pool (else a search with a single batch does it inline).
    dispatched: bool,
    /// The current entry's absolute path.
    path: Vec<u8>,
    /// `getdents64` buffer, reused for every directory.
    dirbuf: Vec<u8>,
    visited: u32,
}

impl Walker {
    /// Tests one non-directory entry (`name_z`: its NUL-terminated name in `frame`; its full
    /// path is in `self.path`) and adds it to the batch when it matches. `stat`: its lstat
    /// when already known. False: the reader is gone.
    fn test(&mut self, frame: Option<&Frame>, name_z: &[u8], stat: Option<StatFields>) -> Result<bool, FsError> {
        let matcher = self.matcher.as_ref().map_err(|e| FsError::Failed(e.to_string()))?;
        if !matcher.is_match(&String::from_utf8_lossy(&name_z[..name_z.len() - 1])) {
            return Ok(true);
        }
        let group = match self.group {
            Some(g) => g,
            None => {
                let prefix = frame.map_or(self.path.len() - (name_z.len() - 1), |f| f.prefix);
                self.batch
                    .groups
                    .push(Group { dir: frame.and_then(|f| f.dir.clone()), prefix: self.path[..prefix].to_vec() });
                let g = (self.batch.groups.len() - 1) as u32;
                self.group = Some(g);
                g
            }
        };
        let start = self.batch.names.len() as u32;
        put(&mut self.batch.names, name_z);
        self.batch.entries.push((group, start, (name_z.len() - 1) as u32, stat));
        if self.batch.entries.len() >= BATCH || self.batch.groups.len() >= BATCH_DIRS {
            return Ok(self.dispatch());
        }
        Ok(true)
    }

    /// Hands the batch to the blocking pool. False: the reader is gone.
    fn dispatch(&mut self) -> bool {
        self.group = None;
        let batch = std::mem::take(&mut self.batch);
        let accounts = Arc::clone(&self.accounts);
        let pool = self.pool.clone();
        let task = super::identity::spawn_blocking_on(&self.runtime, move || batch.run(&accounts, &pool));
        self.dispatched = true;
        self.tx.blocking_send(Piece::Pending(task)).is_ok()
    }

    /// Sends what is left of the batch (inline when it is the only one). False: the reader
    /// is gone.
    fn finish(&mut self) -> bool {
        if self.batch.entries.is_empty() {
            return !self.tx.is_closed();
        }
        if self.dispatched {
            return self.dispatch();
        }
        let out = self.batch.run(&self.accounts, &self.pool);
        self.tx.blocking_send(Piece::Ready(out)).is_ok()
    }

    /// Walks the directory at `self.path` (opened as `root`) to the end, or until the reader
    /// goes away.
    fn walk(&mut self, root: OwnedFd) -> Result<(), FsError> {
        if self.path.last() != Some(&b'/') {
            self.path.push(b'/');
        }
        let root_len = self.path.len();
        let root = Frame::read(root, root_len, true, &mut self.dirbuf);
        let mut stack = vec![root.map_err(|e| walk_error(&self.path[..root_len - 1], e))?];
        loop {
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else { break };
            let Some(&(_, start, len, dtype)) = frame.entries.get(frame.next) else {
                stack.pop();
                self.group = None;
                continue;
            };
            frame.next += 1;
            let frame = &*frame;
            let name_z = &frame.names[start as usize..(start + len + 1) as usize];
            let name = CStr::from_bytes_with_nul(name_z).unwrap_or_default();
            self.path.truncate(frame.prefix);
            put(&mut self.path, &name_z[..name_z.len() - 1]);
            let dirfd = frame.dir.as_ref().map(|d| d.as_fd());

            self.visited = self.visited.wrapping_add(1);
            if self.visited.is_multiple_of(CLOSED_CHECK) && self.tx.is_closed() {
                return Ok(());
            }
            // The type from getdents; filesystems that do not report it need an lstat.
            let (is_dir, stat) = match dtype {
                FileType::Directory => (true, None),
                FileType::Unknown => match lstat_at(dirfd, name, &self.path) {
                    Ok(st) => {
                        let st = StatFields::from_rustix(&st);
                        (st.is_dir(), Some(st))
                    }
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(walk_error(&self.path, e)),
                },
                _ => (false, None),
            };
            if is_dir {
                let keep_open = depth < MAX_OPEN_DIRS;
                let child = open_dir(dirfd, name, &self.path)
                    .and_then(|fd| Frame::read(fd, self.path.len() + 1, keep_open, &mut self.dirbuf));
                match child {
                    Ok(child) => {
                        self.path.push(b'/');
                        stack.push(child);
                        self.group = None;
                    }
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(walk_error(&self.path, e)),
                }
                continue;
            }
            if !self.test(Some(frame), name_z, stat)? {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn run(root_given: &str, pattern: &str, walker: &mut Walker) -> Result<(), FsError> {
    walker.matcher = NameMatcher::new(pattern);
    let abs = path::resolve_checked(root_given)?;
    std::fs::metadata(&abs).map_err(|e| FsError::io("stat", &abs, e))?;
    // The root itself by lstat: a symlink (even to a directory) or a file is one entry, tested
    // by its base name; only a real directory is walked.
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io_no_404("error searching files: walking", &abs, e)),
    };
    walker.path = abs.as_os_str().as_encoded_bytes().to_vec();
    if !meta.is_dir() {
        let mut name_z = abs.file_name().unwrap_or(abs.as_os_str()).as_encoded_bytes().to_vec();
        name_z.push(0);
        walker.test(None, &name_z, Some(StatFields::from_metadata(&meta)))?;
        return Ok(());
    }
    match open_dir(None, c"", walker.path.as_slice()) {
        Ok(fd) => walker.walk(fd),
        Err(Errno::NOENT) => Ok(()),
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
    fn sort_key_orders_like_the_bytes() {
        let mut names: Vec<&[u8]> =
            vec![b"a", b"ab", b"abcdefgh", b"abcdefghi", b"abcdefgh0", b"b", b"A", b"", b"\xff", b"abcdefg", b"abd"];
        names.sort();
        for pair in names.windows(2) {
            let (a, b) = (sort_key(pair[0]), sort_key(pair[1]));
            assert!(a <= b, "{:?} {:?}", pair[0], pair[1]);
            if a == b {
                assert_eq!(pair[0][..pair[0].len().min(8)], pair[1][..pair[1].len().min(8)]);
            }
        }
    }

    /// Every path under `dir` in the walk's order (pre-order, names sorted bytewise, symlinks
    /// not followed), the slow and obvious way.
    fn reference_walk(dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let path = dir.join(name);
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                reference_walk(&path, out);
            } else {
                out.push(path.to_str().unwrap().to_string());
            }
        }
    }

    async fn collect(root: &Path, pattern: &str) -> Vec<serde_json::Value> {
        let mut stream = search(root.to_str().unwrap(), pattern);
        let mut text = b"[".to_vec();
        while let Some(chunk) = stream.recv().await {
            text.extend_from_slice(chunk.unwrap().as_ref());
        }
        text.push(b']');
        serde_json::from_slice::<serde_json::Value>(&text).unwrap().as_array().unwrap().clone()
    }

    /// Batches are cut by size and by directories and run on several threads: the result is
    /// still every match exactly once, in walk order, each with its own lstat fields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_keep_walk_order_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Files and directories interleaved by name; runs of hits longer than a batch; many
        // directories with one hit each (more than a batch may refer to); deep nesting.
        for d in 0..3 {
            std::fs::create_dir_all(root.join(format!("big{d}"))).unwrap();
            for i in 0..(BATCH + 40) {
                std::fs::write(root.join(format!("big{d}/f{i:04}")), i.to_string()).unwrap();
            }
            std::fs::create_dir_all(root.join(format!("big{d}/f0100-sub/inner"))).unwrap();
            std::fs::write(root.join(format!("big{d}/f0100-sub/inner/x")), "x").unwrap();
        }
        for d in 0..(BATCH_DIRS * 3 + 5) {
            std::fs::create_dir_all(root.join(format!("one/d{d:03}"))).unwrap();
            std::fs::write(root.join(format!("one/d{d:03}/only")), "").unwrap();
        }
        let mut deep = root.join("deep");
        for level in 0..(MAX_OPEN_DIRS + 5) {
            deep = deep.join(format!("l{level}"));
            std::fs::create_dir_all(&deep).unwrap();
            std::fs::write(deep.join("leaf"), level.to_string()).unwrap();
        }
        std::os::unix::fs::symlink(root.join("big0"), root.join("link")).unwrap();

        let mut want = Vec::new();
        reference_walk(root, &mut want);
        let got = collect(root, "**").await;
        let paths: Vec<&str> = got.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert_eq!(paths, want);
        for entry in &got {
            let path = entry["path"].as_str().unwrap();
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert_eq!(entry["size"], meta.len(), "{path}");
        }
        // A pattern that keeps one hit in ten, across the same batches.
        let got = collect(root, "*[05]").await;
        let want: Vec<&String> = want.iter().filter(|p| p.ends_with('0') || p.ends_with('5')).collect();
        let paths: Vec<&str> = got.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert_eq!(paths, want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_ends_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "").unwrap();
        let mut stream = search(dir.path().to_str().unwrap(), "[");
        assert!(matches!(stream.recv().await, Some(Err(FsError::Failed(_)))));
        assert!(stream.recv().await.is_none());
    }

    #[test]
    fn invalid_pattern_is_an_error() {
        assert!(NameMatcher::new("[").is_err());
    }
}
