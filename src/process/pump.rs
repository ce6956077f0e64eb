//! [`pump_output`]: the one loop that copies a child's output pipes into its journal as the bytes
//! are produced (no polling), enforces the deadline, and reaps the leader.
//!
//! The loop ends when the **leader exits**, not at end of file: processes the command left behind
//! may keep the pipe open forever (C183). Everything the leader wrote is in the pipe by the time
//! its pidfd is readable, so a non-blocking drain after the exit loses nothing; later writes of
//! left-behind processes are read and discarded ([`OutputPipe::discard_rest`]) so they never get
//! SIGPIPE. The pump never waits for journal readers.
//!
//! X13 `awaiting_input` markers are placed by the pump too, on request of the command's watcher
//! ([`MarkRequest`]): it first reads what is already in the pipes, so a marker always follows every
//! byte the command wrote before it blocked in its read (the prompt), whatever the scheduling.

use std::io;
use std::time::Instant;

use super::journal::{JournalWriter, StreamKind};
use super::spawn::{ChildPipes, ExitOutcome, GroupChild, OutputPipe};

/// Bound on the kill of everything after a timeout or a background leader's exit.
const KILL_ALL_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Size of the one read buffer per running command.
pub const PUMP_BUF: usize = 64 * 1024;

/// Reads of a drain before a marker: output still flowing after this many full buffers means the
/// command is not quiet, and no marker is placed.
const MARK_DRAIN_READS: usize = 16;

/// X13: the watcher saw a process of the command blocked reading its stdin pipe after a quiet
/// period, and asks for one `awaiting_input` marker. The pump reads what the pipes already hold
/// into the journal, then appends the marker unless input was recorded since `input_len` (that
/// input may have ended the wait), and answers with the journal's length after the marker, or
/// `None` when it placed none.
#[derive(Debug)]
pub struct MarkRequest {
    /// [`super::journal::Journal::input_len`] when the watcher decided.
    pub input_len: u64,
    pub placed: tokio::sync::oneshot::Sender<Option<u64>>,
}

/// What the pump should do besides copying.
#[derive(Debug, Clone, Copy, Default)]
pub struct PumpOptions {
    /// At this instant the whole group gets SIGKILL (C41).
    pub deadline: Option<Instant>,
    /// SIGKILL the group once the leader has exited, before reaping (upstream's background mode).
    pub kill_group_on_exit: bool,
}

/// How the pumped command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PumpResult {
    pub outcome: ExitOutcome,
    /// The deadline passed and the group was killed.
    pub timed_out: bool,
}

