//! The journal (DECISIONS D11): one append-only record of an execution's output, read by any
//! number of readers from any byte offset while it is written, and after.
//!
//! # Design
//! Two files per execution in the state directory:
//! - `<name>.out`: the raw output bytes (stdout and stderr merged in write order). Byte offsets in
//!   this file are the public offsets: `/command/{id}/logs?cursor=` and the `id:` of `/events`.
//! - `<name>.idx`: one fixed 24-byte record per appended chunk: stream kind (1 stdout, 2 stderr,
//!   3 stdin: input written to the command, X12; 4 a zero-length `awaiting_input` marker, X13),
//!   the chunk's end offset in `.out` (u64 LE) and the Unix-ms time it was read (i64 LE). So
//!   replays can still tell stdout from stderr and keep the original timestamps, and a reader can
//!   binary-search the chunk that contains any offset.
//!
//! The writer appends bytes first, then the index record, then publishes the new `(len, records)`
//! (a [`Published`] cell: the values under a lock, and a `Notify` that wakes readers waiting for
//! more): readers only read what was published, are woken without polling, and never block the
//! writer (a slow or gone reader just stops reading). When the writer
//! finishes, it stores the terminal event in memory and marks the journal closed; readers end after
//! the last record. Memory is flat in output size: nothing is buffered beyond one chunk per reader.
//!
//! Input (X12) shares the record, so offsets order output and input as they happened: an
//! [`InputLog`] performs the pipe write *under the writer's lock* and records what it wrote, so
//! the output a process produces in answer to some input is always recorded after that input.
//! Readers that show only output (`/logs`, the upstream foreground stream, the bounded view) skip
//! stdin chunks.
//! While live, the writer holds two fds; readers open their own, so a finished journal holds none.
//!
//! Both files are created with the first chunk, not with the journal: a command that prints
//! nothing (`true`, `mkdir -p x`, most of an agent's setup steps) creates no file for it, and on a
//! filesystem where creating a file costs (this host's ext4: ~0.1–0.5 ms each) that stays off its
//! latency. Readers open the files only once a record is published, so a journal with no record
//! reads as empty whether its files exist or not; after a restart (X50) a record whose extent is
//! empty needs none. A failure to create them is the first append's error, as a failed write is;
//! a command first checks that the state directory has room at all
//! ([`crate::state_dir::check_room`]), so a full or read-only one refuses it with a clear error.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::lines::LineSplitter;
use crate::event::{now_ms, EventKind, ExecEvent, LineWriter};

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
    /// Bytes written to the command's stdin (X12).
    Stdin = 3,
    /// A zero-length marker: some process of the command waits for input (X13).
    AwaitingInput = 4,
}

impl StreamKind {
    fn from_byte(b: u8) -> StreamKind {
        match b {
            2 => StreamKind::Stderr,
            3 => StreamKind::Stdin,
            4 => StreamKind::AwaitingInput,
            _ => StreamKind::Stdout,
        }
    }

    /// Output of the command (stdout or stderr), as opposed to input and markers.
    pub fn is_output(self) -> bool {
        matches!(self, StreamKind::Stdout | StreamKind::Stderr)
    }
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

/// How far a journal got (see [`Journal::extent`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extent {
    /// Bytes in `.out` (output and input).
    pub len: u64,
    /// Records in `.idx`.
    pub records: u64,
    /// Bytes of `len` that are stdin (X12).
    pub input: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    len: u64,
    records: u64,
    closed: bool,
    /// Bytes of `len` that are stdin (X12).
    input: u64,
    /// Output bytes the writer could not write (see [`Journal::output_lost`]).
    lost: u64,
}

/// The published [`Progress`] of a journal and the readers waiting for more: kept inline in the
/// journal (a `tokio::sync::watch` channel was a separate ~450-byte allocation per journal,
/// a quarter of what a finished command keeps in memory).
#[derive(Default)]
struct Published {
    value: Mutex<Progress>,
    more: tokio::sync::Notify,
}

impl Published {
    fn new(p: Progress) -> Published {
        Published { value: Mutex::new(p), more: tokio::sync::Notify::new() }
    }

    fn get(&self) -> Progress {
        *self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the published values and wakes every reader waiting for more.
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.value.lock().unwrap_or_else(|e| e.into_inner()));
        self.more.notify_waiters();
    }
}

struct Inner {
    out_path: PathBuf,
    idx_path: PathBuf,
    progress: Published,
    terminal: Mutex<Option<ExecEvent>>,
    /// sha256 of the output (stdin excluded) once computed for a finished journal (X16).
    output_sha256: std::sync::OnceLock<String>,
}

impl Inner {
    /// Creates both files for the writer: 0600, no symlinks (output may hold secrets, issue #13
    /// finding 2).
    fn create_files(&self) -> io::Result<(File, File)> {
        Ok((crate::state_dir::create_file(&self.out_path)?, crate::state_dir::create_file(&self.idx_path)?))
    }

    /// Opens both files for a reader; only called once a record was published, so they exist.
    fn open_files(&self) -> io::Result<(File, File)> {
        Ok((crate::state_dir::open_file(&self.out_path)?, crate::state_dir::open_file(&self.idx_path)?))
    }
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
    core: Arc<Mutex<Core>>,
}

/// The files and counters behind the writer; shared with [`InputLog`]s.
struct Core {
    /// `.out` and `.idx`, created by the first append.
    files: Option<(File, File)>,
    len: u64,
    records: u64,
    input: u64,
    closed: bool,
    /// Output bytes that could not be written (the state directory full) in all.
    lost: u64,
    /// Of those, the ones not yet reported in the output, and the error that dropped the first.
    unreported: Option<(u64, String)>,
}

