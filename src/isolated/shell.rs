//! Driving a session's long-lived bash (I14–I17). Code goes to the shell's stdin as
//! `eval '<code>' </dev/null` followed by a `printf` of a per-run end marker carrying `$?`, so
//! `cd`, `export` and functions persist between runs; with `envs` the code runs in a subshell so
//! they do not leak. A reader task turns the shell's output (stderr joined to stdout) into lines;
//! a run forwards them as `stdout` events until its marker arrives.
//!
//! Timeout and client disconnect interrupt the run: SIGINT to the processes of the shell's
//! process group except the shell itself, SIGKILL to them after [`INTERRUPT_GRACE`], and if the
//! marker still does not come within another grace period, the session is given up (deleted).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;

use super::IsolatedError;
use crate::event::ExecEvent;

/// How long an interrupted run may take to reach its end marker before the session is lost.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(3);
/// Longest output line forwarded as one event; longer lines are split.
const MAX_LINE: usize = 1024 * 1024;
/// Lines buffered between the reader task and a run.
const LINE_QUEUE: usize = 64;
/// The terminal error of a run that outlived its timeout (upstream's wording).
const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// Directory (inside the session, on its private `/dev`) holding each run's output FIFO.
pub const FIFO_DIR: &str = "/dev/.execd";

/// The session shell's pipes.
pub struct Shell {
    stdin: ChildStdin,
    lines: mpsc::Receiver<Vec<u8>>,
    pgid: i32,
    /// The session's mount namespace (the per-run FIFOs are made inside it).
    mnt_ns: std::fs::File,
    uid: u32,
    gid: u32,
}

/// What a run did to its session.
pub struct Outcome {
    /// Refresh `last_run_at` (not after a timeout, I17).
    pub touch: bool,
    /// The shell is gone or out of step; the session must be deleted.
    pub shell_lost: bool,
    /// The run's exit code, when its end marker came.
    pub exit_code: Option<i32>,
    /// X22's reason: `exited`, `timeout`, `interrupted`, `spawn_failed` (never started), `lost`.
    pub exit_reason: &'static str,
}

/// The X22 reason of a run execd stopped: its deadline, or the client went away.
fn stopped_reason(why: &str) -> &'static str {
    if why == DEADLINE_EXCEEDED {
        "timeout"
    } else {
        "interrupted"
    }
}

impl Shell {
    pub fn new(
        stdin: ChildStdin,
        out: BufReader<ChildStdout>,
        pgid: i32,
        mnt_ns: std::fs::File,
        uid: u32,
        gid: u32,
    ) -> Shell {
        let (tx, lines) = mpsc::channel(LINE_QUEUE);
        tokio::spawn(read_lines(out, tx));
        Shell { stdin, lines, pgid, mnt_ns, uid, gid }
    }

