//! [`LineSplitter`]: turns a byte stream into stdout/stderr events that keep their line endings
//! (docs/COMPATIBILITY.md "Output framing"), with the 1 MiB cap of DECISIONS D10.
//!
//! Rules (the newer upstream contract, replacing reference C31–C33): an event is one line **with
//! its terminator**: `\n`, `\r\n` or a lone `\r` (a progress-bar redraw); a blank line is just its
//! terminator (`"\n"`); a partial line is held until its terminator arrives or
//! [`LineSplitter::finish`] is called, which emits it unterminated. So joining a stream's events
//! gives its bytes exactly. A `\r` that ends one push and a `\n` that starts the next become two
//! events (`"x\r"`, `"\n"`): the `\r` is not held back waiting for a byte that may never come, and
//! the joined text is the same. A line longer than `max_line` bytes (terminator not counted) is cut
//! into pieces of at most `max_line` bytes (at a UTF-8 character boundary when one is near); only
//! the last piece carries the terminator. Invalid UTF-8 becomes U+FFFD per event (lossy), so the
//! JSON is never broken.

/// Default longest line before it is split (DECISIONS D10).
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// Room the held-line buffer keeps between lines; a longer line's buffer is freed once emitted.
const KEPT_LINE_BUF: usize = 64 * 1024;

/// Incremental line splitter; memory is bounded by `max_line`.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::new(DEFAULT_MAX_LINE)
    }
}

impl LineSplitter {
    /// A splitter that cuts lines longer than `max_line` bytes (minimum 4).
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max_line: max_line.max(4) }
    }

    /// Feeds `data`; calls `emit` with each completed line (terminator included), in order.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(String)) {
        self.push_lines(data, |l| emit(l.to_owned()));
    }

    /// As [`LineSplitter::push`], lending each line instead of allocating it: the foreground
    /// stream writes lines straight into its output buffer.
    pub fn push_lines(&mut self, data: &[u8], mut emit: impl FnMut(&str)) {
        let mut rest = data;
        while !rest.is_empty() {
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(i) => {
                    // The terminator: `\n`, `\r\n` (when both are in this piece) or a lone `\r`.
                    let end = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { i + 2 } else { i + 1 };
                    if self.buf.is_empty() && i <= self.max_line {
                        // Fast path: the whole line is in this piece.
                        emit(&lossy(&rest[..end]));
                    } else {
                        self.append(&rest[..i], &mut emit);
                        self.buf.extend_from_slice(&rest[i..end]);
                        self.emit_held(&mut emit);
                    }
                    rest = &rest[end..];
                }
                None => {
                    self.append(rest, &mut emit);
                    rest = &[];
                }
            }
        }
    }

    /// Flushes the held partial line, if any (the process ended), without a terminator.
    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        self.finish_lines(|l| emit(l.to_owned()));
    }

    /// As [`LineSplitter::finish`], lending the line.
    pub fn finish_lines(&mut self, mut emit: impl FnMut(&str)) {
        if !self.buf.is_empty() {
            self.emit_held(&mut emit);
        }
    }

    /// Convenience for tests and small inputs: the lines completed by `data`.
    pub fn push_collect(&mut self, data: &[u8]) -> Vec<String> {
        let mut v = Vec::new();
        self.push(data, |l| v.push(l));
        v
    }

    /// Emits the held line and empties the buffer (keeping up to [`KEPT_LINE_BUF`] of room).
    fn emit_held(&mut self, emit: &mut impl FnMut(&str)) {
        emit(&lossy(&self.buf));
        self.buf.clear();
        if self.buf.capacity() > KEPT_LINE_BUF {
            self.buf = Vec::new();
        }
    }

    /// Appends a terminator-free piece to the held line, cutting it at `max_line`.
    fn append(&mut self, mut piece: &[u8], emit: &mut impl FnMut(&str)) {
        while self.buf.len() + piece.len() > self.max_line {
            let room = self.max_line - self.buf.len();
            self.buf.extend_from_slice(&piece[..room]);
            piece = &piece[room..];
            let cut = utf8_cut(&self.buf);
            emit(&lossy(&self.buf[..cut]));
            self.buf.drain(..cut);
        }
        self.buf.extend_from_slice(piece);
    }
}

/// Where to cut `buf` (which is full) so that an incomplete trailing UTF-8 sequence moves to the
/// next piece. Returns `buf.len()` when the end is a boundary or the bytes are not UTF-8 anyway.
fn utf8_cut(buf: &[u8]) -> usize {
    let n = buf.len();
    for back in 1..=3.min(n) {
        let b = buf[n - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return n,
        };
        return if need > back && n - back > 0 { n - back } else { n };
    }
    n
}

/// `from_utf8` first: its ASCII fast path beats the lossy decoder's, which only runs on bad input.
fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        s.finish(|l| out.push(l));
        out
    }

    #[test]
    fn table() {
        let cases: &[(&[&[u8]], &[&str])] = &[
            (&[b"a\n\nb\n\n\nc\n"], &["a\n", "\n", "b\n", "\n", "\n", "c\n"]),
            (&[b"line1\nprog 10%\rprog 20%\rlast\n"], &["line1\n", "prog 10%\r", "prog 20%\r", "last\n"]),
            (&[b"x\r\ny\r\n"], &["x\r\n", "y\r\n"]),
            // A pair split across pushes: two events, same joined text.
            (&[b"x\r", b"\ny\r", b"\n"], &["x\r", "\n", "y\r", "\n"]),
            (&[b"no-newline"], &["no-newline"]),
            (&[b"ab", b"c\nd", b"e"], &["abc\n", "de"]),
            (&[b"\r\r"], &["\r", "\r"]),
            (&[b"\n\r\n"], &["\n", "\r\n"]),
            (&[b"a\r", b"b"], &["a\r", "b"]),
            (&[b""], &[]),
            (&[b"\xff\n"], &["\u{fffd}\n"]),
        ];
        for (chunks, want) in cases {
            assert_eq!(split(chunks, DEFAULT_MAX_LINE), *want, "{chunks:?}");
        }
    }

    /// Whatever the pushes, the events joined are the input (valid UTF-8 input).
    #[test]
    fn joined_events_are_the_input() {
        let input = b"a\n\nb\r\n\r\nprog\rprog2\r\rend\n\nlast";
        for cut in 0..=input.len() {
            for max in [4, 5, 7, DEFAULT_MAX_LINE] {
                let got = split(&[&input[..cut], &input[cut..]], max).concat();
                assert_eq!(got.as_bytes(), input, "cut {cut} max {max}");
            }
        }
    }

    #[test]
    fn long_lines_are_cut_at_char_boundaries() {
        assert_eq!(split(&[b"abcdefghij\n"], 4), ["abcd", "efgh", "ij\n"]);
        assert_eq!(split(&[b"abcd\r\n"], 4), ["abcd\r\n"]);
        assert_eq!(split(&[b"ab", b"cdefg\n"], 4), ["abcd", "efg\n"]);
        // "aaé" is 4 bytes; with max 4 and "aaaé" the é (2 bytes) must not be cut in half.
        assert_eq!(split(&["aaaéb".as_bytes()], 4), ["aaa", "éb"]);
        assert_eq!(split(&["€€".as_bytes()], 4), ["€", "€"]);
    }

    #[test]
    fn split_utf8_across_pushes_survives() {
        let bytes = "héllo\n".as_bytes();
        assert_eq!(split(&[&bytes[..2], &bytes[2..]], DEFAULT_MAX_LINE), ["héllo\n"]);
    }
}
