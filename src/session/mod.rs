//! Bash sessions (reference §5; DECISIONS D17, D20–D22, D51): [`SessionManager`] creates, runs in,
//! deletes and collects sessions; [`SessionError`] says why not.
//!
//! A session is a directory `<state_dir>/sessions/<id>/` holding its shell state file
//! (`state.<gen>.sh`, see [`bash`] for the handover design) and, while a run is in progress, that
//! run's command file. No process lives between runs: every run is a fresh
//! `bash --noprofile --norc` leading its own process group, started with an empty environment
//! (the state file exports the session's variables), so `exit 7` or `exec` end the run, never the
//! session (C75, C79).
//!
//! - The environment of a new session is execd's own minus internal variables
//!   (`EXECD_ACCESS_TOKEN`, ...) plus the `EXECD_ENVS` file, read once at creation (D17).
//! - Runs on one session are serialised (D21): a second run waits for the first; if it waited
//!   longer than its own timeout it fails with [`SessionError::Busy`] before any event.
//! - A run ends when bash ends, even if background children still hold the output pipe (C183);
//!   timeout, delete, client disconnect and shutdown kill the run's whole process group (D22).
//!   Children left holding the pipe after a normal end keep running, their output read and
//!   discarded (so they never get SIGPIPE), until they close it or the session goes away (then
//!   their group is killed).
//! - A run's stdin is `/dev/null` (as upstream) or, with a `stdin` string (X10), a pipe that a
//!   small task fills with those bytes and then closes (EOF); the task gives up when nothing reads
//!   the pipe any more or the run ended, so a run that ignores its input neither hangs nor holds
//!   the session. The bytes never reach argv, a file or the log.
//! - Sessions with no run for `idle_ttl` are collected (D51). A deleted or collected session's
//!   directory is removed as soon as no run uses it; a run's command file and raw save are
//!   removed when it ends.
//! - A client disconnect kills the run's group (upstream SIGKILLs the bash leader only), so the
//!   session is free for the next run at once. A run's state is kept only if it ended by itself.
//! - After each run execd reads the saved state once into memory to compact it
//!   ([`bash::compact_state`]); its size is that of the session's variables and functions.
//!   The complete raw save is renamed into place before the run's terminal event is sent; the
//!   compacted form replaces it after the event, before the next run.
//! - Sessions survive a restart of execd (X50, [`persist`]): their directories are loaded at
//!   start (and kept at shutdown); `--fresh-state` removes them instead.

pub mod bash;
mod persist;
mod run;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cgroup::Limits;
use crate::event::{ExecEnd, ExecEvent, ExecObserver, ExecStart, ExitInfo};
use crate::process::{self, OutputMode, SpawnError, SpawnSpec, StdinMode, StdinPipe};

/// A run without a timeout is bounded by this (upstream's default).
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Events buffered between the run and a slow client before the run stops reading its pipe.
const EVENT_BUFFER: usize = 16;

/// What the session manager needs from the configuration.
#[derive(Debug, Clone)]
pub struct SessionOpts {
    /// Sessions live in `<state_dir>/sessions/`.
    pub state_dir: PathBuf,
    /// Sessions without a run for this long are collected (D51).
    pub idle_ttl: Duration,
    /// The `EXECD_ENVS` file, applied to new sessions (D17).
    pub envs_file: Option<String>,
    /// At shutdown, running groups get SIGTERM and then SIGKILL after this.
    pub shutdown_grace: Duration,
    /// `--fresh-state`: remove the sessions an earlier execd left instead of loading them (X50).
    pub fresh_state: bool,
}

