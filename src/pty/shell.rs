//! Starting and controlling a PTY session's shell (reference §11.2 step 6): PTY mode (a new
//! pseudo-terminal that becomes the shell's controlling terminal) and pipe mode (three pipes).
//!
//! The PTY itself comes from [`crate::process::tty::open_pty`] (shared with commands started with
//! `"tty":true`, which go through `process::spawn`). In both modes the shell leads a new
//! **session** (and so its own process group), which lets [`ShellProc::kill_all`] find every
//! process the shell started, even jobs that interactive bash moved to other process groups.
//!
//! The leader is watched through a pidfd and reaped only by [`ShellProc::reap`]; every signal and
//! the reap happen under one lock, so a recycled pid is never signalled (DECISIONS D14).
//!
//! Where execd places commands in cgroups (X20), the shell starts in a leaf of its own too, so
//! that closing the session also kills what left the shell's session (`setsid`, daemons).
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::pty::PtyMaster;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::process::tty::{set_winsize, DEFAULT_COLS, DEFAULT_ROWS};

/// How the shell's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One pseudo-terminal for stdin, stdout and stderr; the shell is interactive.
    Pty,
    /// Three pipes; stdout and stderr stay apart; bash is non-interactive.
    Pipe,
}

impl Mode {
    /// The wire name (`connected.mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pty => "pty",
            Mode::Pipe => "pipe",
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ShellSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub mode: Mode,
}

/// The shell's input: the PTY master or the stdin pipe.
pub enum StdinSink {
    Pty(Arc<AsyncFd<PtyMaster>>),
    Pipe(pipe::Sender),
}

impl StdinSink {
    /// Writes all of `data` (waits while the terminal or pipe is full).
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            StdinSink::Pipe(p) => p.write_all(data).await,
            StdinSink::Pty(m) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let mut guard = m.writable().await?;
                    match guard.try_io(|fd| fd.get_ref().write(rest)) {
                        Ok(Ok(n)) => rest = &rest[n..],
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => {}
                    }
                }
                Ok(())
            }
        }
    }
}

/// One of the shell's outputs: the PTY master (merged output) or a pipe.
pub enum OutputSource {
    Pty(Arc<AsyncFd<PtyMaster>>),
    Pipe(pipe::Receiver),
}

impl OutputSource {
    /// Reads what is available; `Ok(0)` is end of output. A PTY master answers `EIO` once every
    /// slave descriptor is closed: that is end of output too.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            OutputSource::Pipe(p) => p.read(buf).await,
            OutputSource::Pty(m) => loop {
                let mut guard = m.readable().await?;
                match guard.try_io(|fd| fd.get_ref().read(buf)) {
                    Ok(Ok(n)) => return Ok(n),
                    Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => {}
                }
            },
        }
    }
}

/// A started shell: stdin, stdout and (pipe mode) stderr.
pub struct ShellIo {
    pub stdin: StdinSink,
    pub stdout: OutputSource,
    pub stderr: Option<OutputSource>,
}

/// The running shell process (leader of its own session), not reaped until [`ShellProc::reap`].
pub struct ShellProc {
    pid: Pid,
    mode: Mode,
    pidfd: AsyncFd<OwnedFd>,
    master: Option<Arc<AsyncFd<PtyMaster>>>,
    /// `Some(exit code)` once reaped. Signals are sent only while this is `None`, under the lock.
    reaped: Mutex<Option<i32>>,
    /// The shell's cgroup leaf (X20); `None`: its session only. Dropped with the process, which
    /// removes the directory or hands it to the janitor.
    leaf: Option<crate::cgroup::Leaf>,
}

impl ShellProc {
    /// The shell's pid (= its session id and process group id).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// How the shell's streams are connected.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Resolves when the shell exited (it stays unreaped until [`ShellProc::reap`]).
    pub async fn exited(&self) {
        // Level-triggered: a pidfd stays readable once the process exited.
        if let Ok(guard) = self.pidfd.readable().await {
            drop(guard);
        }
    }

