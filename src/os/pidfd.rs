//! Process file descriptors (`pidfd_open(2)`, Linux 5.3): a handle on a process that never
//! points at a recycled pid, readable once the process has exited. Where the kernel (or
//! valgrind 3.19, which the instruction counts of BENCHMARKS.md run under) has no `pidfd_open`,
//! a pipe stands in: a thread waits for the child's exit without reaping it and then closes the
//! pipe's write end, so the read end turns readable and stays so, as a pidfd does.

use std::io;
use std::os::fd::OwnedFd;

/// A descriptor that turns readable once `pid` (a child of this process) has exited; the child
/// is not reaped.
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no such pid: {pid}")))?;
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Err(rustix::io::Errno::NOSYS) => exit_pipe(pid),
        res => Ok(res?),
    }
}

/// The stand-in for a pidfd: a pipe whose write end a waiting thread closes at `pid`'s exit.
fn exit_pipe(pid: rustix::process::Pid) -> io::Result<OwnedFd> {
    use rustix::pipe::PipeFlags;
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    std::thread::Builder::new().name("execd-exit-wait".into()).stack_size(64 * 1024).spawn(move || {
        let flags = rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
        // Returns at the exit (or at once if the pid is no child: ECHILD); EINTR is retried.
        while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(rustix::process::WaitId::Pid(pid), flags) {}
        drop(write);
    })?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `fd` is readable within `ms`.
    fn readable(fd: &OwnedFd, ms: u16) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).expect("poll") == 1
    }

    #[test]
    fn the_stand_in_turns_readable_at_the_exit_and_leaves_the_child_unreaped() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x; exit 7"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let fd = exit_pipe(pid).unwrap();
        assert!(!readable(&fd, 100), "readable while the child runs");
        drop(child.stdin.take());
        assert!(readable(&fd, 10_000), "not readable after the exit");
        assert!(readable(&fd, 0), "readable once, not for good");
        // Not reaped by the stand-in: the exit status is still there to collect.
        assert_eq!(child.wait().unwrap().code(), Some(7));
    }

    #[test]
    fn a_pidfd_of_this_process_opens_and_pid_zero_is_refused() {
        assert!(open(std::process::id()).is_ok());
        assert_eq!(open(0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