impl Core {
    fn append(&mut self, journal: &Journal, kind: StreamKind, data: &[u8]) -> io::Result<()> {
        if self.closed || (data.is_empty() && kind != StreamKind::AwaitingInput) {
            return Ok(());
        }
        self.write_after_notice(journal, Some((kind, data))).map_err(|e| self.lose(journal, kind, data, e))
    }

    /// Writes `chunk` (if any) after the line that marks output lost since the last chunk
    /// written (if any). The two go in together or not at all: a disk that takes only the short
    /// line (the slack of a page) would otherwise get one per chunk it refused.
    fn write_after_notice(&mut self, journal: &Journal, chunk: Option<(StreamKind, &[u8])>) -> io::Result<()> {
        let notice = self.unreported.as_ref().map(|(n, why)| loss_notice(*n, why));
        let (one, two);
        let chunks: &[(StreamKind, &[u8])] = match (&notice, chunk) {
            (Some(t), Some(c)) => {
                two = [(StreamKind::Stderr, t.as_bytes()), c];
                &two
            }
            (Some(t), None) => {
                one = [(StreamKind::Stderr, t.as_bytes())];
                &one
            }
            (None, Some(c)) => {
                one = [c];
                &one
            }
            (None, None) => return Ok(()),
        };
        self.write_chunks(journal, chunks)?;
        self.unreported = None;
        Ok(())
    }

    /// Writes chunks and publishes them. The writes are positioned at the published ends, and
    /// the ends move only when all succeeded: a write that failed half way (ENOSPC) leaves
    /// nothing a reader or a restart could take for output, and the next chunk goes over it.
    fn write_chunks(&mut self, journal: &Journal, chunks: &[(StreamKind, &[u8])]) -> io::Result<()> {
        let (out, idx) = match &mut self.files {
            Some(files) => files,
            None => self.files.insert(journal.inner.create_files()?),
        };
        let (mut len, mut input) = (self.len, self.input);
        let mut recs = [0u8; 2 * RECORD as usize];
        let now = now_ms().to_le_bytes();
        for ((kind, data), rec) in chunks.iter().zip(recs.chunks_exact_mut(RECORD as usize)) {
            out.write_all_at(data, len)?;
            len += data.len() as u64;
            if *kind == StreamKind::Stdin {
                input += data.len() as u64;
            }
            rec[0] = *kind as u8;
            rec[8..16].copy_from_slice(&len.to_le_bytes());
            rec[16..24].copy_from_slice(&now);
        }
        debug_assert!(chunks.len() <= 2, "a notice and one chunk at most");
        let n = chunks.len().min(2);
        idx.write_all_at(&recs[..n * RECORD as usize], self.records * RECORD)?;
        self.len = len;
        self.input = input;
        self.records += n as u64;
        let records = self.records;
        journal.inner.progress.update(|p| {
            p.len = len;
            p.records = records;
            p.input = input;
        });
        Ok(())
    }

    /// Counts `data` as lost when it is output, and gives `e` back.
    fn lose(&mut self, journal: &Journal, kind: StreamKind, data: &[u8], e: io::Error) -> io::Error {
        if kind.is_output() {
            let n = data.len() as u64;
            self.lost += n;
            match &mut self.unreported {
                Some((m, _)) => *m += n,
                None => self.unreported = Some((n, e.to_string())),
            }
            let lost = self.lost;
            journal.inner.progress.update(|p| p.lost = lost);
        }
        e
    }
}

/// The stderr line that marks where `n` bytes of output were lost, and why.
fn loss_notice(n: u64, why: &str) -> String {
    format!("[execd] {n} bytes of output lost here: {why}\n")
}

/// Records input (X12) and markers (X13) into a live journal; see the module docs. Cheap to clone;
/// after the writer finished it records nothing.
#[derive(Clone)]
pub struct InputLog {
    journal: Journal,
    core: Arc<Mutex<Core>>,
}

impl InputLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        // Held only for one non-blocking write syscall and one append; never across an await.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `write` (one **non-blocking** write of a prefix of `data`) under the journal's lock
    /// and records the bytes it wrote as stdin. Returns what `write` returned.
    pub fn write_recorded(&self, data: &[u8], write: impl FnOnce(&[u8]) -> io::Result<usize>) -> io::Result<usize> {
        let mut core = self.lock();
        let n = write(data)?;
        if let Err(e) = core.append(&self.journal, StreamKind::Stdin, &data[..n.min(data.len())]) {
            tracing::warn!(error = %e, "journal write failed; input is not recorded");
        }
        Ok(n)
    }

    /// The journal written to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }
}

impl Journal {
    /// A new journal `<dir>/<name>.out` and `<dir>/<name>.idx` and its writer; the files are
    /// created (truncating) by the first append (module docs).
    pub fn create(dir: &Path, name: &str) -> (Journal, JournalWriter) {
        let out_path = dir.join(format!("{name}.out"));
        let idx_path = dir.join(format!("{name}.idx"));
        let journal = Journal {
            inner: Arc::new(Inner {
                out_path,
                idx_path,
                progress: Published::default(),
                terminal: Mutex::new(None),
                output_sha256: std::sync::OnceLock::new(),
            }),
        };
        let core = Core { files: None, len: 0, records: 0, input: 0, closed: false, lost: 0, unreported: None };
        let writer = JournalWriter { journal: journal.clone(), core: Arc::new(Mutex::new(core)) };
        (journal, writer)
    }

