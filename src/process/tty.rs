//! Pseudo-terminals: the one place that opens a PTY ([`open_pty`]), used by the `/pty` shells
//! (`crate::pty::shell`) and by commands started with `"tty":true` on `GET /command/ws` (X15,
//! [`super::spawn::StdinMode::Tty`]), plus the window size ([`set_winsize`]), the controlling
//! terminal step of the forked child ([`become_controlling_tty`]) and the command's handle on its
//! terminal ([`TtyControl`]: resize, the `VEOF` character).
#![allow(unsafe_code)]

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Weak};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::PtyMaster;
use tokio::io::unix::AsyncFd;

nix::ioctl_write_ptr_bad!(tiocswinsz, nix::libc::TIOCSWINSZ, nix::libc::winsize);

/// Columns of a new PTY (upstream: 80×24).
pub const DEFAULT_COLS: u16 = 80;
/// Rows of a new PTY.
pub const DEFAULT_ROWS: u16 = 24;
/// Largest number of columns or rows a client may ask for.
pub const MAX_DIM: u16 = 4096;

/// A PTY master registered with the reactor, shared by the output pump and the stdin writer.
pub type Master = Arc<AsyncFd<PtyMaster>>;

/// The identity of an open file (`st_dev`, `st_ino`; `st_rdev` for a device): how X13 recognises
/// the descriptor a process reads (a pipe or a terminal) through `/proc/<pid>/fd/<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// The device number of a device file (a terminal's slave: 136/N), else 0.
    pub rdev: u64,
}

impl FileId {
    fn from_stat(st: nix::sys::stat::FileStat) -> FileId {
        FileId { dev: st.st_dev, ino: st.st_ino, rdev: st.st_rdev }
    }

    /// The identity of an open descriptor.
    pub fn of(fd: RawFd) -> Option<FileId> {
        nix::sys::stat::fstat(fd).ok().map(FileId::from_stat)
    }

    /// The identity of what a path (or a `/proc/<pid>/fd/<n>` link) names.
    pub fn of_path(path: &str) -> Option<FileId> {
        nix::sys::stat::stat(path).ok().map(FileId::from_stat)
    }

    /// The same open file (device and inode).
    pub fn same_file(&self, other: &FileId) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }

    /// `/dev/tty` (5/0): whatever the opening process's controlling terminal is.
    pub fn is_dev_tty(&self) -> bool {
        self.rdev != 0 && (nix::sys::stat::major(self.rdev), nix::sys::stat::minor(self.rdev)) == (5, 0)
    }

    /// Whether this device is the terminal `/proc/<pid>/stat` names as `tty_nr` (major in bits
    /// 8–15, minor in bits 0–7 and 20–31).
    pub fn is_tty_nr(&self, tty_nr: u32) -> bool {
        let (major, minor) = ((tty_nr >> 8) & 0xfff, (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00));
        self.rdev != 0
            && (nix::sys::stat::major(self.rdev), nix::sys::stat::minor(self.rdev)) == (major.into(), minor.into())
    }
}

/// Checks a window size from a client: both between 1 and [`MAX_DIM`].
pub fn check_size(cols: u64, rows: u64) -> Result<(u16, u16), String> {
    let ok = |n: u64| (1..=u64::from(MAX_DIM)).contains(&n);
    if ok(cols) && ok(rows) {
        Ok((cols as u16, rows as u16))
    } else {
        Err(format!("cols, rows: expected 1 to {MAX_DIM} each, got {cols}x{rows}"))
    }
}

/// Opens a new PTY of `cols`×`rows`: the master (non-blocking, close-on-exec) and the slave
/// (close-on-exec, not made anyone's controlling terminal: the child does that itself with
/// [`become_controlling_tty`] after `dup2` onto fds 0–2).
pub fn open_pty(cols: u16, rows: u16) -> io::Result<(PtyMaster, std::fs::File)> {
    // O_CLOEXEC at open: no other concurrently spawned child inherits the master.
    let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&m)?;
    nix::pty::unlockpt(&m)?;
    let name = nix::pty::ptsname_r(&m)?;
    // std opens with O_CLOEXEC; a child gets the slave only as fds 0–2 (dup2).
    let slave = std::fs::OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NOCTTY).open(&name)?;
    set_winsize(m.as_raw_fd(), cols, rows)?;
    let flags = fcntl(m.as_raw_fd(), FcntlArg::F_GETFL)?;
    fcntl(m.as_raw_fd(), FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK))?;
    Ok((m, slave))
}

