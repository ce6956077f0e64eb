//! Commands (`/command`, stateless `/code`): [`CommandManager`] validates a [`CommandRequest`],
//! spawns `bash -c` (or, for an `argv` request, the executable itself: [`resolve_executable`]) in
//! its own process group, pumps its output into a per-command journal
//! (DECISIONS D11) and keeps a registry of running and finished commands (D12).
//!
//! Every consumer is a journal reader: the foreground stream ([`CommandEvents`]), `/logs`
//! ([`CommandManager::logs`]) and the resumable `/events` ([`CommandManager::events`]). So a slow or
//! vanished client never blocks the process or another reader, and memory stays flat in output
//! size. A client disconnect does not kill a foreground command (D13): its waiter task owns it.

pub mod inventory;
pub mod persist;
mod record_json;
pub mod registry;
pub mod stdin;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::event::COMMAND_EXEC_ERROR;
use crate::event::{EndedBy, EventKind, ExecDone, ExecEnd, ExecEvent, ExecObserver, ExecStart, ExitInfo};
use crate::expand::expand_path;
use crate::process::env::child_env_layers;
use crate::process::pump::{pump_output, PumpOptions};
use crate::process::{
    resolve_credentials, spawn_io, ChildPipes, ChunkReader, GroupChild, Journal, JournalWriter, LineEventReader,
    OutputMode, OutputReader, OutputView, SpawnSpec, StdinMode, StreamKind,
};
pub use registry::CommandStatus;
use registry::{Entry, Registry, Retention};
pub use stdin::{StdinRequest, StdinWritten};

/// Settings of the command subsystem (built from `Config` by `state.rs`).
#[derive(Debug, Clone)]
pub struct CommandOpts {
    /// Directory for journals and command records; loaded at startup (X50).
    pub journal_dir: PathBuf,
    /// `--fresh-state`: empty `journal_dir` at startup instead of loading it.
    pub fresh_state: bool,
    /// `EXECD_ENVS`: re-read for every command.
    pub envs_file: Option<String>,
    pub retention_ttl: Duration,
    pub retention_count: usize,
    /// Interrupt: SIGTERM, then SIGKILL after this (C44: 3 s).
    pub interrupt_grace: Duration,
    /// Longest line before it is split (D10).
    pub max_line: usize,
}

/// A validated-on-start command request (the wire struct lives in `api/command.rs`).
#[derive(Debug, Clone, Default)]
pub struct CommandRequest {
    /// Shell text for `bash -c`; empty when `argv` is given.
    pub command: String,
    /// Native arguments, run without a shell (`argv[0]` is the executable); exactly one of
    /// `command` and `argv` is given.
    pub argv: Option<Vec<String>>,
    /// Empty: execd's cwd.
    pub cwd: String,
    pub background: bool,
    /// Milliseconds; 0 = none; negative is rejected.
    pub timeout_ms: i64,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub envs: BTreeMap<String, String>,
    /// Resource limits of the command's cgroup leaf (X23); empty: none.
    pub limits: crate::cgroup::Limits,
    /// X10: `/dev/null`, a string then EOF, or an open pipe.
    pub stdin: StdinRequest,
    /// X13: quiet time before `awaiting_input` (ms); `None`: the default (300).
    pub awaiting_input_ms: Option<u64>,
    /// X15 `"tty":true`: run on a new PTY of `(cols, rows)` (stdin, stdout and stderr; output is
    /// recorded as stdout). Needs `stdin` [`StdinRequest::Open`].
    pub tty: Option<(u16, u16)>,
}

/// Why a command operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A request field is invalid (message names the field).
    #[error("{0}")]
    Invalid(String),
    #[error("command not found: {0}")]
    NotFound(String),
    /// Interrupt of a finished command.
    #[error("error interruptting code context. command session {0} is not running")]
    NotRunning(String),
    /// Interrupt of an unknown id.
    #[error("error interruptting code context. no such session")]
    NoSuchSession,
    #[error("command {0} has no output log")]
    NoLog(String),
    /// The state directory can take no journal (full or read-only).
    #[error("error creating output journal for {id}: {source}")]
    Journal { id: String, source: io::Error },
    #[error("error reading output of {id}: {source}")]
    Read { id: String, source: io::Error },
    #[error("execd is shutting down")]
    ShuttingDown,
    /// Limits were asked for and cannot be applied here (X23).
    #[error("{0}")]
    LimitsUnavailable(String),
    /// X11: the command has no open stdin (never opened, closed, or finished).
    #[error("command {0} has no open stdin")]
    StdinClosed(String),
    /// X11: the reader did not take the bytes before the request's timeout.
    #[error("stdin of command {id}: timed out after writing {written} bytes (the command is not reading)")]
    StdinTimeout { id: String, written: u64 },
    /// X11: the request body failed while being read.
    #[error("error reading the request body: {0}")]
    StdinBody(String),
    #[error("error writing to the stdin of {id}: {source}")]
    StdinWrite { id: String, source: io::Error },
    /// X14: a signal to a command that has finished.
    #[error("command {0} has finished")]
    Finished(String),
    /// X15: `resize` of a command that has no terminal.
    #[error("command {0} has no terminal (start it with \"tty\":true on GET /command/ws)")]
    NoTerminal(String),
}

