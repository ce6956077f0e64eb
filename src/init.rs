//! Init mode (EXTENSIONS X51): `execd [flags] --init -- ENTRYPOINT ARGS…`.
//!
//! The process started as init stays small and single-threaded: it forks the daemon (which goes
//! on in `main` as usual, in its own process group) and starts the entrypoint, then only reaps,
//! forwards signals and waits. This split is what keeps exit statuses exact: orphans are
//! reparented to init, never to the daemon, so init may reap with `waitpid(-1)` while the daemon
//! keeps reaping its own commands by pid (pidfds, tokio, `waitpid(pid)`), and neither can take
//! the other's children. (One process doing both would need every spawn site of the daemon to
//! register its pids before an orphan reaper could safely run.)
//!
//! - As PID 1 (a container's or `unshare -p`'s init), orphans of the namespace come to init.
//!   Otherwise init makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans of its
//!   descendants come to it instead of to the real init.
//! - SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the
//!   entrypoint (only: the daemon keeps serving while the entrypoint shuts down).
//! - When the entrypoint exits, the daemon gets SIGTERM (DECISIONS D15 shutdown), init waits for
//!   it (grace period plus slack, then SIGKILL) and exits with the entrypoint's status, or
//!   128 + n when signal n killed it.
//! - A daemon that dies while the entrypoint runs is started again, with a growing pause.
//! - init does not kill what is left when it exits: as PID 1 the kernel does; as a subreaper the
//!   leftovers go on to the next reaper up, as they would without execd.

#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Beyond the grace period, how long init waits for the daemon to stop (its own shutdown slack
/// plus the cgroup cleanup) before SIGKILL.
pub const STOP_SLACK: Duration = Duration::from_secs(10);

/// How execd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A plain daemon (no `--init`).
    Off,
    /// `--init` as PID 1 of its PID namespace.
    Pid1,
    /// `--init` below another init, as a child subreaper.
    Subreaper,
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// How this execd runs (the daemon inherits init's answer across the fork).
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Pid1,
        2 => Mode::Subreaper,
        _ => Mode::Off,
    }
}

/// Whether execd runs in init mode (`/capabilities` `"init"`).
pub fn active() -> bool {
    mode() != Mode::Off
}

/// The signals init passes on to the entrypoint.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The command line split into the daemon's flags and the entrypoint.
#[derive(Debug, PartialEq, Eq)]
pub struct SplitArgs {
    /// The arguments for `Config::parse` (no `--init`, no `-- ENTRYPOINT…`).
    pub daemon: Vec<String>,
    /// Index of each `daemon` argument in the original list (for `argv::overwrite`).
    pub index: Vec<usize>,
    /// `Some` with `--init`: the entrypoint and its arguments (never empty).
    pub entrypoint: Option<Vec<String>>,
}

/// Finds `--init` (or `-init`) among the flags and the `--` that ends them. Without `--init`
/// the arguments are returned untouched.
pub fn split_args(args: &[String]) -> Result<SplitArgs, String> {
    let dashdash = args.iter().position(|a| a == "--");
    let flags_end = dashdash.unwrap_or(args.len());
    let init_at = args[..flags_end].iter().position(|a| a == "--init" || a == "-init");
    let Some(init_at) = init_at else {
        return Ok(SplitArgs { daemon: args.to_vec(), index: (0..args.len()).collect(), entrypoint: None });
    };
    let entrypoint = match dashdash {
        Some(d) if d + 1 < args.len() => args[d + 1..].to_vec(),
        _ => return Err("--init needs an entrypoint: execd [flags] --init -- ENTRYPOINT [ARGS…]".into()),
    };
    let index: Vec<usize> = (0..flags_end).filter(|&i| i != init_at).collect();
    let daemon = index.iter().map(|&i| args[i].clone()).collect();
    Ok(SplitArgs { daemon, index, entrypoint: Some(entrypoint) })
}

/// What `main` does after [`start`].
pub enum Start {
    /// This is the daemon process: carry on as a plain execd.
    Daemon,
    /// This was init and its work is done: exit with this status.
    Exit(u8),
}

