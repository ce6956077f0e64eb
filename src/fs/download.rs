//! Downloads (§7.9, DECISIONS D34): open a regular file (following symlinks; a directory, FIFO or
//! device is refused), read a byte range into a bounded channel, and build the
//! `Content-Disposition` value with escaped (D60) or RFC 5987-encoded names.
//!
//! The reading never waits for the client on a blocking thread (issue #13 finding 6): an async
//! task waits until the channel has room for a few chunks, then lends the file to the blocking
//! pool, which reads until the channel is full and returns. A client that stops reading holds a
//! channel's worth of chunks and no thread. Over HTTP/1 the connection's stall watch
//! ([`super::transfer`]) then closes the connection. Over HTTP/2 flow control can stall one
//! stream while the connection stays healthy, so the task also watches the channel: when no
//! chunk is taken for the stall timeout it abandons the download (file, buffered chunks and
//! permit are released; the body fails if it is ever polled again).
//!
//! Line ranges (`?offset=&limit=`, issue #24 part 3) use the same machinery: the blocking side
//! reads raw chunks and passes them through a [`LineSlicer`], sending only the chosen lines. A
//! long run of unwanted lines is skipped inside one blocking trip (work, not waiting), checking
//! between reads whether the client is still there.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::mpsc;

use super::range::{LineRange, LineSlicer};
use super::transfer::TransferPermit;
use super::{path, FsError};

/// Read size per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Chunks read ahead of the network.
const READ_AHEAD: usize = 8;
/// The reader goes back to the blocking pool once this many chunks have room (so each trip
/// reads at least this many).
const REFILL: usize = READ_AHEAD / 2;
/// Chunks are carved out of a few reusable buffers of this size ...
const POOL_BUFFER: usize = 512 * 1024;
/// ... this many. A buffer is reused once every chunk carved from it has been sent and dropped
/// (`try_reclaim`), so a download allocates (and page-faults) a bounded amount of memory once
/// instead of a fresh buffer per chunk. Memory per download: about `POOL * POOL_BUFFER`.
const POOL: usize = 4;

/// An opened file ready to be sent.
#[derive(Debug)]
pub struct Download {
    pub file: File,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    /// Base name for `Content-Disposition`.
    pub name: String,
}

/// Opens `given` (expanded, not made absolute) for reading. Empty: Invalid; missing: NotFound;
/// a directory or any other non-regular file: Invalid (400; upstream broke off mid-body on a
/// directory and blocked forever on a FIFO).
pub fn open(given: &str) -> Result<Download, FsError> {
    let p = path::expanded_checked(given)?;
    let (file, meta) =
        super::open_regular(&p, || FsError::Invalid(format!("path is a directory, not a file: {}", p.display())))?;
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Download { file, size: meta.len(), modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name, path: p })
}

/// The body of a download: chunks of the file, in order. Holds the transfer's permit until it
/// is dropped (sent, or the connection is gone) or the download is abandoned as stalled.
pub struct DownloadBody {
    shared: Arc<Mutex<BodyState>>,
}

impl Drop for DownloadBody {
    fn drop(&mut self) {
        // The reading task holds the shared state too: close the channel (so it stops at once)
        // and give the permit back now, not when the task notices.
        let mut state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        state.rx = None;
        state.permit = None;
    }
}

/// What the body and the reading task share: `None`s once the download is abandoned or the body
/// dropped.
struct BodyState {
    rx: Option<mpsc::Receiver<std::io::Result<Bytes>>>,
    permit: Option<TransferPermit>,
}

impl Stream for DownloadBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match state.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            // Abandoned: the body is cut, never ended as if complete.
            None => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "download abandoned: the client took nothing for the stall timeout",
            )))),
        }
    }
}

/// Waits until the channel has room for `REFILL` chunks. False when the body is gone, or when
/// the client took no chunk for `stall` (zero: wait forever).
async fn wait_for_room(tx: &mpsc::Sender<std::io::Result<Bytes>>, stall: Duration) -> bool {
    if stall.is_zero() {
        return tx.reserve_many(REFILL).await.is_ok();
    }
    let mut room = tx.capacity();
    loop {
        match tokio::time::timeout(stall, tx.reserve_many(REFILL)).await {
            Ok(res) => return res.is_ok(),
            // Some chunks were taken meanwhile: progress, keep waiting.
            Err(_) if tx.capacity() > room => room = tx.capacity(),
            Err(_) => return false,
        }
    }
}

