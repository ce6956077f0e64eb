//! `POST /files/replace` (§7.7, C129–C130): replace every non-overlapping occurrence of `old`
//! with `new` in a file of any size. The file is streamed through a fixed-size buffer into a
//! temporary file in the same directory, which then keeps the original's mode and owner and is
//! renamed over it (symlinks are followed: the link's target is replaced). Memory does not grow
//! with the file size, and readers never see a half-rewritten file. A file without a match is not
//! rewritten. (Renaming gives the path a new inode, so other hard links keep the old content.)
//! Only regular files are rewritten: a FIFO or device is refused before it is opened for
//! reading (issue #13 finding 7). The temporary file is anonymous where the filesystem allows,
//! so a crash leaves nothing beside the file ([`super::temp`]).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use super::temp::{Scratch, TempFile};
use super::{path, FsError};

/// Bytes read per step.
const CHUNK: usize = 256 * 1024;

/// Streaming literal replacement: feed chunks, collect output. Matches that span chunk borders
/// are found because the last `old.len() - 1` unmatched bytes are carried to the next step.
pub struct Replacer {
    finder: Regex,
    old_len: usize,
    new: Vec<u8>,
    carry: Vec<u8>,
    /// Replacements made so far.
    pub count: u64,
}

impl Replacer {
    /// A replacer of the non-empty literal `old` by `new`.
    pub fn new(old: &str, new: &str) -> Result<Replacer, FsError> {
        let finder = RegexBuilder::new(&regex::escape(old))
            .unicode(false)
            .size_limit(64 * 1024 * 1024)
            .build()
            .map_err(|e| FsError::Invalid(format!("old content cannot be searched for: {e}")))?;
        Ok(Replacer { finder, old_len: old.len(), new: new.as_bytes().to_vec(), carry: Vec::new(), count: 0 })
    }

    /// Processes `chunk`, appending finished output to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.carry.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.carry);
        let mut last = 0;
        for m in self.finder.find_iter(&buf) {
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(&self.new);
            last = m.end();
            self.count += 1;
        }
        let keep_from = last.max(buf.len().saturating_sub(self.old_len - 1));
        out.extend_from_slice(&buf[last..keep_from]);
        self.carry = buf[keep_from..].to_vec();
    }

    /// Flushes what is left at the end of the input.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.carry);
    }
}

/// Replaces in the file at `given` (expanded, made absolute; empty: 400). Missing file: NotFound
/// (404), checked before the empty-`old` check (400) as upstream; not a regular file: 400.
/// Returns the number of replacements.
pub fn replace_in_file(given: &str, old: &str, new: &str, scratch: &Arc<Scratch>) -> Result<u64, FsError> {
    let abs = path::resolve_checked(given)?;
    std::fs::metadata(&abs).map_err(|e| FsError::io("stat", &abs, e))?;
    if old.is_empty() {
        return Err(FsError::Invalid("old content must not be empty".into()));
    }
    let target = std::fs::canonicalize(&abs).map_err(|e| FsError::io("resolving", &abs, e))?;
    let (mut src, meta) = super::open_regular(&target, || {
        FsError::Failed(format!("error replacing in {given}: is a directory: {}", target.display()))
    })?;
    let dir = target.parent().unwrap_or(std::path::Path::new("/"));
    let tmp = TempFile::beside(dir, 0o600, scratch)?;
    let mut dst = tmp.file()?;
    let mut replacer = Replacer::new(old, new)?;
    let mut inbuf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK * 2);
    let write_err = |e| FsError::io("writing", dir, e);
    loop {
        let n = match src.read(&mut inbuf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FsError::io_no_404("reading", &target, e)),
        };
        replacer.feed(&inbuf[..n], &mut out);
        dst.write_all(&out).map_err(write_err)?;
        out.clear();
    }
    replacer.finish(&mut out);
    dst.write_all(&out).map_err(write_err)?;
    if replacer.count == 0 {
        return Ok(0);
    }
    dst.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| FsError::io("chmod", dir, e))?;
    if let Err(e) = std::os::unix::fs::fchown(dst, Some(meta.uid()), Some(meta.gid())) {
        tracing::warn!(path = %target.display(), error = %e, "replace: could not keep the owner");
    }
    dst.sync_all().map_err(write_err)?;
    tmp.persist(&target)?;
    Ok(replacer.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], old: &str, new: &str, chunk: usize) -> (Vec<u8>, u64) {
        let mut r = Replacer::new(old, new).unwrap();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            r.feed(c, &mut out);
        }
        r.finish(&mut out);
        (out, r.count)
    }

    #[test]
    fn replacement_matches_whole_string_replace_at_every_chunk_size() {
        let cases: &[(&str, &str, &str)] = &[
            ("foo bar foo baz foo", "foo", "qux"),
            ("ababa", "aba", "x"),
            ("aaaa", "aa", "b"),
            ("no match here", "zzz", "y"),
            ("xyxyxy", "xy", ""),
            ("多字节多字节", "字节", "bytes"),
            ("", "a", "b"),
            ("abc", "abcd", "z"),
        ];
        for (input, old, new) in cases {
            let want = input.replace(old, new);
            let want_count = input.matches(old).count() as u64;
            for chunk in 1..=input.len().max(1) + 1 {
                let (out, count) = run(input.as_bytes(), old, new, chunk);
                assert_eq!(String::from_utf8(out).unwrap(), want, "{input:?} {old:?} chunk {chunk}");
                assert_eq!(count, want_count, "{input:?} {old:?} chunk {chunk}");
            }
        }
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        assert_eq!(run(b"a.b a*b", ".", "!", 3), (b"a!b a*b".to_vec(), 1));
        assert_eq!(run(b"(x)(x)", "(x)", "y", 2), (b"yy".to_vec(), 2));
    }
}