/// Settings init needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct InitOpts {
    /// How long the daemon may take to shut down after SIGTERM before it is SIGKILLed.
    pub daemon_stop: Duration,
}

/// Becomes init (or a subreaper), forks the daemon, runs `entrypoint`. Call before any thread
/// exists (no runtime, no logger): the daemon is a fork of this process.
pub fn start(entrypoint: &[String], opts: InitOpts) -> Start {
    let mode = if std::process::id() == 1 {
        Mode::Pid1
    } else {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only flips a flag of this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!("execd init: cannot become a child subreaper: {}", std::io::Error::last_os_error());
        }
        Mode::Subreaper
    };
    MODE.store(if mode == Mode::Pid1 { 1 } else { 2 }, Ordering::Relaxed);

    // Blocked before any child exists, so no signal falls between spawning and listening; the
    // daemon and the entrypoint get the old mask back.
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    let mut old = SigSet::empty();
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
        eprintln!("execd init: cannot block signals: {e}");
        return Start::Exit(1);
    }
    let mut init = match Init::new(set, old, opts) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("execd init: cannot listen for signals: {e}");
            return Start::Exit(1);
        }
    };
    match init.fork_daemon() {
        Ok(true) => return Start::Daemon,
        Ok(false) => {}
        Err(e) => {
            eprintln!("execd init: cannot start the daemon: {e}");
            return Start::Exit(1);
        }
    }
    match init.run(entrypoint) {
        Some(code) => Start::Exit(code),
        None => Start::Daemon,
    }
}

struct Init {
    signals: SignalFd,
    /// The signal mask before init blocked its set (the daemon gets it back).
    old_mask: SigSet,
    opts: InitOpts,
    daemon: Option<Pid>,
    daemon_started: Instant,
    /// Pause before the next daemon restart.
    backoff: Duration,
    restart_at: Option<Instant>,
    /// The entrypoint is gone and the daemon is being stopped: no restart.
    stopping: bool,
}

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon that ran this long before dying is restarted without delay growth.
const STABLE: Duration = Duration::from_secs(60);