    /// Bytes of output so far.
    pub fn len(&self) -> u64 {
        self.inner.progress.get().len
    }

    /// Bytes of stdin recorded so far (X12); `len() - input_len()` is the output.
    pub fn input_len(&self) -> u64 {
        self.inner.progress.get().input
    }

    /// Output bytes that were dropped because the state directory could not take them (disk
    /// full); each gap is marked in the output by a stderr line once a later write succeeds.
    pub fn output_lost(&self) -> u64 {
        self.inner.progress.get().lost
    }

    /// Total length, input bytes among it, and the index records so far, read at one instant.
    fn snapshot(&self) -> (u64, u64, u64) {
        let p = self.inner.progress.get();
        (p.len, p.input, p.records)
    }

    /// Whether no output was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the writer has finished.
    pub fn is_closed(&self) -> bool {
        self.inner.progress.get().closed
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
        loop {
            // Created before the check: an update between the check and the wait wakes it.
            let more = self.inner.progress.more.notified();
            if self.inner.progress.get().closed {
                return;
            }
            more.await;
        }
    }

    /// The raw output from `from` to the current end: an open file positioned nowhere (read it with
    /// `read_at`/seek; none while nothing was written) plus the published end offset. `from`
    /// beyond the end gives an empty range.
    pub fn raw_range(&self, from: u64) -> io::Result<(Option<File>, u64, u64)> {
        let end = self.len();
        let file = if end == 0 { None } else { Some(crate::state_dir::open_file(&self.inner.out_path)?) };
        Ok((file, from.min(end), end))
    }

