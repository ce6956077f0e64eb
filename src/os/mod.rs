//! The operating-system surface the domain modules share, written once: pidfds ([`pidfd`]),
//! process scans over `/proc` ([`proc`]) and the account files ([`accounts`]). No HTTP, no domain
//! types: plain values in, plain values (or `std::io::Error`) out.

pub mod accounts;
pub mod pidfd;
pub mod proc;

/// The text of a small kernel file made whole at its first read (a `seq_file`: cgroup files,
/// `/proc/<pid>/stat`), read the cheap way: `open`, one `read` into a stack buffer, `close` (three
/// system calls where `read_to_string` on musl makes nine for `/proc/<pid>/stat`: a second
/// `fcntl` for close-on-exec, an `fstat` for a size of 0, then reads into a buffer grown from 32
/// bytes). A file that fills the buffer is read whole as usual.
pub fn read_small(path: &std::path::Path) -> Option<String> {
    let fd = rustix::fs::open(path, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC, 0.into()).ok()?;
    let mut buf = [0u8; SMALL];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    if let Some(text) = small_text(&buf, n) {
        return Some(text);
    }
    drop(fd);
    std::fs::read_to_string(path).ok()
}

/// The buffer [`read_small`] reads into.
pub const SMALL: usize = 1024;

/// `buf[..n]` as text when the read was short, i.e. all of a `seq_file` (see [`read_small`]);
/// `None` when it filled the buffer (read the file whole instead) or is not UTF-8.
pub fn small_text(buf: &[u8], n: usize) -> Option<String> {
    (n < buf.len()).then(|| String::from_utf8(buf[..n].to_vec()).ok()).flatten()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): state written in the same boot survived
/// at most a process restart, so what was in the page cache then is still there. Read once (a
/// boot does not change under a running process; it was read per command and per tus chunk).
pub fn boot_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string()))
        .clone()
}

#[cfg(test)]
mod tests {
    /// A short read is the whole of a small kernel file; a file that fills the buffer is read
    /// whole the usual way.
    #[test]
    fn read_small_reads_kernel_files_in_one_go_and_larger_files_whole() {
        let stat = super::read_small(std::path::Path::new("/proc/self/stat")).unwrap();
        assert!(stat.starts_with(&format!("{} (", std::process::id())), "{stat}");
        assert!(stat.ends_with('\n'));
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big");
        let text = "x".repeat(3 * super::SMALL);
        std::fs::write(&big, &text).unwrap();
        assert_eq!(super::read_small(&big).as_deref(), Some(text.as_str()));
        assert_eq!(super::small_text(b"abc", 3), None, "a full buffer is not all of a file");
        assert_eq!(super::small_text(b"abc", 2).as_deref(), Some("ab"));
    }
}