impl From<crate::cgroup::CgroupError> for CommandError {
    fn from(e: crate::cgroup::CgroupError) -> Self {
        match e {
            crate::cgroup::CgroupError::InvalidLimit { .. } => CommandError::Invalid(e.to_string()),
            _ => CommandError::LimitsUnavailable(e.to_string()),
        }
    }
}

/// A started command: its id and the events of its stream.
pub struct Started {
    pub id: String,
    pub events: CommandEvents,
}

/// The event stream of `POST /command`: `init`, then (foreground) the output lines from the
/// journal, then exactly one terminal event. Pings are added by the HTTP layer.
pub struct CommandEvents {
    queue: VecDeque<ExecEvent>,
    lines: Option<LineEventReader>,
}

impl CommandEvents {
    fn fixed(events: Vec<ExecEvent>) -> CommandEvents {
        CommandEvents { queue: events.into(), lines: None }
    }

    /// The first event, `init`, which is always ready (without waiting); `None` if already taken.
    pub fn take_init(&mut self) -> Option<ExecEvent> {
        let first = self.queue.front().is_some_and(|e| e.kind == crate::event::EventKind::Init);
        first.then(|| self.queue.pop_front()).flatten()
    }

    /// The next event; `None` after the terminal event.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        if let Some(e) = self.queue.pop_front() {
            return Some(e);
        }
        self.lines.as_mut()?.next().await
    }

    /// Writes the JSON of the events that are ready into `out`, each followed by `sep`, until
    /// `out` holds at least `max` bytes; waits only while `out` is empty. The events of
    /// [`CommandEvents::next`], without building one per output line
    /// ([`LineEventReader::render`]). Returns false once the terminal event was written.
    pub async fn render(&mut self, out: &mut Vec<u8>, sep: &[u8], max: usize) -> bool {
        while out.len() < max {
            let Some(e) = self.queue.pop_front() else { break };
            e.write_json(out);
            out.extend_from_slice(sep);
        }
        if out.len() >= max {
            return !self.queue.is_empty() || self.lines.is_some();
        }
        match self.lines.as_mut() {
            Some(lines) => lines.render(out, sep, max).await,
            None => false,
        }
    }
}

/// Raw output of a command from a cursor (`/logs`).
pub struct LogSlice {
    /// The raw output file; none while nothing was written.
    pub file: Option<File>,
    pub start: u64,
    /// End of the bytes to send (the output length when the request was served).
    pub end: u64,
    /// The next cursor: `end`, or the given cursor when it is past the end (upstream echoes it).
    pub tail: u64,
    /// Set when the journal holds input (X12): read the output from here instead of `file`
    /// (stdin bytes skipped; it ends at about `end`).
    pub filtered: Option<OutputReader>,
}

/// One `/events` item: the SSE `id` (byte offset after the event's bytes) and the event.
pub type ResumableEvent = (Option<u64>, ExecEvent);

/// Reader behind `GET /command/{id}/events`: `init`, raw output chunks (stdout/stderr events whose
/// text is the chunk, terminators kept) with their end offsets, then the terminal event.
pub struct ResumableEvents {
    id: String,
    init: Option<ExecEvent>,
    chunks: Option<ChunkReader>,
    journal: Option<Journal>,
    terminal: Option<ExecEvent>,
    done: bool,
}

impl ResumableEvents {
    /// The next item; `None` after the terminal event.
    pub async fn next(&mut self) -> Option<ResumableEvent> {
        if let Some(init) = self.init.take() {
            return Some((None, init));
        }
        if self.done {
            return None;
        }
        if let Some(chunks) = self.chunks.as_mut() {
            match chunks.next().await {
                Ok(Some(c)) => {
                    let text = String::from_utf8_lossy(&c.data).into_owned();
                    let ev = match c.kind {
                        StreamKind::Stdout => ExecEvent::stdout(text),
                        StreamKind::Stderr => ExecEvent::stderr(text),
                        StreamKind::Stdin => ExecEvent::new(EventKind::Stdin, text),
                        StreamKind::AwaitingInput => ExecEvent::new(EventKind::AwaitingInput, ""),
                    };
                    return Some((Some(c.end()), ev.at(c.timestamp)));
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    let msg = CommandError::Read { id: self.id.clone(), source: e }.to_string();
                    return Some((None, ExecEvent::runtime_error(msg)));
                }
            }
        }
        self.done = true;
        let len = self.journal.as_ref().map(|j| j.len()).unwrap_or(0);
        let terminal = self
            .journal
            .as_ref()
            .and_then(|j| j.terminal())
            .or_else(|| self.terminal.take())
            .unwrap_or_else(|| ExecEvent::runtime_error("command ended without a result"));
        Some((Some(len), terminal))
    }
}