/// What the reading task lends to the blocking pool for each refill.
trait Fill: Send + 'static {
    /// Sends chunks while the channel has room (never waiting for it). False when the stream is
    /// over: the end, an error (sent), or the receiver gone.
    fn fill(&mut self, tx: &mpsc::Sender<std::io::Result<Bytes>>) -> bool;
    /// The file, for logs.
    fn path(&self) -> &std::path::Path;
}

/// The file, where it is, and the reusable buffers: lent to the blocking pool for each refill.
struct Reader {
    download: Download,
    pool: Vec<BytesMut>,
    slot: usize,
    pos: u64,
    end: u64,
}

impl Fill for Reader {
    fn fill(&mut self, tx: &mpsc::Sender<std::io::Result<Bytes>>) -> bool {
        while self.pos < self.end {
            let Ok(permit) = tx.try_reserve() else {
                // Full: give the thread back. Closed: the client is gone.
                return !tx.is_closed();
            };
            let res = self.read_chunk();
            let failed = res.is_err();
            permit.send(res);
            if failed {
                return false;
            }
        }
        false
    }

    fn path(&self) -> &std::path::Path {
        &self.download.path
    }
}

impl Reader {
    /// One chunk at `pos`. A file that shrank underneath is an error (the body is then cut, never
    /// padded).
    fn read_chunk(&mut self) -> std::io::Result<Bytes> {
        loop {
            let want = ((self.end - self.pos) as usize).min(CHUNK);
            let buf = &mut self.pool[self.slot];
            if buf.capacity() < want && !buf.try_reclaim(want) {
                // Still in flight (or first use): a fresh buffer; the old one is freed when its
                // last chunk is dropped.
                *buf = BytesMut::with_capacity(POOL_BUFFER);
            }
            buf.resize(want, 0);
            match self.download.file.read_at(&mut buf[..], self.pos) {
                Ok(0) => {
                    buf.clear();
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while being sent", self.download.path.display()),
                    ));
                }
                Ok(n) => {
                    buf.truncate(n);
                    self.pos += n as u64;
                    let chunk = buf.split().freeze();
                    if buf.capacity() < CHUNK {
                        self.slot = (self.slot + 1) % POOL;
                    }
                    return Ok(chunk);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.clear(),
                Err(e) => {
                    buf.clear();
                    return Err(e);
                }
            }
        }
    }
}

/// Streams `len` bytes from `offset`, `CHUNK` at a time, read ahead by up to `READ_AHEAD`
/// chunks (see the module docs). Stops when the body is dropped (client gone), at the end, or
/// when the client takes nothing for `stall` (zero: never).
pub fn stream(download: Download, offset: u64, len: u64, permit: TransferPermit, stall: Duration) -> DownloadBody {
    let reader = Reader {
        download,
        pool: (0..POOL).map(|_| BytesMut::new()).collect(),
        slot: 0,
        pos: offset,
        end: offset + len,
    };
    spawn_reader(reader, permit, stall)
}

/// Streams the lines `range` asks for (see [`LineSlicer`] for the output rules), with the same
/// read-ahead, stall and memory bounds as [`stream`]: about `READ_AHEAD + 2` chunks, whatever
/// the file or line sizes.
pub fn stream_lines(download: Download, range: LineRange, permit: TransferPermit, stall: Duration) -> DownloadBody {
    let reader = LineReader {
        download,
        slicer: LineSlicer::new(range),
        raw: vec![0; CHUNK],
        raw_at: 0,
        raw_end: 0,
        pos: 0,
        eof: false,
    };
    spawn_reader(reader, permit, stall)
}