impl Init {
    fn new(set: SigSet, old_mask: SigSet, opts: InitOpts) -> nix::Result<Init> {
        let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Init {
            signals,
            old_mask,
            opts,
            daemon: None,
            daemon_started: Instant::now(),
            backoff: MIN_BACKOFF,
            restart_at: None,
            stopping: false,
        })
    }

    /// Forks the daemon. `Ok(true)` in the daemon, `Ok(false)` in init.
    fn fork_daemon(&mut self) -> nix::Result<bool> {
        // SAFETY: init is single-threaded (no runtime, no logger thread yet), so the child may
        // run arbitrary code after the fork.
        match unsafe { fork() }? {
            ForkResult::Child => {
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old_mask), None);
                // Its own group: a terminal's ^C goes to init (which forwards it), not to the daemon.
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
                // If init goes away (subreaper mode, killed from outside), the daemon stops too.
                // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
                Ok(true)
            }
            ForkResult::Parent { child } => {
                self.daemon = Some(child);
                self.daemon_started = Instant::now();
                Ok(false)
            }
        }
    }

    /// Starts the entrypoint and supervises until it exited and the daemon stopped: `Some(status)`.
    /// `None` in a restarted daemon (forked from the loop), which goes back to `main`.
    fn run(&mut self, entrypoint: &[String]) -> Option<u8> {
        let mut cmd = Command::new(&entrypoint[0]);
        cmd.args(&entrypoint[1..]);
        for var in crate::process::env::INTERNAL_VARS {
            cmd.env_remove(var);
        }
        // std's spawn does not always reset the signal mask, and init blocks the forwarded ones.
        let mask = self.old_mask;
        // SAFETY: the hook only calls sigprocmask(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
                Ok(())
            });
        }
        let status = match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                // Reaped by the loop below (waitpid(-1)), never by std.
                drop(child);
                self.supervise(pid)?
            }
            Err(e) => {
                eprintln!("execd init: cannot start {:?}: {e}", entrypoint[0]);
                if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                }
            }
        };
        self.stop_daemon();
        Some(status)
    }

    /// Forwards signals and reaps until the entrypoint exits; returns its status (`None` in a
    /// restarted daemon).
    fn supervise(&mut self, entry: Pid) -> Option<u8> {
        loop {
            if let Some(status) = self.reap(Some(entry)) {
                return Some(status);
            }
            if self.daemon.is_none() && self.restart_at.is_some_and(|t| Instant::now() >= t) {
                self.restart_at = None;
                match self.fork_daemon() {
                    Ok(true) => return None,
                    Ok(false) => eprintln!("execd init: daemon restarted"),
                    Err(e) => {
                        eprintln!("execd init: cannot restart the daemon: {e}");
                        self.schedule_restart();
                    }
                }
            }
            for sig in self.wait_signals(Duration::from_millis(500)) {
                if sig != Signal::SIGCHLD {
                    let _ = kill(entry, sig);
                }
            }
        }
    }

    /// Reaps every exited child. Returns the entrypoint's status once it was reaped.
    fn reap(&mut self, entry: Option<Pid>) -> Option<u8> {
        let mut entry_status = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("execd init: waitpid: {e}");
                    break;
                }
                Ok(ws) => {
                    let Some(pid) = ws.pid() else { continue };
                    let code = match ws {
                        WaitStatus::Exited(_, c) => Some(c as u8),
                        WaitStatus::Signaled(_, s, _) => Some(128u8.wrapping_add(s as i32 as u8)),
                        _ => None,
                    };
                    let Some(code) = code else { continue };
                    if Some(pid) == entry {
                        entry_status = Some(code);
                    } else if Some(pid) == self.daemon {
                        self.daemon = None;
                        if !self.stopping {
                            eprintln!("execd init: the daemon exited ({code}); restarting it");
                            self.schedule_restart();
                        }
                    }
                }
            }
        }
        entry_status
    }

    fn schedule_restart(&mut self) {
        if self.daemon_started.elapsed() >= STABLE {
            self.backoff = MIN_BACKOFF;
        }
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Signals that arrived, waiting up to `timeout` for the first.
    fn wait_signals(&mut self, timeout: Duration) -> Vec<Signal> {
        let mut out = Vec::new();
        {
            let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&self.signals), PollFlags::POLLIN)];
            let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::NONE);
            let _ = nix::poll::poll(&mut fds, ms);
        }
        while let Ok(Some(info)) = self.signals.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                out.push(sig);
            }
        }
        out
    }

    /// SIGTERM to the daemon (D15), SIGKILL after the grace period; reaps meanwhile.
    fn stop_daemon(&mut self) {
        self.stopping = true;
        self.restart_at = None;
        let Some(pid) = self.daemon else { return };
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + self.opts.daemon_stop;
        while self.daemon.is_some() && Instant::now() < deadline {
            self.reap(None);
            if self.daemon.is_none() {
                break;
            }
            let _ = self.wait_signals(Duration::from_millis(50));
        }
        if let Some(pid) = self.daemon {
            eprintln!("execd init: the daemon did not stop in time; killing it");
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            self.daemon = None;
        }
        // Last orphans that exited meanwhile.
        self.reap(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn x51_split_args() {
        let a = split_args(&s(&["--port", "1", "--init", "--", "sh", "-c", "x"])).unwrap();
        assert_eq!(a.daemon, s(&["--port", "1"]));
        assert_eq!(a.index, vec![0, 1]);
        assert_eq!(a.entrypoint, Some(s(&["sh", "-c", "x"])));
        let a = split_args(&s(&["-init", "--access-token", "t", "--", "app"])).unwrap();
        assert_eq!(a.daemon, s(&["--access-token", "t"]));
        assert_eq!(a.index, vec![1, 2]);
        let a = split_args(&s(&["--port", "1"])).unwrap();
        assert_eq!((a.daemon, a.entrypoint), (s(&["--port", "1"]), None));
        assert!(split_args(&s(&["--init"])).is_err());
        assert!(split_args(&s(&["--init", "--"])).is_err());
        // `--init` after `--` belongs to the entrypoint.
        let a = split_args(&s(&["--", "--init"])).unwrap();
        assert_eq!(a.entrypoint, None);
    }
}
