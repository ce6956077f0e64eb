//! Recycled byte buffers for streams that hand out many large chunks (the search's JSON, an
//! archive's bytes, the chunks fed to a compressor thread).
//!
//! Why this exists: the static build's allocator (musl's mallocng) gives blocks of this size back
//! to the kernel when they are freed, so every fresh 64 KiB buffer costs a page fault per 4 KiB
//! it touches (and its unmapping a TLB flush). A 512 MiB tar export took 143 000 page faults
//! and ~2× GNU tar's time that way; recycling the buffers removed both (BENCHMARKS.md,
//! "Archives"; a 100k-file search ~10 %).

use std::sync::{Arc, Mutex};

/// A small stack of cleared buffers shared by the producer and whoever drops the chunks.
#[derive(Clone)]
pub struct BufPool {
    inner: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Buffers kept: more than can be in flight at once.
    keep: usize,
    /// Buffers that grew past this are freed instead of kept.
    max_capacity: usize,
}

impl BufPool {
    /// A pool keeping at most `keep` buffers of at most `max_capacity` bytes.
    pub fn new(keep: usize, max_capacity: usize) -> BufPool {
        BufPool { inner: Arc::new(Mutex::new(Vec::with_capacity(keep))), keep, max_capacity }
    }

    /// An empty buffer with room for at least `capacity` bytes, recycled when one is there.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        buf.reserve(capacity);
        buf
    }

    /// Hands `buf` back (cleared) for the next [`BufPool::take`].
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        buf.clear();
        let mut pool = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.keep {
            pool.push(buf);
        }
    }

    /// `buf[start..]` as a chunk that gives `buf` back to this pool when dropped (for
    /// `Bytes::from_owner`).
    pub fn chunk(&self, buf: Vec<u8>, start: usize) -> PooledChunk {
        PooledChunk { buf, start, pool: self.clone() }
    }

    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
}

/// Bytes from a [`BufPool`] buffer; the buffer goes back to the pool when this is dropped.
pub struct PooledChunk {
    buf: Vec<u8>,
    start: usize,
    pool: BufPool,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_chunks_come_back_cleared_and_the_pool_stays_bounded() {
        let pool = BufPool::new(2, 1024);
        let first = pool.take(100);
        let ptr = first.as_ptr();
        let mut filled = first;
        filled.extend_from_slice(b"xhello");
        let chunk = pool.chunk(filled, 1);
        assert_eq!(chunk.as_ref(), b"hello");
        drop(chunk);
        let again = pool.take(10);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 0));
        for _ in 0..4 {
            pool.give(vec![0; 10]);
        }
        assert_eq!(pool.kept(), 2);
        pool.take(0);
        pool.give(vec![0; 2048]);
        assert_eq!(pool.kept(), 1, "a buffer past max_capacity is freed, not kept");
    }
}
