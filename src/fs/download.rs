//! Downloads (§7.9, DECISIONS D34): open a file (following symlinks; a directory is refused),
//! read a byte range on a blocking thread into a bounded channel, and build the
//! `Content-Disposition` value with escaped (D60) or RFC 5987-encoded names.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::mpsc;

use super::{path, FsError};

/// Read size per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Chunks read ahead of the network.
const READ_AHEAD: usize = 8;
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

/// Opens `given` (expanded, not made absolute) for reading. Missing: NotFound; a directory:
/// Invalid (400; upstream broke off mid-body).
pub fn open(given: &str) -> Result<Download, FsError> {
    let p = path::expanded(given);
    let file = File::open(&p).map_err(|e| FsError::io("open", &p, e))?;
    let meta = file.metadata().map_err(|e| FsError::io("stat", &p, e))?;
    if meta.is_dir() {
        return Err(FsError::Invalid(format!("path is a directory, not a file: {}", p.display())));
    }
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Download { file, size: meta.len(), modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name, path: p })
}

/// Reads `len` bytes from `offset` on a blocking thread, `CHUNK` at a time, into a bounded
/// channel. The thread stops when the receiver is dropped (client gone) or at the end. A file
/// that shrinks underneath ends the stream with an error (the body is then cut, never padded).
pub fn stream(download: Download, offset: u64, len: u64) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut pool: Vec<BytesMut> = (0..POOL).map(|_| BytesMut::new()).collect();
        let mut slot = 0;
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let want = ((end - pos) as usize).min(CHUNK);
            let buf = &mut pool[slot];
            if buf.capacity() < want && !buf.try_reclaim(want) {
                // Still in flight (or first use): a fresh buffer; the old one is freed when its
                // last chunk is dropped.
                *buf = BytesMut::with_capacity(POOL_BUFFER);
            }
            buf.resize(want, 0);
            let res = match download.file.read_at(&mut buf[..], pos) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while being sent", download.path.display()),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    pos += n as u64;
                    let chunk = buf.split().freeze();
                    if buf.capacity() < CHUNK {
                        slot = (slot + 1) % POOL;
                    }
                    Ok(chunk)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    buf.clear();
                    continue;
                }
                Err(e) => Err(e),
            };
            let failed = res.is_err();
            if tx.blocking_send(res).is_err() || failed {
                return;
            }
        }
    });
    rx
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