struct Inner {
    opts: CommandOpts,
    registry: Registry,
    /// Finished records waiting for their `fdatasync` (X50).
    syncs: Arc<persist::SyncQueue>,
    stopping: AtomicBool,
    observer: std::sync::OnceLock<ExecObserver>,
}

/// Cheap-to-clone handle to the command subsystem.
#[derive(Clone)]
pub struct CommandManager {
    inner: Arc<Inner>,
}

impl CommandManager {
    /// Creates the journal directory, loads the commands an earlier execd left there (X50,
    /// [`persist`]; with `fresh_state` it is emptied instead) and starts the retention sweeper.
    /// Must be called inside a tokio runtime.
    pub fn new(opts: CommandOpts) -> io::Result<CommandManager> {
        if opts.fresh_state && opts.journal_dir.exists() {
            std::fs::remove_dir_all(&opts.journal_dir)?;
        }
        crate::state_dir::create_dir(&opts.journal_dir)?;
        let retention = Retention { ttl: opts.retention_ttl, max_finished: opts.retention_count };
        let registry = Registry::with_records(retention, opts.journal_dir.clone());
        let loaded = persist::load(&opts.journal_dir);
        if !loaded.is_empty() {
            tracing::info!(count = loaded.len(), "command records of an earlier execd loaded");
        }
        for l in loaded {
            let finished_at = l.finished_at;
            registry.insert_restored(Arc::new(Entry::restored(l)), finished_at);
        }
        // Retention (D12) holds across restarts: the oldest beyond the cap or the TTL go now.
        registry.evict(Instant::now());
        let inner = Arc::new(Inner {
            opts,
            registry,
            stopping: AtomicBool::new(false),
            observer: std::sync::OnceLock::new(),
            syncs: Arc::default(),
        });
        spawn_sweeper(Arc::downgrade(&inner), inner.opts.retention_ttl);
        Ok(CommandManager { inner })
    }

