//! A command's stdin (X10, X11): the pipe's write end behind a per-command **async** mutex, so one
//! request body is written whole before the next one starts (bodies never interleave), and the
//! writes are recorded in the journal (X12) through its [`InputLog`].
//!
//! The pipe closes (EOF for the command) on `eof=true`, when a string given at start was written,
//! when no process reads it any more, or when the command ends: then every waiting writer gives up
//! with [`CommandError::StdinClosed`].
//!
//! A command on a terminal (X15 `"tty":true`) is written through the PTY master instead; there
//! `eof=true` types the terminal's `VEOF` character (recorded as input) and input stays open, as a
//! terminal's does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::CommandError;
use tokio::sync::{mpsc, oneshot};

use crate::process::pump::MarkRequest;
use crate::process::{InputLog, StdinPipe, WriteOutcome};

/// What `POST /command` asked for as stdin (X10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StdinRequest {
    /// `/dev/null` (absent or `false`).
    #[default]
    Null,
    /// These bytes, then EOF.
    Text(String),
    /// An open pipe fed by `POST /command/{id}/stdin` (`true`).
    Open,
}

/// The answer of a completed stdin write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdinWritten {
    /// Bytes of this request that went into the pipe.
    pub written: u64,
    /// Whether EOF was sent (the pipe is now closed; a terminal got its `VEOF` and stays open).
    pub eof: bool,
}

/// How often the X13 watcher looks at a quiet command (the contract's floor is 50 ms).
const WATCH_TICK: Duration = Duration::from_millis(50);

/// Default quiet time before `awaiting_input` (X13 `awaiting_input_ms`).
pub const AWAITING_INPUT_MS: u64 = 300;

/// A command's stdin pipe while it may still be written.
pub(crate) struct StdinHandle {
    /// `None` once closed. Async mutex: a writer holds it for a whole body, across awaits.
    pipe: tokio::sync::Mutex<Option<StdinPipe>>,
    log: InputLog,
    /// What the command reads (the pipe, or its terminal), to recognise it in `/proc` (X13).
    target: Option<crate::process::tty::FileId>,
    /// A terminal (`"tty":true`): `eof` sends its `VEOF` character and the input stays open.
    tty: bool,
    /// Whether clients may write (`stdin: true` and not closed yet).
    client_writable: AtomicBool,
    /// Cancelled when the pipe closes for good; waiting writers stop.
    closed: CancellationToken,
}

impl StdinHandle {
    /// An open pipe for clients (`stdin: true`).
    pub(crate) fn open(pipe: StdinPipe, log: InputLog) -> Arc<StdinHandle> {
        Arc::new(StdinHandle {
            target: pipe.target(),
            tty: pipe.eof_char().is_some(),
            pipe: tokio::sync::Mutex::new(Some(pipe)),
            log,
            client_writable: AtomicBool::new(true),
            closed: CancellationToken::new(),
        })
    }

    /// A pipe fed once with `text`, then closed; clients cannot write to it.
    pub(crate) fn feed_text(pipe: StdinPipe, log: InputLog, text: String) -> Arc<StdinHandle> {
        let h = Arc::new(StdinHandle {
            target: None,
            tty: false,
            pipe: tokio::sync::Mutex::new(Some(pipe)),
            log,
            client_writable: AtomicBool::new(false),
            closed: CancellationToken::new(),
        });
        let handle = h.clone();
        tokio::spawn(async move {
            let mut guard = handle.pipe.lock().await;
            if let Some(pipe) = guard.as_mut() {
                let mut written = 0;
                // Ends when written, when nobody reads any more (EPIPE), or when the command ends
                // while something left behind holds the pipe without reading.
                tokio::select! {
                    _ = pipe.write(text.as_bytes(), &handle.log, &mut written) => {}
                    _ = handle.closed.cancelled() => {}
                }
            }
            *guard = None;
        });
        h
    }

    /// Whether a client may write now (X13 watches only such commands).
    pub(crate) fn is_open(&self) -> bool {
        self.client_writable.load(Ordering::SeqCst)
    }

