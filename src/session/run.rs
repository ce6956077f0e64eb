//! One session run in progress: [`drive`] turns the bash process group's merged output into
//! `stdout` events, enforces the timeout, reacts to delete / disconnect / shutdown, and ends with
//! the terminal event as soon as bash itself has exited (C183).
//!
//! After the leader exited, everything it wrote is already in the pipe, so a non-blocking drain
//! loses nothing. If the pipe is not at end of file then, processes the run left behind still hold
//! it: the leader is left unreaped (a zombie keeps the pgid from being recycled) and a small task
//! reads and discards their output until they close it, killing their group if the session goes
//! away first ([`linger`]). The exit status is read without reaping (`waitid(WNOWAIT)`), an adapter
//! over `process::GroupChild`, which only reports it when reaping.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::COMMAND_EXEC_ERROR;
use crate::event::{EndedBy, ExecEvent, ExitInfo};
use crate::process::{ExitOutcome, ExitReport, GroupChild, LineSplitter, OutputPipe};

/// Read buffer per running run.
const READ_BUF: usize = 64 * 1024;
/// Bytes of lines waiting for a slow client before the run stops reading (the child then blocks
/// on its pipe): memory stays bounded whatever the output.
const MAX_PENDING_BYTES: usize = 4 << 20;
/// After the group of a lingering run was killed, how long its pipe may stay open (holders that
/// left the group) before execd stops reading it.
const LINGER_AFTER_KILL: Duration = Duration::from_secs(2);
/// During a shutdown's grace, how often a run's processes born since the SIGTERM get theirs.
const RETERM_EVERY: Duration = Duration::from_millis(50);

/// Everything [`drive`] needs.
pub(super) struct RunCtx {
    pub session_id: String,
    pub child: Arc<GroupChild>,
    pub pipe: Option<OutputPipe>,
    pub started: Instant,
    pub timeout: Duration,
    /// Session deleted or collected (or shutdown, its parent).
    pub closed: CancellationToken,
    pub shutdown: CancellationToken,
    pub shutdown_grace: Duration,
    /// The state handover, run before the terminal event is sent, with whether the run ended by
    /// itself (a check of the saved state's last bytes and a rename); returns whether the saved
    /// state was adopted, and the tidying (compaction, old files) run on the blocking pool after
    /// the terminal event, before the next run. So a client that saw a run end finds its state
    /// after any restart (X50).
    pub adopt: Box<dyn FnOnce(bool) -> (bool, Tidy) + Send>,
}

/// File work left after a run's terminal event (see [`RunCtx::adopt`]).
pub(super) type Tidy = Box<dyn FnOnce() + Send>;

/// Why execd ended a run itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Deleted,
    Shutdown,
    Disconnected,
}

/// How a run ended.
pub(super) struct Finished {
    /// The state the run saved became the session's ([`RunCtx::adopt`]).
    pub adopted: bool,
    /// The leader's exit code (-1 when a signal ended it).
    pub exit_code: i32,
    /// Why it ended (X22 reasons: `exited`, `signaled`, `timeout`, `interrupted`).
    pub exit: ExitInfo,
}