/// One `POST /session/{id}/run`.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Bash source, parsed as written (aliases of earlier runs expand).
    pub command: String,
    /// Directory to run in (`~`/`$VAR` expanded; must exist); it persists for later runs.
    pub cwd: Option<String>,
    /// Bounds the wait for a busy session and, separately, the run; `None`: 24 h.
    pub timeout: Option<Duration>,
    /// X10: these bytes on the run's stdin, then EOF; `None`: `/dev/null` (as upstream).
    pub stdin: Option<String>,
    /// X23: limits of this run's cgroup leaf; each one not set comes from the session's.
    pub limits: Limits,
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Delete (or lookup) of an id that is not a session.
    #[error("session {id} not found")]
    NotFound { id: String },
    /// A run on an id that is not a session (upstream's wording, C81).
    #[error("error running in session. context not found")]
    RunContextNotFound { id: String },
    /// D21: another run held the session for longer than this run's timeout.
    #[error("session {id} is busy: another run did not finish within this run's timeout of {waited_ms} ms")]
    Busy { id: String, waited_ms: u128 },
    #[error("command must not be empty")]
    EmptyCommand,
    #[error("working directory does not exist: {path}")]
    CwdMissing { path: String },
    #[error("working directory is not a directory: {path}")]
    CwdNotDir { path: String },
    #[error("error creating directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("error {op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("bash sessions need bash on execd's PATH")]
    NoBash,
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// X23: limits asked for (by the session or the run) that cannot be applied, or out of range.
    #[error(transparent)]
    Limits(#[from] crate::cgroup::CgroupError),
    #[error("execd is shutting down")]
    ShuttingDown,
}

impl SessionError {
    fn io(op: &'static str, path: &Path, source: std::io::Error) -> SessionError {
        SessionError::Io { op, path: path.display().to_string(), source }
    }
}

/// The events of one run: `init` (the session id), `stdout` lines (stderr merged, blank lines
/// dropped), then `execution_complete` or `error`. Dropping it (client gone) kills the run.
pub type RunEvents = tokio_stream::wrappers::ReceiverStream<ExecEvent>;

/// Handle to every bash session; cheap to clone.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    opts: SessionOpts,
    root: PathBuf,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Cancelled by [`SessionManager::stop`]; every session's `closed` token is a child of it.
    shutdown: CancellationToken,
    /// Number of runs in progress (for `stop` to wait on).
    active: watch::Sender<usize>,
    collector: std::sync::Once,
    /// Told about every run (audit log, metrics, tracing).
    observer: std::sync::OnceLock<ExecObserver>,
}

/// One session. Dropped (and its directory removed) once it is out of the map and no run holds it.
struct Session {
    id: String,
    dir: PathBuf,
    /// Where bash starts before the state file's `cd` (the creation cwd), if it still exists.
    start_dir: Option<PathBuf>,
    /// The current state generation; held by the run in progress (serialises runs, D21).
    slot: Arc<tokio::sync::Mutex<u64>>,
    /// Cancelled on delete, collection and shutdown: kills the run and lingering groups.
    closed: CancellationToken,
    activity: Mutex<Activity>,
    /// Set at shutdown: the directory stays for the next execd (X50).
    keep: std::sync::atomic::AtomicBool,
    /// X23: the limits of every run's leaf, unless the run sets its own.
    limits: Limits,
}

struct Activity {
    last: Instant,
    running: usize,
}

impl Session {
    fn state_file(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("state.{generation}.sh"))
    }
    fn touch(&self, running_delta: isize) {
        let mut a = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        a.last = Instant::now();
        a.running = a.running.saturating_add_signed(running_delta);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.keep.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // Last user gone: nothing reads these files any more.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove session directory");
            }
        }
    }
}