    /// Runs `code` and sends its events to `tx`, ending with exactly one terminal event.
    /// A run's start: `init`, its output FIFO, its script on the shell's stdin. Returns the
    /// output, the FIFO's keep-alive write end and the end marker, or the outcome of a run that
    /// could not start (its error event sent).
    async fn begin(
        &mut self,
        code: &str,
        envs: &BTreeMap<String, String>,
        tx: &mpsc::Sender<ExecEvent>,
        dead: &AtomicBool,
    ) -> Result<(RunOutput, std::os::fd::OwnedFd, String), Outcome> {
        let not_started = Outcome { touch: false, shell_lost: false, exit_code: None, exit_reason: "spawn_failed" };
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let _ = tx.send(ExecEvent::init(&run_id)).await;
        if dead.load(Ordering::SeqCst) {
            let _ = tx.send(runtime("session not active: session process has exited")).await;
            return Err(not_started);
        }
        let marker = format!("__EXECD_RUN_END_{run_id}");
        let (fifo_rx, keepalive) = match make_fifo(&self.mnt_ns, &run_id, self.uid, self.gid).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(runtime(format!("cannot set up the run's output: {e}"))).await;
                return Err(not_started);
            }
        };
        let script = script(code, envs, &marker, &format!("{FIFO_DIR}/{run_id}"));
        if let Err(e) = self.stdin.write_all(script.as_bytes()).await {
            let _ = tx.send(runtime(format!("session not active: {e}"))).await;
            return Err(Outcome { touch: false, shell_lost: true, exit_code: None, exit_reason: "lost" });
        }
        let _ = self.stdin.flush().await;
        Ok((RunOutput { rx: fifo_rx, buf: Vec::new() }, keepalive, marker))
    }

    pub async fn run(
        &mut self,
        code: &str,
        envs: &BTreeMap<String, String>,
        timeout: Option<Duration>,
        tx: &mpsc::Sender<ExecEvent>,
        dead: &AtomicBool,
    ) -> Outcome {
        let (mut output, keepalive, marker) = match self.begin(code, envs, tx, dead).await {
            Ok(begun) => begun,
            Err(outcome) => return outcome,
        };
        let started = Instant::now();
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t).unwrap_or(far);
        let mut interrupted: Option<(&'static str, tokio::time::Instant)> = None;
        let mut killed = false;
        loop {
            tokio::select! {
                chunk = output.read() => {
                    for line in chunk {
                        if interrupted.is_none() {
                            let _ = tx.send(ExecEvent::stdout(line)).await;
                        }
                    }
                }
                line = self.lines.recv() => {
                    let Some(line) = line else {
                        let _ = tx.send(runtime("session process exited without end marker")).await;
                        return Outcome { touch: false, shell_lost: true, exit_code: None, exit_reason: "lost" };
                    };
                    if let Some(code) = end_marker(&line, &marker) {
                        return ended(output, keepalive, code, interrupted.map(|i| i.0), started, tx).await;
                    }
                    // Anything else on the shell's own stdout is not a run's output.
                }
                _ = tokio::time::sleep_until(deadline), if interrupted.is_none() => {
                    interrupted = Some((DEADLINE_EXCEEDED, tokio::time::Instant::now() + INTERRUPT_GRACE));
                    signal_run(self.pgid, nix::sys::signal::Signal::SIGINT);
                }
                _ = tx.closed(), if interrupted.is_none() => {
                    interrupted = Some(("context canceled", tokio::time::Instant::now() + INTERRUPT_GRACE));
                    signal_run(self.pgid, nix::sys::signal::Signal::SIGINT);
                }
                _ = tokio::time::sleep_until(interrupted.map(|i| i.1).unwrap_or(far)), if interrupted.is_some() => {
                    let why = interrupted.map(|i| i.0).unwrap_or_default();
                    if !killed {
                        // SIGINT was not enough: SIGKILL the run's processes, then wait again.
                        killed = true;
                        interrupted = Some((why, tokio::time::Instant::now() + INTERRUPT_GRACE));
                        signal_run(self.pgid, nix::sys::signal::Signal::SIGKILL);
                        continue;
                    }
                    let _ = tx.send(runtime(format!("{why}; the run did not stop, session terminated"))).await;
                    return Outcome { touch: false, shell_lost: true, exit_code: None, exit_reason: stopped_reason(why) };
                }
            }
        }
    }
}

/// Signals the processes of a run: the shell's process group without the shell itself. The shell
/// is its namespace's init and, while it waits for a foreground child, handles SIGINT by exiting;
/// it must not get it. Processes that left the group (`setsid`) are not runs' business.
fn signal_run(pgid: i32, sig: nix::sys::signal::Signal) {
    for pid in crate::os::proc::pids().filter(|&pid| pid != pgid) {
        if crate::os::proc::Stat::read(pid).and_then(|s| s.pgrp()) == Some(pgid) {
            super::kill(pid, sig);
        }
    }
}

fn runtime(m: impl Into<String>) -> ExecEvent {
    let m = m.into();
    ExecEvent::error("RuntimeError", m, vec![])
}

