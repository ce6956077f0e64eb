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
use crate::process::ExecEvent;

/// How long an interrupted run may take to reach its end marker before the session is lost.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(3);
/// Longest output line forwarded as one event; longer lines are split.
const MAX_LINE: usize = 1024 * 1024;
/// Lines buffered between the reader task and a run.
const LINE_QUEUE: usize = 64;

/// The session shell's pipes.
pub struct Shell {
    stdin: ChildStdin,
    lines: mpsc::Receiver<Vec<u8>>,
    pgid: i32,
}

/// What a run did to its session.
pub struct Outcome {
    /// Refresh `last_run_at` (not after a timeout, I17).
    pub touch: bool,
    /// The shell is gone or out of step; the session must be deleted.
    pub shell_lost: bool,
}

impl Shell {
    pub fn new(stdin: ChildStdin, out: BufReader<ChildStdout>, pgid: i32) -> Shell {
        let (tx, lines) = mpsc::channel(LINE_QUEUE);
        tokio::spawn(read_lines(out, tx));
        Shell { stdin, lines, pgid }
    }

    /// Runs `code` and sends its events to `tx`, ending with exactly one terminal event.
    pub async fn run(
        &mut self,
        code: &str,
        envs: &BTreeMap<String, String>,
        timeout: Option<Duration>,
        tx: &mpsc::Sender<ExecEvent>,
        dead: &AtomicBool,
    ) -> Outcome {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let _ = tx.send(ExecEvent::init(&run_id)).await;
        if dead.load(Ordering::SeqCst) {
            let _ = tx.send(runtime("session not active: session process has exited")).await;
            return Outcome { touch: false, shell_lost: false };
        }
        let marker = format!("__EXECD_RUN_END_{run_id}");
        let script = script(code, envs, &marker);
        if let Err(e) = self.stdin.write_all(script.as_bytes()).await {
            let _ = tx.send(runtime(format!("session not active: {e}"))).await;
            return Outcome { touch: false, shell_lost: true };
        }
        let _ = self.stdin.flush().await;
        let started = Instant::now();
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t).unwrap_or(far);
        let mut interrupted: Option<(&'static str, tokio::time::Instant)> = None;
        let mut killed = false;
        loop {
            tokio::select! {
                line = self.lines.recv() => {
                    let Some(line) = line else {
                        let _ = tx.send(runtime("session process exited without end marker")).await;
                        return Outcome { touch: false, shell_lost: true };
                    };
                    if let Some(code) = end_marker(&line, &marker) {
                        let ev = match interrupted {
                            Some((why, _)) => runtime(why),
                            None if code == 0 => ExecEvent::complete(started.elapsed().as_millis() as u64),
                            None => {
                                let mut e = ExecEvent::error("ExitError", code.to_string(), vec![]);
                                e.text = format!("command exited with code {code}");
                                e
                            }
                        };
                        let _ = tx.send(ev).await;
                        return Outcome { touch: interrupted.is_none(), shell_lost: false };
                    }
                    let text = String::from_utf8_lossy(&line);
                    let text = text.strip_suffix('\r').unwrap_or(&text);
                    if !text.is_empty() && interrupted.is_none() {
                        let _ = tx.send(ExecEvent::stdout(text.to_string())).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline), if interrupted.is_none() => {
                    interrupted = Some(("context deadline exceeded", tokio::time::Instant::now() + INTERRUPT_GRACE));
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
                    return Outcome { touch: false, shell_lost: true };
                }
            }
        }
    }
}

/// Signals the processes of a run: the shell's process group without the shell itself. The shell
/// is its namespace's init and, while it waits for a foreground child, handles SIGINT by exiting;
/// it must not get it. Processes that left the group (`setsid`) are not runs' business.
fn signal_run(pgid: i32, sig: nix::sys::signal::Signal) {
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == pgid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok());
        if pgrp == Some(pgid) {
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

/// What the shell is fed for one run.
fn script(code: &str, envs: &BTreeMap<String, String>, marker: &str) -> String {
    let eval = format!("eval {}", quote(code));
    let body = if envs.is_empty() {
        format!("{eval} </dev/null")
    } else {
        let exports: Vec<String> = envs.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        format!("( export {}; {eval} ) </dev/null", exports.join(" "))
    };
    format!("{body}\nprintf '\\n%s %d\\n' '{marker}' \"$?\"\n")
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
        assert_eq!(
            script("echo", &envs, "M"),
            "( export A='x y'; eval 'echo' ) </dev/null\nprintf '\\n%s %d\\n' 'M' \"$?\"\n"
        );
    }

    #[test]
    fn run_checks() {
        assert!(check_run("  ", &BTreeMap::new()).is_err());
        let mut envs = BTreeMap::new();
        envs.insert("1A".to_string(), String::new());
        assert!(check_run("true", &envs).is_err());
    }
}