    /// A reader of chunks starting at raw offset `from` (mid-chunk offsets give a partial chunk).
    pub fn chunks(&self, from: u64) -> io::Result<ChunkReader> {
        let records = self.inner.progress.get().records;
        let mut r = ChunkReader { inner: self.inner.clone(), files: None, pos: from, rec: 0, spare: Vec::new() };
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
            lines: LineWriter::default(),
        })
    }

    /// How far the journal got: bytes, index records, stdin bytes among them (what a restart
    /// needs to reopen it with [`Journal::open_finished`]).
    pub fn extent(&self) -> Extent {
        let p = self.inner.progress.get();
        Extent { len: p.len, records: p.records, input: p.input }
    }

    /// Reopens the finished journal `<dir>/<name>` of an earlier execd (X50) read-only, with
    /// `extent` as its published end and `terminal` as its terminal event. Fails when either file
    /// is missing or shorter than `extent` says.
    pub fn open_finished(dir: &Path, name: &str, extent: Extent, terminal: Option<ExecEvent>) -> io::Result<Journal> {
        let out_path = dir.join(format!("{name}.out"));
        let idx_path = dir.join(format!("{name}.idx"));
        let (out_len, idx_len) = if extent == Extent::default() {
            // Nothing was written: the files were never created (module docs).
            (0, 0)
        } else {
            (
                crate::state_dir::open_file(&out_path)?.metadata()?.len(),
                crate::state_dir::open_file(&idx_path)?.metadata()?.len(),
            )
        };
        if out_len < extent.len || idx_len < extent.records.saturating_mul(RECORD) || extent.input > extent.len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "journal files are shorter than their record"));
        }
        let progress = Published::new(Progress {
            len: extent.len,
            records: extent.records,
            closed: true,
            input: extent.input,
            lost: 0,
        });
        Ok(Journal {
            inner: Arc::new(Inner {
                out_path,
                idx_path,
                progress,
                terminal: Mutex::new(terminal),
                output_sha256: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Recovers the extent of a journal whose writer died (execd was killed, X50): the whole
    /// index records whose end offsets are in order and inside `.out`, up to the first one that
    /// is not (a kill mid-write leaves a torn record or bytes without one). Both files are cut
    /// back to that extent, so the journal is consistent afterwards.
    pub fn recover(dir: &Path, name: &str) -> io::Result<Extent> {
        use std::io::Read;
        let out_path = dir.join(format!("{name}.out"));
        let idx_path = dir.join(format!("{name}.idx"));
        let absent = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        // A journal that never got a chunk has no files (module docs).
        let out_len = match crate::state_dir::open_file(&out_path) {
            Ok(f) => f.metadata()?.len(),
            Err(e) if absent(&e) => 0,
            Err(e) => return Err(e),
        };
        let idx = match crate::state_dir::open_file(&idx_path) {
            Ok(f) => f,
            Err(e) if absent(&e) => return Ok(Extent::default()),
            Err(e) => return Err(e),
        };
        let mut idx = io::BufReader::new(idx);
        let mut ext = Extent::default();
        let mut rec = [0u8; RECORD as usize];
        loop {
            match idx.read_exact(&mut rec) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let end = u64::from_le_bytes(rec[8..16].try_into().unwrap_or_default());
            if !(1..=4).contains(&rec[0]) || end < ext.len || end > out_len {
                break;
            }
            if StreamKind::from_byte(rec[0]) == StreamKind::Stdin {
                ext.input += end - ext.len;
            }
            ext.len = end;
            ext.records += 1;
        }
        drop(idx);
        for (path, len) in [(&out_path, ext.len), (&idx_path, ext.records * RECORD)] {
            let f = match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(path) {
                Ok(f) => f,
                Err(e) if absent(&e) => continue,
                Err(e) => return Err(e),
            };
            if f.metadata()?.len() > len {
                f.set_len(len)?;
            }
        }
        Ok(ext)
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
        // Uncontended unless input is being written at this instant (a few microseconds).
        let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        core.append(&self.journal, kind, data)
    }

    /// A handle that records stdin into this journal while it is live (X12).
    pub fn input_log(&self) -> InputLog {
        InputLog { journal: self.journal.clone(), core: self.core.clone() }
    }

    /// Marks output lost since the last chunk written (see [`Journal::output_lost`]) if the state
    /// directory takes the line now; the total lost either way. Called once the command ended.
    pub fn report_loss(&mut self) -> u64 {
        let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        let _ = core.write_after_notice(&self.journal, None);
        core.lost
    }

    /// Stores the terminal event and closes the journal; readers end after the last chunk.
    pub fn finish(self, terminal: Option<ExecEvent>) {
        *self.journal.inner.terminal.lock().unwrap_or_else(|e| e.into_inner()) = terminal;
        // Drop closes the files and publishes `closed`.
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        // Under the lock: an input write racing the end is either recorded before `closed` or not
        // at all.
        self.core.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.journal.inner.progress.update(|p| p.closed = true);
    }
}

/// Output-only bytes of a journal range (stdin skipped): `/logs` of a command that had input.
pub struct OutputReader {
    chunks: ChunkReader,
    end: u64,
}

impl OutputReader {
    /// The next piece of output before the end taken when the reader was made; `None` after it.
    pub async fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        while self.chunks.position() < self.end {
            // Never waits: everything before `end` was published.
            let Some(mut c) = self.chunks.next().await? else { return Ok(None) };
            if !c.kind.is_output() {
                continue;
            }
            c.data.truncate((self.end.saturating_sub(c.start)) as usize);
            return Ok(Some(c.data));
        }
        Ok(None)
    }
}

/// The bounded view of a command's output (X16): see [`Journal::output_view`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputView {
    pub head: String,
    pub tail: String,
    /// Output bytes (stdout and stderr; stdin excluded).
    pub total_bytes: u64,
    /// Whether bytes between `head` and `tail` were left out.
    pub truncated: bool,
    /// Hex sha256 of the whole output, once the journal is closed.
    pub sha256: Option<String>,
}

impl Journal {
    /// A reader of the output bytes (stdin skipped) from raw offset `from` to the current end, and
    /// that end.
    pub fn output_reader(&self, from: u64) -> io::Result<(OutputReader, u64)> {
        let end = self.len();
        let chunks = self.chunks(from.min(end))?;
        Ok((OutputReader { chunks, end }, end))
    }

    /// X16: the first `head` and last `tail` output bytes (stdin excluded), cut at UTF-8 character
    /// boundaries, without reading the rest; when `head + tail` covers everything, `head` and
    /// `tail` are the whole output split at a character boundary near `head` (no byte twice).
    /// Blocking file reads: call it from a blocking thread.
    pub fn output_view(&self, head: u64, tail: u64) -> io::Result<OutputView> {
        let closed = self.is_closed();
        let (len, input, records) = self.snapshot();
        let total = len - input;
        let map = RecordMap::open(self, records)?;
        let truncated = total > head.saturating_add(tail);
        let (head, tail) = if truncated {
            let h = map.forward(head)?;
            let t = map.backward(tail)?;
            let h_end = utf8_prefix_len(&h);
            let t_start = utf8_continuation_prefix(&t);
            (String::from_utf8_lossy(&h[..h_end]).into_owned(), String::from_utf8_lossy(&t[t_start..]).into_owned())
        } else {
            let all = map.forward(total)?;
            let cut = utf8_prefix_len(&all[..(head.min(total)) as usize]);
            (String::from_utf8_lossy(&all[..cut]).into_owned(), String::from_utf8_lossy(&all[cut..]).into_owned())
        };
        let sha256 = if closed {
            let digest = match self.inner.output_sha256.get() {
                Some(d) => d.clone(),
                None => {
                    let d = map.sha256()?;
                    self.inner.output_sha256.get_or_init(|| d).clone()
                }
            };
            Some(digest)
        } else {
            None
        };
        Ok(OutputView { head, tail, total_bytes: total, truncated, sha256 })
    }
}

/// Random access to a journal's records for [`Journal::output_view`].
struct RecordMap {
    /// `.out` and `.idx`; none when there is no record (nothing to read, maybe no files).
    files: Option<(File, File)>,
    records: u64,
}

impl RecordMap {
    fn open(j: &Journal, records: u64) -> io::Result<RecordMap> {
        let files = if records == 0 { None } else { Some(j.inner.open_files()?) };
        Ok(RecordMap { files, records })
    }

    /// The files; only asked for while `i < records`, so they are open.
    fn files(&self) -> io::Result<&(File, File)> {
        self.files.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "journal files are not open"))
    }

    /// Kind and raw byte range of record `i`.
    fn record(&self, i: u64) -> io::Result<(StreamKind, u64, u64)> {
        let mut b = [0u8; 2 * RECORD as usize];
        let (at, one) = if i == 0 { (0, true) } else { ((i - 1) * RECORD, false) };
        let n = if one { RECORD as usize } else { 2 * RECORD as usize };
        self.files()?.1.read_exact_at(&mut b[..n], at)?;
        let rec = if one { &b[..RECORD as usize] } else { &b[RECORD as usize..] };
        let end = u64::from_le_bytes(rec[8..16].try_into().unwrap_or_default());
        let start = if one { 0 } else { u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()) };
        Ok((StreamKind::from_byte(rec[0]), start, end))
    }

    /// The first `want` output bytes.
    fn forward(&self, want: u64) -> io::Result<Vec<u8>> {
        let mut got = Vec::with_capacity(want.min(1 << 20) as usize);
        for i in 0..self.records {
            if got.len() as u64 >= want {
                break;
            }
            let (kind, start, end) = self.record(i)?;
            if !kind.is_output() {
                continue;
            }
            let n = (end - start).min(want - got.len() as u64) as usize;
            let at = got.len();
            got.resize(at + n, 0);
            self.files()?.0.read_exact_at(&mut got[at..], start)?;
        }
        Ok(got)
    }

    /// The last `want` output bytes.
    fn backward(&self, want: u64) -> io::Result<Vec<u8>> {
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let mut have = 0u64;
        let mut i = self.records;
        while i > 0 && have < want {
            i -= 1;
            let (kind, start, end) = self.record(i)?;
            if !kind.is_output() {
                continue;
            }
            let n = (end - start).min(want - have);
            let mut piece = vec![0u8; n as usize];
            self.files()?.0.read_exact_at(&mut piece, end - n)?;
            have += n;
            pieces.push(piece);
        }
        pieces.reverse();
        Ok(pieces.concat())
    }

    /// sha256 over every output byte, read in pieces.
    fn sha256(&self) -> io::Result<String> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; READ_CHUNK];
        for i in 0..self.records {
            let (kind, mut start, end) = self.record(i)?;
            if !kind.is_output() {
                continue;
            }
            while start < end {
                let n = (end - start).min(READ_CHUNK as u64) as usize;
                self.files()?.0.read_exact_at(&mut buf[..n], start)?;
                h.update(&buf[..n]);
                start += n as u64;
            }
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Length of `b` without an incomplete UTF-8 sequence at its end.
/// Appends exactly `n` bytes of `file` from `offset` to `buf`, read straight into its spare
/// capacity: no zero-filling first, as `resize` + `read_exact_at` did (zeroing up to 64 KiB before
/// every chunk was 5 % of execd's samples with 200 commands streaming at once). `file` is the
/// reader's own descriptor, so moving its offset disturbs nobody.
fn read_into(file: &File, offset: u64, n: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::{Read, Seek};
    let mut file = file;
    file.seek(io::SeekFrom::Start(offset))?;
    let start = buf.len();
    file.take(n as u64).read_to_end(buf)?;
    if buf.len() - start < n {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "journal output is shorter than its index"));
    }
    Ok(())
}