    /// X13: while the pipe is open, watches the command (process group `pgid`) and has one
    /// `awaiting_input` marker recorded when some process of it sleeps reading this pipe and
    /// nothing was written to the journal (output or input) for `quiet`; again only after new
    /// output or input. `/proc` is read at most every [`WATCH_TICK`], and only once the command is
    /// quiet. The output pump places the marker ([`MarkRequest`] through `marks`), after reading
    /// what the pipes already hold: the journal length the watcher compares lags the pipes, so a
    /// marker written from here could precede the prompt printed just before the read.
    pub(crate) fn watch_awaiting_input(self: &Arc<Self>, pgid: i32, quiet: Duration, marks: mpsc::Sender<MarkRequest>) {
        let Some(target) = self.target else { return };
        let me = self.clone();
        tokio::spawn(async move {
            let journal = me.log.journal().clone();
            let mut last_len = journal.len();
            let mut since = tokio::time::Instant::now();
            let mut fired = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_TICK) => {}
                    _ = me.closed.cancelled() => break,
                }
                if !me.is_open() {
                    break;
                }
                let len = journal.len();
                if len != last_len {
                    (last_len, since, fired) = (len, tokio::time::Instant::now(), false);
                    continue;
                }
                if fired || since.elapsed() < quiet {
                    continue;
                }
                let session = me.tty;
                let waits =
                    tokio::task::spawn_blocking(move || crate::process::waiting::group_waits_on(pgid, session, target))
                        .await
                        .unwrap_or(false);
                // Output that raced the scan re-arms instead.
                if !(waits && journal.len() == last_len && me.is_open()) {
                    continue;
                }
                let (placed, answer) = oneshot::channel();
                let req = MarkRequest { input_len: journal.input_len(), placed };
                let answer = async {
                    marks.send(req).await.ok()?;
                    answer.await.ok()?
                };
                let at = tokio::select! {
                    at = answer => at,
                    _ = me.closed.cancelled() => break,
                };
                if let Some(len) = at {
                    // The prompt the pump just read counts as seen: fire again only after more.
                    (last_len, fired) = (len, true);
                }
            }
        });
    }

    /// The command ended: writers stop, the pipe is dropped (as soon as the current writer let go).
    pub(crate) fn close(self: &Arc<Self>) {
        self.client_writable.store(false, Ordering::SeqCst);
        self.closed.cancel();
        let me = self.clone();
        tokio::spawn(async move {
            me.pipe.lock().await.take();
        });
    }

    /// `POST /command/{id}/stdin`: writes `body` in order (after any body being written), then
    /// closes on `eof`. The whole request, waiting for the lock included, is bounded by `timeout`:
    /// then [`CommandError::StdinTimeout`] says how many bytes went in.
    pub(crate) async fn write_body<S, E>(
        &self,
        id: &str,
        mut body: S,
        eof: bool,
        timeout: Duration,
    ) -> Result<StdinWritten, CommandError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let closed = || CommandError::StdinClosed(id.to_string());
        if !self.is_open() {
            return Err(closed());
        }
        let mut written = 0u64;
        let work = async {
            let mut guard = self.pipe.lock().await;
            if !self.is_open() {
                return Err(closed());
            }
            let Some(pipe) = guard.as_mut() else { return Err(closed()) };
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| CommandError::StdinBody(e.to_string()))?;
                match pipe.write(&chunk, &self.log, &mut written).await {
                    Ok(WriteOutcome::Done) => {}
                    Ok(WriteOutcome::ReaderGone) => {
                        self.client_writable.store(false, Ordering::SeqCst);
                        *guard = None;
                        return Err(closed());
                    }
                    Err(e) => return Err(CommandError::StdinWrite { id: id.to_string(), source: e }),
                }
            }
            if eof && self.tty {
                // A terminal ends input with its EOF character (recorded as typed); it stays open
                // for more, as a terminal does.
                let veof = pipe.eof_char().unwrap_or(0x04);
                let mut typed = 0;
                if let Err(e) = pipe.write(&[veof], &self.log, &mut typed).await {
                    return Err(CommandError::StdinWrite { id: id.to_string(), source: e });
                }
            } else if eof {
                self.client_writable.store(false, Ordering::SeqCst);
                *guard = None;
            }
            Ok(())
        };
        let res = tokio::select! {
            r = tokio::time::timeout(timeout, work) => r,
            _ = self.closed.cancelled() => Ok(Err(closed())),
        };
        match res {
            Ok(Ok(())) => Ok(StdinWritten { written, eof }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CommandError::StdinTimeout { id: id.to_string(), written }),
        }
    }
}
