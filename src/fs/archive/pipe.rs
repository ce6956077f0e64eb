//! The bridges between the async request/response bodies and the blocking archive code: a
//! [`ChannelWriter`] that a blocking archive writer fills and a response body drains, and a
//! [`ChannelReader`] that a request body fills and a blocking archive reader drains. Both go
//! through a bounded channel of [`CHUNK`]-sized pieces, so memory is bounded by the channel.
//!
//! The blocking side does wait for the network here (unlike `fs::download`, which lends its file
//! to the pool one refill at a time): an archive writer or reader cannot be suspended midway.
//! Every such wait is bounded: a writer's send gives up after the stall timeout, and a reader's
//! receive ends when the request body (itself stall-guarded) ends or fails. The transfer cap
//! bounds how many threads can be waiting at once.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::fs::bufpool::BufPool;

/// A body as a channel of chunks; an `Err` item ends it as a failure.
pub type Chunks = mpsc::Receiver<io::Result<Bytes>>;

/// Size of the pieces sent through the channel.
pub(super) const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the two sides.
pub(super) const DEPTH: usize = 8;
/// Buffers a writer's pool keeps: the channel's, the one hyper is writing, the one being filled.
const POOL_KEEP: usize = DEPTH + 2;

/// Writes into a bounded channel in [`CHUNK`]-sized pieces (see the module docs). Once its
/// [`AbortFlag`] is raised every write fails, so that writers whose `Drop` finishes the archive
/// (tar's builder, zip's writer) cannot append a clean end after a failure.
pub(super) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// The chunks' buffers come back here once the body has sent them (see [`BufPool`]).
    pool: BufPool,
    rt: tokio::runtime::Handle,
    stall: Duration,
    aborted: Arc<AtomicBool>,
}

/// Raised by the producer when it fails; see [`ChannelWriter`].
#[derive(Clone)]
pub(super) struct AbortFlag(Arc<AtomicBool>);