fn utf8_prefix_len(b: &[u8]) -> usize {
    // The last character starts within the last 4 bytes: find its lead byte.
    for back in 1..=4.min(b.len()) {
        let i = b.len() - back;
        let lead = b[i];
        if lead & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = match lead {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1, // invalid lead: left as is (shown as U+FFFD)
        };
        return if back < need { i } else { b.len() };
    }
    b.len()
}

/// Number of UTF-8 continuation bytes at the start of `b` (at most 3): the cut-off end of a
/// character whose start lies before the tail.
fn utf8_continuation_prefix(b: &[u8]) -> usize {
    b.iter().take(3).take_while(|&&c| c & 0xC0 == 0x80).count()
}

/// What [`ChunkReader::next_ready`] found.
enum Ready {
    Chunk(Chunk),
    /// Closed, and everything read.
    End,
    /// Caught up with a writer still running.
    Wait,
}

/// Follows a journal from an offset; see [`Journal::chunks`].
pub struct ChunkReader {
    inner: Arc<Inner>,
    /// `.out` and `.idx`, opened at the first record this reader reads (module docs).
    files: Option<(File, File)>,
    /// Next raw offset to return.
    pos: u64,
    /// Next index record to look at.
    rec: u64,
    /// A chunk's buffer handed back by [`ChunkReader::recycle`], for the next chunk.
    spare: Vec<u8>,
}

impl ChunkReader {
    /// Hands a returned chunk's buffer back for the next one: a fresh 64 KiB buffer per chunk is
    /// memory musl's allocator maps and unmaps each time (a page fault per 4 KiB touched).
    pub fn recycle(&mut self, data: Vec<u8>) {
        if data.capacity() <= READ_CHUNK {
            self.spare = data;
        }
    }

    /// The files, opened on first use (only once a record was published, so they exist).
    fn files(&mut self) -> io::Result<&(File, File)> {
        let files = match self.files.take() {
            Some(files) => files,
            None => self.inner.open_files()?,
        };
        Ok(self.files.insert(files))
    }

    fn record(&mut self, i: u64) -> io::Result<(StreamKind, u64, i64)> {
        let mut b = [0u8; RECORD as usize];
        self.files()?.1.read_exact_at(&mut b, i * RECORD)?;
        let kind = StreamKind::from_byte(b[0]);
        let end = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
        let ts = i64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
        Ok((kind, end, ts))
    }

