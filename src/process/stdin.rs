//! The write end of a command's stdin pipe (X10, X11) and signal names for X14.
//!
//! Every write goes through an [`InputLog`]: one non-blocking write under the journal's lock,
//! then the bytes that went into the pipe are recorded as stdin (X12), so the journal orders
//! input before the output that answers it. A reader that does not read makes [`StdinPipe::write`]
//! wait for pipe space (never buffer): the caller bounds it with a timeout and learns from the
//! `written` counter how far it got.

use std::io;
use std::os::fd::OwnedFd;
use std::str::FromStr;

use nix::sys::signal::Signal;
use tokio::net::unix::pipe;

use super::journal::InputLog;

/// The write end of a child's stdin pipe (non-blocking, close-on-exec). Dropping it is EOF.
#[derive(Debug)]
pub struct StdinPipe {
    tx: pipe::Sender,
}

/// How a write ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Every byte is in the pipe.
    Done,
    /// No process holds the read end any more (EPIPE): the rest was not written.
    ReaderGone,
}

impl StdinPipe {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<StdinPipe> {
        Ok(StdinPipe { tx: pipe::Sender::from_owned_fd(fd)? })
    }

    /// The pipe's inode (how `/proc/<pid>/fd` names it; X13).
    pub fn inode(&self) -> Option<u64> {
        super::waiting::pipe_inode(&self.tx)
    }

    /// Writes all of `data` without recording it (a session run's `stdin` string, X10: sessions
    /// have no journal), waiting for pipe space as long as it takes. Cancel-safe: the caller
    /// bounds it by dropping the future.
    pub async fn write_unrecorded(&mut self, data: &[u8]) -> io::Result<WriteOutcome> {
        let mut off = 0;
        while off < data.len() {
            self.tx.writable().await?;
            match self.tx.try_write(&data[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(WriteOutcome::ReaderGone),
                Err(e) => return Err(e),
            }
        }
        Ok(WriteOutcome::Done)
    }

    /// Writes all of `data`, recording it through `log`, waiting for pipe space as long as it
    /// takes. `written` grows by every byte that went in, so a caller that drops this future on a
    /// deadline still knows how many did. Cancel-safe in that sense.
    pub async fn write(&mut self, data: &[u8], log: &InputLog, written: &mut u64) -> io::Result<WriteOutcome> {
        let mut off = 0;
        while off < data.len() {
            self.tx.writable().await?;
            let tx = &self.tx;
            match log.write_recorded(&data[off..], |d| tx.try_write(d)) {
                Ok(n) => {
                    off += n;
                    *written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(WriteOutcome::ReaderGone),
                Err(e) => return Err(e),
            }
        }
        Ok(WriteOutcome::Done)
    }
}

/// A signal given as `"SIGINT"`, `"INT"` (any case) or a number (`"2"`); `None` when unknown.
pub fn parse_signal(s: &str) -> Option<Signal> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x14_signal_names() {
        assert_eq!(parse_signal("SIGINT"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("int"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("2"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("sigusr1"), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        for bad in ["", "0", "-1", "SIGNOPE", "NOPE", "999", "SIG"] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
    }
}