    /// Validates and starts a command. Validation failures come back before anything runs; a
    /// spawn failure comes back as the stream `init` + `error` (foreground, not registered) or
    /// `init` + `RUNTIME_ERROR` (background, registered with exit code 255).
    pub fn start(&self, req: CommandRequest) -> Result<Started, CommandError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(CommandError::ShuttingDown);
        }
        validate(&req)?;
        let env = child_env_layers(self.inner.opts.envs_file.as_deref(), &req.envs);
        // Validated with the same merged env the command runs with (reference §4.3 recommendation).
        let cwd = checked_cwd(&req.cwd, &env)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        crate::state_dir::check_room(&self.inner.opts.journal_dir)
            .map_err(|source| CommandError::Journal { id: id.clone(), source })?;
        // `/command/status` `content`: the shell text, or the argv as a JSON array (as upstream).
        let content = match &req.argv {
            Some(argv) => serde_json::to_string(argv).unwrap_or_default(),
            None => req.command.clone(),
        };
        let base = spawn_spec(&req, env, cwd);
        let observed = self.inner.observer.get().map(|o| {
            o(&ExecStart {
                operation: "run_command",
                id: &id,
                command: &content,
                cwd: base.as_ref().ok().and_then(|b| b.cwd.as_deref()),
                uid: req.uid,
                gid: req.gid,
                background: req.background,
            })
        });
        let (journal, writer) = Journal::create(&self.inner.opts.journal_dir, &id);
        let started = Instant::now();
        let stdin_mode = match (req.tty, &req.stdin) {
            (Some((cols, rows)), _) => StdinMode::Tty { cols, rows },
            (None, StdinRequest::Null) => StdinMode::Null,
            (None, _) => StdinMode::Pipe,
        };
        let spawned = base.and_then(|spec| {
            spawn_io(spec, &req.limits, stdin_mode).map_err(|e| Box::new((e.to_string(), ExitInfo::spawn_failed(&e))))
        });
        let (child, mut pipes) = match spawned {
            Ok(c) => c,
            Err(failed) => {
                let (msg, exit) = *failed;
                return Ok(self.start_failed(
                    StartFailure { id, content, background: req.background, msg, exit },
                    journal,
                    writer,
                    observed,
                    started,
                ));
            }
        };
        let child = Arc::new(child);
        let (stdin, marks) = wire_stdin(req.stdin, req.awaiting_input_ms, pipes.stdin.take(), &writer, &child);
        let entry = Arc::new(
            Entry::running(id.clone(), content, req.background, journal.clone(), child.clone())
                .with_stdin(stdin)
                .with_tty(pipes.tty.take()),
        );
        self.save_running(&entry, &child);
        // Registered before `init` is produced: a status request right after `init` finds it (C43).
        self.inner.registry.insert(entry.clone());
        // One line per command, whichever route started it: the text bounded and scrubbed (§1.4).
        let text = match &req.argv {
            Some(argv) => std::borrow::Cow::Owned(argv.join(" ")),
            None => std::borrow::Cow::Borrowed(req.command.as_str()),
        };
        tracing::info!(
            id = %id,
            pid = child.pid(),
            command = %crate::telemetry::command_excerpt(&text),
            command_len = text.len(),
            background = req.background,
            "command started"
        );

        let deadline = (req.timeout_ms > 0).then(|| started + Duration::from_millis(req.timeout_ms as u64));
        let opts = PumpOptions { deadline, kill_group_on_exit: req.background };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(run_to_end(child, pipes, writer, opts, marks, entry, started, observed, weak));

        let events = if req.background {
            CommandEvents::fixed(vec![ExecEvent::init(&id), ExecEvent::complete(started.elapsed().as_millis() as u64)])
        } else {
            let lines = journal
                .line_events(self.inner.opts.max_line)
                .map_err(|source| CommandError::Read { id: id.clone(), source })?;
            CommandEvents { queue: vec![ExecEvent::init(&id)].into(), lines: Some(lines) }
        };
        Ok(Started { id, events })
    }

    /// The running record (X50): a later execd reports this command lost unless it finishes.
    fn save_running(&self, entry: &Entry, child: &GroupChild) {
        let rec = persist::running_record(
            &entry.id,
            &entry.content,
            entry.background,
            entry.started_at,
            child.pid(),
            child.leaf_paths(),
        );
        if let Err(e) = persist::save_new(&self.inner.opts.journal_dir, &rec) {
            tracing::warn!(id = %entry.id, error = %e, "could not write the command record; it will not survive a restart");
        }
    }

    /// The answer to a command that failed to start: `init` and `error` (foreground, not
    /// registered) or `init` and `RUNTIME_ERROR` (background, registered as failed). Its journal
    /// goes.
    fn start_failed(
        &self,
        f: StartFailure,
        journal: Journal,
        writer: JournalWriter,
        observed: Option<ExecDone>,
        started: Instant,
    ) -> Started {
        let StartFailure { id, content, background, msg, exit } = f;
        if let Some(done) = observed {
            done(&ExecEnd::of_process(None, &exit, started.elapsed()));
        }
        journal.remove_files();
        tracing::warn!(
            id = %id,
            error = %msg,
            command = %crate::telemetry::command_excerpt(&content),
            command_len = content.len(),
            "command failed to start"
        );
        let terminal = if background {
            let entry = Entry::failed(id.clone(), content, msg.clone(), exit.clone());
            self.save_failed(&entry);
            self.inner.registry.insert(Arc::new(entry));
            ExecEvent::runtime_error(msg).with_exit(exit)
        } else {
            ExecEvent::error(COMMAND_EXEC_ERROR, msg.clone(), vec![msg]).with_exit(exit)
        };
        drop(writer);
        Started { events: CommandEvents::fixed(vec![ExecEvent::init(&id), terminal]), id }
    }

    /// Writes the finished record of a background command that failed to start (X50).
    fn save_failed(&self, entry: &Entry) {
        let st = entry.status();
        let rec = persist::finished_record(
            &st.id,
            &st.content,
            entry.background,
            st.started_at,
            false,
            persist::Finished {
                exit_code: st.exit_code.unwrap_or(255),
                error: st.error.clone(),
                finished_at: persist::Time::from_system(st.finished_at.unwrap_or(st.started_at)),
                exit: persist::ExitRec::from_info(&st.exit.clone().unwrap_or_else(ExitInfo::lost)),
                journal: None,
                terminal: None,
            },
        );
        if let Err(e) = persist::save(&self.inner.opts.journal_dir, &rec, true) {
            tracing::warn!(id = %st.id, error = %e, "could not write the command record");
        }
    }

    /// Installs the observer of every later command (once; a second call is ignored).
    pub fn set_observer(&self, observer: ExecObserver) {
        let _ = self.inner.observer.set(observer);
    }

    /// `GET /command/status/{id}`.
    pub fn status(&self, id: &str) -> Result<CommandStatus, CommandError> {
        self.entry(id).map(|e| e.status())
    }

    /// `GET /command/{id}/logs?cursor=`: the raw output (stdout and stderr merged in write order)
    /// from byte `cursor` to the current end; works for foreground and background ids (D11).
    pub fn logs(&self, id: &str, cursor: u64) -> Result<LogSlice, CommandError> {
        let entry = self.entry(id)?;
        let journal = entry.journal.as_ref().ok_or_else(|| CommandError::NoLog(id.to_string()))?;
        let (file, start, end) =
            journal.raw_range(cursor).map_err(|source| CommandError::Read { id: id.to_string(), source })?;
        // Input is part of the journal but never of `/logs` (X12): a command that had some gets
        // its output read around it.
        let filtered = if journal.input_len() > 0 {
            let (reader, _) =
                journal.output_reader(start).map_err(|source| CommandError::Read { id: id.to_string(), source })?;
            Some(reader)
        } else {
            None
        };
        Ok(LogSlice { file, start, end, tail: end.max(cursor), filtered })
    }

    /// `GET /command/{id}/events`: replay from byte offset `after`, then follow until the end.
    pub fn events(&self, id: &str, after: u64) -> Result<ResumableEvents, CommandError> {
        let entry = self.entry(id)?;
        let (chunks, terminal) = match &entry.journal {
            Some(j) => {
                (Some(j.chunks(after).map_err(|source| CommandError::Read { id: id.to_string(), source })?), None)
            }
            None => (None, Some(ExecEvent::runtime_error(entry.status().error))),
        };
        let mut init = ExecEvent::init(id);
        init.timestamp = crate::event::now_ms();
        Ok(ResumableEvents {
            id: id.to_string(),
            init: Some(init),
            chunks,
            journal: entry.journal.clone(),
            terminal,
            done: false,
        })
    }

    /// `DELETE /command?id=`: SIGTERM to the group, SIGKILL after the interrupt grace; returns when
    /// the group is gone (C44). A finished command that left processes running (`&` children of a
    /// foreground command) has those ended the same way (#17); one that left nothing is an error,
    /// as upstream.
    pub async fn interrupt(&self, id: &str) -> Result<(), CommandError> {
        let entry = self.inner.registry.get(id).ok_or(CommandError::NoSuchSession)?;
        let Some(child) = entry.child() else {
            let leftover = entry.take_leftover().ok_or_else(|| CommandError::NotRunning(id.to_string()))?;
            leftover.kill_leftovers(self.inner.opts.interrupt_grace).await;
            return Ok(());
        };
        entry.mark_interrupted();
        child.terminate_group(self.inner.opts.interrupt_grace).await;
        Ok(())
    }

    /// `POST /command/{id}/stdin` (X11): writes `body` to the command's open stdin, in order and
    /// never interleaved with another request's body; `eof` closes it afterwards.
    pub async fn write_stdin<S, E>(
        &self,
        id: &str,
        body: S,
        eof: bool,
        timeout: Duration,
    ) -> Result<StdinWritten, CommandError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let entry = self.entry(id)?;
        let stdin = entry.stdin().ok_or_else(|| CommandError::StdinClosed(id.to_string()))?;
        stdin.write_body(id, body, eof, timeout).await
    }

    /// `POST /command/{id}/signal` (X14): `sig` to every process of the command (its cgroup leaf
    /// where it has one, else its process group).
    pub fn signal(&self, id: &str, sig: nix::sys::signal::Signal) -> Result<(), CommandError> {
        let entry = self.entry(id)?;
        let child = entry.child().ok_or_else(|| CommandError::Finished(id.to_string()))?;
        match child.signal_group(sig) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Err(CommandError::Finished(id.to_string())),
            // EPERM from members under another uid: the rest were signalled.
            _ => Ok(()),
        }
    }

    /// X15 `resize`: the window size of the command's terminal (its foreground process group gets
    /// `SIGWINCH`). [`CommandError::NoTerminal`] without one, `Finished` once it is closed.
    pub fn resize(&self, id: &str, cols: u16, rows: u16) -> Result<(), CommandError> {
        let entry = self.entry(id)?;
        let tty = entry.tty().ok_or_else(|| CommandError::NoTerminal(id.to_string()))?;
        let (cols, rows) = crate::process::tty::check_size(cols.into(), rows.into()).map_err(CommandError::Invalid)?;
        tty.resize(cols, rows).map_err(|_| CommandError::Finished(id.to_string()))
    }

    /// `GET /command/{id}/output` (X16): the bounded head/tail view of the output.
    pub async fn output_view(&self, id: &str, head: u64, tail: u64) -> Result<OutputView, CommandError> {
        let entry = self.entry(id)?;
        let journal = entry.journal.clone().ok_or_else(|| CommandError::NoLog(id.to_string()))?;
        let read_err = |source| CommandError::Read { id: id.to_string(), source };
        tokio::task::spawn_blocking(move || journal.output_view(head, tail))
            .await
            .map_err(|e| read_err(io::Error::other(e)))?
            .map_err(read_err)
    }

    /// X15: the journal of `id` (output, input and markers in order), to follow over a WebSocket.
    pub fn journal(&self, id: &str) -> Result<Journal, CommandError> {
        self.entry(id)?.journal.clone().ok_or_else(|| CommandError::NoLog(id.to_string()))
    }

    /// Whether `id` is a known command (for routes that also accept other kinds of ids).
    pub fn contains(&self, id: &str) -> bool {
        self.inner.registry.get(id).is_some()
    }

    /// Shutdown (D15): refuse new commands, SIGTERM every running group and what finished
    /// commands left running, SIGKILL after `grace`, and wait (bounded) until every waiter has
    /// written its terminal event; then sync the finished records still waiting (bounded too).
    pub async fn stop(&self, grace: Duration) {
        self.stop_commands(grace).await;
        let syncs = self.inner.syncs.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), tokio::task::spawn_blocking(move || syncs.flush())).await;
    }

    async fn stop_commands(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let running = self.inner.registry.running();
        let leftovers = self.inner.registry.with_leftovers();
        if running.is_empty() && leftovers.is_empty() {
            return;
        }
        tracing::info!(count = running.len(), leftovers = leftovers.len(), "stopping running commands");
        let mut set = tokio::task::JoinSet::new();
        // What finished foreground commands left running goes too (#17).
        for entry in leftovers {
            set.spawn(async move {
                if let Some(left) = entry.take_leftover() {
                    left.kill_leftovers(grace).await;
                }
            });
        }
        for entry in running {
            set.spawn(async move {
                if let Some(child) = entry.child() {
                    entry.mark_interrupted();
                    child.terminate_group(grace).await;
                }
                if let Some(j) = &entry.journal {
                    // Bounded: the group is gone or SIGKILLed, so the waiter reaps at once.
                    let _ = tokio::time::timeout(Duration::from_secs(2), j.closed()).await;
                }
                // And its finished record is written (X50): then a restart finds it interrupted,
                // not lost. Polled: the record write is a few milliseconds after the journal.
                let until = Instant::now() + Duration::from_secs(2);
                while entry.status().finished_at.is_none() && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
    }

    /// Number of known commands (running and retained finished ones).
    pub fn len(&self) -> usize {
        self.inner.registry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>, CommandError> {
        self.inner.registry.get(id).ok_or_else(|| CommandError::NotFound(id.to_string()))
    }
}

/// Checks an `argv` request: a non-empty `argv[0]`, no NUL byte anywhere (it cannot reach exec).
fn validate_argv(argv: &[String]) -> Result<(), CommandError> {
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err(CommandError::Invalid("argv: requires a non-empty executable in argv[0]".into()));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(CommandError::Invalid(format!("argv: argv[{i}] contains a NUL byte")));
    }
    Ok(())
}

/// The executable an `argv` request runs (as upstream's `resolveExecutable`): an absolute `name`
/// as is; a name with a `/` relative to `cwd` (execd's own directory when `None`); a bare name
/// looked up in the **absolute** entries of the child's `path` (after `EXECD_ENVS` and the
/// request's `envs`), taking the first regular file with an execute bit. The error is the
/// message of the terminal `error` event, Go's wording: `exec: "x": executable file not found in
/// $PATH`.
pub fn resolve_executable(name: &str, cwd: Option<&Path>, path: Option<&str>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if name.starts_with('/') {
        return Ok(PathBuf::from(name));
    }
    if name.contains('/') {
        let base = match cwd {
            Some(c) => c.to_path_buf(),
            None => std::env::current_dir().map_err(|e| format!("exec: {name:?}: current directory: {e}"))?,
        };
        return Ok(base.join(name));
    }
    for dir in path.unwrap_or("").split(':').filter(|d| d.starts_with('/')) {
        let candidate = Path::new(dir).join(name);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!("exec: {name:?}: executable file not found in $PATH"))
}

/// Evicts expired entries periodically (count limits are enforced at every finish). Ends when the
/// manager is dropped.
fn spawn_sweeper(inner: Weak<Inner>, ttl: Duration) {
    let period = (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { break };
            inner.registry.evict(Instant::now());
            // Lets go of finished commands' leftovers that ended by themselves (their cgroup
            // leaves go to the janitor).
            inner.registry.with_leftovers();
        }
    });
}

