//! PTY sessions (reference §11, DECISIONS D51): [`PtyManager`] keeps sessions by id; each session
//! has at most one shell at a time (started on the first attach, restarted on an attach after it
//! exited), a [`ring::ReplayRing`] of its output, and at most one attached client.
//!
//! - `POST /pty` → [`PtyManager::create`] (no process yet); `GET` → [`PtyManager::status`];
//!   `DELETE` → [`PtyManager::delete`] (SIGKILL to the whole session, output detached).
//! - A client attaches with [`PtyManager::attach`]: the shell is started if needed, then the replay
//!   snapshot is taken and the client's output channel installed under one lock, so no byte is
//!   lost or doubled between replay and live output. [`PtyManager::evict`] asks the holder to leave
//!   (takeover); the [`PtyHandle`] it holds detaches on drop.
//! - Output pumps read the terminal (or the two pipes) in chunks of up to 32 KiB, append to the ring
//!   and forward to the attached client, if any. With no client the shell keeps running and its
//!   output goes only to the ring. When the shell exits, what is left of its session is killed,
//!   output is drained, the shell reaped, and the client gets [`Output::Exit`] after all output.
//! - Sessions with no client for `idle_ttl` are collected (D51); [`PtyManager::stop`] kills every
//!   shell at shutdown.
//!
//! No HTTP here: `api::pty` speaks WebSocket and maps [`PtyError`].

pub mod ring;
pub mod shell;
pub mod web_assets;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::process;
use ring::{ReplayRing, REPLAY_CAPACITY};
pub use shell::Mode;
use shell::{OutputSource, ShellProc, ShellSpec, StdinSink};

/// Largest chunk read from the shell at once (one output frame).
pub const READ_CHUNK: usize = 32 * 1024;
/// Output chunks queued for a client before the pump waits for it (bounded memory).
const CLIENT_QUEUE: usize = 64;
/// After the shell exited, how long its remaining output may take to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// Shutdown waits at most this long for killed shells to be reaped.
const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// Errors of PTY sessions.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("pty session {0} not found")]
    NotFound(String),
    #[error("another client is already connected to pty session {0}")]
    AlreadyConnected(String),
    #[error("error creating working directory {path}: {source}")]
    CreateDir { path: String, source: io::Error },
    #[error("failed to start shell: {0}")]
    Start(io::Error),
    #[error("error writing to stdin: {0}")]
    StdinWrite(io::Error),
    #[error("execd is shutting down")]
    ShuttingDown,
}

/// Options for [`PtyManager::new`].
#[derive(Debug, Clone)]
pub struct PtyOpts {
    /// Sessions with no client for this long are collected (D51).
    pub idle_ttl: Duration,
}

/// What `GET /pty/{id}` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PtyStatus {
    pub session_id: String,
    pub running: bool,
    pub output_offset: u64,
}

/// One item of a client's output channel.
#[derive(Debug)]
pub enum Output {
    Stdout(Bytes),
    /// Pipe mode only.
    Stderr(Bytes),
    /// The shell exited with this code (-1: killed by a signal); sent after all its output.
    Exit(i32),
}

/// Signals a client may send (reference §11.3); others are ignored.
pub fn parse_signal(name: &str) -> Option<Signal> {
    match name {
        "SIGINT" => Some(Signal::SIGINT),
        "SIGTERM" => Some(Signal::SIGTERM),
        "SIGKILL" => Some(Signal::SIGKILL),
        "SIGQUIT" => Some(Signal::SIGQUIT),
        "SIGHUP" => Some(Signal::SIGHUP),
        _ => None,
    }
}

/// The manager: cheap to clone.
#[derive(Clone)]
pub struct PtyManager {
    inner: Arc<Inner>,
}

struct Inner {
    opts: PtyOpts,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    shutdown: CancellationToken,
    next_conn: AtomicU64,
    collector: Once,
}

/// One PTY session.
struct Session {
    id: String,
    cwd: Option<PathBuf>,
    command: Option<String>,
    state: Mutex<State>,
    /// The current shell's input. A tokio lock: writes wait while the terminal is full.
    stdin: tokio::sync::Mutex<Option<StdinSink>>,
}

