//! Byte-range math for downloads (§7.9, C115–C117, DECISIONS D34). Pure functions of the `Range`
//! header text and the file size, table-tested below. Also the line ranges of
//! `?offset=N&limit=M` (issue #24 part 3): parsing the two values and [`LineSlicer`], the
//! streaming state machine that picks the wanted lines out of the file's bytes.
//!
//! Rules (upstream's): the header must start with `bytes=`; elements are `a-b`, `a-` or `-n`
//! (suffix); a malformed element makes the whole header malformed; a range starting at or past
//! the end is dropped; an end past the size is clamped; only the first surviving range is served
//! (no multipart/byteranges).

/// What to send for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangePlan {
    /// No `Range` header: the whole file, 200.
    Full,
    /// One range, `start..=end` (inclusive), 206.
    Partial { start: u64, end: u64 },
    /// Every range lies past the end (or is empty): 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

impl RangePlan {
    /// Number of bytes to send for a file of `size` bytes.
    pub fn len(&self, size: u64) -> u64 {
        match *self {
            RangePlan::Full => size,
            RangePlan::Partial { start, end } => end - start + 1,
            RangePlan::Unsatisfiable => 0,
        }
    }

    /// Whether nothing is sent.
    pub fn is_empty(&self, size: u64) -> bool {
        self.len(size) == 0
    }
}

/// A `Range` header that cannot be parsed (416 `UNKNOWN`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid range {header:?}: {reason}")]
pub struct MalformedRange {
    pub header: String,
    pub reason: &'static str,
}

/// Plans the response for an optional `Range` header on a file of `size` bytes.
pub fn plan(header: Option<&str>, size: u64) -> Result<RangePlan, MalformedRange> {
    let Some(header) = header else { return Ok(RangePlan::Full) };
    let bad = |reason| MalformedRange { header: header.to_string(), reason };
    let Some(spec) = header.strip_prefix("bytes=") else { return Err(bad("unit is not bytes")) };
    let mut first: Option<(u64, u64)> = None;
    for element in spec.split(',') {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        let Some((start, end)) = element.split_once('-') else { return Err(bad("no '-' in range")) };
        let (start, end) = (start.trim(), end.trim());
        let range = if start.is_empty() {
            // Suffix: the last n bytes.
            let n = number(end).ok_or_else(|| bad("invalid suffix length"))?;
            (n > 0 && size > 0).then(|| (size - n.min(size), size - 1))
        } else {
            let s = number(start).ok_or_else(|| bad("invalid range start"))?;
            let e = if end.is_empty() {
                None
            } else {
                let e = number(end).ok_or_else(|| bad("invalid range end"))?;
                if e < s {
                    return Err(bad("range end before start"));
                }
                Some(e)
            };
            (s < size).then(|| (s, e.unwrap_or(size - 1).min(size - 1)))
        };
        if first.is_none() {
            first = range;
        }
    }
    Ok(match first {
        Some((start, end)) => RangePlan::Partial { start, end },
        None => RangePlan::Unsatisfiable,
    })
}

/// A non-negative decimal number (digits only, as Go's ParseInt plus the sign check).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The `Content-Range` value of a served range.
pub fn content_range(start: u64, end: u64, size: u64) -> String {
    format!("bytes {start}-{end}/{size}")
}

/// The `Content-Range` value of a 416.
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// Which lines `?offset=&limit=` asks for (upstream execd 1.0.19, `serveLineRange`): from line
/// `first` (1-based), at most `limit` lines (`None`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    pub first: u64,
    pub limit: Option<u64>,
}

/// A line-range query value that is not an integer of at least 1 (400 `INVALID_REQUEST_BODY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query parameter '{name}': {value}")]
pub struct InvalidLineParam {
    pub name: &'static str,
    pub value: String,
}

impl LineRange {
    /// Whether the request asks for lines at all. As upstream (Gin's `Query`), an empty value
    /// counts as absent: `?offset=&limit=` is a plain download.
    pub fn wanted(offset: Option<&str>, limit: Option<&str>) -> bool {
        offset.is_some_and(|v| !v.is_empty()) || limit.is_some_and(|v| !v.is_empty())
    }

    /// Parses the raw values; either may be absent or empty (offset 1, no limit). Each must be a
    /// decimal integer (an optional sign, as Go's `ParseInt`) that fits an `i64` and is at least 1.
    pub fn parse(offset: Option<&str>, limit: Option<&str>) -> Result<LineRange, InvalidLineParam> {
        fn one(name: &'static str, raw: Option<&str>) -> Result<Option<u64>, InvalidLineParam> {
            match raw.filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if n >= 1 => Ok(Some(n as u64)),
                    _ => Err(InvalidLineParam { name, value: v.to_string() }),
                },
            }
        }
        let first = one("offset", offset)?.unwrap_or(1);
        let limit = one("limit", limit)?;
        Ok(LineRange { first, limit })
    }
}