/// A command that could not be started, for [`CommandManager::start_failed`].
struct StartFailure {
    id: String,
    content: String,
    background: bool,
    msg: String,
    exit: ExitInfo,
}

/// What [`CommandManager::start`] refuses before anything runs.
fn validate(req: &CommandRequest) -> Result<(), CommandError> {
    match (&req.argv, req.command.is_empty()) {
        (None, true) => return Err(CommandError::Invalid("command: must not be empty".into())),
        (Some(_), false) => {
            return Err(CommandError::Invalid("command, argv: give exactly one of the two, not both".into()))
        }
        (Some(argv), true) => validate_argv(argv)?,
        (None, false) => {}
    }
    if req.timeout_ms < 0 {
        return Err(CommandError::Invalid(format!(
            "timeout: must be a positive number of milliseconds or 0 (got {})",
            req.timeout_ms
        )));
    }
    if let Some((cols, rows)) = req.tty {
        crate::process::tty::check_size(cols.into(), rows.into()).map_err(CommandError::Invalid)?;
        if req.stdin != StdinRequest::Open {
            return Err(CommandError::Invalid("tty: needs an open stdin".into()));
        }
    }
    if req.gid.is_some() && req.uid.is_none() {
        return Err(CommandError::Invalid("gid: requires uid".into()));
    }
    crate::cgroup::check_limits(&req.limits)?;
    Ok(())
}