struct State {
    ring: ReplayRing,
    /// The current shell, until it is reaped.
    shell: Option<Arc<ShellProc>>,
    client: Option<Client>,
    /// Since when no client is attached (for the idle collector).
    idle_since: Instant,
    /// Deleted or collected: no new shell is started.
    closed: bool,
}

struct Client {
    conn: u64,
    tx: mpsc::Sender<Output>,
    evict: CancellationToken,
}

/// A client's attachment, from [`PtyManager::attach`].
pub struct Attachment {
    /// Controls the shell; detaches the client when dropped.
    pub handle: PtyHandle,
    /// The mode of the running shell.
    pub mode: Mode,
    /// `(offset of the first byte, bytes)` when there is something to replay.
    pub replay: Option<(u64, Vec<u8>)>,
    /// Live output, then [`Output::Exit`]. Closed when the session is deleted.
    pub output: mpsc::Receiver<Output>,
    /// Cancelled when another client takes the session over.
    pub evicted: CancellationToken,
}

/// An attached client's handle on its session. Dropping it detaches the client.
pub struct PtyHandle {
    session: Arc<Session>,
    conn: u64,
}

impl PtyHandle {
    /// Writes to the shell's stdin (the PTY master in PTY mode).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), PtyError> {
        let mut stdin = self.session.stdin.lock().await;
        match stdin.as_mut() {
            Some(s) => s.write_all(data).await.map_err(PtyError::StdinWrite),
            None => Err(PtyError::StdinWrite(io::Error::from(io::ErrorKind::BrokenPipe))),
        }
    }

    /// Sends `sig` to the shell's process group (and the terminal's foreground job).
    pub fn signal(&self, sig: Signal) {
        if let Some(shell) = self.session.current_shell() {
            if let Err(e) = shell.signal(sig) {
                tracing::debug!(session = %self.session.id, error = %e, "pty: signal failed");
            }
        }
    }

    /// Resizes the terminal; a no-op in pipe mode or when either size is 0.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        match self.session.current_shell() {
            Some(shell) => shell.resize(cols, rows),
            None => Ok(()),
        }
    }
}

impl Drop for PtyHandle {
    fn drop(&mut self) {
        let mut st = self.session.lock();
        if st.client.as_ref().is_some_and(|c| c.conn == self.conn) {
            st.client = None;
            st.idle_since = Instant::now();
        }
    }
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current_shell(&self) -> Option<Arc<ShellProc>> {
        self.lock().shell.clone()
    }

    /// The argv of this session's shell: `bash --norc --noprofile [-c command]` (`sh [-c command]`
    /// where there is no bash).
    fn spec(&self, mode: Mode) -> ShellSpec {
        let program = process::shell().to_path_buf();
        let is_bash = program.file_name().is_some_and(|n| n == "bash");
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if is_bash {
            args.extend(["--norc".into(), "--noprofile".into()]);
        }
        if let Some(c) = &self.command {
            args.extend(["-c".into(), c.into()]);
        }
        // execd's environment as it is (minus execd's own secrets, D17); TERM set when unset (D51).
        let mut env = process::env::base_env();
        if env.get("TERM").is_none_or(|t| t.is_empty()) {
            env.insert("TERM".to_string(), "xterm-256color".to_string());
        }
        ShellSpec { program, args, env: env.into_iter().collect(), cwd: self.cwd.clone(), mode }
    }

    /// Kills the whole shell session and detaches the client (delete, collection, shutdown).
    fn close(&self) -> Option<Arc<ShellProc>> {
        let (shell, client) = {
            let mut st = self.lock();
            st.closed = true;
            (st.shell.clone(), st.client.take())
        };
        // Dropping the client's sender closes its output channel: the connection ends.
        drop(client);
        if let Some(s) = &shell {
            s.kill_all();
        }
        shell
    }
}

impl PtyManager {
    /// A manager with no sessions. The idle collector starts with the first session.
    pub fn new(opts: PtyOpts) -> PtyManager {
        PtyManager {
            inner: Arc::new(Inner {
                opts,
                sessions: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                next_conn: AtomicU64::new(1),
                collector: Once::new(),
            }),
        }
    }

