//! Isolated sessions (`/v1/isolated/*`, ISOLATED.md, upstream OSEP-0013): many private views of
//! the workspace inside one sandbox. Each session is a long-lived bash in its own mount, PID, UTS,
//! IPC (and optionally network) namespaces, built natively by [`ns`] (execd re-executed as a
//! helper; no bubblewrap needed). Its workspace is an overlayfs whose upper layer, kept in execd's
//! private state directory, is exactly the session's diff ([`diff`]) until it is committed.
//! Every process of a session (stage 1, the shell, its runs, background runs) is in one cgroup
//! leaf of its own (X20) when execd has cgroup placement; teardown kills what is left in it.
//!
//! No HTTP here: [`IsolatedManager`] takes plain values and returns [`IsolatedError`];
//! `api/isolated.rs` translates.
//!
//! Layout: `spec` (create request, validation, environment rule), `ns` (the helper processes),
//! `shell` (driving the session's bash: runs, end marker, events), `files` (file operations
//! performed inside the session's mount namespace), `diff` (diff and commit of upper layers).

pub mod diff;
pub mod files;
pub mod ns;
pub mod shell;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncBufReadExt;

use crate::event::{ExecDone, ExecEnd, ExecObserver, ExecStart, ExitInfo};
use crate::fs::FsError;
pub use spec::{CreateRequest, Settings};

/// Session start (namespaces, mounts, shell ready) must finish within this.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGKILL, teardown waits this long for the session's processes to go.
const TEARDOWN_WAIT: Duration = Duration::from_secs(5);
/// After the namespace teardown, kill rounds over the session's cgroup leaf go on this long.
const LEAF_KILL_WAIT: Duration = Duration::from_secs(2);
/// How often idle sessions are looked for (I35: at least every second).
const GC_EVERY: Duration = Duration::from_millis(500);
/// Background run logs are read (per response) and kept (after the run) up to this size (I20).
pub const LOG_LIMIT: u64 = 16 * 1024 * 1024;

/// What went wrong. Each variant maps to one status in `api/error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum IsolatedError {
    /// The host cannot isolate (503 `SERVICE_UNAVAILABLE`, I5).
    #[error("isolation unavailable: {0}")]
    Unavailable(String),
    /// A requested feature (uid mode, identity switch) is not possible here (503 `NOT_SUPPORTED`).
    #[error("{0}")]
    NotSupported(String),
    /// Bad request (400 `INVALID_REQUEST_BODY`).
    #[error("{0}")]
    Invalid(String),
    /// Unknown session or run (404 `SESSION_NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The session exists but cannot serve (dead, being deleted): 409.
    #[error("{0}")]
    Gone(String),
    /// A write into a read-only view (403 `FORBIDDEN`).
    #[error("{0}")]
    ReadOnly(String),
    /// Too many sessions (429).
    #[error("too many isolated sessions (limit {0})")]
    TooMany(usize),
    /// The namespace setup failed (503 `SERVICE_UNAVAILABLE`).
    #[error("session setup failed: {0}")]
    Setup(String),
    /// The namespace setup failed in a system call (503 `SERVICE_UNAVAILABLE`).
    #[error("session setup failed: {what}: {source}")]
    SetupIo {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A file operation inside the session.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A system call failed (500); the cause kept.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl IsolatedError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> IsolatedError {
        IsolatedError::Io { what: what.to_string(), source }
    }
}

/// Settings from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct IsolatedOpts {
    /// execd's private state directory (sessions live in `<state_dir>/isolated`; hidden from
    /// every session).
    pub state_dir: PathBuf,
    /// `false`: isolation switched off by configuration (capabilities say so, everything else 503).
    pub enabled: bool,
    pub max_sessions: usize,
    /// Writable allowlist for `extra_writable` and `binds`.
    pub allowed_writable: Vec<PathBuf>,
}

/// Result of the one-time host probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub available: bool,
    pub message: Option<String>,
}

/// `GET /capabilities` facts.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub available: bool,
    pub message: Option<String>,
    pub setpriv_available: bool,
    pub userns_available: bool,
    pub diff_supported: bool,
    pub commit_supported: bool,
}

/// A background run (I18–I20).
pub struct BgRun {
    pub id: String,
    pub started_at: SystemTime,
    log: PathBuf,
    pgid: i32,
    state: Mutex<BgState>,
}

#[derive(Debug, Clone, Default)]
pub struct BgState {
    pub running: bool,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub finished_at: Option<SystemTime>,
}

