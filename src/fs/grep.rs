//! `GET /files/grep` (EXTENSIONS X32): content search built on ripgrep's library crates
//! (`ignore` walks, `grep-regex` matches, `grep-searcher` reads line by line); no `rg` binary.
//! The result is NDJSON text: one `match` object per matching line, then one `end` object.
//!
//! - **Walk.** `ignore`'s walker with ripgrep's defaults: hidden entries skipped unless asked,
//!   `.gitignore`, `.ignore` and `.git/info/exclude` respected (also in parent directories, and
//!   also outside a git repository: `rg --no-require-git`), never the user's global git excludes
//!   (execd's own `$HOME` says nothing about the sandbox's tree), symlinks never followed (a
//!   symlinked root is). `glob`/`exclude` are ripgrep's `-g GLOB`/`-g !GLOB` overrides. Only
//!   regular files are read, opened with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat`, so a
//!   FIFO or device swapped in during the walk is never read.
//! - **Files.** Read with `read(2)` into the searcher's rolling buffer, never memory-mapped: a
//!   file truncated by a sandbox process while mapped would kill execd with SIGBUS. A file with
//!   a NUL byte is binary: the search of it stops there (ripgrep's rule for files it walks), so a
//!   binary file yields nothing, or only the matches before its first NUL beyond the first
//!   buffer. A line longer than [`HEAP_LIMIT`] ends the search of its file (counted in `errors`).
//! - **Results.** `path` is absolute (as `/files/search`), `line_number` 1-based, `column` the
//!   1-based byte offset of the first match in the line, `text` the line without its `\n` (or
//!   `\r\n`), invalid UTF-8 replaced by U+FFFD. A line longer than [`LINE_CAP`] bytes is cut at a
//!   character boundary at or below it and the match carries `"truncated_line": true` (context
//!   lines are cut the same way, without a flag). `before`/`after` hold the up to `context`
//!   lines around the match, whether or not they match themselves. A file's matches come
//!   together and in line order; files come in no fixed order (several threads walk at once).
//! - **Bounds.** Several walker threads (at most 4) fill per-thread buffers that go out through
//!   a bounded channel (about [`CHANNEL`] × [`FLUSH_AT`] bytes in flight), so memory stays flat
//!   whatever the tree, and a buffer holding a match goes out at most [`FLUSH_AFTER`] after it
//!   was found, long before the walk ends. `max_matches` stops every thread; `truncated` says a
//!   further match existed. A reader that goes away stops the walk at the next entry or the
//!   next read of the file being searched.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use grep_matcher::Matcher;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkMatch};
use ignore::overrides::{Override, OverrideBuilder};
use ignore::{DirEntry, WalkBuilder, WalkState};
use serde::Serialize;
use tokio::sync::mpsc;

use super::transfer::TransferPermit;
use super::{identity, path, FsError};
use crate::event::{escape_json_str, write_u64};

/// `max_matches` when the request does not say.
pub const DEFAULT_MAX_MATCHES: u64 = 1000;
/// The largest `context` accepted (a match then carries at most 2 × 100 lines of 4 KiB).
pub const MAX_CONTEXT: usize = 100;
/// Longest line text sent, in bytes (see the module docs).
pub const LINE_CAP: usize = 4096;
/// Longest line the searcher holds in memory; a longer one ends the search of its file.
pub const HEAP_LIMIT: usize = 16 * 1024 * 1024;
/// A thread's output buffer goes out once it holds this much ...
const FLUSH_AT: usize = 32 * 1024;
/// ... or once it has held a match for this long (checked at every entry and line).
const FLUSH_AFTER: Duration = Duration::from_millis(10);
/// Buffers in the channel between the walker threads and the response.
const CHANNEL: usize = 8;
/// Walker threads at most (fewer on smaller machines).
const MAX_THREADS: usize = 4;