/// Reads the shell's output as lines (at most [`MAX_LINE`] bytes each) until EOF.
async fn read_lines(mut out: BufReader<ChildStdout>, tx: mpsc::Sender<Vec<u8>>) {
    loop {
        let mut line = Vec::new();
        let Ok(n) = (&mut out).take(MAX_LINE as u64).read_until(b'\n', &mut line).await else { return };
        if n == 0 {
            return;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

use tokio::io::AsyncReadExt;

/// `Some(code)` when `line` is this run's end marker.
fn end_marker(line: &[u8], marker: &str) -> Option<i32> {
    let rest = line.strip_prefix(marker.as_bytes())?.strip_prefix(b" ")?;
    std::str::from_utf8(rest).ok()?.trim().parse().ok()
}

/// Single-quotes `s` for bash.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What the shell is fed for one run. The code's output (stdout and stderr) goes to the run's
/// own FIFO, so background jobs it leaves behind cannot write into a later run's stream. The end
/// marker goes to the shell's stdout. An `exit` (or `set -e` failure) in the code would end the
/// session's shell: an EXIT trap then reports the code as the run's end and re-executes bash on
/// the shell's original stdin and stdout (found again among the fds bash saved for the
/// redirections), so the session survives; exported variables and the working directory survive
/// too, shell variables and functions do not.
fn script(code: &str, envs: &BTreeMap<String, String>, marker: &str, fifo: &str) -> String {
    let eval = format!("eval {}", quote(code));
    let body = if envs.is_empty() {
        format!("{{ {eval} </dev/null; }}")
    } else {
        let exports: Vec<String> = envs.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        format!("( export {}; {eval} ) </dev/null", exports.join(" "))
    };
    let end = format!("printf '\\n%s %d\\n' '{marker}' \"$__execd_rc\"");
    let trap = format!(
        "__execd_rc=$?; for __execd_f in /proc/$$/fd/*; do __execd_l=$(readlink \"$__execd_f\"); \
         [[ $__execd_l != \"$__execd_in\" ]] || __execd_i=$__execd_f; \
         [[ $__execd_l != \"$__execd_out\" ]] || __execd_o=$__execd_f; done; \
         [[ -n $__execd_i && -n $__execd_o ]] && {end} >\"$__execd_o\" && \
         exec bash --noprofile --norc <\"$__execd_i\" >\"$__execd_o\" 2>&1"
    );
    format!(
        "[[ -n $__execd_in ]] || {{ __execd_in=$(readlink /proc/$$/fd/0); __execd_out=$(readlink /proc/$$/fd/1); }} 2>/dev/null\n\
         trap {} EXIT\n{body} >{} 2>&1\n__execd_rc=$?; trap - EXIT; {end}\n",
        quote(&trap),
        quote(fifo)
    )
}

/// The reading end of a run's output FIFO, split into lines.
/// The run's end marker came with exit `code`: the rest of its output, then its terminal event
/// (`interrupted` with why, when a deadline or the client stopped it).
async fn ended(
    mut output: RunOutput,
    keepalive: std::os::fd::OwnedFd,
    code: i32,
    interrupted: Option<&'static str>,
    started: Instant,
    tx: &mpsc::Sender<ExecEvent>,
) -> Outcome {
    // Everything the run wrote before its end is in the FIFO already; what its leftover
    // background jobs write later is read and dropped.
    for line in output.finish() {
        if interrupted.is_none() {
            let _ = tx.send(ExecEvent::stdout(line)).await;
        }
    }
    drop(keepalive);
    tokio::spawn(output.discard());
    let ev = match interrupted {
        Some(why) => runtime(why),
        None if code == 0 => ExecEvent::complete(started.elapsed().as_millis() as u64),
        None => {
            let mut e = ExecEvent::error("ExitError", code.to_string(), vec![]);
            e.text = format!("command exited with code {code}");
            e
        }
    };
    let _ = tx.send(ev).await;
    let exit_reason = interrupted.map(stopped_reason).unwrap_or("exited");
    Outcome { touch: interrupted.is_none(), shell_lost: false, exit_code: Some(code), exit_reason }
}

struct RunOutput {
    rx: tokio::net::unix::pipe::Receiver,
    buf: Vec<u8>,
}

impl RunOutput {
    /// Waits for output; returns the complete lines (never resolves at EOF).
    async fn read(&mut self) -> Vec<String> {
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match self.rx.read(&mut chunk).await {
                Ok(0) | Err(_) => std::future::pending::<()>().await,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
            let lines = self.lines(false);
            if !lines.is_empty() {
                return lines;
            }
        }
    }

    /// What is buffered in the FIFO now, and the unterminated rest.
    fn finish(&mut self) -> Vec<String> {
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n) = self.rx.try_read(&mut chunk) {
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.lines(true)
    }

    fn lines(&mut self, all: bool) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let cut = match memchr::memchr(b'\n', &self.buf) {
                Some(i) => i,
                None if self.buf.len() >= MAX_LINE || (all && !self.buf.is_empty()) => self.buf.len(),
                None => break,
            };
            let rest = self.buf.split_off((cut + 1).min(self.buf.len()));
            let mut line = std::mem::replace(&mut self.buf, rest);
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            // Empty lines are dropped (upstream, I14).
            if !line.is_empty() {
                out.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
        out
    }

    /// Reads and drops whatever leftover background jobs write, until they all close it.
    async fn discard(mut self) {
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n) = self.rx.read(&mut chunk).await {
            if n == 0 {
                return;
            }
        }
    }
}

/// Makes the run's FIFO inside the session (its mount namespace, so the session's own symlinks
/// cannot redirect it to the host) and opens it: the reading end, and a writing end that keeps the
/// reader from seeing EOF before the shell has opened it. Earlier runs' FIFOs are removed.
async fn make_fifo(
    ns: &std::fs::File,
    run_id: &str,
    uid: u32,
    gid: u32,
) -> std::io::Result<(tokio::net::unix::pipe::Receiver, std::os::fd::OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let ns = ns.try_clone()?;
    let path = std::path::PathBuf::from(FIFO_DIR).join(run_id);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("execd-isolated-fifo".into()).spawn(move || {
        let res = (|| {
            super::ns::join_mount_ns_this_thread(&ns)?;
            // A root session may have removed it; its /dev is its own, so make it again.
            std::fs::create_dir_all(FIFO_DIR)?;
            if let Ok(dir) = std::fs::read_dir(FIFO_DIR) {
                for e in dir.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
            let _ = std::os::unix::fs::lchown(&path, Some(uid), Some(gid));
            let flags = libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            let reader = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&path)?;
            let writer = std::fs::OpenOptions::new().write(true).custom_flags(flags).open(&path)?;
            Ok::<_, std::io::Error>((std::os::fd::OwnedFd::from(reader), std::os::fd::OwnedFd::from(writer)))
        })();
        let _ = tx.send(res);
    })?;
    let (reader, writer) = rx.await.map_err(|_| std::io::Error::other("FIFO thread died"))??;
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)?;
    Ok((rx, writer))
}

/// Checks a run request (I13): non-blank code without NUL, env names that are identifiers.
pub fn check_run(code: &str, envs: &BTreeMap<String, String>) -> Result<(), IsolatedError> {
    if code.trim().is_empty() {
        return Err(IsolatedError::Invalid("code must not be empty".into()));
    }
    if code.contains('\0') {
        return Err(IsolatedError::Invalid("code must not contain NUL bytes".into()));
    }
    for (k, v) in envs {
        let ident = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(IsolatedError::Invalid(format!("invalid environment variable name {k:?}")));
        }
        if v.contains('\0') {
            return Err(IsolatedError::Invalid(format!("environment variable {k} contains a NUL byte")));
        }
    }
    Ok(())
}

/// Shell-style exit code of a finished process (128 + signal).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or(status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_markers() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(end_marker(b"M 3", "M"), Some(3));
        assert_eq!(end_marker(b"M3", "M"), None);
        assert_eq!(end_marker(b"xM 3", "M"), None);
        let mut envs = BTreeMap::new();
        envs.insert("A".to_string(), "x y".to_string());
        let s = script("echo", &envs, "M", "/dev/.execd/R");
        assert!(s.contains("\n( export A='x y'; eval 'echo' ) </dev/null >'/dev/.execd/R' 2>&1\n"), "{s}");
        assert!(s.ends_with("trap - EXIT; printf '\\n%s %d\\n' 'M' \"$__execd_rc\"\n"), "{s}");
    }

    #[test]
    fn run_checks() {
        assert!(check_run("  ", &BTreeMap::new()).is_err());
        let mut envs = BTreeMap::new();
        envs.insert("1A".to_string(), String::new());
        assert!(check_run("true", &envs).is_err());
    }
}
