//! The journal (DECISIONS D11): one append-only record of an execution's output, read by any
//! number of readers from any byte offset while it is written, and after.
//!
//! # Design
//! Two files per execution in the state directory:
//! - `<name>.out`: the raw output bytes (stdout and stderr merged in write order). Byte offsets in
//!   this file are the public offsets: `/command/{id}/logs?cursor=` and the `id:` of `/events`.
//! - `<name>.idx`: one fixed 24-byte record per appended chunk: stream kind (1 stdout, 2 stderr),
//!   the chunk's end offset in `.out` (u64 LE) and the Unix-ms time it was read (i64 LE). So
//!   replays can still tell stdout from stderr and keep the original timestamps, and a reader can
//!   binary-search the chunk that contains any offset.
//!
//! The writer appends bytes first, then the index record, then publishes the new `(len, records)`
//! through a `tokio::sync::watch` channel: readers only read what was published, are woken without
//! polling, and never block the writer (a slow or gone reader just stops reading). When the writer
//! finishes, it stores the terminal event in memory and marks the journal closed; readers end after
//! the last record. Memory is flat in output size: nothing is buffered beyond one chunk per reader.
//! While live, the writer holds two fds; readers open their own, so a finished journal holds none.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::event::{now_ms, EventKind, ExecEvent};
use super::lines::LineSplitter;

const RECORD: u64 = 24;
/// How many bytes of a chunk [`LineEventReader`] splits at once (bounds its event queue).
const LINE_FEED_PIECE: usize = 2048;
/// Largest chunk a reader returns at once.
pub const READ_CHUNK: usize = 64 * 1024;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout = 1,
    Stderr = 2,
}

/// A piece of output as read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub kind: StreamKind,
    /// Offset of `data[0]` in the raw output.
    pub start: u64,
    pub data: Vec<u8>,
    /// When the bytes were read from the pipe (Unix ms).
    pub timestamp: i64,
}

impl Chunk {
    /// Offset just after this chunk.
    pub fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    len: u64,
    records: u64,
    closed: bool,
}

struct Inner {
    out_path: PathBuf,
    idx_path: PathBuf,
    progress: watch::Sender<Progress>,
    terminal: Mutex<Option<ExecEvent>>,
}

/// A cheap, cloneable handle to a journal (live or finished).
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("out", &self.inner.out_path).finish()
    }
}

/// The single writer of a journal. Dropping it without [`JournalWriter::finish`] closes the
/// journal with no terminal event.
pub struct JournalWriter {
    journal: Journal,
    out: File,
    idx: File,
    len: u64,
    records: u64,
}

impl Journal {
    /// Creates `<dir>/<name>.out` and `<dir>/<name>.idx` (truncating) and returns the handle and its
    /// writer.
    pub fn create(dir: &Path, name: &str) -> io::Result<(Journal, JournalWriter)> {
        let out_path = dir.join(format!("{name}.out"));
        let idx_path = dir.join(format!("{name}.idx"));
        // 0600, no symlinks: output may hold secrets (issue #13 finding 2).
        let out = crate::state_dir::create_file(&out_path)?;
        let idx = crate::state_dir::create_file(&idx_path)?;
        let (progress, _) = watch::channel(Progress::default());
        let journal = Journal { inner: Arc::new(Inner { out_path, idx_path, progress, terminal: Mutex::new(None) }) };
        let writer = JournalWriter { journal: journal.clone(), out, idx, len: 0, records: 0 };
        Ok((journal, writer))
    }

    /// Bytes of output so far.
    pub fn len(&self) -> u64 {
        self.inner.progress.borrow().len
    }

    /// Whether no output was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the writer has finished.
    pub fn is_closed(&self) -> bool {
        self.inner.progress.borrow().closed
    }

