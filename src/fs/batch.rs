//! Double-buffered batch writing, shared by the uploads (multipart and raw, [`super::upload`];
//! resumable, [`super::tus`]). Network chunks are copied into a batch buffer; each full batch is
//! written by one short job on the blocking pool while the next one fills, so no thread waits for
//! the client and the client waits for at most one batch. Copying (instead of passing the
//! network's `Bytes` on) lets hyper reuse its read buffer at once, and the two buffers are reused
//! for the whole request: no fresh, page-faulting allocation per batch (with musl's allocator that
//! was 40% of an upload's CPU time). Between requests the buffers wait in a small [`pool`] for a
//! moment, so a tus upload's next `PATCH` starts with warm buffers too.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::FsError;

/// Bytes per batch: small enough to stay in the CPU cache between the copy in and the write out
/// (1 MiB batches made the kernel's copy into the page cache several times slower: a 1 GiB tus
/// upload in 8 MiB PATCHes took 2–4× as long as the multipart upload; measured while each chunk
/// was still held across the wait, which later turned out to slow that copy by itself, see
/// [`Batcher::push`]). A batch goes out once it holds at least this much.
pub const BATCH: usize = 256 * 1024;

/// How far past [`BATCH`] a batch may grow to take a chunk whole: hyper's largest read (its
/// default `max_buf_size`, 8 KiB + 100 × 4 KiB) with room to spare. So an upload holds two
/// buffers of at most 768 KiB (what is touched of them: about 650 KiB each), and `--max-transfers`
/// uploads at once at most that many pairs.
pub const HEADROOM: usize = 512 * 1024;

/// Where batches go: one blocking write per batch, in order.
pub trait BatchSink: Send + 'static {
    /// Writes one whole batch (on the blocking pool).
    fn write_batch(&mut self, batch: &[u8]) -> Result<(), FsError>;
}

/// A batch in flight: gives the sink and the emptied buffer back with the write's result.
type InFlight<S> = JoinHandle<(S, BytesMut, Result<(), FsError>)>;

/// Writes a byte stream to a [`BatchSink`] in [`BATCH`]-sized writes, one in flight at a time.
/// After a failed write nothing more is written (no batch lands after a gap).
pub struct Batcher<S: BatchSink> {
    /// The sink, while no write is in flight.
    sink: Option<S>,
    in_flight: Option<InFlight<S>>,
    /// The batch being filled.
    buf: BytesMut,
    /// The other buffer, while no write is in flight.
    spare: Option<BytesMut>,
    /// A write failed: later pushes are refused.
    failed: bool,
}

impl<S: BatchSink> Batcher<S> {
    pub fn new(sink: S) -> Batcher<S> {
        Batcher { sink: Some(sink), in_flight: None, buf: pool::take(), spare: None, failed: false }
    }

    /// Queues `data`; each batch it fills is handed to the blocking pool (waiting only for the
    /// previous batch's write). A failed earlier write surfaces here.
    ///
    /// `data` is copied whole and dropped before any wait: while a network chunk is alive, hyper
    /// cannot reuse the read buffer it was split from and reads the next one into a fresh
    /// allocation, which musl's allocator maps and unmaps (page faults per 4 KiB, and a TLB
    /// flush on every core, each a VM exit here). A batch so grows past [`BATCH`] by at most
    /// [`HEADROOM`]; a larger chunk is copied a batch at a time as before.
    pub async fn push(&mut self, data: Bytes) -> Result<(), FsError> {
        if self.failed {
            return Err(FsError::Internal("an earlier write of this upload failed".into()));
        }
        if data.len() <= HEADROOM {
            self.buf.extend_from_slice(&data);
            drop(data);
            if self.buf.len() >= BATCH {
                self.send_batch().await?;
            }
            return Ok(());
        }
        let mut rest: &[u8] = &data;
        while !rest.is_empty() {
            let n = (BATCH - self.buf.len().min(BATCH)).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() >= BATCH {
                self.send_batch().await?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered and waits for every write: the sink back (`None` only when a
    /// write job panicked) with the first error, if any.
    pub async fn finish(mut self) -> (Option<S>, Result<(), FsError>) {
        let res = match self.send_batch().await {
            Ok(()) => self.settle().await,
            Err(e) => Err(e),
        };
        (self.sink.take(), res)
    }

    /// Waits for the write in flight, if any, and takes the sink and the spare buffer back.
    async fn settle(&mut self) -> Result<(), FsError> {
        let Some(task) = self.in_flight.take() else { return Ok(()) };
        let (sink, mut batch, res) = task.await.map_err(|e| {
            self.failed = true;
            FsError::Internal(format!("upload write job failed: {e}"))
        })?;
        self.sink = Some(sink);
        if let Err(e) = res {
            self.failed = true;
            self.buf.clear();
            return Err(e);
        }
        batch.clear();
        self.spare = Some(batch);
        Ok(())
    }

    /// Hands the current batch to the blocking pool and goes on with the other buffer.
    async fn send_batch(&mut self) -> Result<(), FsError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let Some(mut sink) = self.sink.take() else {
            return Err(FsError::Internal("upload writer lost its file".into()));
        };
        let spare = self.spare.take().unwrap_or_else(pool::take);
        let batch = std::mem::replace(&mut self.buf, spare);
        self.in_flight = Some(super::identity::spawn_blocking(move || {
            let res = sink.write_batch(&batch);
            (sink, batch, res)
        }));
        Ok(())
    }
}

impl<S: BatchSink> Drop for Batcher<S> {
    /// The buffers go back to the pool (one in flight, if any, is freed by its job).
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.buf));
        if let Some(spare) = self.spare.take() {
            pool::give(spare);
        }
    }
}

