//! Whether a process of a command is blocked reading its stdin (X13): the pipe, or the terminal
//! of a command started with `"tty":true`. From `/proc`, for each sleeping process of the
//! command's process group (or session, for a terminal's command, which leads one):
//!
//! - the syscall it sleeps in and its arguments (`/proc/<pid>/syscall`);
//! - a `read`-family call: the descriptor it reads is its first argument;
//! - `select`/`pselect6`: the `readfds` set, read from the process's memory (`/proc/<pid>/mem`,
//!   at most 128 bytes); `poll`/`ppoll`: the `pollfd` array with `POLLIN` asked (at most 64
//!   entries); `epoll_wait`/`epoll_pwait`/`epoll_pwait2`: the interest list of the epoll
//!   descriptor with `EPOLLIN` (`/proc/<pid>/fdinfo/<epfd>`). This is what an interactive
//!   `python3 -i` (readline's `select`), `bash -i` (`pselect6`) and event loops (node: `epoll`)
//!   sleep in at their prompts;
//! - each such descriptor is compared with the stdin by identity (`st_dev`, `st_ino` of what
//!   `/proc/<pid>/fd/<n>` resolves to), so the terminal reopened by its name (libuv) counts too;
//!   `/dev/tty` (5/0: `getpass`, `sudo`, `read < /dev/tty`) counts when the process's controlling
//!   terminal (`tty_nr` in `/proc/<pid>/stat`) is the command's terminal.
//!
//! `sleep`, a read of a file (never blocks), a wait on a socket or on other descriptors do not
//! count. Memory that cannot be read (no ptrace access) only means that wait is not seen. A
//! hostile process can fake a wait (it only gets itself an `awaiting_input` event), never make
//! execd read more than the bounds above.

use std::os::unix::fs::FileExt;

use super::tty::FileId;

/// What a syscall number waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `read`, `readv`, `pread64`, `preadv`, `preadv2`: the descriptor in argument 0.
    Read,
    /// `select`, `pselect6`: `nfds` in argument 0, `readfds` at argument 1.
    Select,
    /// `poll`, `ppoll`: the `pollfd` array at argument 0, its length in argument 1.
    Poll,
    /// `epoll_wait`, `epoll_pwait`, `epoll_pwait2`: the epoll descriptor in argument 0.
    Epoll,
}

#[cfg(target_arch = "x86_64")]
fn classify(nr: i64) -> Option<Wait> {
    match nr {
        0 | 17 | 19 | 295 | 327 => Some(Wait::Read),
        23 | 270 => Some(Wait::Select),
        7 | 271 => Some(Wait::Poll),
        232 | 281 | 441 => Some(Wait::Epoll),
        _ => None,
    }
}