/// Runs to the end: streams lines, then the terminal event.
pub(super) async fn drive(ctx: RunCtx, tx: mpsc::Sender<ExecEvent>) -> Finished {
    let RunCtx { session_id, child, mut pipe, started, timeout, closed, shutdown, shutdown_grace, adopt } = ctx;
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let mut lines =
        LineReader { buf: vec![0u8; READ_BUF], splitter: LineSplitter::default(), pending: Pending::default() };
    let mut stop: Option<Stop> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    // During a shutdown's grace: the run's processes that had a SIGTERM, and the next look for
    // ones born since (`GroupChild::terminate_new`).
    let mut termed: Vec<i32> = Vec::new();
    let mut reterm_at: Option<tokio::time::Instant> = None;

    loop {
        // Every branch is cancel-safe: readiness, exit, timers and `reserve` hold no data, so
        // whichever wins, nothing is lost. Reading pauses while too many lines wait for the client.
        tokio::select! {
            _ = child.exited() => break,
            _ = tokio::time::sleep_until(deadline), if stop.is_none() => {
                child.kill_group();
                stop = Some(Stop::Timeout);
            }
            _ = closed.cancelled(), if stop.is_none() => {
                if shutdown.is_cancelled() {
                    // D15: SIGTERM first (and to what the run forks during the grace), SIGKILL
                    // after the grace period.
                    child.terminate_new(&mut termed);
                    reterm_at = Some(tokio::time::Instant::now() + RETERM_EVERY);
                    kill_at = Some(tokio::time::Instant::now() + shutdown_grace);
                    stop = Some(Stop::Shutdown);
                } else {
                    tracing::info!(session = %session_id, "session closed (deleted or idle): its run gets SIGKILL");
                    child.kill_group();
                    stop = Some(Stop::Deleted);
                }
            }
            _ = sleep_until_opt(reterm_at) => {
                child.terminate_new(&mut termed);
                reterm_at = kill_at.map(|_| tokio::time::Instant::now() + RETERM_EVERY);
            }
            _ = sleep_until_opt(kill_at) => {
                tracing::warn!(session = %session_id, "a run still alive after the shutdown grace gets SIGKILL");
                child.kill_group();
                kill_at = None;
                reterm_at = None;
            }
            _ = tx.closed(), if stop.is_none() => {
                // Client gone: nobody waits for this run; free the session for the next one.
                tracing::info!(session = %session_id, "the client of a run went away: the run gets SIGKILL");
                child.kill_group();
                stop = Some(Stop::Disconnected);
            }
            permit = tx.reserve(), if !lines.pending.lines.is_empty() => {
                if let (Ok(permit), Some(line)) = (permit, lines.pending.pop()) {
                    permit.send(ExecEvent::stdout(line));
                }
            }
            r = readable(&pipe), if lines.pending.bytes < MAX_PENDING_BYTES => {
                if r.is_err() || !lines.read_ready(pipe.as_mut()) {
                    pipe = None;
                }
            }
        }
    }
    let elapsed = started.elapsed();

    // The leader is gone: what it wrote is in the pipe now.
    let eof = lines.drain_now(pipe.as_mut());
    let LineReader { mut splitter, mut pending, .. } = lines;
    splitter.finish(|l| pending.push(l));

    let outcome = if eof {
        child.wait().await
    } else {
        let outcome = peek_exit(child.pid()).unwrap_or(ExitOutcome::Exited(1));
        if let Some(p) = pipe.take() {
            linger(child.clone(), p, closed.clone());
        }
        outcome
    };

    let exit = exit_info(stop, outcome, child.report());
    let terminal = terminal_event(stop, outcome, elapsed, timeout).with_exit(exit.clone());
    // The run ended by itself: the state it saved (if complete) becomes the session's.
    let (adopted, tidy) = adopt(stop.is_none());
    if stop != Some(Stop::Disconnected) {
        deliver(&tx, pending, terminal, deadline, &session_id).await;
    }
    let _ = tokio::task::spawn_blocking(tidy).await;
    // Dropping the child removes its cgroup leaf: let the response write the terminal event first
    // (as a command's `run_to_end` does).
    tokio::task::yield_now().await;
    drop(child);
    Finished { adopted, exit_code: outcome.code(), exit }
}

/// The run's last event: timeout, success, or the exit code as an error.
fn terminal_event(stop: Option<Stop>, outcome: ExitOutcome, elapsed: Duration, timeout: Duration) -> ExecEvent {
    match stop {
        Some(Stop::Timeout) => {
            ExecEvent::runtime_error(format!("error running in session. timeout after {}", go_duration(timeout)))
        }
        _ if outcome.success() => ExecEvent::complete(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        _ => ExecEvent::error(COMMAND_EXEC_ERROR, outcome.code().to_string(), vec![outcome.describe()]),
    }
}

/// The run's output on its way to lines: the read buffer, the splitter, the lines not sent yet.
struct LineReader {
    buf: Vec<u8>,
    splitter: LineSplitter,
    pending: Pending,
}

impl LineReader {
    /// Reads what a readable `pipe` holds into lines; false when it ended or failed (`None` is
    /// left alone: true).
    fn read_ready(&mut self, pipe: Option<&mut OutputPipe>) -> bool {
        let Some(p) = pipe else { return true };
        match p.try_read(&mut self.buf) {
            Ok(0) => false,
            Ok(n) => {
                self.push(n);
                true
            }
            Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted),
        }
    }

    /// Reads what `pipe` holds right now into lines. Returns whether it reached the end (or
    /// failed); `None` (already closed) counts as the end.
    fn drain_now(&mut self, pipe: Option<&mut OutputPipe>) -> bool {
        let Some(p) = pipe else { return true };
        loop {
            match p.read_now(&mut self.buf) {
                Ok(Some(0)) | Err(_) => return true,
                Ok(Some(n)) => self.push(n),
                Ok(None) => return false,
            }
        }
    }

    /// The first `n` bytes of the buffer into lines.
    fn push(&mut self, n: usize) {
        let pending = &mut self.pending;
        self.splitter.push(&self.buf[..n], |l| pending.push(l));
    }
}