/// Runs `reader` (see the module docs): waits for room asynchronously, refills on the blocking
/// pool, abandons the download when the client takes nothing for `stall`.
fn spawn_reader<R: Fill>(mut reader: R, permit: TransferPermit, stall: Duration) -> DownloadBody {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let shared = Arc::new(Mutex::new(BodyState { rx: Some(rx), permit: Some(permit) }));
    let watched = shared.clone();
    tokio::spawn(async move {
        loop {
            // Waiting for room is async: no thread is held while the client is slow or gone.
            if !wait_for_room(&tx, stall).await {
                if !tx.is_closed() {
                    tracing::info!(path = %reader.path().display(), "download stalled; abandoning it");
                    let mut state = watched.lock().unwrap_or_else(|e| e.into_inner());
                    state.rx = None;
                    state.permit = None;
                }
                return;
            }
            let tx2 = tx.clone();
            match tokio::task::spawn_blocking(move || {
                let more = reader.fill(&tx2);
                (reader, more)
            })
            .await
            {
                Ok((r, true)) => reader = r,
                _ => return,
            }
        }
    });
    DownloadBody { shared }
}

/// A line-range read: the file from its start, one raw chunk at a time, through the slicer.
struct LineReader {
    download: Download,
    slicer: LineSlicer,
    /// The raw chunk read last; `raw_at..raw_end` is not yet fed to the slicer.
    raw: Vec<u8>,
    raw_at: usize,
    raw_end: usize,
    /// File offset of the next raw read.
    pos: u64,
    eof: bool,
}

impl Fill for LineReader {
    fn fill(&mut self, tx: &mpsc::Sender<std::io::Result<Bytes>>) -> bool {
        loop {
            let Ok(permit) = tx.try_reserve() else {
                return !tx.is_closed();
            };
            match self.next_chunk(tx) {
                Ok(Some(chunk)) => permit.send(Ok(chunk)),
                Ok(None) => return false,
                Err(e) => {
                    permit.send(Err(e));
                    return false;
                }
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        &self.download.path
    }
}

impl LineReader {
    /// The next non-empty piece of output (up to about `CHUNK` bytes), reading and skipping as
    /// much of the file as that takes; `None` at the end (or when the client is gone).
    fn next_chunk(&mut self, tx: &mpsc::Sender<std::io::Result<Bytes>>) -> std::io::Result<Option<Bytes>> {
        let mut out = Vec::with_capacity(CHUNK + 1);
        while out.len() < CHUNK && !self.slicer.is_done() {
            if self.raw_at < self.raw_end {
                self.raw_at += self.slicer.feed(&self.raw[self.raw_at..self.raw_end], &mut out, CHUNK);
                continue;
            }
            if self.eof {
                self.slicer.finish();
                break;
            }
            if tx.is_closed() {
                // Skipping a long stretch produces nothing to send; stop when nobody listens.
                return Ok(None);
            }
            match self.download.file.read_at(&mut self.raw, self.pos) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.pos += n as u64;
                    self.raw_at = 0;
                    self.raw_end = n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

/// RFC 5987 `attr-char`s stay; everything else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The `Content-Disposition` value for a file named `name` (C116): a printable-ASCII name is sent
/// as a quoted string with `"` and `\` escaped (D60; spaces stay raw); any other name is
/// percent-encoded in both `filename` and `filename*=UTF-8''`.
pub fn content_disposition(name: &str) -> String {
    if name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("attachment; filename=\"{escaped}\"")
    } else {
        let pct = utf8_percent_encode(name, ATTR_CHAR).to_string();
        format!("attachment; filename=\"{pct}\"; filename*=UTF-8''{pct}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_table() {
        let cases = [
            ("test.txt", "attachment; filename=\"test.txt\""),
            ("my file.txt", "attachment; filename=\"my file.txt\""),
            ("a\"b.txt", "attachment; filename=\"a\\\"b.txt\""),
            ("a\\b", "attachment; filename=\"a\\\\b\""),
            (
                "测试文件.txt",
                "attachment; filename=\"%E6%B5%8B%E8%AF%95%E6%96%87%E4%BB%B6.txt\"; \
                 filename*=UTF-8''%E6%B5%8B%E8%AF%95%E6%96%87%E4%BB%B6.txt",
            ),
            ("é x.txt", "attachment; filename=\"%C3%A9%20x.txt\"; filename*=UTF-8''%C3%A9%20x.txt"),
            ("a\nb", "attachment; filename=\"a%0Ab\"; filename*=UTF-8''a%0Ab"),
        ];
        for (name, want) in cases {
            assert_eq!(content_disposition(name), want, "name {name:?}");
        }
    }
}