/// What to search for and where (the query of `GET /files/grep`).
#[derive(Debug, Clone)]
pub struct GrepOptions {
    pub pattern: String,
    /// A regular expression (Rust `regex` syntax, as ripgrep); else a literal string.
    pub regex: bool,
    pub ignore_case: bool,
    /// ripgrep `-g` globs: only matching files are searched (`!GLOB` excludes).
    pub globs: Vec<String>,
    /// ripgrep `-g !GLOB`: matching files and directories are skipped.
    pub excludes: Vec<String>,
    /// Search hidden files and directories too.
    pub hidden: bool,
    /// Respect `.gitignore`, `.ignore` and `.git/info/exclude`.
    pub gitignore: bool,
    /// Lines of context before and after each match (at most [`MAX_CONTEXT`]).
    pub context: usize,
    /// Stop after this many matches (at least 1).
    pub max_matches: u64,
    /// Skip files larger than this many bytes.
    pub max_filesize: Option<u64>,
}

impl GrepOptions {
    /// Options for `pattern` with every default.
    pub fn new(pattern: impl Into<String>) -> GrepOptions {
        GrepOptions {
            pattern: pattern.into(),
            regex: false,
            ignore_case: false,
            globs: Vec::new(),
            excludes: Vec::new(),
            hidden: false,
            gitignore: true,
            context: 0,
            max_matches: DEFAULT_MAX_MATCHES,
            max_filesize: None,
        }
    }
}

/// A checked search, ready to run: the root exists, the pattern and globs compile.
pub struct Grep {
    root: PathBuf,
    matcher: RegexMatcher,
    overrides: Override,
    opts: GrepOptions,
}

/// Checks a search (blocking: it stats the root). A missing root is [`FsError::NotFound`]
/// (404); a bad regex or glob, a root that is neither file nor directory, or options out of
/// range are [`FsError::Invalid`] (400) with the parser's message.
pub fn prepare(root: &str, opts: GrepOptions) -> Result<Grep, FsError> {
    if opts.context > MAX_CONTEXT {
        return Err(FsError::Invalid(format!("context {} is above the limit {MAX_CONTEXT}", opts.context)));
    }
    if opts.max_matches == 0 {
        return Err(FsError::Invalid("max_matches must be at least 1".into()));
    }
    let root = path::resolve_checked(root)?;
    let meta = std::fs::metadata(&root).map_err(|e| FsError::io("stat", &root, e))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(FsError::Invalid(format!("not a file or directory: {}", root.display())));
    }
    let mut builder = RegexMatcherBuilder::new();
    builder.case_insensitive(opts.ignore_case).line_terminator(Some(b'\n')).fixed_strings(!opts.regex);
    let matcher = builder.build(&opts.pattern).map_err(|e| {
        let what = if opts.regex { "regex" } else { "pattern" };
        FsError::Invalid(format!("invalid {what} {:?}: {e}", opts.pattern))
    })?;
    let mut ob = OverrideBuilder::new(&root);
    let bad_glob = |g: &str, e: ignore::Error| FsError::Invalid(format!("invalid glob {g:?}: {e}"));
    for g in &opts.globs {
        ob.add(g).map_err(|e| bad_glob(g, e))?;
    }
    for g in &opts.excludes {
        let g = if g.starts_with('!') { g.clone() } else { format!("!{g}") };
        ob.add(&g).map_err(|e| bad_glob(&g, e))?;
    }
    let overrides = ob.build().map_err(|e| FsError::Invalid(format!("invalid glob: {e}")))?;
    Ok(Grep { root, matcher, overrides, opts })
}

/// The search result as NDJSON chunks, the last one ending with the `end` line. Dropping it
/// stops the search.
pub struct GrepStream {
    rx: mpsc::Receiver<Vec<u8>>,
}

impl GrepStream {
    /// The next chunk of NDJSON text (whole lines); `None` at the end.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }
}

