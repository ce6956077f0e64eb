//! Whether a process of a command is blocked reading its stdin pipe (X13), from `/proc`:
//! the syscall it sleeps in (`/proc/<pid>/syscall`: a `read`-family call), the descriptor that
//! call reads (its first argument) and what that descriptor is (`/proc/<pid>/fd/<n>` names the
//! pipe by inode). `sleep`, a read of a file (never blocks) and a wait on a socket (`poll`, or a
//! `read` of another descriptor) do not count.

use std::os::fd::AsFd;

/// `read`, `readv`, `pread64` on this architecture.
#[cfg(target_arch = "x86_64")]
const READ_CALLS: [i64; 3] = [0, 19, 17];
#[cfg(target_arch = "aarch64")]
const READ_CALLS: [i64; 3] = [63, 65, 67];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const READ_CALLS: [i64; 0] = [];

/// The inode naming a pipe in `/proc/<pid>/fd` links (`pipe:[<inode>]`).
pub fn pipe_inode(fd: impl AsFd) -> Option<u64> {
    nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd())).ok().map(|st| st.st_ino)
}

/// Whether some non-zombie process in process group `pgid` sleeps in a read of the pipe `inode`.
pub fn group_waits_on_pipe(pgid: i32, inode: u64) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else { return false };
    let link = format!("pipe:[{inode}]");
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(pid) = name.parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().unwrap_or("");
        let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
        if pgrp != Some(pgid) || state != "S" {
            continue;
        }
        if blocked_reading(pid, &link) {
            return true;
        }
    }
    false
}

/// Whether `pid` sleeps in a read-family syscall on a descriptor whose link is `link`.
fn blocked_reading(pid: i32, link: &str) -> bool {
    let Ok(sc) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else { return false };
    let Some((nr, fd)) = parse_syscall(&sc) else { return false };
    if !READ_CALLS.contains(&nr) {
        return false;
    }
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|l| l.as_os_str() == link)
}

/// `(syscall number, first argument)` of a `/proc/<pid>/syscall` line; `None` while running.
fn parse_syscall(line: &str) -> Option<(i64, u64)> {
    let mut f = line.split_whitespace();
    let nr = f.next()?.parse::<i64>().ok()?;
    let arg0 = f.next()?;
    let fd = u64::from_str_radix(arg0.trim_start_matches("0x"), 16).ok()?;
    Some((nr, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x13_syscall_lines() {
        assert_eq!(parse_syscall("0 0x0 0x7ffd 0x1 0x0 0x0 0x0 0x7ffd 0x7f12\n"), Some((0, 0)));
        assert_eq!(parse_syscall("7 0x3 0x1 0xffffffff 0 0 0 0x1 0x2"), Some((7, 3)));
        assert_eq!(parse_syscall("running"), None);
        assert_eq!(parse_syscall("-1 0x7ffd 0x1"), Some((-1, 0x7ffd)));
    }
}