/// One isolated session.
pub struct Session {
    pub id: String,
    pub created_at: SystemTime,
    pub settings: Settings,
    dir: PathBuf,
    /// Host pid of the session's PID 1 (the shell); also its process group.
    init_pid: i32,
    /// Host pid of stage 1 (its parent in execd's PID namespace).
    stage1_pid: i32,
    /// The session's mount namespace, kept open for file operations.
    mnt_ns: std::fs::File,
    shell: tokio::sync::Mutex<shell::Shell>,
    last_run_at: Mutex<SystemTime>,
    /// Host changes after this time are commit conflicts (creation, then each commit's end).
    commit_base: Mutex<SystemTime>,
    /// Foreground runs queued or running.
    busy: AtomicUsize,
    dead: AtomicBool,
    /// Set when stage 1 has exited and been reaped (its pid may be reused after that).
    exited: Arc<tokio::sync::Notify>,
    exited_flag: Arc<AtomicBool>,
    runs: Mutex<HashMap<String, Arc<BgRun>>>,
    env: crate::process::env::EnvMap,
    uid: u32,
    gid: u32,
    /// The session's cgroup leaf (X20): stage 1, everything under it and every background run's
    /// helper enter it before exec. `None` without cgroup placement; taken by the teardown.
    leaf: Mutex<Option<crate::cgroup::Leaf>>,
}

impl Session {
    pub fn last_run_at(&self) -> SystemTime {
        *self.last_run_at.lock().unwrap()
    }
    fn touch(&self) {
        *self.last_run_at.lock().unwrap() = SystemTime::now();
    }
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
    /// `active` or `dead` (I36).
    pub fn status(&self) -> &'static str {
        if self.is_dead() {
            "dead"
        } else {
            "active"
        }
    }
    /// Seconds left before idle collection (only when a timeout is set).
    pub fn idle_remaining_seconds(&self) -> Option<u64> {
        let t = self.settings.idle_timeout_seconds;
        if t == 0 {
            return None;
        }
        let idle = SystemTime::now().duration_since(self.last_run_at()).unwrap_or_default().as_secs();
        Some(t.saturating_sub(idle))
    }
    fn bg_running(&self) -> bool {
        self.runs.lock().unwrap().values().any(|r| r.state.lock().unwrap().running)
    }
    /// An anonymous file in the session's host directory for spooling an upload (already
    /// unlinked: it disappears when closed).
    pub fn spool_file(&self) -> Result<std::fs::File, IsolatedError> {
        let p = self.dir.join("runs").join(format!(".spool-{}", uuid::Uuid::new_v4().simple()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(|e| IsolatedError::io("create spool file", e))?;
        let _ = std::fs::remove_file(&p);
        Ok(f)
    }
    pub fn primary_path(&self) -> &str {
        &self.settings.primary().path
    }
    /// Host paths of the persistent overlays: (mount path, upper dir).
    fn uppers(&self) -> Vec<(PathBuf, PathBuf)> {
        self.settings
            .overlays
            .iter()
            .enumerate()
            .filter(|(_, o)| o.persistent())
            .map(|(i, o)| (PathBuf::from(&o.path), self.dir.join(format!("upper{i}"))))
            .collect()
    }
}

/// Handle to every isolated session (cheap to clone).
#[derive(Clone)]
pub struct IsolatedManager {
    inner: Arc<Inner>,
}

struct Inner {
    opts: IsolatedOpts,
    root: PathBuf,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    probe: OnceLock<Probe>,
    stopping: AtomicBool,
    /// Told about every run (audit log, metrics, tracing).
    observer: OnceLock<ExecObserver>,
    /// Wakes the idle collector, which sleeps while there is no session (and ends once this
    /// is dropped).
    created: Arc<tokio::sync::Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.created.notify_one();
    }
}

