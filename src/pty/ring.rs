//! [`ReplayRing`]: the last 1 MiB (by default) of a PTY session's output, addressed by absolute
//! byte offsets over everything the shell ever wrote (reference §11.2 step 7).

use std::collections::VecDeque;

/// Default capacity of a session's replay ring.
pub const REPLAY_CAPACITY: usize = 1024 * 1024;

/// A bounded byte ring with a monotonic total. Memory never exceeds the capacity.
#[derive(Debug)]
pub struct ReplayRing {
    buf: VecDeque<u8>,
    cap: usize,
    /// Bytes ever appended; the offset one past the newest byte.
    total: u64,
}

impl ReplayRing {
    /// An empty ring holding at most `cap` bytes.
    pub fn new(cap: usize) -> ReplayRing {
        ReplayRing { buf: VecDeque::new(), cap, total: 0 }
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let data = if data.len() > self.cap { &data[data.len() - self.cap..] } else { data };
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    /// Total bytes ever appended (the `output_offset` of `GET /pty/{id}`).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Offset of the oldest retained byte.
    pub fn oldest(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    /// The retained bytes from `since` on, with the offset of the first one. `since` older than
    /// the oldest retained byte is clamped to it; `since` at or past the total gives nothing.
    pub fn snapshot(&self, since: u64) -> (u64, Vec<u8>) {
        if since >= self.total {
            return (self.total, Vec::new());
        }
        let start = since.max(self.oldest());
        let skip = (start - self.oldest()) as usize;
        (start, self.buf.range(skip..).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_absolute_and_clamped() {
        let mut r = ReplayRing::new(8);
        r.push(b"hello");
        assert_eq!(r.snapshot(0), (0, b"hello".to_vec()));
        assert_eq!(r.snapshot(3), (3, b"lo".to_vec()));
        r.push(b" world");
        assert_eq!(r.total(), 11);
        assert_eq!(r.oldest(), 3);
        assert_eq!(r.snapshot(0), (3, b"lo world".to_vec()));
        assert_eq!(r.snapshot(9), (9, b"ld".to_vec()));
        assert_eq!(r.snapshot(11), (11, Vec::new()));
        assert_eq!(r.snapshot(50), (11, Vec::new()));
    }

    #[test]
    fn a_chunk_larger_than_the_ring_keeps_its_tail() {
        let mut r = ReplayRing::new(4);
        r.push(b"abcdefgh");
        assert_eq!(r.snapshot(0), (4, b"efgh".to_vec()));
        assert_eq!(r.total(), 8);
    }
}