/// Batch buffers kept between requests: a tus upload sends a `PATCH` per chunk (8 MiB in the
/// benchmark), and two fresh buffers per request were about 1.5 MiB of page faults per 8 MiB
/// moved, mapped and unmapped by musl's allocator each time (`strace`: 2 of the ~7 `mmap`s per
/// `PATCH`). At most [`pool::KEEP`] buffers are kept, and only while uploads keep coming: a
/// trimmer frees them all once none was used for [`pool::IDLE`], so idle memory is not held.
mod pool {
    use super::*;

    /// Buffers kept at most (two uploads' pairs, 1.5 MiB each).
    pub const KEEP: usize = 4;
    /// Kept buffers are freed once none was taken or given for this long.
    pub const IDLE: Duration = Duration::from_secs(2);

    static POOL: Pool = Pool::new(IDLE);

    /// A kept buffer, else a new one.
    pub fn take() -> BytesMut {
        POOL.take()
    }

    /// Keeps `buf` (emptied) if there is room and a runtime to trim the pool later.
    pub fn give(buf: BytesMut) {
        POOL.give(buf)
    }

    pub struct Pool {
        inner: Mutex<Inner>,
        idle: Duration,
    }

    struct Inner {
        bufs: Vec<BytesMut>,
        last_use: Option<Instant>,
        /// A trimmer task is running.
        trimming: bool,
    }