impl SessionManager {
    /// A manager keeping sessions under `<state_dir>/sessions/`. The sessions an earlier execd
    /// left there come back with their ids and state (X50, [`persist`]), or are removed with
    /// `fresh_state`. Must be called inside a tokio runtime.
    pub fn new(opts: SessionOpts) -> SessionManager {
        let root = opts.state_dir.join("sessions");
        let restored = persist::load(&root, opts.fresh_state);
        let (active, _) = watch::channel(0);
        let shutdown = CancellationToken::new();
        let now = Instant::now();
        let sessions: HashMap<String, Arc<Session>> = restored
            .into_iter()
            .map(|r| {
                let session = Session {
                    id: r.id.clone(),
                    dir: r.dir,
                    start_dir: None,
                    slot: Arc::new(tokio::sync::Mutex::new(r.generation)),
                    closed: shutdown.child_token(),
                    activity: Mutex::new(Activity { last: now.checked_sub(r.idle).unwrap_or(now), running: 0 }),
                    keep: Default::default(),
                    limits: r.limits,
                };
                (r.id, Arc::new(session))
            })
            .collect();
        let any = !sessions.is_empty();
        if any {
            tracing::info!(count = sessions.len(), "bash sessions of an earlier execd loaded");
        }
        let manager = SessionManager {
            inner: Arc::new(Inner {
                opts,
                root,
                sessions: Mutex::new(sessions),
                shutdown,
                active,
                collector: std::sync::Once::new(),
                observer: std::sync::OnceLock::new(),
            }),
        };
        if any {
            manager.start_collector();
        }
        manager
    }

    /// Installs the observer of every later run (once; a second call is ignored).
    pub fn set_observer(&self, observer: ExecObserver) {
        let _ = self.inner.observer.set(observer);
    }