/// Sets the window size of the terminal behind `fd` (`TIOCSWINSZ`; the foreground process group
/// gets `SIGWINCH`).
pub fn set_winsize(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: `fd` is an open PTY descriptor owned by the caller; `ws` lives across the call and
    // TIOCSWINSZ only reads a `winsize` from the pointer.
    unsafe { tiocswinsz(fd, &ws) }.map(drop).map_err(io::Error::from)
}

/// In the forked child, after its stdin became the slave: a new session whose controlling
/// terminal is fd 0. Only raw, async-signal-safe syscalls (safe to call from `pre_exec`).
pub fn become_controlling_tty() -> io::Result<()> {
    // SAFETY: setsid and ioctl take no pointers (TIOCSCTTY's argument is an integer).
    unsafe {
        if nix::libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Registers a master with the reactor (readable and writable).
pub fn register(m: PtyMaster) -> io::Result<Master> {
    // SAFETY: a PtyMaster owns its descriptor for its whole life and always returns the same one.
    Ok(Arc::new(unsafe { AsyncFd::register(m) }?))
}

/// One non-blocking read of the master; `Ok(0)` also for `EIO`, which a master answers once every
/// slave descriptor is closed (end of output).
pub fn read_master(m: &PtyMaster, buf: &mut [u8]) -> io::Result<usize> {
    let mut m = m;
    match m.read(buf) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => Ok(0),
        r => r,
    }
}

/// A command's handle on its terminal (resize, `eof`). Holds the master weakly: the terminal
/// closes when the command's output and input are done with it, whoever still holds this.
#[derive(Debug, Clone)]
pub struct TtyControl {
    master: Weak<AsyncFd<PtyMaster>>,
}

impl TtyControl {
    pub fn new(master: &Master) -> TtyControl {
        TtyControl { master: Arc::downgrade(master) }
    }

    /// Sets the window size; `NotFound` once the terminal is closed.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let m = self.master.upgrade().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        set_winsize(m.get_ref().as_raw_fd(), cols, rows)
    }
}

/// The terminal's end-of-file character now (`VEOF`, `^D` unless the command changed it).
pub fn eof_char(m: &PtyMaster) -> u8 {
    match nix::sys::termios::tcgetattr(m) {
        Ok(t) => match t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize] {
            0 => 0x04,
            c => c,
        },
        Err(_) => 0x04,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x15_tty_sizes() {
        assert_eq!(check_size(80, 24), Ok((80, 24)));
        assert_eq!(check_size(1, u64::from(MAX_DIM)), Ok((1, MAX_DIM)));
        for (c, r) in [(0, 24), (80, 0), (70000, 24), (80, u64::MAX)] {
            assert!(check_size(c, r).is_err(), "{c}x{r}");
        }
    }

    #[test]
    fn x15_tty_open_sets_the_size() {
        let (m, slave) = open_pty(100, 30).unwrap();
        let mut ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which lives across the call.
        let rc = unsafe { nix::libc::ioctl(slave.as_raw_fd(), nix::libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
        assert_eq!(eof_char(&m), 0x04);
        let id = FileId::of(slave.as_raw_fd()).unwrap();
        assert_eq!(nix::sys::stat::major(id.rdev), 136, "{id:?}");
        assert!(!id.is_dev_tty());
    }

    #[test]
    fn x13_tty_device_numbers() {
        let dev = |major, minor| FileId { dev: 0, ino: 0, rdev: nix::sys::stat::makedev(major, minor) };
        assert!(dev(5, 0).is_dev_tty());
        assert!(!dev(5, 1).is_dev_tty() && !dev(136, 0).is_dev_tty());
        // tty_nr: major in bits 8-15, minor in bits 0-7 and 20-31.
        assert!(dev(136, 3).is_tty_nr((136 << 8) | 3));
        assert!(dev(136, 300).is_tty_nr((136 << 8) | (300 & 0xff) | ((300 >> 8) << 20)));
        assert!(!dev(136, 300).is_tty_nr((136 << 8) | (300 & 0xff)));
        assert!(!dev(136, 3).is_tty_nr(0));
        assert!(!FileId { dev: 1, ino: 2, rdev: 0 }.is_tty_nr(0));
    }
}