/// The working directory `cwd` asks for (variables expanded with `env`), which must be an
/// existing directory; `None` for execd's own.
fn checked_cwd(cwd: &str, env: &BTreeMap<String, String>) -> Result<Option<PathBuf>, CommandError> {
    if cwd.is_empty() {
        return Ok(None);
    }
    let path = expand_path(cwd, |k| env.get(k).cloned());
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(Some(PathBuf::from(path))),
        Ok(_) => Err(CommandError::Invalid(format!("cwd: not a directory: {path}"))),
        Err(_) => Err(CommandError::Invalid(format!("cwd: working directory does not exist: {path}"))),
    }
}

/// How to spawn the command: its shell text through the shell, or its argv's program found on
/// `PATH`. An argv executable that cannot be found is a start failure (message and exit),
/// reported like a failed spawn.
/// An `env` that is execd's own (borrowed) is inherited as it is when it can be
/// ([`SpawnSpec::inherit_env`]).
fn spawn_spec(
    req: &CommandRequest,
    env: std::borrow::Cow<'static, BTreeMap<String, String>>,
    cwd: Option<PathBuf>,
) -> Result<SpawnSpec, Box<(String, ExitInfo)>> {
    let inherit = matches!(env, std::borrow::Cow::Borrowed(_)) && crate::process::env::inheritable();
    let base = match &req.argv {
        Some(argv) => match resolve_executable(&argv[0], cwd.as_deref(), env.get("PATH").map(String::as_str)) {
            Ok(path) => SpawnSpec {
                program: path,
                arg0: Some(argv[0].clone().into()),
                args: argv[1..].iter().map(Into::into).collect(),
                ..SpawnSpec::shell("")
            },
            Err(msg) => return Err(Box::new((msg, ExitInfo::not_found()))),
        },
        None => SpawnSpec::shell(&req.command),
    };
    Ok(SpawnSpec {
        env: if inherit { Vec::new() } else { env.into_owned().into_iter().collect() },
        inherit_env: inherit,
        cwd,
        credentials: req.uid.map(|u| resolve_credentials(u, req.gid)),
        output: if req.background { OutputMode::Merged } else { OutputMode::Separate },
        ..base
    })
}