/// Picks the lines of a [`LineRange`] out of a byte stream fed in pieces, with upstream's output
/// rules: a line is what ends at `\n` (or the end of the file, if anything is left); each chosen
/// line is sent without its trailing `\r`s and `\n`, and chosen lines are joined by one `\n`
/// (so the body never ends with a line break). Lines are counted by `\n` only; a lone `\r` in a
/// line stays.
///
/// Memory is bounded whatever the line lengths: bytes pass straight through, and the `\r`s
/// that may turn out to be trailing are held back as a count, never as bytes.
#[derive(Debug, Clone)]
pub struct LineSlicer {
    range: LineRange,
    /// Number of the line being read (1-based), 0 before the first byte.
    line: u64,
    /// Lines sent so far.
    written: u64,
    /// Inside a line (at least one of its bytes consumed).
    in_line: bool,
    /// The current line is one of those asked for.
    chosen: bool,
    /// `\r`s seen at the current end of a chosen line: sent only if more of the line follows.
    pending_cr: u64,
    /// The last wanted line is complete: nothing more will be produced.
    done: bool,
}

impl LineSlicer {
    /// A slicer at the start of the file.
    pub fn new(range: LineRange) -> LineSlicer {
        LineSlicer { range, line: 0, written: 0, in_line: false, chosen: false, pending_cr: 0, done: false }
    }