    /// `POST /session`: a new session whose runs start in `cwd` (created like `mkdir -p`; `~` and
    /// `$VAR` expanded), each in a cgroup leaf with `limits` (X23) unless the run sets its own.
    /// Returns the session id (a UUIDv4 with dashes). No process starts.
    pub async fn create(&self, cwd: Option<String>, limits: Limits) -> Result<String, SessionError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        crate::cgroup::check_limits(&limits)?;
        self.start_collector();
        let inner = self.inner.clone();
        let id = uuid::Uuid::new_v4().to_string();
        let session_id = id.clone();
        // Small local file work (env file read, mkdir, one write): off the async workers.
        let session = tokio::task::spawn_blocking(move || inner.new_session(session_id, cwd, limits))
            .await
            .map_err(|e| SessionError::io("creating session", Path::new(""), std::io::Error::other(e)))??;
        let mut map = self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id.clone(), Arc::new(session));
        Ok(id)
    }

    /// `POST /session/{id}/run`: waits for the session to be free (D21), starts the run and
    /// returns its events. Errors here come before any event (JSON answers).
    pub async fn run(&self, id: &str, req: RunRequest) -> Result<RunEvents, SessionError> {
        let (session, cwd, limits) = self.check_run(id, &req)?;
        let timeout = req.timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_RUN_TIMEOUT);
        let guard = wait_for_turn(&session, id, timeout).await?;
        let files = RunFiles::write(&session, *guard, &req.command)?;
        let driver = bash::driver(&files.state, &files.cmd, &files.raw, cwd.as_deref());
        let spec = driver_spec(process::shell(), driver, session.start_dir.clone().filter(|d| d.is_dir()));
        let stdin_mode = if req.stdin.is_some() { StdinMode::Pipe } else { StdinMode::Null };
        let observed = self.inner.observer.get().map(|o| {
            o(&ExecStart {
                operation: "run_in_session",
                id,
                command: &req.command,
                cwd: cwd.as_deref(),
                uid: None,
                gid: None,
                background: false,
            })
        });
        let started = Instant::now();
        let (child, mut pipes) = match process::spawn_io(spec, &limits, stdin_mode) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&files.cmd);
                if let Some(done) = observed {
                    done(&ExecEnd::of_process(None, &ExitInfo::spawn_failed(&e), started.elapsed()));
                }
                return Err(match e {
                    SpawnError::Cgroup(e) => SessionError::Limits(e),
                    e => e.into(),
                });
            }
        };
        // Cancelled when the run task ends: a writer still blocked on a full pipe stops then.
        let run_over = CancellationToken::new();
        if let (Some(pipe), Some(text)) = (pipes.stdin.take(), req.stdin) {
            feed_stdin(pipe, text, run_over.clone());
        }
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        // Cannot fail: the channel is new and has room.
        let _ = tx.try_send(ExecEvent::init(id));
        session.touch(1);
        self.inner.active.send_modify(|n| *n += 1);
        let ctx = run::RunCtx {
            session_id: id.to_string(),
            child: Arc::new(child),
            pipe: pipes.stdout.take(),
            started,
            timeout,
            closed: session.closed.clone(),
            shutdown: self.inner.shutdown.clone(),
            shutdown_grace: self.inner.opts.shutdown_grace,
            adopt: Box::new(move |keep| {
                let adopted = files.adopt(keep);
                (adopted, Box::new(move || files.tidy(adopted)) as run::Tidy)
            }),
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _run_over = run_over.drop_guard();
            let mut guard = guard;
            // Local file work of up to the state's size happens in `drive`, off the async workers,
            // before the terminal event.
            let finished = run::drive(ctx, tx).await;
            if finished.adopted {
                *guard += 1;
            }
            if let Some(done) = observed {
                done(&ExecEnd::of_process(Some(finished.exit_code), &finished.exit, started.elapsed()));
            }
            session.touch(-1);
            drop(guard);
            drop(session);
            inner.active.send_modify(|n| *n -= 1);
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// What a run needs before it waits for its turn: a command, a daemon not stopping, bash, the
    /// session, its working directory (resolved) and limits (the run's, else the session's).
    fn check_run(
        &self,
        id: &str,
        req: &RunRequest,
    ) -> Result<(Arc<Session>, Option<PathBuf>, crate::cgroup::Limits), SessionError> {
        if req.command.is_empty() {
            return Err(SessionError::EmptyCommand);
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        if process::shell().file_name().and_then(|n| n.to_str()) != Some("bash") {
            return Err(SessionError::NoBash);
        }
        let session = self.get(id).ok_or_else(|| SessionError::RunContextNotFound { id: id.to_string() })?;
        let cwd = match req.cwd.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => Some(resolve_run_cwd(c)?),
            None => None,
        };
        let limits = req.limits.or(session.limits);
        crate::cgroup::check_limits(&limits)?;
        Ok((session, cwd, limits))
    }

    /// `DELETE /session/{id}` (and `DELETE /command?id=<session id>`): removes the session; its
    /// running run and any group it left holding the output pipe get SIGKILL. The run's stream
    /// then ends with `error` `-1`. Unknown id: [`SessionError::NotFound`].
    pub fn delete(&self, id: &str) -> Result<(), SessionError> {
        let removed = self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        match removed {
            Some(s) => {
                s.closed.cancel();
                Ok(())
            }
            None => Err(SessionError::NotFound { id: id.to_string() }),
        }
    }

    /// Whether `id` is a live session.
    pub fn contains(&self, id: &str) -> bool {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shutdown (D15): running groups get SIGTERM, then SIGKILL after the grace period; waits
    /// (bounded) until every run delivered its terminal event, then drops every session.
    pub async fn stop(&self) {
        self.inner.shutdown.cancel();
        let mut rx = self.inner.active.subscribe();
        let bound = self.inner.opts.shutdown_grace + Duration::from_secs(2);
        if tokio::time::timeout(bound, rx.wait_for(|n| *n == 0)).await.is_err() {
            tracing::warn!("session runs did not finish in time at shutdown");
        }
        let sessions: Vec<_> = self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        // Their directories stay: the next execd brings the sessions back (X50).
        for (_, s) in &sessions {
            s.keep.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        drop(sessions);
    }

    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Starts the idle collector (D51) once, from inside the runtime.
    fn start_collector(&self) {
        self.inner.collector.call_once(|| {
            crate::idle::spawn_idle_collector(
                Arc::downgrade(&self.inner),
                self.inner.opts.idle_ttl,
                self.inner.shutdown.clone(),
                |inner, ttl| inner.collect_idle(ttl),
            );
        });
    }
}

impl Inner {
    fn new_session(&self, id: String, cwd: Option<String>, limits: Limits) -> Result<Session, SessionError> {
        let env = process::child_env(self.opts.envs_file.as_deref(), std::iter::empty());
        let start_dir = match cwd.filter(|c| !c.is_empty()) {
            Some(c) => {
                let expanded = crate::expand::expand_path(&c, |k| env.get(k).cloned());
                let path = absolute(Path::new(&expanded));
                std::fs::create_dir_all(&path)
                    .map_err(|source| SessionError::CreateDir { path: path.display().to_string(), source })?;
                Some(path)
            }
            None => None,
        };
        let dir = self.root.join(&id);
        crate::state_dir::create_dir(&dir).map_err(|e| SessionError::io("creating", &dir, e))?;
        let session = Session {
            id,
            dir,
            start_dir,
            slot: Arc::new(tokio::sync::Mutex::new(0)),
            closed: self.shutdown.child_token(),
            activity: Mutex::new(Activity { last: Instant::now(), running: 0 }),
            keep: Default::default(),
            limits,
        };
        persist::write_limits(&session.dir, &limits)
            .map_err(|e| SessionError::io("writing", &session.dir.join(persist::LIMITS_FILE), e))?;
        let state = session.state_file(0);
        persist::write_atomic(&state, bash::initial_state(session.start_dir.as_deref(), &env).as_bytes())
            .map_err(|e| SessionError::io("writing", &state, e))?;
        Ok(session)
    }

    /// Removes sessions with no run in progress and none for `ttl`.
    fn collect_idle(&self, ttl: Duration) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let idle: Vec<String> = map
            .values()
            .filter(|s| {
                let a = s.activity.lock().unwrap_or_else(|e| e.into_inner());
                a.running == 0 && a.last.elapsed() >= ttl
            })
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            if let Some(s) = map.remove(&id) {
                tracing::info!(session = %id, "idle bash session collected");
                s.closed.cancel();
            }
        }
    }
}

