//! `GET /files/search` (§7.6, C126–C128): walk a tree (pre-order, names sorted, symlinks never
//! followed, hidden entries included) and report every non-directory entry whose **base name**
//! matches a glob. Runs on a blocking thread and streams entries, so memory stays bounded and the
//! walk stops at the next entry once the reader is gone.
//!
//! Glob dialect (upstream uses a doublestar fork): `*`, `?`, `**`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`,
//! `{a,b}`, `\` escapes, and a leading `!(pat)rest`, which matches when `pat rest` does not.
//! Because only the base name is matched, `**/x` matches `x` and `dir/*.go` matches nothing.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::{AtFlags, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;
use tokio::sync::mpsc;
use walkdir::WalkDir;

use super::bufpool::{BufPool, PooledChunk};
use super::info::{self, Accounts, Name};
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

/// Hits per batch: one `lstat` + JSON job on the blocking pool (about 56 KiB of JSON).
const BATCH: usize = 256;
/// Directories kept open along the current branch (walkdir's `max_open`); deeper ones are read
/// in full and closed.
const MAX_OPEN_DIRS: usize = 48;
/// Entries between checks that the reader is still there when nothing matches.
const CLOSED_CHECK: u32 = 4096;

/// Buffers a search's pool keeps: more than can be in flight at once.
const POOL_MAX: usize = 16;
/// JSON bytes a batch's buffer is made for (a FileInfo is about 220 bytes).
const BATCH_JSON: usize = BATCH * 240;

/// Part of the search result (JSON text); its buffer goes back to the search's pool when it is
/// dropped (a fresh 60 KiB buffer per batch costs musl's allocator an mmap, 15 page faults and
/// a munmap: about 10 % of a 100 000-file search).
pub type SearchChunk = PooledChunk;

/// A batch's result: comma-prefixed FileInfo objects, then the error that cut it short.
struct BatchOut {
    json: Vec<u8>,
    error: Option<FsError>,
}

/// One step of the result, in walk order.
enum Piece {
    /// A batch done by the walk itself (a search with a single batch).
    Ready(BatchOut),
    /// A batch running on the blocking pool.
    Pending(tokio::task::JoinHandle<BatchOut>),
    /// The walk failed after the batches before it.
    Failed(FsError),
}

/// The search result as JSON text: chunks of comma-separated FileInfo objects (the caller adds
/// the brackets), in walk order. An `Err` item ends the stream. Dropping it stops the walk.
pub struct SearchStream {
    rx: mpsc::Receiver<Piece>,
    pool: BufPool,
    first: bool,
    /// The error that ends the stream once the JSON before it is out.
    error: Option<FsError>,
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
                // Nothing more comes, whatever the walk had queued.
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
                Piece::Failed(e) => BatchOut { json: Vec::new(), error: Some(e) },
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
/// One blocking thread walks (walkdir: names sorted bytewise, as Go's `filepath.Walk`; symlinks
/// not followed) and tests each non-directory's base name; batches of hits go to the blocking
/// pool, which lstats them and writes their JSON, so the walk and the stat work run side by
/// side (BENCHMARKS.md, "search"). The stream yields the batches in walk order; at most
/// `2 × cores` are in flight, so memory stays bounded whatever the tree.
pub fn search(root: &str, pattern: &str) -> SearchStream {
    let root_given = root.to_string();
    let pattern = pattern.to_string();
    let in_flight = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4) * 2;
    let (tx, rx) = mpsc::channel(in_flight);
    let runtime = tokio::runtime::Handle::current();
    let pool = BufPool::new(POOL_MAX, BATCH_JSON * 4);
    let walk_pool = pool.clone();
    super::identity::spawn_blocking_on(&runtime.clone(), move || {
        let accounts = Arc::new(Accounts::load());
        let mut walk = Walk { tx, runtime, accounts, pool: walk_pool, batch: Batch::default(), dispatched: false };
        let res = run(&root_given, &pattern, &mut walk);
        // Entries found before an error are delivered first, as upstream would have listed them.
        if walk.finish() {
            if let Err(e) = res {
                let _ = walk.tx.blocking_send(Piece::Failed(e));
            }
        }
    });
    SearchStream { rx, pool, first: true, error: None, ended: false }
}