    /// Whether the last wanted line has been produced (the rest of the file need not be read).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes a prefix of `input`, appending what to send to `out`, and returns its length.
    /// Stops early once `out` holds `max` bytes (it may exceed `max` by one separator byte) or
    /// the slicer is done; the caller feeds the rest again later.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, max: usize) -> usize {
        let mut i = 0;
        while i < input.len() && !self.done && out.len() < max {
            if !self.in_line {
                self.in_line = true;
                self.line += 1;
                self.chosen = self.line >= self.range.first;
                if self.chosen && self.written > 0 {
                    out.push(b'\n');
                }
            }
            let rest = &input[i..];
            let nl = memchr::memchr(b'\n', rest);
            let piece = &rest[..nl.unwrap_or(rest.len())];
            if self.chosen {
                let text = piece.len() - piece.iter().rev().take_while(|&&b| b == b'\r').count();
                if text > 0 {
                    // More of the line follows the held-back `\r`s: they were not trailing.
                    while self.pending_cr > 0 {
                        let room = max.saturating_sub(out.len());
                        if room == 0 {
                            return i;
                        }
                        let n = self.pending_cr.min(room as u64) as usize;
                        out.resize(out.len() + n, b'\r');
                        self.pending_cr -= n as u64;
                    }
                    let take = text.min(max.saturating_sub(out.len()));
                    out.extend_from_slice(&piece[..take]);
                    i += take;
                    if take < text {
                        continue;
                    }
                }
                let crs = piece.len() - text;
                self.pending_cr += crs as u64;
                i += crs;
            } else {
                i += piece.len();
            }
            if nl.is_some() {
                i += 1;
                self.end_line();
            }
        }
        i
    }

    /// The end of the file: an unterminated last line counts (its trailing `\r`s dropped).
    pub fn finish(&mut self) {
        if self.in_line && !self.done {
            self.end_line();
        }
        self.done = true;
    }

    fn end_line(&mut self) {
        self.in_line = false;
        self.pending_cr = 0;
        if self.chosen {
            self.written += 1;
            if self.range.limit.is_some_and(|l| self.written >= l) {
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangePlan::*;

    #[test]
    fn plan_table() {
        let size = 100;
        let cases: &[(Option<&str>, RangePlan)] = &[
            (None, Full),
            (Some("bytes=0-9"), Partial { start: 0, end: 9 }),
            (Some("bytes=5-"), Partial { start: 5, end: 99 }),
            (Some("bytes=-5"), Partial { start: 95, end: 99 }),
            (Some("bytes=-500"), Partial { start: 0, end: 99 }),
            (Some("bytes=90-200"), Partial { start: 90, end: 99 }),
            (Some("bytes=99-99"), Partial { start: 99, end: 99 }),
            (Some("bytes= 1 - 2 "), Partial { start: 1, end: 2 }),
            (Some("bytes=100-"), Unsatisfiable),
            (Some("bytes=150-160"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=200-300,0-1"), Partial { start: 0, end: 1 }),
            (Some("bytes=0-1,5-6"), Partial { start: 0, end: 1 }),
            (Some("bytes=,0-1"), Partial { start: 0, end: 1 }),
            (Some("bytes="), Unsatisfiable),
        ];
        for (header, want) in cases {
            assert_eq!(plan(*header, size), Ok(*want), "header {header:?}");
        }
    }

    #[test]
    fn malformed_table() {
        for header in [
            "items=0-1",
            "bytes 0-1",
            "bytes=abc",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=-",
            "bytes=--5",
            "bytes=-1-2",
            "bytes=+1-2",
            "bytes=0-1,x",
            "bytes=99999999999999999999999-",
        ] {
            assert!(plan(Some(header), 100).is_err(), "header {header:?}");
        }
    }

    #[test]
    fn empty_file_has_no_satisfiable_range() {
        assert_eq!(plan(Some("bytes=0-9"), 0), Ok(Unsatisfiable));
        assert_eq!(plan(Some("bytes=-5"), 0), Ok(Unsatisfiable));
        assert_eq!(plan(None, 0), Ok(Full));
    }

    #[test]
    fn lengths_and_headers() {
        assert_eq!(Partial { start: 0, end: 9 }.len(100), 10);
        assert_eq!(Full.len(100), 100);
        assert_eq!(content_range(0, 9, 100), "bytes 0-9/100");
        assert_eq!(unsatisfied_range(100), "bytes */100");
    }
    /// Runs `data` through a slicer in pieces of `step` bytes with output bound `max`.
    fn slice(data: &[u8], first: u64, limit: Option<u64>, step: usize, max: usize) -> Vec<u8> {
        let mut s = LineSlicer::new(LineRange { first, limit });
        let mut out = Vec::new();
        let mut sent = Vec::new();
        for piece in data.chunks(step.max(1)) {
            let mut at = 0;
            while at < piece.len() && !s.is_done() {
                at += s.feed(&piece[at..], &mut out, max);
                assert!(out.len() <= max + 1, "output bound");
                sent.append(&mut out);
            }
        }
        s.finish();
        sent
    }

    /// Input, first line, limit, expected body.
    type SliceCase = (&'static [u8], u64, Option<u64>, &'static [u8]);

    #[test]
    fn line_slicer_table() {
        let cases: &[SliceCase] = &[
            (b"line1\nline2\nline3\nline4\nline5", 2, Some(2), b"line2\nline3"),
            (b"line1\nline2\nline3", 2, None, b"line2\nline3"),
            (b"line1\nline2\nline3", 1, Some(2), b"line1\nline2"),
            (b"line1\nline2", 100, None, b""),
            (b"line1\nline2\nline3", 2, Some(100), b"line2\nline3"),
            (b"a\r\nb\r\nc\r\n", 1, None, b"a\nb\nc"),
            (b"a\r\nb\r\nc\r\n", 2, Some(1), b"b"),
            (b"a\nb\nlast", 3, None, b"last"),
            (b"a\nb\nlast\r", 3, None, b"last"),
            (b"a\n\n\nb\n", 1, None, b"a\n\n\nb"),
            (b"a\n\n\nb\n", 2, Some(2), b"\n"),
            (b"x\ry\r\r\n", 1, None, b"x\ry"),
            (b"\r\r\n\rz\n", 1, None, b"\n\rz"),
            (b"", 1, None, b""),
            (b"\n", 1, None, b""),
            (b"only", 1, Some(1), b"only"),
            (b"a\nb\n", 3, None, b""),
        ];
        for &(data, first, limit, want) in cases {
            for step in [1, 2, 3, 7, 1 << 20] {
                for max in [1, 2, 5, 1 << 20] {
                    let got = slice(data, first, limit, step, max);
                    assert_eq!(got, want, "data {data:?} first {first} limit {limit:?} step {step} max {max}");
                }
            }
        }
    }

    #[test]
    fn line_slicer_stops_at_the_limit() {
        let mut s = LineSlicer::new(LineRange { first: 2, limit: Some(1) });
        let mut out = Vec::new();
        let used = s.feed(b"a\nb\nc\nd\n", &mut out, 1 << 20);
        assert_eq!((used, &out[..], s.is_done()), (4, &b"b"[..], true));
    }

    #[test]
    fn line_params_table() {
        let ok: &[(Option<&str>, Option<&str>, LineRange)] = &[
            (Some("2"), Some("3"), LineRange { first: 2, limit: Some(3) }),
            (Some("5"), None, LineRange { first: 5, limit: None }),
            (None, Some("4"), LineRange { first: 1, limit: Some(4) }),
            (Some(""), Some("4"), LineRange { first: 1, limit: Some(4) }),
            (Some("+7"), None, LineRange { first: 7, limit: None }),
            (Some("9223372036854775807"), None, LineRange { first: i64::MAX as u64, limit: None }),
        ];
        for &(o, l, want) in ok {
            assert_eq!(LineRange::parse(o, l), Ok(want), "offset {o:?} limit {l:?}");
        }
        for (o, l, name) in [
            (Some("0"), None, "offset"),
            (Some("-1"), None, "offset"),
            (Some("abc"), Some("1"), "offset"),
            (Some(" 1"), None, "offset"),
            (Some("1.5"), None, "offset"),
            (Some("9223372036854775808"), None, "offset"),
            (None, Some("0"), "limit"),
            (Some("1"), Some("-3"), "limit"),
            (None, Some("x"), "limit"),
        ] {
            assert_eq!(LineRange::parse(o, l).map_err(|e| e.name), Err(name), "offset {o:?} limit {l:?}");
        }
        assert!(!LineRange::wanted(None, None));
        assert!(!LineRange::wanted(Some(""), Some("")));
        assert!(LineRange::wanted(Some("1"), None));
        assert!(LineRange::wanted(None, Some("0")));
    }
}