    /// The terminal event stored by [`JournalWriter::finish`].
    pub fn terminal(&self) -> Option<ExecEvent> {
        self.inner.terminal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Path of the raw output file.
    pub fn out_path(&self) -> &Path {
        &self.inner.out_path
    }

    /// Resolves when the writer has finished.
    pub async fn closed(&self) {
        let mut rx = self.inner.progress.subscribe();
        let _ = rx.wait_for(|p| p.closed).await;
    }

    /// The raw output from `from` to the current end: an open file positioned nowhere (read it with
    /// `read_at`/seek) plus the published end offset. `from` beyond the end gives an empty range.
    pub fn raw_range(&self, from: u64) -> io::Result<(File, u64, u64)> {
        let end = self.len();
        let file = crate::state_dir::open_file(&self.inner.out_path)?;
        Ok((file, from.min(end), end))
    }

    /// A reader of chunks starting at raw offset `from` (mid-chunk offsets give a partial chunk).
    pub fn chunks(&self, from: u64) -> io::Result<ChunkReader> {
        let out = crate::state_dir::open_file(&self.inner.out_path)?;
        let idx = crate::state_dir::open_file(&self.inner.idx_path)?;
        let rx = self.inner.progress.subscribe();
        let records = rx.borrow().records;
        let mut r = ChunkReader { out, idx, rx, pos: from, rec: 0 };
        r.rec = r.first_record_ending_after(from, records)?;
        Ok(r)
    }

    /// Line events (stdout/stderr, line endings kept: see `lines.rs`) from the start, then the terminal
    /// event: what a foreground stream shows.
    pub fn line_events(&self, max_line: usize) -> io::Result<LineEventReader> {
        Ok(LineEventReader {
            journal: self.clone(),
            chunks: self.chunks(0)?,
            out: LineSplitter::new(max_line),
            err: LineSplitter::new(max_line),
            pending: None,
            queue: std::collections::VecDeque::new(),
            done: false,
        })
    }

    /// Deletes both files (open readers keep working on their descriptors).
    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.inner.out_path);
        let _ = std::fs::remove_file(&self.inner.idx_path);
    }
}

impl JournalWriter {
    /// The journal this writer appends to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Appends one chunk of `kind` output and wakes the readers. Empty chunks are ignored.
    pub fn append(&mut self, kind: StreamKind, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.out.write_all(data)?;
        self.len += data.len() as u64;
        let mut rec = [0u8; RECORD as usize];
        rec[0] = kind as u8;
        rec[8..16].copy_from_slice(&self.len.to_le_bytes());
        rec[16..24].copy_from_slice(&now_ms().to_le_bytes());
        self.idx.write_all(&rec)?;
        self.records += 1;
        let (len, records) = (self.len, self.records);
        self.journal.inner.progress.send_modify(|p| {
            p.len = len;
            p.records = records;
        });
        Ok(())
    }

    /// Stores the terminal event and closes the journal; readers end after the last chunk.
    pub fn finish(self, terminal: Option<ExecEvent>) {
        *self.journal.inner.terminal.lock().unwrap_or_else(|e| e.into_inner()) = terminal;
        // Drop closes the files and publishes `closed`.
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.journal.inner.progress.send_modify(|p| p.closed = true);
    }
}

/// Follows a journal from an offset; see [`Journal::chunks`].
pub struct ChunkReader {
    out: File,
    idx: File,
    rx: watch::Receiver<Progress>,
    /// Next raw offset to return.
    pos: u64,
    /// Next index record to look at.
    rec: u64,
}

impl ChunkReader {
    fn record(&self, i: u64) -> io::Result<(StreamKind, u64, i64)> {
        let mut b = [0u8; RECORD as usize];
        self.idx.read_exact_at(&mut b, i * RECORD)?;
        let kind = if b[0] == 2 { StreamKind::Stderr } else { StreamKind::Stdout };
        let end = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
        let ts = i64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
        Ok((kind, end, ts))
    }