/// Starts the session's namespace helper (`init`: stage 1, which forks the session's init and
/// shell) in the session's cgroup leaf, its stdin, stdout and stderr piped.
fn spawn_helper(
    nspec: &ns::NsSpec,
    env: &BTreeMap<String, String>,
    leaf: Option<&crate::cgroup::Leaf>,
) -> Result<tokio::process::Child, IsolatedError> {
    let spec_json = serde_json::to_string(nspec).map_err(|e| IsolatedError::Internal(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| IsolatedError::io("current_exe", e))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(ns::HELPER_ARG)
        .arg("init")
        .arg(spec_json)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    enter_leaf_on_spawn(&mut cmd, leaf);
    let spawned = cmd.spawn();
    // Closes execd's copies of the leaf's descriptors.
    drop(cmd);
    spawned.map_err(|source| IsolatedError::SetupIo { what: "cannot start the session helper", source })
}

/// Starts a background run's helper in the session's namespaces and cgroup leaf, its output
/// appended to `log` (created here).
fn spawn_background(
    s: &Session,
    envs: BTreeMap<String, String>,
    log: &Path,
) -> Result<tokio::process::Child, IsolatedError> {
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(log)
        .map_err(|e| IsolatedError::io("create run log", e))?;
    let err_file = file.try_clone().map_err(|e| IsolatedError::io("dup run log", e))?;
    let exe = std::env::current_exe().map_err(|e| IsolatedError::io("current_exe", e))?;
    let nnp = if s.settings.strict() { "1" } else { "0" };
    let mut env = s.env.clone();
    env.extend(envs);
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(ns::HELPER_ARG)
        .arg("enter")
        .args([s.init_pid.to_string(), s.uid.to_string(), s.gid.to_string(), nnp.to_string()])
        .arg(s.primary_path())
        .env_clear()
        .envs(&env)
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .stderr(err_file)
        .process_group(0);
    // The run joins the session's leaf, so deleting the session ends it with the rest.
    enter_leaf_on_spawn(&mut cmd, s.leaf.lock().unwrap().as_ref());
    let spawned = cmd.spawn();
    drop(cmd);
    spawned.map_err(|e| IsolatedError::io("cannot start background run", e))
}

/// Waits for a background run: records its end (exit code, or the session's end), tells the
/// observer, and cuts its log to [`LOG_LIMIT`] (I20).
async fn finish_background(
    mut child: tokio::process::Child,
    r: Arc<BgRun>,
    sess: std::sync::Weak<Session>,
    observed: Option<ExecDone>,
    started: std::time::Instant,
) {
    let status = child.wait().await;
    let dead = sess.upgrade().is_none_or(|s| s.is_dead());
    if let Some(done) = observed {
        let code = status.as_ref().ok().filter(|_| !dead).map(|c| shell::exit_code(*c));
        let exit = ExitInfo::reason(if code.is_some() { "exited" } else { "interrupted" });
        done(&ExecEnd::of_process(code, &exit, started.elapsed()));
    }
    {
        let mut st = r.state.lock().unwrap();
        st.running = false;
        st.finished_at = Some(SystemTime::now());
        match status {
            _ if dead => st.error = Some("session terminated".into()),
            Ok(code) => st.exit_code = Some(shell::exit_code(code)),
            Err(e) => st.error = Some(format!("wait failed: {e}")),
        }
    }
    if let Some(s) = sess.upgrade() {
        s.touch();
    }
    // Retention (I20): only the first LOG_LIMIT bytes are kept.
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&r.log) {
        if f.metadata().map(|m| m.len() > LOG_LIMIT).unwrap_or(false) {
            let _ = f.set_len(LOG_LIMIT);
        }
    }
}

fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

fn kill_group(pgid: i32, sig: nix::sys::signal::Signal) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
    }
}

/// A new cgroup leaf for a session (no limits); `None` when there is no placement or the leaf
/// cannot be made or opened: the session then runs without one, as commands do.
fn new_session_leaf() -> Option<crate::cgroup::Leaf> {
    let leaf = crate::cgroup::new_leaf(&crate::cgroup::Limits::default()).ok().flatten()?;
    match leaf.procs_files() {
        Ok(_) => Some(leaf),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the session's cgroup leaf; running without one");
            None
        }
    }
}

/// Makes the child of `cmd` enter `leaf` (if any) between fork and exec, so that it and every
/// process it starts are in the leaf from their first instruction.
#[allow(unsafe_code)]
fn enter_leaf_on_spawn(cmd: &mut tokio::process::Command, leaf: Option<&crate::cgroup::Leaf>) {
    let Some(fds) = leaf.and_then(|l| l.procs_files().ok()) else { return };
    // SAFETY: runs in the forked child before exec and only calls `write(2)` on descriptors
    // opened before the fork (async-signal-safe, no allocation). A failure is not fatal: the
    // session then runs outside the leaf (no limits are asked for), as commands do.
    unsafe {
        cmd.pre_exec(move || {
            let _ = crate::cgroup::leaf::enter(&fds);
            Ok(())
        });
    }
}