    /// Sends `sig` to the shell's process group and, in PTY mode, also to the terminal's
    /// foreground process group when that differs (interactive bash runs each job in its own
    /// group, so this is what makes `SIGINT` interrupt a running `sleep`, as Ctrl-C would).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if reaped.is_some() {
            return Ok(());
        }
        if let Some(m) = &self.master {
            if let Ok(fg) = nix::unistd::tcgetpgrp(m.get_ref()) {
                if fg != self.pid && fg.as_raw() > 1 {
                    let _ = killpg(fg, sig);
                }
            }
        }
        killpg(self.pid, sig).map_err(io::Error::from)
    }

    /// SIGKILLs the shell's process group, every other process of its session and every process
    /// of its cgroup leaf (which also holds what called `setsid`).
    pub fn kill_all(&self) {
        // The leaf holds no pid numbers of its own: its members are killed even once the shell
        // itself was reaped (a daemon the shell left behind).
        if let Some(leaf) = &self.leaf {
            leaf.kill_round();
        }
        // The lock keeps the leader unreaped, so the session id still names our session.
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if reaped.is_some() {
            return;
        }
        let _ = killpg(self.pid, Signal::SIGKILL);
        for pid in session_members(self.pid.as_raw()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Sets the terminal size (`TIOCSWINSZ`); a no-op in pipe mode or when either is 0.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        match &self.master {
            Some(m) if cols > 0 && rows > 0 => set_winsize(m.get_ref().as_raw_fd(), cols, rows),
            _ => Ok(()),
        }
    }

    /// Reaps the exited shell and returns its exit code (-1 when killed by a signal). Call after
    /// [`ShellProc::exited`]; idempotent.
    pub fn reap(&self) -> i32 {
        let mut reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(code) = *reaped {
            return code;
        }
        let code = loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, c)) => break c,
                Ok(WaitStatus::Signaled(..)) => break -1,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(pid = self.pid.as_raw(), error = %e, "pty shell: waitpid failed");
                    break -1;
                }
            }
        };
        *reaped = Some(code);
        code
    }
}

/// Pids of every process whose session id is `sid` (from `/proc/<pid>/stat`).
fn session_members(sid: i32) -> Vec<i32> {
    crate::os::proc::pids()
        .filter(|&pid| crate::os::proc::Stat::read(pid).and_then(|s| s.session()) == Some(sid))
        .collect()
}

/// The shell's cgroup leaf and its `cgroup.procs` descriptors. Placement is best effort (no
/// limits to enforce): without a leaf the session is the unit.
fn shell_leaf() -> (Option<crate::cgroup::Leaf>, Vec<OwnedFd>) {
    let leaf = crate::cgroup::new_leaf(&crate::cgroup::Limits::default()).ok().flatten();
    match leaf.as_ref().map(|l| l.procs_files()) {
        Some(Ok(fds)) => (leaf, fds),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "pty shell: cannot open its cgroup leaf; using its session only");
            (leaf, Vec::new())
        }
        None => (leaf, Vec::new()),
    }
}

/// The shell's stdin, stdout and stderr pipes (pipe mode), non-blocking for the runtime.
fn pipe_io(child: &mut std::process::Child) -> io::Result<ShellIo> {
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("pipes missing after spawn"));
    };
    Ok(ShellIo {
        stdin: StdinSink::Pipe(pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?),
        stdout: OutputSource::Pipe(pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?),
        stderr: Some(OutputSource::Pipe(pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?)),
    })
}

/// A pidfd for the just-spawned leader, registered with the runtime; on failure the leader's
/// group is killed and the leader reaped.
fn watch(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd owns its descriptor for its whole life and always returns the same one.
    let register = |fd: OwnedFd| unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    crate::os::pidfd::open(pid).and_then(|fd| register(fd).map_err(io::Error::from)).inspect_err(|_| {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid as i32), None);
    })
}

/// Starts the shell as `spec` says. Must run inside the tokio runtime.
pub fn spawn_shell(spec: &ShellSpec) -> io::Result<(ShellProc, ShellIo)> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut master = None;
    let (leaf, procs) = shell_leaf();
    match spec.mode {
        Mode::Pty => {
            let (m, slave) = crate::process::tty::open_pty(DEFAULT_COLS, DEFAULT_ROWS)?;
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            // SAFETY: the closure runs in the forked child before exec and only makes raw
            // syscalls (async-signal-safe: `write`s to descriptors opened before the fork, setsid,
            // ioctl); it touches no memory shared with the parent.
            unsafe {
                cmd.pre_exec(move || {
                    // Best effort, as for the leaf itself.
                    let _ = crate::cgroup::leaf::enter(&procs);
                    // fd 0 is the slave now: the controlling terminal of a new session.
                    crate::process::tty::become_controlling_tty()
                });
            }
            master = Some(crate::process::tty::register(m)?);
        }
        Mode::Pipe => {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            // SAFETY: runs in the forked child before exec; `write`s to descriptors opened before
            // the fork and setsid are async-signal-safe syscalls touching no shared memory.
            unsafe {
                cmd.pre_exec(move || {
                    let _ = crate::cgroup::leaf::enter(&procs);
                    if nix::libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    let mut child = cmd.spawn()?;
    // The slave copies in `cmd` are closed when `cmd` drops, so EOF/EIO arrives once the shell
    // and its children have closed the terminal.
    drop(cmd);
    let pid = child.id();
    let io = match &master {
        Some(m) => ShellIo { stdin: StdinSink::Pty(m.clone()), stdout: OutputSource::Pty(m.clone()), stderr: None },
        None => pipe_io(&mut child)?,
    };
    // Dropping std's Child neither waits nor kills: the pidfd below watches the leader.
    drop(child);
    let pidfd = watch(pid)?;
    let proc =
        ShellProc { pid: Pid::from_raw(pid as i32), mode: spec.mode, pidfd, master, reaped: Mutex::new(None), leaf };
    Ok((proc, io))
}