    fn first_record_ending_after(&mut self, offset: u64, records: u64) -> io::Result<u64> {
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
            match self.next_ready()? {
                Ready::Chunk(c) => return Ok(Some(c)),
                Ready::End => return Ok(None),
                // Woken by the writer's next publish. The wait is registered before the second
                // look, so a publish between the two is not missed.
                Ready::Wait => {
                    let inner = self.inner.clone();
                    let more = inner.progress.more.notified();
                    match self.next_ready()? {
                        Ready::Chunk(c) => return Ok(Some(c)),
                        Ready::End => return Ok(None),
                        Ready::Wait => more.await,
                    }
                }
            }
        }
    }

    /// The next chunk if the writer published one, without waiting.
    fn next_ready(&mut self) -> io::Result<Ready> {
        loop {
            let p = self.inner.progress.get();
            if self.rec < p.records {
                let (kind, end, timestamp) = self.record(self.rec)?;
                if kind == StreamKind::AwaitingInput && self.pos == end {
                    self.rec += 1;
                    return Ok(Ready::Chunk(Chunk { kind, start: end, data: Vec::new(), timestamp }));
                }
                if self.pos >= end {
                    self.rec += 1;
                    continue;
                }
                let n = (end - self.pos).min(READ_CHUNK as u64) as usize;
                let mut data = std::mem::take(&mut self.spare);
                if data.capacity() < n {
                    // A power of two up to READ_CHUNK: grows a few times, then stays recyclable.
                    data = Vec::with_capacity(n.next_power_of_two().min(READ_CHUNK));
                }
                data.clear();
                let pos = self.pos;
                read_into(&self.files()?.0, pos, n, &mut data)?;
                let chunk = Chunk { kind, start: self.pos, data, timestamp };
                self.pos += n as u64;
                if self.pos >= end {
                    self.rec += 1;
                }
                return Ok(Ready::Chunk(chunk));
            }
            return Ok(if p.closed { Ready::End } else { Ready::Wait });
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
    /// [`LineEventReader::render`]'s line writer (what consecutive lines share).
    lines: LineWriter,
}

/// One event out of [`LineEventReader`]'s steps: a line lent by a splitter, or a whole event.
enum Out<'a> {
    Line(EventKind, &'a str, i64),
    Event(ExecEvent),
}

impl Out<'_> {
    fn into_event(self) -> ExecEvent {
        match self {
            Out::Line(kind, text, ts) => ExecEvent::new_at(kind, text, ts),
            Out::Event(e) => e,
        }
    }
}

/// JSON events written into a caller's buffer, each followed by a separator.
struct Render<'a> {
    out: &'a mut Vec<u8>,
    sep: &'a [u8],
    lines: &'a mut LineWriter,
}

impl Render<'_> {
    fn put(&mut self, o: Out<'_>) {
        match o {
            Out::Line(kind, text, ts) => self.lines.line(self.out, kind, text, ts, self.sep),
            Out::Event(e) => {
                e.write_json(self.out);
                self.out.extend_from_slice(self.sep);
            }
        }
    }
}