/// What the child's stdin pipe becomes (X10–X13): nothing, a text fed and closed, or a handle kept
/// open for `POST /command/{id}/stdin`, whose awaiting-input markers the output pump places
/// (after the output already in the pipes) through the returned receiver.
fn wire_stdin(
    request: StdinRequest,
    awaiting_input_ms: Option<u64>,
    pipe: Option<crate::process::StdinPipe>,
    writer: &JournalWriter,
    child: &GroupChild,
) -> (Option<Arc<stdin::StdinHandle>>, Option<tokio::sync::mpsc::Receiver<crate::process::pump::MarkRequest>>) {
    let Some(pipe) = pipe else { return (None, None) };
    match request {
        StdinRequest::Null => (None, None),
        StdinRequest::Text(text) => (Some(stdin::StdinHandle::feed_text(pipe, writer.input_log(), text)), None),
        StdinRequest::Open => {
            let h = stdin::StdinHandle::open(pipe, writer.input_log());
            let quiet = awaiting_input_ms.unwrap_or(stdin::AWAITING_INPUT_MS);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            h.watch_awaiting_input(child.pid() as i32, Duration::from_millis(quiet), tx);
            (Some(h), Some(rx))
        }
    }
}

/// A started command from its pump to its end: output into the journal, then the finished
/// record, the terminal event, the observer and the registry.
#[allow(clippy::too_many_arguments)]
async fn run_to_end(
    child: Arc<GroupChild>,
    pipes: ChildPipes,
    mut writer: JournalWriter,
    opts: PumpOptions,
    marks: Option<tokio::sync::mpsc::Receiver<crate::process::pump::MarkRequest>>,
    entry: Arc<Entry>,
    started: Instant,
    observed: Option<ExecDone>,
    weak: Weak<Inner>,
) {
    // A journal write failure (disk full) was logged by the pump, which kept draining the
    // pipes; the command's own result still stands, and says how much output was lost.
    let (result, _write_err) = pump_output(&child, pipes, &mut writer, opts, marks).await;
    let outcome = result.outcome;
    let lost = writer.report_loss();
    if lost > 0 {
        tracing::warn!(id = %entry.id, bytes = lost, "output lost: the state directory could not take it");
    }
    let lost = (lost > 0).then_some(lost);
    if let Some(stdin) = entry.stdin() {
        stdin.close();
    }
    let ended_by = if result.timed_out {
        EndedBy::Timeout
    } else if entry.interrupted() {
        EndedBy::Interrupt
    } else {
        EndedBy::Itself
    };
    let exit = child.report().map(|r| ExitInfo { output_lost_bytes: lost, ..ExitInfo::from_report(&r, ended_by) });
    let terminal = if outcome.success() {
        ExecEvent::complete(started.elapsed().as_millis() as u64)
    } else {
        ExecEvent::error(COMMAND_EXEC_ERROR, outcome.code().to_string(), vec![outcome.describe()])
    };
    let terminal = match &exit {
        Some(x) => terminal.with_exit(x.clone()),
        None => terminal,
    };
    // The finished record first (X50): a client that saw the terminal event or the
    // finished status finds the command finished after any restart.
    let extent = writer.journal().extent();
    let terminal_rec = persist::EventRec::from_event(&terminal);
    let exit = exit.unwrap_or_else(|| ExitInfo { output_lost_bytes: lost, ..ExitInfo::lost() });
    let finished_at = std::time::SystemTime::now();
    let rec = persist::finished_record(
        &entry.id,
        &entry.content,
        entry.background,
        entry.started_at,
        true,
        persist::Finished {
            exit_code: outcome.code(),
            error: registry::outcome_error(outcome),
            finished_at: persist::Time::from_system(finished_at),
            exit: persist::ExitRec::from_info(&exit),
            journal: Some(extent),
            terminal: Some(terminal_rec),
        },
    );
    if let Some(dir) = weak.upgrade().map(|i| i.opts.journal_dir.clone()) {
        let id = entry.id.clone();
        // In place before the terminal event (it survives execd's death from then on); made
        // durable on disk right after, off the command's latency path. A record that fits in a
        // page is one `pwrite` into the file the running record made, done here (~10 µs, no
        // thread hand-off); a larger one is a temporary and a rename, on the blocking pool.
        match persist::save_in_place(&dir, &rec) {
            Ok(Some(file)) => {
                if let Some(inner) = weak.upgrade() {
                    inner.syncs.push(file);
                }
            }
            Ok(None) | Err(_) => {
                let (saved_tx, saved) = tokio::sync::oneshot::channel();
                tokio::task::spawn_blocking(move || {
                    let saved = persist::save(&dir, &rec, false);
                    let ok = saved.is_ok();
                    let _ = saved_tx.send(saved);
                    if ok {
                        persist::sync(&dir, &rec.id);
                    }
                });
                if let Ok(Err(e)) = saved.await {
                    tracing::warn!(id = %id, error = %e, "could not write the finished command record");
                }
            }
        }
    }
    if let Some(done) = observed {
        done(&ExecEnd::of_process(Some(outcome.code()), &exit, started.elapsed()));
    }
    // Then the status, then the journal's terminal event, as upstream updates the record before
    // it sends the event (reference §4.2, step 7): a client that saw the terminal event finds
    // the command finished. (The other way round, a status request right after the event could
    // still read `running`: x55 under qemu did, 2026-12-05.)
    entry.finish(outcome, exit, finished_at);
    writer.finish(Some(terminal));
    tracing::info!(id = %entry.id, result = %outcome.describe(), timed_out = result.timed_out, "command finished");
    if let Some(inner) = weak.upgrade() {
        inner.registry.mark_finished(&entry.id);
    }
    // Dropping the last handle removes the cgroup leaf (a `cgroup.procs` read and an `rmdir` per
    // hierarchy), and whether anything of the command is left running is probed (`/proc`, the
    // group, the leaf): let the response that was just woken write the terminal event first.
    tokio::task::yield_now().await;
    entry.release_leftover_if_gone();
    drop(child);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(path: &Path, mode: u32) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn sdk24_argv_resolution_follows_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("a")).unwrap();
        std::fs::create_dir(d.join("b")).unwrap();
        std::fs::create_dir(d.join("b/dirtool")).unwrap();
        exe(&d.join("a/tool"), 0o644); // not executable: skipped
        exe(&d.join("b/tool"), 0o755);
        exe(&d.join("a/only"), 0o700);
        let path = format!("rel:{}:{}:", d.join("a").display(), d.join("b").display());
        assert_eq!(resolve_executable("tool", None, Some(&path)), Ok(d.join("b/tool")));
        assert_eq!(resolve_executable("only", None, Some(&path)), Ok(d.join("a/only")));
        // A directory is not an executable.
        assert!(resolve_executable("dirtool", None, Some(&path)).is_err());
        // Relative PATH entries are never searched, even from a cwd holding the tool.
        assert_eq!(
            resolve_executable("tool", Some(&d.join("b")), Some(".:rel")),
            Err(r#"exec: "tool": executable file not found in $PATH"#.to_string())
        );
        assert!(resolve_executable("tool", None, None).is_err());
        // Absolute as is (existence is the spawn's business); with a slash, against cwd.
        assert_eq!(resolve_executable("/no/such", None, Some(&path)), Ok(PathBuf::from("/no/such")));
        assert_eq!(resolve_executable("./b/tool", Some(d), Some("")), Ok(d.join("./b/tool")));
        assert_eq!(resolve_executable("b/tool", Some(d), Some("")), Ok(d.join("b/tool")));
        let here = std::env::current_dir().unwrap();
        assert_eq!(resolve_executable("x/y", None, None), Ok(here.join("x/y")));
    }

    #[test]
    fn sdk24_argv_validation() {
        let v =
            |a: &[&str]| validate_argv(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(|e| e.to_string());
        assert!(v(&["echo", "", "a b"]).is_ok());
        assert!(v(&[]).unwrap_err().contains("argv[0]"));
        assert!(v(&["", "x"]).unwrap_err().contains("argv[0]"));
        assert_eq!(v(&["echo", "a\0b"]).unwrap_err(), "argv: argv[1] contains a NUL byte");
    }
}