/// X10: writes `text` to a run's stdin, then closes it (EOF). Ends early when no process reads
/// the pipe any more (EPIPE) or when `run_over` is cancelled (the run ended while something it
/// left behind holds the pipe without reading), so a large input never holds the session. The
/// bytes go only through the pipe: never argv, a file or the log.
fn feed_stdin(mut pipe: StdinPipe, text: String, run_over: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            _ = pipe.write_unrecorded(text.as_bytes()) => {}
            _ = run_over.cancelled() => {}
        }
        // Dropping the write end is the EOF.
    });
}

/// The run's `cwd`: expanded against execd's environment, made absolute, and required to be an
/// existing directory.
fn resolve_run_cwd(cwd: &str) -> Result<PathBuf, SessionError> {
    let env = process::env::base_env();
    let expanded = crate::expand::expand_path(cwd, |k| env.get(k).cloned());
    let path = absolute(Path::new(&expanded));
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(SessionError::CwdNotDir { path: expanded }),
        Err(_) => Err(SessionError::CwdMissing { path: expanded }),
    }
}

/// Writes the compacted form of the raw state file `raw` to `next` ([`bash::compact_state`]),
/// atomically (a temporary name, then rename), so a kill never leaves a torn `next` (X50).
fn compact(raw: &Path, next: &Path) -> std::io::Result<()> {
    let tmp = persist::tmp_path(next);
    let write = || -> std::io::Result<()> {
        let mut reader = std::io::BufReader::new(crate::state_dir::open_file(raw)?);
        let mut writer = std::io::BufWriter::new(crate::state_dir::create_file(&tmp)?);
        bash::compact_state(&mut reader, &mut writer)?;
        std::io::Write::flush(&mut writer)?;
        drop(writer);
        std::fs::rename(&tmp, next)
    };
    let done = write();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// `p` made absolute against execd's working directory (not resolving symlinks).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The files of one run of generation `g + 1`: the state it starts from (`g`), the command, the
/// raw state bash saves and the compacted state it becomes.
struct RunFiles {
    state: PathBuf,
    next: PathBuf,
    raw: PathBuf,
    cmd: PathBuf,
    dir: PathBuf,
    generation: u64,
}

impl RunFiles {
    /// The files of a run from generation `generation` in `dir`.
    fn named(dir: &Path, generation: u64) -> RunFiles {
        RunFiles {
            state: dir.join(format!("state.{generation}.sh")),
            next: dir.join(format!("state.{}.sh", generation + 1)),
            raw: dir.join(format!("save.{}.sh", generation + 1)),
            cmd: dir.join(format!("cmd.{}.sh", generation + 1)),
            dir: dir.to_path_buf(),
            generation,
        }
    }

    /// Writes the command file and creates the (empty, private) raw state file. Both are
    /// usually there already, empty: the previous run made them after its terminal event
    /// ([`RunFiles::tidy`]), so no file is created on the run's path (creating one costs
    /// ~0.05–0.5 ms on this host's ext4, opening an empty one ~7 µs).
    fn write(session: &Session, generation: u64, command: &str) -> Result<RunFiles, SessionError> {
        let files = RunFiles::named(&session.dir, generation);
        crate::state_dir::write_file(&files.cmd, bash::command_file(command).as_bytes())
            .map_err(|e| SessionError::io("writing", &files.cmd, e))?;
        // Made here 0600 so that bash's `>|` truncates a private file instead of creating one
        // with the user's umask.
        crate::state_dir::create_file(&files.raw).map_err(|e| SessionError::io("creating", &files.raw, e))?;
        Ok(files)
    }

    /// Adopts the state the run saved, or keeps the old one (killed, exec'd, cut short); returns
    /// whether it adopted. Adopting is renaming the complete raw save to the next generation: the
    /// raw form is valid state (compaction only makes it faster to restore), so it is the
    /// session's from here on, also for a later execd; [`RunFiles::tidy`] compacts it.
    fn adopt(&self, keep: bool) -> bool {
        keep && run::state_complete(&self.raw) && std::fs::rename(&self.raw, &self.next).is_ok()
    }

    /// After the terminal event: compacts the adopted state in place (a temporary renamed over
    /// it; on failure the raw form stays) and removes the old generation, or removes the unused
    /// raw save; removes the command file either way. Then makes the next run's command file and
    /// raw save, empty and private, so that its [`RunFiles::write`] creates nothing. A later
    /// execd removes them at start as any run's files ([`persist`]).
    fn tidy(self, adopted: bool) {
        if adopted {
            if let Err(e) = compact(&self.next, &self.next) {
                tracing::debug!(file = %self.next.display(), error = %e, "session state left uncompacted");
            }
            let _ = std::fs::remove_file(&self.state);
        } else {
            let _ = std::fs::remove_file(&self.raw);
        }
        let _ = std::fs::remove_file(&self.cmd);
        let upcoming = RunFiles::named(&self.dir, self.generation + u64::from(adopted));
        for file in [&upcoming.cmd, &upcoming.raw] {
            let _ = crate::state_dir::create_file(file);
        }
    }
}

/// D21: waits for the session's run in progress, but not longer than `timeout` (then
/// [`SessionError::Busy`]), and not for a session that is deleted meanwhile.
async fn wait_for_turn(
    session: &Session,
    id: &str,
    timeout: Duration,
) -> Result<tokio::sync::OwnedMutexGuard<u64>, SessionError> {
    let gone = || SessionError::RunContextNotFound { id: id.to_string() };
    let guard = tokio::select! {
        g = tokio::time::timeout(timeout, session.slot.clone().lock_owned()) => {
            g.map_err(|_| SessionError::Busy { id: id.to_string(), waited_ms: timeout.as_millis() })?
        }
        _ = session.closed.cancelled() => return Err(gone()),
    };
    if session.closed.is_cancelled() {
        return Err(gone());
    }
    Ok(guard)
}

/// One run: `bash --noprofile --norc -c DRIVER` in the session's start directory, stdout and
/// stderr merged.
fn driver_spec(shell: &Path, driver: String, cwd: Option<PathBuf>) -> SpawnSpec {
    SpawnSpec {
        program: shell.to_path_buf(),
        arg0: None,
        args: vec!["--noprofile".into(), "--norc".into(), "-c".into(), driver.into()],
        // Empty: the state file exports the session's variables (so `unset` persists).
        env: Vec::new(),
        inherit_env: false,
        cwd,
        credentials: None,
        output: OutputMode::Merged,
    }
}