#[cfg(target_arch = "aarch64")]
fn classify(nr: i64) -> Option<Wait> {
    match nr {
        63 | 65 | 67 | 69 | 286 => Some(Wait::Read),
        72 => Some(Wait::Select),
        73 => Some(Wait::Poll),
        22 | 441 => Some(Wait::Epoll),
        _ => None,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn classify(_nr: i64) -> Option<Wait> {
    None
}

/// Largest `select` set read (FD_SETSIZE bits).
const MAX_FDSET_BYTES: u64 = 128;
/// Largest `pollfd` array read.
const MAX_POLLFDS: u64 = 64;
/// Descriptors of one wait compared with the stdin at most.
const MAX_CANDIDATES: usize = 64;
/// `POLLIN | POLLPRI | POLLRDNORM`.
const POLL_READ: i16 = 0x1 | 0x2 | 0x40;
/// `EPOLLIN | EPOLLPRI | EPOLLRDNORM`.
const EPOLL_READ: u32 = 0x1 | 0x2 | 0x40;

/// Whether some sleeping process whose process group (or, with `session`, session) is `pgid`
/// waits to read `target`.
pub fn group_waits_on(pgid: i32, session: bool, target: FileId) -> bool {
    crate::os::proc::pids().any(|pid| {
        let Some(st) = crate::os::proc::Stat::read(pid) else { return false };
        let ours = st.pgrp() == Some(pgid) || (session && st.session() == Some(pgid));
        ours && st.state() == "S" && waits_on(pid, st.tty_nr(), target)
    })
}

/// Whether `pid` (controlling terminal `tty_nr`) sleeps in a syscall that waits to read `target`.
fn waits_on(pid: i32, tty_nr: u32, target: FileId) -> bool {
    let Ok(sc) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else { return false };
    let Some((nr, args)) = parse_syscall(&sc) else { return false };
    let is_target = |fd: u64| match FileId::of_path(&format!("/proc/{pid}/fd/{fd}")) {
        Some(f) if f.same_file(&target) => true,
        Some(f) => f.is_dev_tty() && target.is_tty_nr(tty_nr),
        None => false,
    };
    let candidates = match classify(nr) {
        None => return false,
        Some(Wait::Read) => vec![args[0]],
        Some(Wait::Select) => select_fds(pid, args[0], args[1]),
        Some(Wait::Poll) => poll_fds(pid, args[0], args[1]),
        Some(Wait::Epoll) => epoll_fds(pid, args[0]),
    };
    candidates.into_iter().take(MAX_CANDIDATES).any(is_target)
}

/// Reads `len` bytes of `pid`'s memory at `addr`.
fn read_mem(pid: i32, addr: u64, len: u64) -> Option<Vec<u8>> {
    if addr == 0 || len == 0 {
        return None;
    }
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

/// The descriptors set in a `select` read set of `nfds` bits at `addr`.
fn select_fds(pid: i32, nfds: u64, addr: u64) -> Vec<u64> {
    let bytes = nfds.div_ceil(8).min(MAX_FDSET_BYTES);
    read_mem(pid, addr, bytes).map(|set| fds_in_set(&set, nfds)).unwrap_or_default()
}

/// Set bits of an `fd_set` (little-endian longs: bit `fd % 8` of byte `fd / 8`), below `nfds`.
fn fds_in_set(set: &[u8], nfds: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, b) in set.iter().enumerate() {
        for bit in 0..8 {
            let fd = (i * 8 + bit) as u64;
            if fd < nfds && b & (1 << bit) != 0 {
                out.push(fd);
            }
        }
    }
    out
}

/// The descriptors of a `pollfd` array (`nfds` entries at `addr`) polled for reading.
fn poll_fds(pid: i32, addr: u64, nfds: u64) -> Vec<u64> {
    let n = nfds.min(MAX_POLLFDS);
    read_mem(pid, addr, n * 8).map(|raw| pollfds_reading(&raw)).unwrap_or_default()
}

/// `struct pollfd { int fd; short events; short revents; }` entries asking for input.
fn pollfds_reading(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .filter_map(|e| {
            let fd = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            let events = i16::from_ne_bytes([e[4], e[5]]);
            (fd >= 0 && events & POLL_READ != 0).then_some(fd as u64)
        })
        .collect()
}

/// The descriptors an epoll instance (`epfd` of `pid`) watches for input.
fn epoll_fds(pid: i32, epfd: u64) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{epfd}")).map(|s| epoll_reading(&s)).unwrap_or_default()
}

/// From an epoll fdinfo: `tfd: <fd> events: <hex> ...` lines with input asked for.
fn epoll_reading(fdinfo: &str) -> Vec<u64> {
    fdinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            if f.next()? != "tfd:" {
                return None;
            }
            let fd = f.next()?.parse::<u64>().ok()?;
            if f.next()? != "events:" {
                return None;
            }
            let events = u32::from_str_radix(f.next()?, 16).ok()?;
            (events & EPOLL_READ != 0).then_some(fd)
        })
        .collect()
}

/// `(syscall number, its six arguments)` of a `/proc/<pid>/syscall` line; `None` while running.
fn parse_syscall(line: &str) -> Option<(i64, [u64; 6])> {
    let mut f = line.split_whitespace();
    let nr = f.next()?.parse::<i64>().ok()?;
    let mut args = [0u64; 6];
    for a in args.iter_mut() {
        *a = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x13_syscall_lines() {
        assert_eq!(parse_syscall("0 0x0 0x7ffd 0x1 0x0 0x0 0x0 0x7ffd 0x7f12\n"), Some((0, [0, 0x7ffd, 1, 0, 0, 0])));
        assert_eq!(
            parse_syscall("7 0x3 0x1 0xffffffff 0 0 0 0x1 0x2").map(|s| s.1[..3].to_vec()),
            Some(vec![3, 1, 0xffffffff])
        );
        assert_eq!(parse_syscall("running"), None);
        assert_eq!(parse_syscall("-1 0x7ffd 0x1"), None);
    }

    #[test]
    fn x13_wait_sets() {
        assert_eq!(fds_in_set(&[0b0000_0001, 0b1000_0000], 16), vec![0, 15]);
        assert_eq!(fds_in_set(&[0b0000_0011], 1), vec![0]);
        let mut raw = Vec::new();
        for (fd, events) in [(0i32, 0x1i16), (4, 0x4), (-1, 0x1), (7, 0x40)] {
            raw.extend_from_slice(&fd.to_ne_bytes());
            raw.extend_from_slice(&events.to_ne_bytes());
            raw.extend_from_slice(&0i16.to_ne_bytes());
        }
        assert_eq!(pollfds_reading(&raw), vec![0, 7]);
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
                    tfd:        0 events:       19 data:                0  pos:0 ino:3 sdev:18\n\
                    tfd:        5 events:        4 data:                5  pos:0 ino:61c sdev:d\n";
        assert_eq!(epoll_reading(info), vec![0]);
    }
}