    /// Cancelled when shutdown starts; open connections watch it.
    pub fn closing(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Result<Arc<Session>, PtyError> {
        self.sessions().get(id).cloned().ok_or_else(|| PtyError::NotFound(id.to_string()))
    }

    /// Creates a session (no process yet). A non-empty `cwd` is expanded and created.
    pub fn create(&self, cwd: &str, command: &str) -> Result<String, PtyError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(PtyError::ShuttingDown);
        }
        let cwd = if cwd.is_empty() {
            None
        } else {
            let expanded = crate::expand::expand_path(cwd, |k| std::env::var(k).ok());
            let path = std::path::absolute(Path::new(&expanded)).unwrap_or_else(|_| PathBuf::from(&expanded));
            std::fs::create_dir_all(&path)
                .map_err(|source| PtyError::CreateDir { path: path.display().to_string(), source })?;
            Some(path)
        };
        let id = uuid::Uuid::new_v4().to_string();
        let session = Session {
            id: id.clone(),
            cwd,
            command: (!command.is_empty()).then(|| command.to_string()),
            state: Mutex::new(State {
                ring: ReplayRing::new(REPLAY_CAPACITY),
                shell: None,
                client: None,
                idle_since: Instant::now(),
                closed: false,
            }),
            stdin: tokio::sync::Mutex::new(None),
        };
        self.sessions().insert(id.clone(), Arc::new(session));
        self.start_collector();
        Ok(id)
    }

    /// `running` and `output_offset` of a session.
    pub fn status(&self, id: &str) -> Result<PtyStatus, PtyError> {
        let session = self.get(id)?;
        let st = session.lock();
        Ok(PtyStatus { session_id: id.to_string(), running: st.shell.is_some(), output_offset: st.ring.total() })
    }

    /// Removes a session: SIGKILL to every process of the shell's session, stdin closed, the
    /// client's output detached. The shell is reaped by its supervisor.
    pub fn delete(&self, id: &str) -> Result<(), PtyError> {
        let session = self.sessions().remove(id).ok_or_else(|| PtyError::NotFound(id.to_string()))?;
        session.close();
        // Close stdin now unless a write holds it; otherwise it closes with the session.
        if let Ok(mut stdin) = session.stdin.try_lock() {
            stdin.take();
        }
        Ok(())
    }

    /// The check done before a WebSocket upgrade: the session exists and, unless `may_take_over`,
    /// no client holds it.
    pub fn check_attachable(&self, id: &str, may_take_over: bool) -> Result<(), PtyError> {
        let session = self.get(id)?;
        if !may_take_over && session.lock().client.is_some() {
            return Err(PtyError::AlreadyConnected(id.to_string()));
        }
        Ok(())
    }

    /// Asks the current holder of `id`, if any, to leave (takeover).
    pub fn evict(&self, id: &str) {
        if let Ok(session) = self.get(id) {
            if let Some(c) = &session.lock().client {
                c.evict.cancel();
            }
        }
    }

    /// Attaches a client: starts the shell in `mode` if none is running, then (in one step)
    /// snapshots the ring from `since` and installs the client's output channel.
    pub fn attach(&self, id: &str, mode: Mode, since: u64) -> Result<Attachment, PtyError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(PtyError::ShuttingDown);
        }
        let session = self.get(id)?;
        let mut st = session.lock();
        if st.closed {
            return Err(PtyError::NotFound(id.to_string()));
        }
        if st.client.is_some() {
            return Err(PtyError::AlreadyConnected(id.to_string()));
        }
        let shell = match &st.shell {
            Some(s) => s.clone(),
            None => {
                let (shell, io) = shell::spawn_shell(&session.spec(mode)).map_err(PtyError::Start)?;
                let shell = Arc::new(shell);
                tracing::info!(session = %id, pid = shell.pid(), mode = mode.as_str(), "pty: shell started");
                // Nobody else can hold the stdin lock for long while no shell runs; try_lock avoids
                // awaiting under the state lock. A writer still holding the old sink loses it.
                match session.stdin.try_lock() {
                    Ok(mut g) => *g = Some(io.stdin),
                    Err(_) => {
                        let s2 = session.clone();
                        let sink = io.stdin;
                        tokio::spawn(async move { *s2.stdin.lock().await = Some(sink) });
                    }
                }
                st.shell = Some(shell.clone());
                tokio::spawn(supervise(session.clone(), shell.clone(), io.stdout, io.stderr));
                shell
            }
        };
        let (start, bytes) = st.ring.snapshot(since);
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let evict = CancellationToken::new();
        let conn = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        st.client = Some(Client { conn, tx, evict: evict.clone() });
        drop(st);
        Ok(Attachment {
            handle: PtyHandle { session, conn },
            mode: shell.mode(),
            replay: (!bytes.is_empty()).then_some((start, bytes)),
            output: rx,
            evicted: evict,
        })
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions().len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shutdown: kills every shell (SIGKILL to its whole session), closes every connection, and
    /// waits (bounded) until the shells exited.
    pub async fn stop(&self) {
        self.inner.shutdown.cancel();
        let sessions: Vec<_> = self.sessions().drain().map(|(_, s)| s).collect();
        let shells: Vec<_> = sessions.iter().filter_map(|s| s.close()).collect();
        let all = futures_util::future::join_all(shells.iter().map(|s| s.exited()));
        if tokio::time::timeout(STOP_DEADLINE, all).await.is_err() {
            tracing::warn!("pty shells did not exit in time at shutdown");
        }
    }

    /// Starts the idle collector (D51) once, from inside the runtime.
    fn start_collector(&self) {
        self.inner.collector.call_once(|| {
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            crate::idle::spawn_idle_collector(
                weak,
                self.inner.opts.idle_ttl,
                self.inner.shutdown.clone(),
                |inner, ttl| PtyManager { inner }.collect_idle(ttl),
            );
        });
    }

    /// Removes and kills sessions with no client for `ttl`.
    fn collect_idle(&self, ttl: Duration) {
        let idle: Vec<Arc<Session>> = {
            let mut map = self.sessions();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, s)| {
                    let st = s.lock();
                    st.client.is_none() && st.idle_since.elapsed() >= ttl
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for s in idle {
            tracing::info!(session = %s.id, "pty: idle session collected");
            s.close();
            if let Ok(mut g) = s.stdin.try_lock() {
                g.take();
            }
        }
    }
}

