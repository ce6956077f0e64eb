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
/// Or the master of the child's terminal ([`super::spawn::StdinMode::Tty`]): dropping it is not
/// EOF there (the output pump holds the master too); [`StdinPipe::eof_char`] is.
#[derive(Debug)]
pub struct StdinPipe {
    tx: Sink,
}

#[derive(Debug)]
enum Sink {
    Pipe(pipe::Sender),
    /// The master, and the identity of the slave (what the child reads; X13).
    Tty(super::tty::Master, Option<super::tty::FileId>),
}

impl Sink {
    async fn writable(&self) -> io::Result<()> {
        match self {
            Sink::Pipe(tx) => tx.writable().await,
            Sink::Tty(m, _) => m.writable().await.map(drop),
        }
    }

    /// One non-blocking write. A terminal whose slave side is all closed answers `EIO`: the
    /// reader is gone, as `EPIPE` says for a pipe.
    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Pipe(tx) => tx.try_write(data),
            Sink::Tty(m, _) => m
                .try_io(tokio::io::Interest::WRITABLE, |m| {
                    let mut m = m;
                    std::io::Write::write(&mut m, data)
                })
                .map_err(|e| match e.raw_os_error() {
                    Some(nix::libc::EIO) => io::Error::from(io::ErrorKind::BrokenPipe),
                    _ => e,
                }),
        }
    }
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
        Ok(StdinPipe { tx: Sink::Pipe(pipe::Sender::from_owned_fd(fd)?) })
    }

    /// Input through a terminal's master; `slave`: the identity of its slave.
    pub(crate) fn tty(master: super::tty::Master, slave: Option<super::tty::FileId>) -> StdinPipe {
        StdinPipe { tx: Sink::Tty(master, slave) }
    }

    /// What the child reads (the pipe, or the terminal's slave), as `/proc/<pid>/fd` resolves it
    /// (X13).
    pub fn target(&self) -> Option<super::tty::FileId> {
        match &self.tx {
            Sink::Pipe(tx) => super::tty::FileId::of(std::os::fd::AsRawFd::as_raw_fd(tx)),
            Sink::Tty(_, slave) => *slave,
        }
    }

    /// With a terminal: its end-of-file character now (`VEOF`), which is how input ends there.
    pub fn eof_char(&self) -> Option<u8> {
        match &self.tx {
            Sink::Pipe(_) => None,
            Sink::Tty(m, _) => Some(super::tty::eof_char(m.get_ref())),
        }
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