/// Sends the lines still pending, then the terminal event; bounded (the run's deadline, and at
/// least 5 s): a client that stopped reading must not hold the session forever.
async fn deliver(
    tx: &mpsc::Sender<ExecEvent>,
    pending: Pending,
    terminal: ExecEvent,
    deadline: tokio::time::Instant,
    session_id: &str,
) {
    let flush = async {
        for line in pending.lines {
            if tx.send(ExecEvent::stdout(line)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(terminal).await;
    };
    let grace = deadline.max(tokio::time::Instant::now() + Duration::from_secs(5));
    if tokio::time::timeout_at(grace, flush).await.is_err() {
        tracing::warn!(session = %session_id, "client did not read the end of a session run; dropped");
    }
}

/// The structured exit of a run (X22), for the execution observer: a run execd stopped (deleted
/// session, shutdown, client gone) is `interrupted`.
fn exit_info(stop: Option<Stop>, outcome: ExitOutcome, report: Option<ExitReport>) -> ExitInfo {
    let ended_by = match stop {
        None => EndedBy::Itself,
        Some(Stop::Timeout) => EndedBy::Timeout,
        Some(Stop::Deleted | Stop::Shutdown | Stop::Disconnected) => EndedBy::Interrupt,
    };
    match report {
        Some(r) => ExitInfo::from_report(&r, ended_by),
        // Not reaped yet (a group still holds the pipe): no usage to tell.
        None => {
            let r = ExitReport { outcome, usage: Default::default(), leader_only: true, oom_killed: false };
            ExitInfo { usage: None, usage_scope: None, ..ExitInfo::from_report(&r, ended_by) }
        }
    }
}

/// Lines read but not yet handed to the client.
#[derive(Default)]
struct Pending {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Pending {
    /// Queues `line`. Blank lines are kept (`"\n"`): events keep their line endings, so joining
    /// them gives the output exactly (docs/COMPATIBILITY.md; replaces reference C77).
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
    }
    fn pop(&mut self) -> Option<String> {
        let line = self.lines.pop_front()?;
        self.bytes -= line.len();
        Some(line)
    }
}

async fn readable(p: &Option<OutputPipe>) -> std::io::Result<()> {
    match p {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The exit status of an exited, still unreaped child, without reaping it.
fn peek_exit(pid: u32) -> Option<ExitOutcome> {
    let id = Id::Pid(Pid::from_raw(i32::try_from(pid).ok()?));
    match waitid(id, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG) {
        Ok(WaitStatus::Exited(_, code)) => Some(ExitOutcome::Exited(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(ExitOutcome::Signaled(sig as i32)),
        _ => None,
    }
}

/// Reads and discards what processes left behind by a finished run write to its pipe, until they
/// close it; kills their group if the session goes away first; then reaps the leader.
fn linger(child: Arc<GroupChild>, mut pipe: OutputPipe, closed: CancellationToken) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut give_up: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                r = pipe.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = closed.cancelled(), if give_up.is_none() => {
                    child.kill_group();
                    give_up = Some(tokio::time::Instant::now() + LINGER_AFTER_KILL);
                }
                _ = sleep_until_opt(give_up) => break,
            }
        }
        drop(pipe);
        child.wait().await;
    });
}

/// Whether the state file at `path` was written to its end.
pub(super) fn state_complete(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = crate::state_dir::open_file(path) else { return false };
    let n = super::bash::STATE_END.len() as i64;
    if f.seek(SeekFrom::End(-n)).is_err() {
        return false;
    }
    let mut tail = Vec::with_capacity(n as usize);
    f.read_to_end(&mut tail).is_ok() && super::bash::is_complete(&tail)
}

/// Go's `time.Duration.String()` at millisecond precision: `300ms`, `5s`, `1.5s`, `1m30s`, `2h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, frac) = (rem / 1000, rem % 1000);
    let secs = if frac == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0')) };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (ms, want) in [
            (300, "300ms"),
            (5000, "5s"),
            (1500, "1.5s"),
            (1250, "1.25s"),
            (90_000, "1m30s"),
            (7_200_000, "2h0m0s"),
            (0, "0s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), want);
        }
    }
}