/// Starts the search on the blocking pool; `permit` (the transfer it counts as) is held until
/// the walk has stopped, so the transfer cap bounds running walks, not just open responses.
/// Work for another identity walks on one thread (the identity's credentials are per thread and
/// the walker's own threads would not carry them); otherwise several threads walk at once.
pub fn start(grep: Grep, permit: TransferPermit) -> GrepStream {
    let (tx, rx) = mpsc::channel(CHANNEL);
    identity::spawn_blocking(move || {
        let _permit = permit;
        let started = Instant::now();
        let threads = if identity::current().is_some() {
            1
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get()).min(MAX_THREADS)
        };
        let shared = Shared::new(tx, grep.matcher, grep.opts.context, grep.opts.max_matches);
        let mut wb = WalkBuilder::new(&grep.root);
        wb.hidden(!grep.opts.hidden)
            .git_ignore(grep.opts.gitignore)
            .git_exclude(grep.opts.gitignore)
            .ignore(grep.opts.gitignore)
            .parents(grep.opts.gitignore)
            .git_global(false)
            .require_git(false)
            .follow_links(false)
            .max_filesize(grep.opts.max_filesize)
            .overrides(grep.overrides)
            .threads(threads);
        if threads == 1 {
            let mut worker = Worker::new(&shared);
            for entry in wb.build() {
                if worker.visit(entry) == WalkState::Quit {
                    break;
                }
            }
        } else {
            wb.build_parallel().run(|| {
                let mut worker = Worker::new(&shared);
                Box::new(move |entry| worker.visit(entry))
            });
        }
        // Every worker is gone (and flushed its buffer): the totals are final.
        let matches = shared.matches.load(Ordering::Relaxed).min(shared.max);
        let end = EndLine {
            kind: "end",
            matches,
            files_searched: shared.files.load(Ordering::Relaxed),
            errors: shared.errors.load(Ordering::Relaxed),
            truncated: shared.truncated.load(Ordering::Relaxed),
        };
        let cancelled = shared.gone.load(Ordering::Relaxed);
        tracing::info!(
            matches,
            files = end.files_searched,
            errors = end.errors,
            truncated = end.truncated,
            cancelled,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "grep finished"
        );
        if !cancelled {
            let mut line = serde_json::to_vec(&end).unwrap_or_default();
            line.push(b'\n');
            let _ = shared.tx.blocking_send(line);
        }
    });
    GrepStream { rx }
}

/// State every walker thread shares.
struct Shared {
    tx: mpsc::Sender<Vec<u8>>,
    matcher: RegexMatcher,
    context: usize,
    max: u64,
    /// Matches counted so far (may pass `max` by the ones refused).
    matches: AtomicU64,
    files: AtomicU64,
    errors: AtomicU64,
    /// A match beyond `max` was found.
    truncated: AtomicBool,
    /// Every thread stops at its next step (max reached, or the reader is gone).
    stop: AtomicBool,
    /// The reader went away.
    gone: AtomicBool,
}

impl Shared {
    fn new(tx: mpsc::Sender<Vec<u8>>, matcher: RegexMatcher, context: usize, max: u64) -> Shared {
        Shared {
            tx,
            matcher,
            context,
            max,
            matches: AtomicU64::new(0),
            files: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            truncated: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        }
    }

    /// Whether the search must stop now; notices a reader that went away.
    fn stopped(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        if self.tx.is_closed() {
            self.gone.store(true, Ordering::Relaxed);
            self.stop.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Sends a buffer, waiting while the channel is full. False: the reader is gone.
    fn send(&self, buf: Vec<u8>) -> bool {
        if self.tx.blocking_send(buf).is_err() {
            self.gone.store(true, Ordering::Relaxed);
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[derive(Serialize)]
struct MatchLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    path: &'a str,
    line_number: u64,
    column: u64,
    text: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated_line: bool,
    before: &'a [String],
    after: &'a [String],
}

#[derive(Serialize)]
struct EndLine {
    #[serde(rename = "type")]
    kind: &'static str,
    matches: u64,
    files_searched: u64,
    errors: u64,
    truncated: bool,
}

/// One walker thread: its searcher and its output buffer.
struct Worker<'s> {
    shared: &'s Shared,
    searcher: Searcher,
    out: Out<'s>,
}

/// A thread's NDJSON buffer and when it last went out.
struct Out<'s> {
    shared: &'s Shared,
    buf: Vec<u8>,
    /// When the oldest unsent match was written (None: nothing waiting).
    since: Option<Instant>,
}

impl Out<'_> {
    /// Sends the buffer when it is full or has waited long enough. False: the reader is gone.
    fn maybe_flush(&mut self) -> bool {
        match self.since {
            Some(t) if self.buf.len() >= FLUSH_AT || t.elapsed() >= FLUSH_AFTER => self.flush(),
            _ => true,
        }
    }

    fn flush(&mut self) -> bool {
        self.since = None;
        if self.buf.is_empty() {
            return true;
        }
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_AT + LINE_CAP));
        self.shared.send(buf)
    }

    /// A match without context, byte for byte as [`Out::write`] writes it (unit test), after the
    /// file's [`match_head`]: the path is escaped once per file, not once per match (a search
    /// with many matches spent its time serialising the same path again).
    fn write_alone(&mut self, head: &[u8], line_number: u64, column: u64, text: &str, truncated: bool) {
        let buf = &mut self.buf;
        buf.extend_from_slice(head);
        write_u64(buf, line_number);
        buf.extend_from_slice(b",\"column\":");
        write_u64(buf, column);
        buf.extend_from_slice(b",\"text\":\"");
        escape_json_str(buf, text);
        buf.extend_from_slice(if truncated {
            b"\",\"truncated_line\":true,\"before\":[],\"after\":[]}\n".as_slice()
        } else {
            b"\",\"before\":[],\"after\":[]}\n".as_slice()
        });
        self.since.get_or_insert_with(Instant::now);
    }

    fn write(&mut self, m: &MatchLine<'_>) {
        // Strings and numbers only: serialisation cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, m);
        self.buf.push(b'\n');
        self.since.get_or_insert_with(Instant::now);
    }
}

