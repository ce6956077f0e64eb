//! Process file descriptors (`pidfd_open(2)`, Linux 5.3): a handle on a process that never
//! points at a recycled pid, readable once the process has exited.

use std::io;
use std::os::fd::OwnedFd;

/// A pidfd for `pid`.
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no such pid: {pid}")))?;
    Ok(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_of_this_process_opens_and_pid_zero_is_refused() {
        assert!(open(std::process::id()).is_ok());
        assert_eq!(open(0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
