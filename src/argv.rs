//! Hiding secret flag values from `/proc/<pid>/cmdline` (issue #13 finding 3).
//!
//! Any uid in the sandbox can read another process's `/proc/<pid>/cmdline`: that is the memory the
//! kernel set up for `argv`, from `arg_start` to `arg_end` (`/proc/self/stat` fields 48 and 49).
//! [`overwrite`] rewrites chosen bytes of that memory in place with `*`, as `setproctitle` does, so
//! a token given as `--access-token=…` is readable only between exec and the start of `main`.
//! The environment (`/proc/<pid>/environ`) needs no such treatment: only the same uid can read it.
#![allow(unsafe_code)]

use std::io;
use std::ops::Range;

/// The bounds of this process's argv area, from `/proc/self/stat`.
fn arg_area() -> io::Result<(usize, usize)> {
    let stat = crate::os::proc::Stat::read_self()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cannot read /proc/self/stat"))?;
    // arg_start and arg_end are fields 48 and 49.
    let field = |n: usize| -> io::Result<usize> {
        stat.num(n)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no field {n} in /proc/self/stat")))
    };
    Ok((field(48)?, field(49)?))
}

/// Overwrites, in this process's argv memory, the byte ranges `spans` of the arguments after the
/// program name (`(argument index, range)`, as [`crate::config::secret_arg_spans`] gives them)
/// with `*`. `args` are those arguments as `main` received them; the argv area must still hold
/// exactly them (it is checked against `/proc/self/cmdline` first). Returns how many bytes were
/// overwritten. Call before any other thread starts.
pub fn overwrite(args: &[String], spans: &[(usize, Range<usize>)]) -> io::Result<usize> {
    if spans.is_empty() {
        return Ok(0);
    }
    let cmdline = std::fs::read("/proc/self/cmdline")?;
    let (start, end) = arg_area()?;
    // argv[0], then `args`, each NUL-terminated.
    let Some(first_nul) = cmdline.iter().position(|&b| b == 0) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "argv area has no NUL"));
    };
    let mut expected = cmdline[..=first_nul].to_vec();
    for a in args {
        expected.extend_from_slice(a.as_bytes());
        expected.push(0);
    }
    if cmdline != expected || end.checked_sub(start) != Some(expected.len()) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "argv area does not hold the arguments main received"));
    }
    let mut offsets = Vec::with_capacity(args.len());
    let mut off = first_nul + 1;
    for a in args {
        offsets.push(off);
        off += a.len() + 1;
    }
    let mut written = 0;
    for (i, range) in spans {
        let (Some(&base), Some(arg)) = (offsets.get(*i), args.get(*i)) else { continue };
        if range.end > arg.len() || range.is_empty() {
            continue;
        }
        let at = start + base + range.start;
        // SAFETY: [arg_start, arg_end) is this process's own argv area, mapped readable and
        // writable by the kernel at exec for the life of the process. We checked above that its
        // length and content are exactly argv[0] plus `args`, so `at .. at + range.len()` lies
        // inside it (inside argument `i`, never touching a NUL). No Rust reference points into
        // this memory (std copies arguments out of argv when asked), and no other thread runs yet.
        unsafe { std::ptr::write_bytes(at as *mut u8, b'*', range.len()) };
        written += range.len();
    }
    Ok(written)
}
