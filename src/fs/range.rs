//! Byte-range math for downloads (§7.9, C115–C117, DECISIONS D34). Pure functions of the `Range`
//! header text and the file size, table-tested below.
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
}