/// The walk's side: hits waiting for their batch to fill, and where batches go.
struct Walk {
    tx: mpsc::Sender<Piece>,
    runtime: tokio::runtime::Handle,
    accounts: Arc<Accounts>,
    pool: BufPool,
    batch: Batch,
    /// Whether a batch went to the pool (else a search with a single batch does it inline).
    dispatched: bool,
}

impl Walk {
    /// Adds a hit; false once the reader is gone.
    fn hit(&mut self, path: &Path) -> bool {
        self.batch.paths.extend_from_slice(path.as_os_str().as_bytes());
        self.batch.ends.push(self.batch.paths.len());
        self.batch.ends.len() < BATCH || self.dispatch()
    }

    /// Hands the batch to the blocking pool; false once the reader is gone.
    fn dispatch(&mut self) -> bool {
        let batch = std::mem::take(&mut self.batch);
        let (accounts, pool) = (Arc::clone(&self.accounts), self.pool.clone());
        let task = super::identity::spawn_blocking_on(&self.runtime, move || to_json(&batch, &accounts, &pool));
        self.dispatched = true;
        self.tx.blocking_send(Piece::Pending(task)).is_ok()
    }

    /// Sends what is left of the batch (inline when it is the only one); false once the reader
    /// is gone.
    fn finish(&mut self) -> bool {
        if self.batch.ends.is_empty() {
            return !self.tx.is_closed();
        }
        if self.dispatched {
            return self.dispatch();
        }
        let out = to_json(&self.batch, &self.accounts, &self.pool);
        self.tx.blocking_send(Piece::Ready(out)).is_ok()
    }
}

/// The paths of a batch's hits, back to back in one buffer: the walk allocates (and frees)
/// nothing per hit for the workers, so the threads do not contend for musl's allocator lock.
#[derive(Default)]
struct Batch {
    paths: Vec<u8>,
    /// Where each path ends in `paths`.
    ends: Vec<usize>,
}

/// `lstat` of every hit and its FileInfo JSON, each object preceded by a comma. Entries gone
/// since the walk saw them are skipped; another error ends the batch.
fn to_json(batch: &Batch, accounts: &Accounts, pool: &BufPool) -> BatchOut {
    let mut json = pool.take(BATCH_JSON);
    let mut parent = Parent::default();
    // The names of the last owner and group (a tree's files nearly always share them).
    let mut names: Option<((u32, u32), Name, Name)> = None;
    let mut start = 0;
    for &end in &batch.ends {
        let path = Path::new(OsStr::from_bytes(&batch.paths[start..end]));
        start = end;
        let stat = match parent.lstat(path) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => continue,
            Err(e) => return BatchOut { json, error: Some(FsError::io_no_404("lstat", path, e.into())) },
        };
        json.push(b',');
        let ids = (stat.st_uid, stat.st_gid);
        let (_, owner, group) = match names {
            Some(ref n) if n.0 == ids => n,
            _ => names.insert((ids, accounts.user_name(ids.0), accounts.group_name(ids.1))),
        };
        let text = path.to_string_lossy();
        let info = info::from_stat(&text, &stat, owner.as_str(), group.as_str());
        serde_json::to_writer(ShortCopy(&mut json), &info).expect("a FileInfo always serialises");
    }
    BatchOut { json, error: None }
}

/// What serde_json writes into, copying short pieces word by word. The static build's libc
/// (musl) has a `memcpy` that costs about 100 cycles a call however short, and serde_json writes
/// a FileInfo as some 35 pieces: `memcpy` was the largest user-space item of a 100 000-file
/// search's profile (11 %) before this (BENCHMARKS.md, "search").
struct ShortCopy<'a>(&'a mut Vec<u8>);