    impl Pool {
        pub const fn new(idle: Duration) -> Pool {
            Pool { inner: Mutex::new(Inner { bufs: Vec::new(), last_use: None, trimming: false }), idle }
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn take(&self) -> BytesMut {
            let mut p = self.lock();
            p.last_use = Some(Instant::now());
            p.bufs.pop().unwrap_or_else(|| BytesMut::with_capacity(BATCH + HEADROOM))
        }

        pub fn give(&'static self, mut buf: BytesMut) {
            if buf.capacity() < BATCH + HEADROOM {
                return;
            }
            let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
            buf.clear();
            let mut p = self.lock();
            if p.bufs.len() >= KEEP {
                return;
            }
            p.bufs.push(buf);
            p.last_use = Some(Instant::now());
            if !p.trimming {
                p.trimming = true;
                rt.spawn(self.trim());
            }
        }

        /// Frees the kept buffers once none was used for `idle`.
        async fn trim(&'static self) {
            loop {
                tokio::time::sleep(self.idle).await;
                let mut p = self.lock();
                if p.last_use.is_none_or(|t| t.elapsed() >= self.idle) {
                    p.bufs = Vec::new();
                    p.trimming = false;
                    drop(p);
                    // The buffers just freed wait in the allocator's cache: free them there too.
                    crate::alloc::arm_trimmer();
                    return;
                }
            }
        }

        /// Buffers kept now (tests).
        #[cfg(test)]
        pub fn kept(&self) -> usize {
            self.lock().bufs.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records batch sizes and bytes; fails the write that would pass `fail_after` bytes.
    struct Recorder {
        sizes: Vec<usize>,
        bytes: Vec<u8>,
        fail_after: usize,
    }

    impl BatchSink for Recorder {
        fn write_batch(&mut self, batch: &[u8]) -> Result<(), FsError> {
            if self.bytes.len() + batch.len() > self.fail_after {
                return Err(FsError::Internal("disk full".into()));
            }
            self.sizes.push(batch.len());
            self.bytes.extend_from_slice(batch);
            Ok(())
        }
    }

    fn recorder(fail_after: usize) -> Recorder {
        Recorder { sizes: Vec::new(), bytes: Vec::new(), fail_after }
    }

    #[tokio::test]
    async fn odd_pieces_land_in_order_in_whole_batches() {
        let data: Vec<u8> = (0..BATCH * 3 + 777).map(|i| (i * 31 % 251) as u8).collect();
        let mut b = Batcher::new(recorder(usize::MAX));
        for piece in data.chunks(100_003) {
            b.push(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let (sink, res) = b.finish().await;
        res.unwrap();
        let sink = sink.unwrap();
        // Each batch ends with a whole piece: at least BATCH, less than BATCH plus a piece.
        let (last, full) = sink.sizes.split_last().unwrap();
        assert!(full.iter().all(|&n| (BATCH..BATCH + 100_003).contains(&n)), "{:?}", sink.sizes);
        assert!(*last > 0 && *last < BATCH + 100_003);
        assert!(sink.bytes == data);
    }

    /// A chunk larger than the headroom goes a batch at a time, in order.
    #[tokio::test]
    async fn a_chunk_past_the_headroom_is_cut_into_batches() {
        let data: Vec<u8> = (0..HEADROOM + BATCH + 5).map(|i| (i * 7 % 253) as u8).collect();
        let mut b = Batcher::new(recorder(usize::MAX));
        b.push(Bytes::copy_from_slice(&data[..10])).await.unwrap();
        b.push(Bytes::copy_from_slice(&data[10..])).await.unwrap();
        let (sink, res) = b.finish().await;
        res.unwrap();
        let sink = sink.unwrap();
        assert_eq!(sink.sizes, [BATCH, BATCH, BATCH, 5]);
        assert!(sink.bytes == data);
    }

    /// Holds each batch until the test lets it through (at most 10 s, so a failing test ends).
    struct Gated(std::sync::mpsc::Receiver<()>);

    impl BatchSink for Gated {
        fn write_batch(&mut self, _batch: &[u8]) -> Result<(), FsError> {
            let _ = self.0.recv_timeout(std::time::Duration::from_secs(10));
            Ok(())
        }
    }

    /// Sets a flag when the chunk's last reference goes.
    struct Owner(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Owner {
        fn drop(&mut self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The network chunk is gone before `push` waits for the write in flight (so hyper can read
    /// the next one into the same buffer).
    #[tokio::test]
    async fn a_chunk_is_dropped_before_waiting_for_the_write_in_flight() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (gate, rx) = std::sync::mpsc::channel();
        let mut b = Batcher::new(Gated(rx));
        // The first full batch goes out and is held in the sink.
        b.push(Bytes::from(vec![1u8; BATCH])).await.unwrap();
        let dropped = std::sync::Arc::new(AtomicBool::new(false));
        let chunk = Bytes::from_owner(Owner(vec![2u8; BATCH], dropped.clone()));
        let mut push = Box::pin(b.push(chunk));
        // The second batch is full: push waits for the first write.
        assert!(futures_util::poll!(&mut push).is_pending());
        let dropped_while_waiting = dropped.load(Ordering::SeqCst);
        gate.send(()).unwrap();
        gate.send(()).unwrap();
        push.await.unwrap();
        let (_, res) = b.finish().await;
        res.unwrap();
        assert!(dropped_while_waiting, "the chunk was kept while waiting for the write");
    }

    #[tokio::test]
    async fn nothing_is_written_after_a_failed_batch() {
        let mut b = Batcher::new(recorder(BATCH));
        assert!(b.push(Bytes::from(vec![7u8; BATCH])).await.is_ok());
        assert!(
            b.push(Bytes::from(vec![7u8; BATCH])).await.is_ok(),
            "the second batch is handed over once the first is written"
        );
        assert!(b.push(Bytes::from(vec![7u8; BATCH])).await.is_err(), "the failure of the second shows on the third");
        assert!(b.push(Bytes::from_static(b"more")).await.is_err());
        let (sink, res) = b.finish().await;
        assert!(res.is_ok(), "the failure was already reported");
        assert_eq!(sink.unwrap().sizes, [BATCH]);
    }

    /// Buffers come back to the pool, are handed out again (the same allocation, no new one),
    /// never more than [`pool::KEEP`], and are all freed once the pool was idle for a while.
    #[tokio::test]
    async fn pooled_buffers_are_reused_and_freed_when_idle() {
        let pool: &'static pool::Pool = Box::leak(Box::new(pool::Pool::new(Duration::from_millis(100))));
        let a = pool.take();
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.kept(), 1);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "the kept buffer is handed out again");
        assert!(b.capacity() >= BATCH + HEADROOM);
        pool.give(b);
        for _ in 0..pool::KEEP + 2 {
            pool.give(BytesMut::with_capacity(BATCH + HEADROOM));
        }
        assert_eq!(pool.kept(), pool::KEEP, "no more than KEEP are kept");
        pool.give(BytesMut::with_capacity(16));
        assert_eq!(pool.kept(), pool::KEEP, "a small buffer is not kept");
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.kept() > 0 {
            assert!(Instant::now() < deadline, "kept buffers were not freed while idle");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