impl AbortFlag {
    pub(super) fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl ChannelWriter {
    /// A writer into `tx` whose sends give up after `stall` without room (zero: never). Must be
    /// created on a runtime thread or a blocking-pool thread of that runtime.
    pub(super) fn new(tx: mpsc::Sender<io::Result<Bytes>>, stall: Duration) -> (ChannelWriter, AbortFlag) {
        let flag = Arc::new(AtomicBool::new(false));
        let pool = BufPool::new(POOL_KEEP, CHUNK);
        let w = ChannelWriter {
            tx,
            buf: pool.take(CHUNK),
            pool,
            rt: tokio::runtime::Handle::current(),
            stall,
            aborted: flag.clone(),
        };
        (w, AbortFlag(flag))
    }

    fn send(&self, item: io::Result<Bytes>) -> io::Result<()> {
        let gone = |_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away");
        let send = self.tx.send(item);
        if self.stall.is_zero() {
            return self.rt.block_on(send).map_err(gone);
        }
        match self.rt.block_on(tokio::time::timeout(self.stall, send)) {
            Ok(res) => res.map_err(gone),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the client took nothing for the stall timeout")),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, self.pool.take(CHUNK));
        self.send(Ok(Bytes::from_owner(self.pool.chunk(full, 0))))
    }

    /// Sends what is buffered: the archive is complete.
    pub(super) fn finish(mut self) -> io::Result<()> {
        if self.aborted.load(Ordering::SeqCst) {
            return Err(io::Error::other("archive aborted"));
        }
        self.send_buffered()
    }
}

/// A channel slot kept back for the body's failure, so that a failure always reaches the client
/// however full the channel is. (A `try_send` into a full channel lost it, and the body then
/// ended cleanly after the queued chunks: a cut archive that looked whole.) Dropped unused, it
/// frees the slot; the body ends once it and every sender are gone.
pub(super) struct FailSlot(mpsc::OwnedPermit<io::Result<Bytes>>);

impl FailSlot {
    /// Takes one slot of `tx`'s channel (make the channel one larger than its writer needs).
    /// `None` when the receiver is gone.
    pub(super) async fn reserve(tx: &mpsc::Sender<io::Result<Bytes>>) -> Option<FailSlot> {
        tx.clone().reserve_owned().await.ok().map(FailSlot)
    }

    /// Ends the body as a failure (the client sees a cut transfer), without waiting.
    pub(super) fn fail(self, e: io::Error) {
        self.0.send(Err(e));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.aborted.load(Ordering::SeqCst) {
            return Err(io::Error::other("archive aborted"));
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    /// A no-op: chunks go out when full or at [`ChannelWriter::finish`] (encoders flush often,
    /// and tiny chunks would cost a channel hand-off each).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a request body from a channel (see the module docs). `None` from the channel is the
/// body's clean end; an `Err` item its failure (client gone, stalled).
pub(super) struct ChannelReader {
    rx: Chunks,
    cur: Bytes,
    eof: bool,
}

impl ChannelReader {
    pub(super) fn new(rx: Chunks) -> ChannelReader {
        ChannelReader { rx, cur: Bytes::new(), eof: false }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.cur.is_empty() {
                let n = out.len().min(self.cur.len());
                out[..n].copy_from_slice(&self.cur.split_to(n));
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => self.eof = true,
            }
        }
    }
}

/// Remembers whether its reader ever hit its end: a tar stream that ends without its
/// end-of-archive blocks was cut (the tar crate takes a clean EOF at a header as the end).
pub(super) struct EofWatch<R> {
    inner: R,
    pub(super) hit_eof: bool,
}

impl<R> EofWatch<R> {
    pub(super) fn new(inner: R) -> EofWatch<R> {
        EofWatch { inner, hit_eof: false }
    }
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        if n == 0 && !out.is_empty() {
            self.hit_eof = true;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn x30_x31_writer_chunks_and_reader_reassembles() {
        let (tx, rx) = mpsc::channel(DEPTH);
        let producer = tokio::task::spawn_blocking(move || {
            let (mut w, _flag) = ChannelWriter::new(tx, Duration::from_secs(5));
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes().repeat(100)).unwrap();
            }
            w.finish().unwrap();
        });
        let consumer = tokio::task::spawn_blocking(move || {
            let mut r = EofWatch::new(ChannelReader::new(rx));
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            assert!(r.hit_eof);
            all
        });
        producer.await.unwrap();
        let all = consumer.await.unwrap();
        assert_eq!(all.len(), 400_000);
        assert_eq!(&all[400 * 999..400 * 999 + 4], &999u32.to_le_bytes());
    }

    /// The failure is the last thing the reader gets even when the channel was full of chunks
    /// nobody had read yet.
    #[tokio::test]
    async fn x30_a_failure_reaches_the_reader_through_a_full_channel() {
        let (tx, mut rx) = mpsc::channel(3);
        let slot = FailSlot::reserve(&tx).await.unwrap();
        tx.try_send(Ok(Bytes::from_static(b"a"))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"b"))).unwrap();
        assert!(tx.try_send(Ok(Bytes::from_static(b"c"))).is_err(), "full for the writer");
        drop(tx);
        slot.fail(io::Error::other("shrank"));
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"a");
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"b");
        assert_eq!(rx.recv().await.unwrap().unwrap_err().to_string(), "shrank");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn x30_an_aborted_writer_refuses_writes_and_a_stalled_reader_times_out() {
        let (tx, _rx) = mpsc::channel(1);
        let res = tokio::task::spawn_blocking(move || {
            let (mut w, flag) = ChannelWriter::new(tx, Duration::from_millis(200));
            // The channel holds one chunk; the second send waits for room that never comes.
            let big = vec![0u8; CHUNK];
            w.write_all(&big).unwrap();
            let stalled = w.write_all(&big).unwrap_err();
            flag.raise();
            (stalled.kind(), w.write(b"x").is_err())
        })
        .await
        .unwrap();
        assert_eq!(res, (io::ErrorKind::TimedOut, true));
    }
}