impl std::io::Write for ShortCopy<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let (out, n) = (&mut *self.0, bytes.len());
        if n > 64 {
            out.extend_from_slice(bytes);
        } else if n < 8 {
            for &b in bytes {
                out.push(b);
            }
        } else {
            let mut words = bytes.chunks_exact(8);
            for word in &mut words {
                out.extend_from_slice(&<[u8; 8]>::try_from(word).expect("8 bytes"));
            }
            let rest = words.remainder().len();
            if rest > 0 {
                // The last 8 bytes, over the `8 - rest` already written before them.
                out.truncate(out.len() - (8 - rest));
                out.extend_from_slice(&<[u8; 8]>::try_from(&bytes[n - 8..]).expect("8 bytes"));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The directory of the last hit, open, so a hit's lstat resolves one name rather than its
/// whole path (hits come directory by directory).
#[derive(Default)]
struct Parent {
    dir: Option<(PathBuf, OwnedFd)>,
}

impl Parent {
    /// lstat of `path`: relative to its directory when that opens, else by full path.
    fn lstat(&mut self, path: &Path) -> rustix::io::Result<Stat> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW);
        };
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            self.dir = rustix::fs::openat(CWD, parent, flags, Mode::empty()).ok().map(|fd| (parent.to_path_buf(), fd));
        }
        match &self.dir {
            Some((_, fd)) => rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW),
            None => rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW),
        }
    }
}

fn walk_error(at: &Path, e: std::io::Error) -> FsError {
    FsError::io_no_404("error searching files: walking", at, e)
}

fn run(root_given: &str, pattern: &str, out: &mut Walk) -> Result<(), FsError> {
    let matcher = NameMatcher::new(pattern);
    let matches = |name: &OsStr| match &matcher {
        Ok(m) => Ok(m.is_match(&name.to_string_lossy())),
        Err(e) => Err(FsError::Failed(e.to_string())),
    };
    let abs = path::resolve_checked(root_given)?;
    std::fs::metadata(&abs).map_err(|e| FsError::io("stat", &abs, e))?;
    // The root itself by lstat: a symlink (even to a directory) or a file is one entry, tested
    // by its base name; only a real directory is walked.
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(walk_error(&abs, e)),
    };
    if !meta.is_dir() {
        if matches(abs.file_name().unwrap_or(abs.as_os_str()))? {
            out.hit(&abs);
        }
        return Ok(());
    }
    // Siblings share their parent's path, so their full paths sort as their names do; walkdir's
    // `sort_by_file_name` takes each name apart from its path per comparison, which cost more
    // than the whole walk of a 1 000-entry directory (BENCHMARKS.md, "search").
    let walk = WalkDir::new(&abs)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.path().as_os_str().as_bytes().cmp(b.path().as_os_str().as_bytes()))
        .max_open(MAX_OPEN_DIRS);
    let mut visited = 0u32;
    for entry in walk {
        visited = visited.wrapping_add(1);
        if visited.is_multiple_of(CLOSED_CHECK) && out.tx.is_closed() {
            return Ok(());
        }
        let entry = match entry {
            Ok(entry) => entry,
            // Removed since its directory was read.
            Err(e) if e.io_error().is_some_and(|e| e.kind() == ErrorKind::NotFound) => continue,
            Err(e) => {
                let at = e.path().unwrap_or(&abs).to_path_buf();
                return Err(walk_error(&at, e.into()));
            }
        };
        if entry.file_type().is_dir() || !matches(entry.file_name())? {
            continue;
        }
        if !out.hit(entry.path()) {
            return Ok(());
        }
    }
    Ok(())
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

    /// Chunks are cut by size, directories nest deeper than stay open: the result is still
    /// every match exactly once, in walk order, each with its own lstat fields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_keep_walk_order_and_fields() {
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
        for d in 0..101 {
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

    #[test]
    fn short_copy_appends_exactly_the_bytes_for_every_length() {
        use std::io::Write;
        let source: Vec<u8> = (0..100u8).map(|b| b.wrapping_mul(7).wrapping_add(1)).collect();
        for prefix in [0usize, 1, 9] {
            for n in 0..=source.len() {
                let mut out = vec![0xEE; prefix];
                ShortCopy(&mut out).write_all(&source[..n]).unwrap();
                let mut want = vec![0xEE; prefix];
                want.extend_from_slice(&source[..n]);
                assert_eq!(out, want, "prefix {prefix}, length {n}");
            }
        }
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