    fn first_record_ending_after(&self, offset: u64, records: u64) -> io::Result<u64> {
        let (mut lo, mut hi) = (0u64, records);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.record(mid)?.1 <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The next chunk (at most [`READ_CHUNK`] bytes), waiting for the writer when caught up;
    /// `None` once the journal is closed and everything was read.
    pub async fn next(&mut self) -> io::Result<Option<Chunk>> {
        loop {
            let p = *self.rx.borrow_and_update();
            if self.rec < p.records {
                let (kind, end, timestamp) = self.record(self.rec)?;
                if self.pos >= end {
                    self.rec += 1;
                    continue;
                }
                let n = (end - self.pos).min(READ_CHUNK as u64) as usize;
                let mut data = vec![0u8; n];
                self.out.read_exact_at(&mut data, self.pos)?;
                let chunk = Chunk { kind, start: self.pos, data, timestamp };
                self.pos += n as u64;
                if self.pos >= end {
                    self.rec += 1;
                }
                return Ok(Some(chunk));
            }
            if p.closed {
                return Ok(None);
            }
            // Woken by the writer's next publish; an error means every handle is gone (evicted).
            if self.rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    }

    /// The raw offset the next chunk starts at.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

/// Reads a journal as foreground-stream events: see [`Journal::line_events`].
pub struct LineEventReader {
    journal: Journal,
    chunks: ChunkReader,
    out: LineSplitter,
    err: LineSplitter,
    /// The chunk being split and how far; it is fed [`LINE_FEED_PIECE`] bytes at a time so that
    /// few events are ever queued (a 64 KiB chunk of blank lines would otherwise queue 64 Ki).
    pending: Option<(Chunk, usize)>,
    queue: std::collections::VecDeque<ExecEvent>,
    done: bool,
}

impl LineEventReader {
    /// The next event; after the terminal event (or a read failure, reported as a `RUNTIME_ERROR`
    /// event) it returns `None`.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if let Some((chunk, off)) = self.pending.as_mut() {
                let rest = &chunk.data[*off..];
                let n = rest.len().min(LINE_FEED_PIECE);
                let (ts, piece) = (chunk.timestamp, &rest[..n]);
                let q = &mut self.queue;
                match chunk.kind {
                    StreamKind::Stdout => {
                        self.out.push(piece, |l| q.push_back(ExecEvent::new_at(EventKind::Stdout, l, ts)))
                    }
                    StreamKind::Stderr => {
                        self.err.push(piece, |l| q.push_back(ExecEvent::new_at(EventKind::Stderr, l, ts)))
                    }
                }
                *off += n;
                if *off >= chunk.data.len() {
                    self.pending = None;
                }
                continue;
            }
            if self.done {
                return None;
            }
            match self.chunks.next().await {
                Ok(Some(chunk)) => self.pending = Some((chunk, 0)),
                Ok(None) => {
                    self.done = true;
                    let q = &mut self.queue;
                    self.out.finish(|l| q.push_back(ExecEvent::stdout(l)));
                    self.err.finish(|l| q.push_back(ExecEvent::stderr(l)));
                    if let Some(t) = self.journal.terminal() {
                        q.push_back(t);
                    }
                }
                Err(e) => {
                    self.done = true;
                    self.queue.push_back(ExecEvent::runtime_error(format!("error reading output: {e}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("execd-journal-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn readers_follow_live_writer_from_any_offset() {
        let dir = tmpdir("follow");
        let (j, mut w) = Journal::create(&dir, "a").unwrap();
        let mut r0 = j.chunks(0).unwrap();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = r0.next().await.unwrap() {
                got.push((c.kind, c.start, c.data));
            }
            got
        });
        w.append(StreamKind::Stdout, b"hello ").unwrap();
        w.append(StreamKind::Stderr, b"err\n").unwrap();
        w.append(StreamKind::Stdout, b"world\n").unwrap();
        let mut mid = j.chunks(3).unwrap();
        w.finish(Some(ExecEvent::complete(1)));
        let got = task.await.unwrap();
        assert_eq!(
            got,
            vec![
                (StreamKind::Stdout, 0, b"hello ".to_vec()),
                (StreamKind::Stderr, 6, b"err\n".to_vec()),
                (StreamKind::Stdout, 10, b"world\n".to_vec())
            ]
        );
        let first = mid.next().await.unwrap().unwrap();
        assert_eq!((first.start, first.data.as_slice()), (3, &b"lo "[..]));
        let mut late = j.chunks(100).unwrap();
        assert!(late.next().await.unwrap().is_none());
        assert!(j.terminal().unwrap().is_terminal());
        let mut lines = j.line_events(1024).unwrap();
        let mut kinds = Vec::new();
        while let Some(e) = lines.next().await {
            kinds.push((e.kind.as_str(), e.text));
        }
        assert_eq!(
            kinds,
            vec![
                ("stderr", "err\n".to_string()),
                ("stdout", "hello world\n".to_string()),
                ("execution_complete", String::new())
            ]
        );
        j.remove_files();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