impl LineEventReader {
    /// The next event; after the terminal event (or a read failure, reported as a `RUNTIME_ERROR`
    /// event) it returns `None`.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            let mut queue = std::mem::take(&mut self.queue);
            let fed = self.feed_piece(&mut |o| queue.push_back(o.into_event()));
            self.queue = queue;
            if fed {
                continue;
            }
            if self.done {
                return None;
            }
            let next = self.chunks.next().await;
            let mut queue = std::mem::take(&mut self.queue);
            self.take_chunk(next, &mut |o| queue.push_back(o.into_event()));
            self.queue = queue;
        }
    }

    /// Writes the JSON of the events that are ready into `out`, each followed by `sep`, until
    /// `out` holds at least `max` bytes; waits only while `out` is empty. The same events as
    /// [`LineEventReader::next`], without a `String` or an event per line (the foreground
    /// stream's hot path). Returns false once the terminal event was written: nothing follows.
    /// Cancel-safe: it only waits before writing anything.
    pub async fn render(&mut self, out: &mut Vec<u8>, sep: &[u8], max: usize) -> bool {
        // Taken out for the borrow; dropped with the future only while waiting (it is a cache).
        let mut lines = std::mem::take(&mut self.lines);
        let more = self.render_with(out, sep, max, &mut lines).await;
        self.lines = lines;
        more
    }

    async fn render_with(&mut self, out: &mut Vec<u8>, sep: &[u8], max: usize, lines: &mut LineWriter) -> bool {
        let mut r = Render { out, sep, lines };
        loop {
            while let Some(e) = self.queue.pop_front() {
                r.put(Out::Event(e));
            }
            if r.out.len() >= max {
                return true;
            }
            if self.feed_piece(&mut |o| r.put(o)) {
                continue;
            }
            if self.done {
                return false;
            }
            let next = if r.out.is_empty() {
                self.chunks.next().await
            } else {
                match self.chunks.next_ready() {
                    Ok(Ready::Wait) => return true,
                    Ok(Ready::Chunk(c)) => Ok(Some(c)),
                    Ok(Ready::End) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            self.take_chunk(next, &mut |o| r.put(o));
        }
    }

    /// Splits the next piece ([`LINE_FEED_PIECE`] bytes) of the pending chunk into events; false
    /// when no chunk is pending. Pieces keep what one step produces small (a 64 KiB chunk of
    /// blank lines would otherwise be 64 Ki events at once).
    fn feed_piece(&mut self, emit: &mut impl FnMut(Out<'_>)) -> bool {
        let Some((chunk, off)) = self.pending.as_mut() else { return false };
        let rest = &chunk.data[*off..];
        let n = rest.len().min(LINE_FEED_PIECE);
        let (ts, piece) = (chunk.timestamp, &rest[..n]);
        match chunk.kind {
            StreamKind::Stdout => self.out.push_lines(piece, |l| emit(Out::Line(EventKind::Stdout, l, ts))),
            StreamKind::Stderr => self.err.push_lines(piece, |l| emit(Out::Line(EventKind::Stderr, l, ts))),
            // Input never reaches the upstream stream (X12).
            StreamKind::Stdin => {}
            StreamKind::AwaitingInput => {
                // A prompt is usually an unterminated line: show it before saying that the
                // command waits (only commands with an open stdin get markers).
                self.out.finish_lines(|l| emit(Out::Line(EventKind::Stdout, l, ts)));
                self.err.finish_lines(|l| emit(Out::Line(EventKind::Stderr, l, ts)));
                emit(Out::Line(EventKind::AwaitingInput, "", ts));
            }
        }
        *off += n;
        if *off >= chunk.data.len() {
            if let Some((chunk, _)) = self.pending.take() {
                self.chunks.recycle(chunk.data);
            }
        }
        true
    }

    /// Takes what the chunk reader returned: the next chunk to split, or the end (the held
    /// partial lines, then the terminal event), or a read failure (a `RUNTIME_ERROR` event).
    fn take_chunk(&mut self, next: io::Result<Option<Chunk>>, emit: &mut impl FnMut(Out<'_>)) {
        match next {
            Ok(Some(chunk)) => self.pending = Some((chunk, 0)),
            Ok(None) => {
                self.done = true;
                let ts = now_ms();
                self.out.finish_lines(|l| emit(Out::Line(EventKind::Stdout, l, ts)));
                self.err.finish_lines(|l| emit(Out::Line(EventKind::Stderr, l, ts)));
                if let Some(t) = self.journal.terminal() {
                    emit(Out::Event(t));
                }
            }
            Err(e) => {
                self.done = true;
                emit(Out::Event(ExecEvent::runtime_error(format!("error reading output: {e}"))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x16_utf8_cuts() {
        let e = "é".as_bytes(); // C3 A9
        assert_eq!(utf8_prefix_len(b"abc"), 3);
        assert_eq!(utf8_prefix_len(&[b'a', e[0]]), 1);
        assert_eq!(utf8_prefix_len(&[b'a', e[0], e[1]]), 3);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(utf8_prefix_len(&euro[..2]), 0);
        assert_eq!(utf8_prefix_len(euro), 3);
        assert_eq!(utf8_prefix_len(&[0xFF]), 1);
        assert_eq!(utf8_prefix_len(&[]), 0);
        assert_eq!(utf8_continuation_prefix(&euro[1..]), 2);
        assert_eq!(utf8_continuation_prefix(b"ab"), 0);
    }

    #[tokio::test]
    async fn x16_view_skips_input_and_hashes_output() {
        let dir = tmpdir("view");
        let (j, mut w) = Journal::create(&dir, "v");
        let input = w.input_log();
        w.append(StreamKind::Stdout, b"hello ").unwrap();
        input.write_recorded(b"secret", |d| Ok(d.len())).unwrap();
        w.append(StreamKind::Stderr, "wörld".as_bytes()).unwrap();
        let v = j.output_view(3, 3).unwrap();
        assert_eq!((v.head.as_str(), v.tail.as_str(), v.total_bytes, v.truncated), ("hel", "rld", 12, true));
        assert_eq!(v.sha256, None);
        // "hello wö": the cut inside ö moves back; nothing is lost or doubled when not truncated.
        let v = j.output_view(8, 100).unwrap();
        assert_eq!((v.head.as_str(), v.tail.as_str(), v.truncated), ("hello w", "örld", false));
        w.finish(None);
        let v = j.output_view(100, 0).unwrap();
        assert_eq!(v.head, "hello wörld");
        use sha2::Digest;
        let want: String = sha2::Sha256::digest("hello wörld".as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(v.sha256.as_deref(), Some(want.as_str()));
        let (mut r, end) = j.output_reader(0).unwrap();
        assert_eq!(end, 18);
        let mut all = Vec::new();
        while let Some(p) = r.next().await.unwrap() {
            all.extend(p);
        }
        assert_eq!(all, "hello wörld".as_bytes());
        let mut chunks = j.chunks(0).unwrap();
        let mut kinds = Vec::new();
        while let Some(c) = chunks.next().await.unwrap() {
            kinds.push(c.kind);
        }
        assert_eq!(kinds, vec![StreamKind::Stdout, StreamKind::Stdin, StreamKind::Stderr]);
        j.remove_files();
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A recycled chunk buffer carries the next chunk (no fresh allocation per chunk), holding
    /// only that chunk's bytes; one over [`READ_CHUNK`] is not kept.
    #[tokio::test]
    async fn a_recycled_chunk_buffer_carries_the_next_chunk() {
        let dir = tmpdir("recycle");
        let (j, mut w) = Journal::create(&dir, "r");
        w.append(StreamKind::Stdout, &[b'a'; 3000]).unwrap();
        w.append(StreamKind::Stderr, &[b'b'; 1000]).unwrap();
        w.append(StreamKind::Stdout, &[b'c'; 10]).unwrap();
        let mut w2 = w;
        let mut r = j.chunks(0).unwrap();
        let first = r.next().await.unwrap().unwrap();
        let (ptr, cap) = (first.data.as_ptr(), first.data.capacity());
        assert_eq!(cap, 4096, "3000 bytes get a power of two");
        r.recycle(first.data);
        let second = r.next().await.unwrap().unwrap();
        // A fresh buffer for 1000 bytes would have 1024.
        assert_eq!((second.data.as_ptr(), second.data.capacity()), (ptr, cap), "the recycled buffer was not used");
        assert_eq!((second.kind, second.start, second.data), (StreamKind::Stderr, 3000, vec![b'b'; 1000]));
        r.recycle(Vec::with_capacity(READ_CHUNK + 1));
        let third = r.next().await.unwrap().unwrap();
        assert_eq!(third.data, vec![b'c'; 10]);
        assert!(third.data.capacity() <= READ_CHUNK, "an oversized buffer was kept");
        // A chunk that fills the recycled buffer exactly is read into it as it is (no growth).
        let (ptr, cap) = (third.data.as_ptr(), third.data.capacity());
        r.recycle(third.data);
        w2.append(StreamKind::Stdout, &vec![b'd'; cap]).unwrap();
        let fourth = r.next().await.unwrap().unwrap();
        assert_eq!((fourth.data.as_ptr(), fourth.data.capacity(), fourth.data.len()), (ptr, cap, cap));
        assert!(fourth.data.iter().all(|&b| b == b'd'));
        drop(w2);
        j.remove_files();
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A journal gets its files with its first chunk: one without output has none, reads as
    /// empty, and reopens and recovers (X50) as empty; a reader made before the first chunk
    /// follows it once the files exist.
    #[tokio::test]
    async fn files_come_with_the_first_chunk() {
        let dir = tmpdir("lazy");
        let files = |name: &str| ["out", "idx"].map(|ext| dir.join(format!("{name}.{ext}")).exists());
        let (j, w) = Journal::create(&dir, "quiet");
        let mut early = j.chunks(0).unwrap();
        let (file, start, end) = j.raw_range(0).unwrap();
        assert!(file.is_none() && start == 0 && end == 0);
        assert_eq!(j.output_view(10, 10).unwrap().total_bytes, 0);
        w.finish(Some(ExecEvent::complete(1)));
        assert!(early.next().await.unwrap().is_none());
        assert_eq!(files("quiet"), [false, false], "a journal without output created files");
        let view = j.output_view(10, 10).unwrap();
        assert_eq!((view.head.as_str(), view.total_bytes), ("", 0));
        assert!(view.sha256.is_some());
        assert_eq!(Journal::recover(&dir, "quiet").unwrap(), Extent::default());
        let back = Journal::open_finished(&dir, "quiet", Extent::default(), None).unwrap();
        assert!(back.chunks(0).unwrap().next().await.unwrap().is_none());
        // With a chunk, a reader opened before it reads it.
        let (j, mut w) = Journal::create(&dir, "loud");
        let mut early = j.chunks(0).unwrap();
        w.append(StreamKind::Stdout, b"hi").unwrap();
        assert_eq!(files("loud"), [true, true]);
        let c = early.next().await.unwrap().unwrap();
        assert_eq!((c.start, c.data.as_slice()), (0, &b"hi"[..]));
        w.finish(None);
        assert!(early.next().await.unwrap().is_none());
        let (file, _, end) = j.raw_range(0).unwrap();
        assert!(file.is_some() && end == 2);
        j.remove_files();
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("execd-journal-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn readers_follow_live_writer_from_any_offset() {
        let dir = tmpdir("follow");
        let (j, mut w) = Journal::create(&dir, "a");
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

    #[tokio::test]
    async fn render_writes_what_next_returns() {
        let dir = tmpdir("render");
        let (j, mut w) = Journal::create(&dir, "r");
        let long = "x".repeat(3000);
        let parts: [(StreamKind, &[u8]); 8] = [
            (StreamKind::Stdout, b"one\ntw"),
            (StreamKind::Stderr, b"e\"r\t\n"),
            (StreamKind::Stdout, b"o\n\n\xff\xfe bad utf-8\n"),
            (StreamKind::Stdout, b"prompt> "),
            (StreamKind::AwaitingInput, b""),
            (StreamKind::Stdout, long.as_bytes()),
            (StreamKind::Stderr, "caf\u{e9} no newline".as_bytes()),
            (StreamKind::Stdout, b"\nend\n"),
        ];
        for (kind, data) in parts {
            w.append(kind, data).unwrap();
        }
        w.finish(Some(ExecEvent::complete(7)));
        let mut want = Vec::new();
        let mut reader = j.line_events(1024).unwrap();
        while let Some(e) = reader.next().await {
            // Timestamps of the held partial lines are the time they are flushed: compare the rest.
            e.write_json(&mut want);
            want.extend_from_slice(b"|");
        }
        // Every batch size, from one event per call to all at once.
        for max in [1, 100, 1 << 20] {
            let mut got = Vec::new();
            let mut reader = j.line_events(1024).unwrap();
            let mut calls = 0;
            loop {
                let mut batch = Vec::new();
                let more = reader.render(&mut batch, b"|", max).await;
                calls += 1;
                got.extend_from_slice(&batch);
                if !more {
                    break;
                }
            }
            assert!(calls > 1 || max > 100, "max {max}: {calls} calls");
            let strip = |b: &[u8]| -> Vec<serde_json::Value> {
                b.split(|&c| c == b'|')
                    .filter(|f| !f.is_empty())
                    .map(|f| {
                        let mut v: serde_json::Value = serde_json::from_slice(f).unwrap();
                        v.as_object_mut().unwrap().remove("timestamp");
                        v
                    })
                    .collect()
            };
            assert_eq!(strip(&got), strip(&want), "max {max}");
        }
        let kinds: Vec<String> = want
            .split(|&c| c == b'|')
            .filter(|f| !f.is_empty())
            .map(|f| serde_json::from_slice::<serde_json::Value>(f).unwrap()["type"].as_str().unwrap().to_string())
            .collect();
        assert!(kinds.iter().any(|k| k == "awaiting_input"), "{kinds:?}");
        assert_eq!(kinds.last().map(String::as_str), Some("execution_complete"));
        j.remove_files();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