/// Copies `pipes` into `writer` until the leader of `child` exits, then drains, optionally kills
/// the group, and reaps. Journal write errors are logged (the pipes keep being drained so the
/// child never blocks) and the first one is returned alongside the result. `marks` brings the X13
/// watcher's [`MarkRequest`]s (commands with an open stdin).
pub async fn pump_output(
    child: &GroupChild,
    pipes: ChildPipes,
    writer: &mut JournalWriter,
    opts: PumpOptions,
    mut marks: Option<tokio::sync::mpsc::Receiver<MarkRequest>>,
) -> (PumpResult, Option<io::Error>) {
    let ChildPipes { mut stdout, mut stderr, .. } = pipes;
    let mut buf = vec![0u8; PUMP_BUF];
    let mut write_err: Option<io::Error> = None;
    let mut timed_out = false;
    let sleep = async {
        match opts.deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    loop {
        // Readiness of either pipe, the leader's exit and the deadline race; reads happen after
        // the select so no data is ever held by a cancelled branch.
        let which = tokio::select! {
            r = ready(&stdout), if stdout.is_some() => r.map(|_| StreamKind::Stdout),
            r = ready(&stderr), if stderr.is_some() => r.map(|_| StreamKind::Stderr),
            _ = child.exited() => break,
            _ = &mut sleep, if !timed_out => {
                child.kill_group();
                timed_out = true;
                continue;
            }
            req = next_mark(&mut marks) => {
                match req {
                    Some(req) => {
                        let drained =
                            drain(&mut stdout, &mut stderr, writer, &mut buf, &mut write_err, MARK_DRAIN_READS);
                        let placed = (drained && writer.journal().input_len() == req.input_len)
                            .then(|| {
                                record(writer, StreamKind::AwaitingInput, &[], &mut write_err);
                                writer.journal().len()
                            });
                        let _ = req.placed.send(placed);
                    }
                    None => marks = None,
                }
                continue;
            }
        };
        let Ok(kind) = which else { continue };
        let pipe = if kind == StreamKind::Stdout { &mut stdout } else { &mut stderr };
        if let Some(p) = pipe.as_mut() {
            match p.try_read(&mut buf) {
                Ok(0) => *pipe = None,
                Ok(n) => record(writer, kind, &buf[..n], &mut write_err),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => *pipe = None,
            }
        }
    }
    // No marker after this: the watcher's requests fail from here on.
    drop(marks);
    drain(&mut stdout, &mut stderr, writer, &mut buf, &mut write_err, usize::MAX);
    if opts.kill_group_on_exit || timed_out {
        // Everything of the command, also what left the group (`setsid`) or forks while we
        // kill: repeated rounds over the cgroup leaf (X21), bounded.
        child.kill_all(KILL_ALL_WITHIN).await;
    }
    let outcome = child.wait().await;
    for p in [stdout, stderr].into_iter().flatten() {
        p.discard_rest();
    }
    (PumpResult { outcome, timed_out }, write_err)
}

/// Reads without waiting what both pipes hold into the journal, at most `max_reads` reads per
/// pipe; a pipe at end of file becomes `None`. Whether both were emptied.
fn drain(
    stdout: &mut Option<OutputPipe>,
    stderr: &mut Option<OutputPipe>,
    writer: &mut JournalWriter,
    buf: &mut [u8],
    write_err: &mut Option<io::Error>,
    max_reads: usize,
) -> bool {
    let mut emptied = true;
    for (kind, pipe) in [(StreamKind::Stdout, stdout), (StreamKind::Stderr, stderr)] {
        let Some(p) = pipe.as_mut() else { continue };
        let mut reads = 0;
        loop {
            if reads == max_reads {
                emptied = false;
                break;
            }
            reads += 1;
            match p.read_now(buf) {
                Ok(Some(0)) => {
                    *pipe = None;
                    break;
                }
                Ok(Some(n)) => record(writer, kind, &buf[..n], write_err),
                Ok(None) | Err(_) => break,
            }
        }
    }
    emptied
}

async fn next_mark(marks: &mut Option<tokio::sync::mpsc::Receiver<MarkRequest>>) -> Option<MarkRequest> {
    match marks {
        Some(m) => m.recv().await,
        None => std::future::pending().await,
    }
}

async fn ready(p: &Option<OutputPipe>) -> io::Result<()> {
    match p {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

fn record(writer: &mut JournalWriter, kind: StreamKind, data: &[u8], err: &mut Option<io::Error>) {
    if let Err(e) = writer.append(kind, data) {
        if err.is_none() {
            tracing::warn!(error = %e, "journal write failed; output is being dropped");
            *err = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::process::journal::Journal;
    use crate::process::spawn::{spawn, SpawnSpec};

    /// X13: a marker asked for while the prompt is still unread in the pipe comes after it (the
    /// request and the pipe's readiness are both pending when the pump starts, in every round).
    #[tokio::test]
    async fn x13_marker_follows_output_still_in_the_pipe() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..10 {
            let (journal, mut writer) = Journal::create(dir.path(), &format!("m{round}"));
            let (child, pipes) = spawn(SpawnSpec::shell("printf 'p> '; exec sleep 30")).unwrap();
            let child = Arc::new(child);
            let comm = format!("/proc/{}/comm", child.pid());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            // After the exec the prompt is in the pipe.
            while std::fs::read_to_string(&comm).unwrap_or_default() != "sleep\n" {
                assert!(std::time::Instant::now() < deadline, "the child never reached its sleep");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let (placed, answer) = tokio::sync::oneshot::channel();
            tx.send(MarkRequest { input_len: 0, placed }).await.unwrap();
            let pumped = child.clone();
            let pump = tokio::spawn(async move {
                pump_output(&pumped, pipes, &mut writer, PumpOptions::default(), Some(rx)).await;
                writer
            });
            let len = tokio::time::timeout(Duration::from_secs(10), answer).await.unwrap().unwrap();
            assert_eq!(len, Some(3));
            child.kill_group();
            drop(tokio::time::timeout(Duration::from_secs(10), pump).await.unwrap().unwrap());
            let mut chunks = journal.chunks(0).unwrap();
            let mut kinds = Vec::new();
            while let Some(c) = chunks.next().await.unwrap() {
                kinds.push((c.kind, c.data.to_vec()));
            }
            assert_eq!(kinds, [(StreamKind::Stdout, b"p> ".to_vec()), (StreamKind::AwaitingInput, Vec::new())]);
        }
    }
}