impl Drop for Out<'_> {
    /// A thread's last matches go out when it ends (before the `end` line is written).
    fn drop(&mut self) {
        if !self.shared.gone.load(Ordering::Relaxed) {
            self.flush();
        }
    }
}

impl<'s> Worker<'s> {
    fn new(shared: &'s Shared) -> Worker<'s> {
        let context = shared.context;
        let searcher = SearcherBuilder::new()
            .line_number(true)
            .before_context(context)
            .after_context(context)
            .binary_detection(BinaryDetection::quit(b'\x00'))
            .heap_limit(Some(HEAP_LIMIT))
            .build();
        Worker { shared, searcher, out: Out { shared, buf: Vec::with_capacity(FLUSH_AT + LINE_CAP), since: None } }
    }

    fn visit(&mut self, entry: Result<DirEntry, ignore::Error>) -> WalkState {
        if self.shared.stopped() || !self.out.maybe_flush() {
            return WalkState::Quit;
        }
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "grep: skipping an entry");
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                return WalkState::Continue;
            }
        };
        if entry.file_type().is_some_and(|t| t.is_file()) {
            self.search(entry.path());
        }
        if self.shared.stopped() || !self.out.maybe_flush() {
            return WalkState::Quit;
        }
        WalkState::Continue
    }

    /// Searches one regular file; failures count in `errors`.
    fn search(&mut self, p: &Path) {
        let Some(file) = open_regular_nofollow(p) else {
            return;
        };
        let Ok(file) = file else {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.shared.files.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared;
        let path = p.to_string_lossy();
        let mut sink = FileSink {
            shared,
            out: &mut self.out,
            path: &path,
            head: Vec::new(),
            ring: VecDeque::new(),
            pending: VecDeque::new(),
            last_line: 0,
        };
        let reader = Stoppable { file, shared };
        let res = self.searcher.search_reader(&shared.matcher, reader, &mut sink);
        sink.emit_pending();
        if let Err(e) = res {
            if !self.shared.stop.load(Ordering::Relaxed) {
                tracing::debug!(path = %path, error = %e, "grep: search failed");
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Opens a walked file without following a symlink and without blocking on a FIFO, and checks
/// on the open descriptor that it is a regular file. `None`: not a regular file (skipped).
fn open_regular_nofollow(p: &Path) -> Option<io::Result<File>> {
    use rustix::fs::{FileType, Mode, OFlags, CWD};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(CWD, p, flags, Mode::empty()) {
        Ok(fd) => fd,
        // A symlink swapped in since the walk saw a file: not followed, not an error.
        Err(rustix::io::Errno::LOOP) => return None,
        Err(e) => return Some(Err(e.into())),
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Some(Ok(File::from(fd))),
        Ok(_) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// A file that stops reading once the search must stop, so a long file is not read to its end
/// for nobody.
struct Stoppable<'s> {
    file: File,
    shared: &'s Shared,
}

impl Read for Stoppable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.shared.stopped() {
            return Err(io::Error::other("search stopped"));
        }
        self.file.read(buf)
    }
}

/// A match waiting for its `after` lines.
struct Pending {
    line_number: u64,
    column: u64,
    text: String,
    truncated: bool,
    before: Vec<String>,
    after: Vec<String>,
}

/// Receives one file's matching and context lines and turns them into match objects.
struct FileSink<'a, 's> {
    shared: &'s Shared,
    out: &'a mut Out<'s>,
    path: &'a str,
    /// [`match_head`] of `path`, made at the first match without context.
    head: Vec<u8>,
    /// The last `context` lines seen, for the next match's `before`.
    ring: VecDeque<String>,
    /// Matches whose `after` is not complete yet, in line order.
    pending: VecDeque<Pending>,
    last_line: u64,
}

impl FileSink<'_, '_> {
    /// Takes one line (match or context). False: stop searching.
    fn line(&mut self, line_number: u64, bytes: &[u8], is_match: bool) -> bool {
        let n = self.shared.context;
        if n == 0 {
            // No windows to keep: write the match straight away, without copies.
            return !is_match || self.matched_alone(line_number, strip_terminator(bytes));
        }
        if line_number != self.last_line + 1 {
            // Not adjacent to what came before: those windows are complete.
            self.emit_pending();
            self.ring.clear();
        }
        self.last_line = line_number;
        let line = strip_terminator(bytes);
        let (text, truncated) = cap_line(line);
        for p in self.pending.iter_mut() {
            p.after.push(text.clone().into_owned());
        }
        while self.pending.front().is_some_and(|p| p.after.len() >= n) {
            let p = self.pending.pop_front().expect("front exists");
            self.write(&p);
        }
        if is_match {
            if !self.count() {
                return false;
            }
            self.pending.push_back(Pending {
                line_number,
                column: self.column(line),
                text: text.clone().into_owned(),
                truncated,
                before: self.ring.iter().cloned().collect(),
                after: Vec::new(),
            });
        }
        if self.ring.len() == n {
            self.ring.pop_front();
        }
        self.ring.push_back(text.into_owned());
        !self.shared.stopped() && self.out.maybe_flush()
    }

    /// A match when there is no context. False: stop searching.
    fn matched_alone(&mut self, line_number: u64, line: &[u8]) -> bool {
        if !self.count() {
            return false;
        }
        let (text, truncated) = cap_line(line);
        let column = self.column(line);
        if self.head.is_empty() {
            self.head = match_head(self.path);
        }
        self.out.write_alone(&self.head, line_number, column, &text, truncated);
        !self.shared.stopped() && self.out.maybe_flush()
    }

    /// Counts a match against `max_matches`. False: it is one too many (the search stops).
    fn count(&self) -> bool {
        if self.shared.matches.fetch_add(1, Ordering::Relaxed) >= self.shared.max {
            self.shared.truncated.store(true, Ordering::Relaxed);
            self.shared.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The 1-based byte column of the first match in `line`.
    fn column(&self, line: &[u8]) -> u64 {
        match self.shared.matcher.find(line) {
            Ok(Some(m)) => m.start() as u64 + 1,
            _ => 1,
        }
    }

    fn write(&mut self, p: &Pending) {
        self.out.write(&MatchLine {
            kind: "match",
            path: self.path,
            line_number: p.line_number,
            column: p.column,
            text: &p.text,
            truncated_line: p.truncated,
            before: &p.before,
            after: &p.after,
        });
    }

    /// Writes the matches still waiting (their `after` ends here).
    fn emit_pending(&mut self) {
        while let Some(p) = self.pending.pop_front() {
            self.write(&p);
        }
    }

    /// Feeds every line of a block (one line, unless the searcher hands over several).
    fn lines(&mut self, first: Option<u64>, bytes: &[u8], is_match: bool) -> bool {
        let first = first.unwrap_or(self.last_line + 1);
        for (number, line) in (first..).zip(bytes.split_inclusive(|&b| b == b'\n')) {
            if !self.line(number, line, is_match) {
                return false;
            }
        }
        true
    }
}

impl Sink for FileSink<'_, '_> {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, m: &SinkMatch<'_>) -> Result<bool, io::Error> {
        Ok(self.lines(m.line_number(), m.bytes(), true))
    }

    fn context(&mut self, _: &Searcher, c: &SinkContext<'_>) -> Result<bool, io::Error> {
        Ok(self.lines(c.line_number(), c.bytes(), false))
    }

    fn binary_data(&mut self, _: &Searcher, _offset: u64) -> Result<bool, io::Error> {
        Ok(false)
    }
}

/// The line without its `\n` or `\r\n`.
fn strip_terminator(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
        None => line,
    }
}

/// The start of a match line of `path`, up to its line number: `{"type":"match","path":"…",
/// "line_number":` as serde_json writes [`MatchLine`].
fn match_head(path: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(path.len() + 48);
    head.extend_from_slice(b"{\"type\":\"match\",\"path\":\"");
    escape_json_str(&mut head, path);
    head.extend_from_slice(b"\",\"line_number\":");
    head
}

/// The line as text, cut to at most [`LINE_CAP`] bytes at a character boundary; true if cut.
fn cap_line(line: &[u8]) -> (Cow<'_, str>, bool) {
    if line.len() <= LINE_CAP {
        return (String::from_utf8_lossy(line), false);
    }
    let mut cut = LINE_CAP;
    // Back off over UTF-8 continuation bytes (at most 3), so no character is split.
    while cut > LINE_CAP - 4 && line[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    (String::from_utf8_lossy(&line[..cut]), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-file head and `write_alone` give what serde_json gives for the whole line.
    #[test]
    fn x32_a_match_without_context_is_written_as_serde_writes_it() {
        let (tx, _rx) = mpsc::channel(1);
        let shared = Shared::new(tx, RegexMatcher::new("x").unwrap(), 0, 0);
        let cases: &[(&str, u64, u64, &str, bool)] = &[
            ("/tmp/a.rs", 1, 1, "fn main() {}", false),
            ("/tmp/q\"uo\\te/\u{7}bell\u{1f}", 42, 7, "tab\there \"quoted\" \\ back", true),
            ("/tmp/ünï/日本.txt", u64::MAX, 0, "line \u{0} nul \u{7f} del \u{2028} sep", false),
            ("", 0, 0, "", true),
        ];
        for &(path, line_number, column, text, truncated) in cases {
            let mut fast = Out { shared: &shared, buf: Vec::new(), since: None };
            fast.write_alone(&match_head(path), line_number, column, text, truncated);
            let mut slow = Out { shared: &shared, buf: Vec::new(), since: None };
            slow.write(&MatchLine {
                kind: "match",
                path,
                line_number,
                column,
                text,
                truncated_line: truncated,
                before: &[],
                after: &[],
            });
            let (fast, slow) = (std::mem::take(&mut fast.buf), std::mem::take(&mut slow.buf));
            assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }
    }

    #[test]
    fn x32_cap_line_keeps_characters_whole() {
        assert_eq!(cap_line(b"abc"), (Cow::Borrowed("abc"), false));
        let ascii = vec![b'a'; LINE_CAP + 10];
        let (t, cut) = cap_line(&ascii);
        assert!(cut);
        assert_eq!(t.len(), LINE_CAP);
        // A 3-byte character straddling the cap is dropped whole.
        let mut s = "a".repeat(LINE_CAP - 1).into_bytes();
        s.extend_from_slice("€tail".as_bytes());
        let (t, cut) = cap_line(&s);
        assert!(cut);
        assert_eq!(t, "a".repeat(LINE_CAP - 1));
        assert!(!t.contains('\u{FFFD}'));
    }

    #[test]
    fn x32_strip_terminator() {
        assert_eq!(strip_terminator(b"a\r\n"), b"a");
        assert_eq!(strip_terminator(b"a\n"), b"a");
        assert_eq!(strip_terminator(b"a"), b"a");
        assert_eq!(strip_terminator(b"a\r"), b"a\r");
    }
}