/// Which output a pump reads.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Copies one output of the shell to the ring and the attached client until end of output.
async fn pump(session: Arc<Session>, mut src: OutputSource, stream: Stream) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(session = %session.id, error = %e, "pty: output read failed");
                return;
            }
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        // Ring append and client lookup under one lock: an attach sees this chunk either in its
        // snapshot or on its channel, never both, never neither.
        let tx = {
            let mut st = session.lock();
            st.ring.push(&chunk);
            st.client.as_ref().map(|c| c.tx.clone())
        };
        if let Some(tx) = tx {
            let item = match stream {
                Stream::Stdout => Output::Stdout(chunk),
                Stream::Stderr => Output::Stderr(chunk),
            };
            // Waits while the client's queue is full (backpressure, like a terminal); fails at
            // once when the client went away.
            let _ = tx.send(item).await;
        }
    }
}

/// Runs the pumps of one shell, and when it exits: kills what is left of its session, drains the
/// output (bounded), reaps, and tells the attached client.
async fn supervise(session: Arc<Session>, shell: Arc<ShellProc>, stdout: OutputSource, stderr: Option<OutputSource>) {
    let mut pumps = vec![tokio::spawn(pump(session.clone(), stdout, Stream::Stdout))];
    if let Some(e) = stderr {
        pumps.push(tokio::spawn(pump(session.clone(), e, Stream::Stderr)));
    }
    shell.exited().await;
    // Background jobs would keep the terminal open and the output from ending.
    shell.kill_all();
    let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
    if tokio::time::timeout(DRAIN_DEADLINE, futures_util::future::join_all(pumps)).await.is_err() {
        aborts.iter().for_each(|a| a.abort());
    }
    let code = shell.reap();
    tracing::info!(session = %session.id, pid = shell.pid(), exit_code = code, "pty: shell exited");
    let tx = {
        let mut st = session.lock();
        if st.shell.as_ref().is_some_and(|s| Arc::ptr_eq(s, &shell)) {
            st.shell = None;
        }
        st.client.as_ref().map(|c| c.tx.clone())
    };
    if let Some(tx) = tx {
        let _ = tx.send(Output::Exit(code)).await;
    }
}