/// Kills whatever is still in `leaf` (rounds until it is empty or [`LEAF_KILL_WAIT`] passed),
/// then drops it: an empty leaf is removed at once, one the kernel still holds goes to the
/// cgroup janitor. Blocking.
fn end_leaf(leaf: crate::cgroup::Leaf) {
    let end = std::time::Instant::now() + LEAF_KILL_WAIT;
    while leaf.populated() {
        leaf.kill_round();
        if std::time::Instant::now() >= end {
            tracing::warn!(leaf = %leaf.describe(), "isolated session's cgroup leaf still populated");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(leaf);
}

impl IsolatedManager {
    /// Makes the manager and reclaims session directories an earlier execd left behind (I36).
    /// Must be called inside a tokio runtime (it starts the idle collector).
    pub fn new(opts: IsolatedOpts) -> IsolatedManager {
        let root = opts.state_dir.join("isolated");
        if root.exists() {
            let _ = std::fs::remove_dir_all(&root);
        }
        let mgr = IsolatedManager {
            inner: Arc::new(Inner {
                opts,
                root,
                sessions: Mutex::new(HashMap::new()),
                probe: OnceLock::new(),
                stopping: AtomicBool::new(false),
                observer: OnceLock::new(),
                created: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&mgr.inner);
            let created = mgr.inner.created.clone();
            handle.spawn(async move {
                loop {
                    // No session, nothing to collect: an idle execd is not woken twice a second
                    // for nothing (a creation racing this check leaves a permit, not lost).
                    let idle = match weak.upgrade() {
                        None => return,
                        Some(inner) => inner.sessions.lock().unwrap().is_empty(),
                    };
                    if idle {
                        created.notified().await;
                        continue;
                    }
                    tokio::time::sleep(GC_EVERY).await;
                    let Some(inner) = weak.upgrade() else { return };
                    IsolatedManager { inner }.collect_idle().await;
                }
            });
        }
        mgr
    }

    /// Whether sessions can be made here (probed once, in a helper process).
    pub fn probe(&self) -> Probe {
        self.inner.probe.get_or_init(|| self.run_probe()).clone()
    }

    fn run_probe(&self) -> Probe {
        if !self.inner.opts.enabled {
            return Probe { available: false, message: Some("isolation disabled by configuration".into()) };
        }
        let fail = |m: String| Probe { available: false, message: Some(m) };
        let scratch = self.inner.root.join(format!("probe-{}", uuid::Uuid::new_v4()));
        if let Err(e) = std::fs::create_dir_all(&scratch) {
            return fail(format!("cannot create {}: {e}", scratch.display()));
        }
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => return fail(format!("cannot find execd's executable: {e}")),
        };
        let out = std::process::Command::new(exe).arg(ns::HELPER_ARG).arg("probe").arg(&scratch).output();
        let _ = std::fs::remove_dir_all(&scratch);
        match out {
            Ok(o) if o.status.success() => Probe { available: true, message: None },
            Ok(o) => {
                fail(String::from_utf8_lossy(&o.stderr).trim().trim_start_matches("execd isolation: ").to_string())
            }
            Err(e) => fail(format!("cannot run the isolation probe: {e}")),
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        let p = self.probe();
        Capabilities {
            available: p.available,
            message: p.message,
            setpriv_available: p.available,
            userns_available: false,
            diff_supported: p.available,
            commit_supported: p.available,
        }
    }

    fn require_available(&self) -> Result<(), IsolatedError> {
        match self.probe() {
            Probe { available: true, .. } => Ok(()),
            Probe { message, .. } => Err(IsolatedError::Unavailable(message.unwrap_or_default())),
        }
    }

    /// Looks a session up (404 for unknown ids of any shape, I2).
    pub fn get(&self, id: &str) -> Result<Arc<Session>, IsolatedError> {
        self.require_available()?;
        self.inner
            .sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| IsolatedError::NotFound(format!("session {id} not found")))
    }

    pub fn list(&self) -> Result<Vec<Arc<Session>>, IsolatedError> {
        self.require_available()?;
        let mut v: Vec<_> = self.inner.sessions.lock().unwrap().values().cloned().collect();
        v.sort_by_key(|s| s.created_at);
        Ok(v)
    }

    /// Creates a session and starts its shell (I7–I9).
    pub async fn create(&self, req: CreateRequest) -> Result<Arc<Session>, IsolatedError> {
        self.require_available()?;
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(IsolatedError::Unavailable("execd is shutting down".into()));
        }
        let allowed: Vec<PathBuf> = self
            .inner
            .opts
            .allowed_writable
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let settings = spec::normalise(req, &allowed, &self.inner.opts.state_dir)?;
        if settings.uid_mode == "userns" {
            return Err(IsolatedError::NotSupported("uid_mode userns is not available on this host".into()));
        }
        let my_uid = nix::unistd::geteuid().as_raw();
        let my_gid = nix::unistd::getegid().as_raw();
        let uid = settings.uid.unwrap_or(my_uid);
        let gid = settings.gid.unwrap_or(my_gid);
        if (uid != my_uid || gid != my_gid) && my_uid != 0 {
            return Err(IsolatedError::NotSupported("switching uid/gid needs execd to run as root".into()));
        }
        if self.inner.sessions.lock().unwrap().len() >= self.inner.opts.max_sessions {
            return Err(IsolatedError::TooMany(self.inner.opts.max_sessions));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.inner.root.join(&id);
        match self.start(&id, &dir, settings, uid, gid).await {
            Ok(s) => {
                let s = Arc::new(s);
                self.inner.sessions.lock().unwrap().insert(id, s.clone());
                self.inner.created.notify_one();
                Ok(s)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    async fn start(
        &self,
        id: &str,
        dir: &Path,
        settings: Settings,
        uid: u32,
        gid: u32,
    ) -> Result<Session, IsolatedError> {
        let nspec = self.ns_spec(dir, &settings, uid, gid)?;
        let env = spec::session_env(crate::process::env::base_env(), &settings.env_passthrough);
        let leaf = new_session_leaf();
        let mut child = spawn_helper(&nspec, &env, leaf.as_ref())?;
        let stage1_pid = child.id().map(|p| p as i32).unwrap_or(0);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut out = tokio::io::BufReader::new(stdout);
        let init_pid = await_ready(&mut out, stderr, &mut child, stage1_pid).await?;
        let (mnt_ns, shell_ns) = mount_ns_handles(init_pid, &mut child).await?;
        let exited = Arc::new(tokio::sync::Notify::new());
        let exited_flag = Arc::new(AtomicBool::new(false));
        let now = SystemTime::now();
        let session = Session {
            id: id.to_string(),
            created_at: now,
            settings,
            dir: dir.to_path_buf(),
            init_pid,
            stage1_pid,
            mnt_ns,
            shell: tokio::sync::Mutex::new(shell::Shell::new(stdin, out, init_pid, shell_ns, uid, gid)),
            last_run_at: Mutex::new(now),
            commit_base: Mutex::new(now),
            busy: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            exited: exited.clone(),
            exited_flag: exited_flag.clone(),
            runs: Mutex::new(HashMap::new()),
            env,
            uid,
            gid,
            leaf: Mutex::new(leaf),
        };
        // Reaps stage 1; when the session's shell dies on its own (`exit`, killed), the session
        // is dead and is removed like a DELETE (upstream).
        let mgr = self.clone();
        let sid = id.to_string();
        tokio::spawn(async move {
            let _ = child.wait().await;
            exited_flag.store(true, Ordering::SeqCst);
            exited.notify_waiters();
            let s = mgr.inner.sessions.lock().unwrap().get(&sid).cloned();
            if let Some(s) = s {
                if !s.dead.swap(true, Ordering::SeqCst) {
                    tracing::info!(session = %sid, "isolated session shell exited; removing the session");
                    let _ = mgr.delete(&sid).await;
                }
            }
        });
        Ok(session)
    }

    /// The namespace helper's spec for a session in `dir` (its `root` and `runs` made here).
    fn ns_spec(&self, dir: &Path, settings: &Settings, uid: u32, gid: u32) -> Result<ns::NsSpec, IsolatedError> {
        let mkdir =
            |p: &Path| std::fs::create_dir_all(p).map_err(|e| IsolatedError::io(&format!("mkdir {}", p.display()), e));
        mkdir(&dir.join("root"))?;
        mkdir(&dir.join("runs"))?;
        Ok(ns::NsSpec {
            new_root: dir.join("root"),
            mounts: session_mounts(dir, settings)?,
            hide: vec![self.inner.opts.state_dir.clone()],
            private_tmp: settings.strict(),
            new_net: !settings.net_shared(),
            uid,
            gid,
            no_new_privs: settings.strict(),
            cwd: PathBuf::from(&settings.primary().path),
        })
    }

    /// Deletes a session: kills everything in it, then drops its upper layers and run records
    /// (I12, I36).
    pub async fn delete(&self, id: &str) -> Result<(), IsolatedError> {
        let s = self
            .inner
            .sessions
            .lock()
            .unwrap()
            .remove(id)
            .ok_or_else(|| IsolatedError::NotFound(format!("session {id} not found")))?;
        self.teardown(&s).await
    }

    async fn teardown(&self, s: &Session) -> Result<(), IsolatedError> {
        use nix::sys::signal::Signal::SIGKILL;
        s.dead.store(true, Ordering::SeqCst);
        let notified = s.exited.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The PID namespace dies with its first process: every process in it, setsid or not.
        kill(s.init_pid, SIGKILL);
        if !s.exited_flag.load(Ordering::SeqCst) {
            kill(s.stage1_pid, SIGKILL);
        }
        let runs: Vec<Arc<BgRun>> = s.runs.lock().unwrap().values().cloned().collect();
        for r in &runs {
            if r.state.lock().unwrap().running {
                kill_group(r.pgid, SIGKILL);
            }
        }
        let stopped =
            s.exited_flag.load(Ordering::SeqCst) || tokio::time::timeout(TEARDOWN_WAIT, notified).await.is_ok();
        // Whatever is still in the session's leaf (a background run's helper, anything the PID
        // namespace's end has not taken yet) is killed; the leaf goes with it.
        let leaf = s.leaf.lock().unwrap().take();
        if let Some(leaf) = leaf {
            let _ = tokio::task::spawn_blocking(move || end_leaf(leaf)).await;
        }
        if !stopped {
            return Err(IsolatedError::Internal(format!("session {} did not stop within {TEARDOWN_WAIT:?}", s.id)));
        }
        let dir = s.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
        Ok(())
    }

    /// Idle collection (I35).
    async fn collect_idle(&self) {
        let idle: Vec<String> = self
            .inner
            .sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.idle_remaining_seconds() == Some(0) && s.busy.load(Ordering::SeqCst) == 0 && !s.bg_running())
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            tracing::info!(session = %id, "collecting idle isolated session");
            let _ = self.delete(&id).await;
        }
    }

    /// Shutdown: every session is deleted.
    pub async fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let ids: Vec<String> = self.inner.sessions.lock().unwrap().keys().cloned().collect();
        for id in ids {
            let _ = self.delete(&id).await;
        }
    }

    /// Installs the observer of every later run (once; a second call is ignored).
    pub fn set_observer(&self, observer: ExecObserver) {
        let _ = self.inner.observer.set(observer);
    }

    /// Tells the observer (if any) that a run of `code` starts in `s`; the closure is for its end.
    fn observe(&self, s: &Session, code: &str, background: bool) -> Option<ExecDone> {
        self.inner.observer.get().map(|o| {
            o(&ExecStart {
                operation: "run_isolated",
                id: &s.id,
                command: code,
                cwd: None,
                uid: Some(s.uid),
                gid: Some(s.gid),
                background,
            })
        })
    }

    /// Starts a foreground run (I13–I17); the events end with exactly one terminal event.
    pub async fn run(
        &self,
        id: &str,
        code: String,
        envs: BTreeMap<String, String>,
        timeout: Option<Duration>,
    ) -> Result<tokio::sync::mpsc::Receiver<crate::event::ExecEvent>, IsolatedError> {
        let s = self.get(id)?;
        shell::check_run(&code, &envs)?;
        if s.is_dead() {
            return Err(IsolatedError::Gone(format!("session {id} is not active")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        s.busy.fetch_add(1, Ordering::SeqCst);
        let mgr = self.clone();
        let observed = self.observe(&s, &code, false);
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            let mut sh = s.shell.lock().await;
            let outcome = sh.run(&code, &envs, timeout, &tx, &s.dead).await;
            drop(sh);
            if let Some(done) = observed {
                let exit = ExitInfo::reason(outcome.exit_reason);
                done(&ExecEnd::of_process(outcome.exit_code, &exit, started.elapsed()));
            }
            if outcome.touch {
                s.touch();
            }
            s.busy.fetch_sub(1, Ordering::SeqCst);
            if outcome.shell_lost && !s.dead.swap(true, Ordering::SeqCst) {
                let _ = mgr.delete(&s.id).await;
            }
        });
        Ok(rx)
    }

    /// Starts a background run (I18): `bash -c code` inside the session's namespaces, output to
    /// a log file in the session's directory.
    pub async fn run_background(
        &self,
        id: &str,
        code: String,
        envs: BTreeMap<String, String>,
    ) -> Result<Arc<BgRun>, IsolatedError> {
        let s = self.get(id)?;
        shell::check_run(&code, &envs)?;
        if s.is_dead() {
            return Err(IsolatedError::Invalid(format!("session {id} is not active")));
        }
        let primary = s.settings.primary();
        if primary.mode == spec::Mode::Ro || !(primary.mode == spec::Mode::Rw || primary.persistent()) {
            return Err(IsolatedError::Invalid(
                "background runs need a writable, persistent primary mount (not ro or persist:false)".into(),
            ));
        }
        let rid = uuid::Uuid::new_v4().to_string();
        let log = s.dir.join("runs").join(format!("{rid}.log"));
        let mut child = spawn_background(&s, envs, &log)?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        // The code travels through a pipe, never argv (`/proc/<pid>/cmdline` is world-readable).
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let written = tokio::time::timeout(START_TIMEOUT, stdin.write_all(code.as_bytes())).await;
            if !matches!(written, Ok(Ok(()))) {
                kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = tokio::time::timeout(TEARDOWN_WAIT, child.wait()).await;
                return Err(IsolatedError::Internal("cannot hand the code to the background run".into()));
            }
        }
        let run = Arc::new(BgRun {
            id: rid.clone(),
            started_at: SystemTime::now(),
            log,
            pgid,
            state: Mutex::new(BgState { running: true, ..Default::default() }),
        });
        s.runs.lock().unwrap().insert(rid, run.clone());
        s.touch();
        let observed = self.observe(&s, &code, true);
        tokio::spawn(finish_background(child, run.clone(), Arc::downgrade(&s), observed, std::time::Instant::now()));
        Ok(run)
    }

    pub fn run_status(&self, id: &str, rid: &str) -> Result<(Arc<BgRun>, BgState), IsolatedError> {
        let r = self.bg_run(id, rid)?;
        let st = r.state.lock().unwrap().clone();
        Ok((r, st))
    }

    fn bg_run(&self, id: &str, rid: &str) -> Result<Arc<BgRun>, IsolatedError> {
        let s = self.get(id)?;
        let r = s.runs.lock().unwrap().get(rid).cloned();
        r.ok_or_else(|| IsolatedError::NotFound(format!("run {rid} not found in session {id}")))
    }

    /// Bytes of a background run's log from `cursor` (at most [`LOG_LIMIT`]) and the next cursor
    /// (I20). A cursor past the end is clamped.
    pub async fn run_logs(&self, id: &str, rid: &str, cursor: u64) -> Result<(Vec<u8>, u64), IsolatedError> {
        let r = self.bg_run(id, rid)?;
        let log = r.log.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = match std::fs::File::open(&log) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), cursor)),
                Err(e) => return Err(IsolatedError::io("open run log", e)),
            };
            let size = f.metadata().map_err(|e| IsolatedError::io("stat run log", e))?.len();
            let start = cursor.min(size);
            f.seek(SeekFrom::Start(start)).map_err(|e| IsolatedError::io("seek run log", e))?;
            let mut buf = Vec::new();
            f.take((size - start).min(LOG_LIMIT))
                .read_to_end(&mut buf)
                .map_err(|e| IsolatedError::io("read run log", e))?;
            let next = start + buf.len() as u64;
            Ok((buf, next))
        })
        .await
        .map_err(|e| IsolatedError::Internal(e.to_string()))?
    }

    /// Runs `f` on a thread inside the session's mount namespace, with the primary mount as its
    /// working directory, so paths resolve exactly as the session sees them (I-Q1).
    pub async fn in_session<T, F>(&self, id: &str, f: F) -> Result<T, IsolatedError>
    where
        T: Send + 'static,
        F: FnOnce(&files::SessionView) -> Result<T, IsolatedError> + Send + 'static,
    {
        let s = self.get(id)?;
        if s.is_dead() {
            return Err(IsolatedError::Gone(format!("session {id} is not active")));
        }
        let ns = s.mnt_ns.try_clone().map_err(|e| IsolatedError::io("dup namespace handle", e))?;
        let view = files::SessionView {
            cwd: PathBuf::from(s.primary_path()),
            uid: s.uid,
            gid: s.gid,
            spool: s.dir.join("runs"),
            mounts: s
                .settings
                .overlays
                .iter()
                .map(|o| (PathBuf::from(&o.path), o.mode == spec::Mode::Overlay && !o.persistent()))
                .collect(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("execd-isolated-fs".into())
            .spawn(move || {
                let res = ns::join_mount_ns_this_thread(&ns)
                    .map_err(|e| IsolatedError::io("cannot enter the session's mount namespace", e))
                    .and_then(|()| {
                        let _ = std::env::set_current_dir(&view.cwd);
                        f(&view)
                    });
                let _ = tx.send(res);
            })
            .map_err(|e| IsolatedError::io("spawn thread", e))?;
        rx.await.map_err(|_| IsolatedError::Internal("file operation thread died".into()))?
    }

    /// The session's changes (I24).
    pub async fn diff(&self, id: &str) -> Result<Vec<diff::Change>, IsolatedError> {
        let s = self.get(id)?;
        let uppers = s.uppers();
        if uppers.is_empty() {
            return Err(IsolatedError::NotFound(format!("session {id} has no persistent overlay to diff")));
        }
        tokio::task::spawn_blocking(move || diff::changes(&uppers))
            .await
            .map_err(|e| IsolatedError::Internal(e.to_string()))?
    }

    /// Applies the session's changes to the host (I25). Holds the shell, so no run is in flight.
    pub async fn commit(&self, id: &str) -> Result<diff::CommitReport, IsolatedError> {
        let s = self.get(id)?;
        let uppers = s.uppers();
        if uppers.is_empty() {
            return Err(IsolatedError::NotFound(format!("session {id} has no persistent overlay to commit")));
        }
        let _shell = s.shell.lock().await;
        if s.is_dead() {
            return Err(IsolatedError::Gone(format!("session {id} is being deleted")));
        }
        let since = *s.commit_base.lock().unwrap();
        let report = tokio::task::spawn_blocking(move || diff::commit(&uppers, since))
            .await
            .map_err(|e| IsolatedError::Internal(e.to_string()))??;
        *s.commit_base.lock().unwrap() = SystemTime::now();
        Ok(report)
    }
}

/// The session's mounts: each overlay entry as a bind (`rw`, `ro`) or an overlay whose upper
/// layer lives in `dir` (persistent) or on a tmpfs of its own (ephemeral), then the extra
/// writable paths and the binds. Overlay paths that do not exist are made (0755).
fn session_mounts(dir: &Path, settings: &Settings) -> Result<Vec<ns::MountSpec>, IsolatedError> {
    let mkdir =
        |p: &Path| std::fs::create_dir_all(p).map_err(|e| IsolatedError::io(&format!("mkdir {}", p.display()), e));
    let mut mounts = Vec::new();
    for (i, o) in settings.overlays.iter().enumerate() {
        let path = PathBuf::from(&o.path);
        if !path.exists() {
            crate::fs::ops::mkdir_p(&path, 0o755).map_err(|e| IsolatedError::io(&format!("mkdir {}", o.path), e))?;
        }
        if !path.is_dir() {
            return Err(IsolatedError::Invalid(format!("overlay path {} is not a directory", o.path)));
        }
        mounts.push(match o.mode {
            spec::Mode::Rw | spec::Mode::Ro => {
                ns::MountSpec::Bind { source: path.clone(), dest: path, readonly: o.mode == spec::Mode::Ro }
            }
            spec::Mode::Overlay if o.persistent() => {
                let (upper, work) = (dir.join(format!("upper{i}")), dir.join(format!("work{i}")));
                mkdir(&upper)?;
                mkdir(&work)?;
                ns::MountSpec::Overlay { path, upper, work, tmpfs: None }
            }
            spec::Mode::Overlay => {
                let eph = dir.join(format!("eph{i}"));
                mkdir(&eph)?;
                ns::MountSpec::Overlay { path, upper: eph.join("upper"), work: eph.join("work"), tmpfs: Some(eph) }
            }
        });
    }
    for p in &settings.extra_writable {
        mounts.push(ns::MountSpec::Bind { source: p.into(), dest: p.into(), readonly: false });
    }
    for b in &settings.binds {
        mounts.push(ns::MountSpec::Bind { source: (&b.source).into(), dest: (&b.dest).into(), readonly: b.readonly });
    }
    Ok(mounts)
}

/// Reads the session helper's `PID <n>` and `READY` lines (within [`START_TIMEOUT`]): the pid of
/// the session's init. On failure the helper is killed and reaped, and what it wrote to stderr
/// (the reason) becomes the error.
async fn await_ready(
    out: &mut tokio::io::BufReader<tokio::process::ChildStdout>,
    mut stderr: tokio::process::ChildStderr,
    child: &mut tokio::process::Child,
    stage1_pid: i32,
) -> Result<i32, IsolatedError> {
    let ready = tokio::time::timeout(START_TIMEOUT, async {
        let (mut pid, mut ready) = (None, false);
        let mut line = String::new();
        while pid.is_none() || !ready {
            line.clear();
            if out.read_line(&mut line).await.unwrap_or(0) == 0 {
                return Err(());
            }
            match line.trim_end() {
                "READY" => ready = true,
                l => pid = l.strip_prefix("PID ").and_then(|p| p.parse::<i32>().ok()).or(pid),
            }
        }
        Ok(pid.unwrap_or(0))
    })
    .await;
    match ready {
        Ok(Ok(p)) if p > 1 => Ok(p),
        other => {
            kill(stage1_pid, nix::sys::signal::Signal::SIGKILL);
            let mut msg = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                use tokio::io::AsyncReadExt;
                let _ = (&mut stderr).take(64 * 1024).read_to_string(&mut msg).await;
            })
            .await;
            let _ = tokio::time::timeout(TEARDOWN_WAIT, child.wait()).await;
            let msg = msg.trim().trim_start_matches("execd isolation: ").to_string();
            Err(match other {
                Err(_) => IsolatedError::Setup(format!("session did not start within {START_TIMEOUT:?}")),
                _ if msg.is_empty() => IsolatedError::Setup("session helper exited before the shell started".into()),
                _ => IsolatedError::Setup(msg),
            })
        }
    }
}

/// Two handles on the session's mount namespace (the session's and its shell's). On failure the
/// session is killed and its helper reaped.
async fn mount_ns_handles(
    init_pid: i32,
    child: &mut tokio::process::Child,
) -> Result<(std::fs::File, std::fs::File), IsolatedError> {
    let handles = std::fs::File::open(format!("/proc/{init_pid}/ns/mnt"))
        .map_err(|source| IsolatedError::SetupIo { what: "cannot open the session's mount namespace", source })
        .and_then(|f| {
            let dup = f.try_clone().map_err(|e| IsolatedError::io("dup namespace handle", e))?;
            Ok((f, dup))
        });
    if handles.is_err() {
        kill(init_pid, nix::sys::signal::Signal::SIGKILL);
        let _ = tokio::time::timeout(TEARDOWN_WAIT, child.wait()).await;
    }
    handles
}
