//! A cgroup leaf per command (EXTENSIONS X20–X23): detection of a writable cgroup v2 subtree or of
//! v1 hierarchies (`memory`, `pids`, `cpu`, `cpuacct`, `freezer`, `blkio`), an execd-owned parent
//! (`execd-<pid>`) holding one [`Leaf`] per spawned process tree, kill of everything in a leaf,
//! usage read-out and limits. Knows no ids and no HTTP; `process::spawn` places children here.
//!
//! Nothing here ever makes a command fail because cgroups are missing: without a writable
//! hierarchy the detection reports [`Mode::None`] and spawns fall back to process groups. Only a
//! request that asks for [`Limits`] gets [`CgroupError::Unavailable`]. The detection runs once,
//! after the start or on the first call that needs it ([`configure`]).
//!
//! On v1 a command without limits takes a spare leaf made ahead of time (directories made, files
//! opened, off the request path; marked by an empty [`SPARE_MARK`] cgroup inside it while it
//! waits) and is placed by the spawning thread itself
//! ([`Leaf::place_thread`]), so its child is spawned by `posix_spawn` rather than a full `fork`.
//!
//! A leaf that still holds processes when its command is done (the `&` children of a foreground
//! command, as upstream) is kept on a pending list; a janitor thread removes it once empty, and
//! [`shutdown`] kills and removes what is left.

pub mod detect;
pub mod leaf;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

pub use leaf::{Leaf, Usage};

/// Where execd should place commands (`--cgroup-root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Find a writable hierarchy from execd's own cgroup.
    Auto,
    /// Never use cgroups (process groups only).
    Off,
    /// A cgroup v2 directory to create execd's parent in.
    Root(PathBuf),
}

impl Placement {
    /// `""`/`auto` → Auto, `none`/`off` → Off, else a path.
    pub fn parse(raw: &str) -> Placement {
        match raw.trim() {
            "" | "auto" => Placement::Auto,
            "none" | "off" => Placement::Off,
            p => Placement::Root(PathBuf::from(p)),
        }
    }
}

/// The detected kind of placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    V2,
    V1,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::V2 => "v2",
            Mode::V1 => "v1",
            Mode::None => "none",
        }
    }
}

/// What `/capabilities` reports: the mode and the limits that can be applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub cgroup: &'static str,
    pub limits: Vec<&'static str>,
}

/// Resource limits of one leaf (X23). Serialized only into execd's private state (a session's
/// limits, kept across a restart).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    /// Most processes (and threads) at once.
    pub pids: Option<u64>,
    /// CPUs (0.5 = half a core).
    pub cpu: Option<f64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.pids.is_none() && self.cpu.is_none()
    }

    /// These limits, each one not set taken from `fallback` (a session run's own limits over its
    /// session's).
    pub fn or(self, fallback: Limits) -> Limits {
        Limits {
            memory: self.memory.or(fallback.memory),
            pids: self.pids.or(fallback.pids),
            cpu: self.cpu.or(fallback.cpu),
        }
    }
}

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Limits were asked for and this controller cannot be used here.
    #[error("limits unavailable: no writable cgroup controller for {0}")]
    Unavailable(&'static str),
    /// A limit value is out of range.
    #[error("limits.{field}: {reason}")]
    InvalidLimit { field: &'static str, reason: String },
    #[error("cgroup {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// Parses a memory size: a number of bytes, or a number with `K`/`M`/`G`/`T` (binary, optional
/// `i`/`B`): `"512M"`, `"1GiB"`, `"65536"`.
pub fn parse_memory(raw: &str) -> Result<u64, CgroupError> {
    let bad = |reason: &str| CgroupError::InvalidLimit { field: "memory", reason: reason.to_string() };
    let s = raw.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().map_err(|_| bad("expected bytes or a size like \"512M\""))?;
    let unit = s[digits..].trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let mul: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad("unknown unit (use K, M, G or T)")),
    };
    let v = n.checked_mul(mul).ok_or_else(|| bad("too large"))?;
    if v < 1 << 20 {
        return Err(bad("must be at least 1M"));
    }
    Ok(v)
}

/// One v1 hierarchy: execd's parent directory in it and its controllers.
#[derive(Debug, Clone)]
pub(crate) struct Hierarchy {
    pub parent: PathBuf,
    pub controllers: Vec<String>,
    /// The `tasks` file of execd's own cgroup in this hierarchy (write-only, close-on-exec): a
    /// spawning thread that moved itself into a leaf goes back through it (see
    /// [`leaf::ThreadInLeaf`]). `None` when it cannot be opened.
    pub home: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// The detected setup, fixed on first use ([`cgroups`]).
#[derive(Debug)]
pub(crate) struct Cgroups {
    pub mode: Mode,
    /// v2: execd's parent directory.
    pub v2_parent: Option<PathBuf>,
    /// v1: one entry per hierarchy used.
    pub v1: Vec<Hierarchy>,
    pub limits: Vec<&'static str>,
    counter: AtomicU64,
    /// Dropped leaves that still held processes (or could not be removed yet).
    pending: Mutex<Vec<leaf::Dirs>>,
    /// Leaves of commands an earlier execd lost (X50) that still hold processes; see [`adopt_lost`].
    adopted: Mutex<Vec<leaf::Dirs>>,
    /// Wakes the janitor (waiting on `pending`'s lock), which sleeps while both lists are empty.
    work: Condvar,
    /// v1: empty leaves made ahead of time, with their files open (see [`leaf_for_spawn`]); `None`
    /// once [`shutdown`] took them.
    spares: Mutex<Option<Vec<Leaf>>>,
    /// A refill of `spares` is under way.
    refilling: std::sync::atomic::AtomicBool,
}

/// How many spare leaves [`leaf_for_spawn`] keeps ready.
const SPARES: usize = 2;
/// The empty child cgroup that marks a spare leaf (`c<n>/spare`, in the `pids` hierarchy or the
/// first) while it waits, so that anyone looking tells spares from command leaves. A spare has its
/// final name from the start: renaming it in every hierarchy when a command took it cost ~0.1 ms
/// of the request (BENCHMARKS.md, "A spare leaf named once"); the mark goes with one `rmdir`
/// after the spawn.
pub const SPARE_MARK: &str = "spare";

static GLOBAL: OnceLock<Cgroups> = OnceLock::new();

/// How often the janitor retries pending leaves.
const JANITOR_PERIOD: Duration = Duration::from_millis(500);
/// An empty leaf that cannot be removed is retried this many times, then forgotten (logged).
const MAX_REMOVE_TRIES: u32 = 20;

/// Where [`configure`] said to place commands; read once, by [`cgroups`].
static PLACEMENT: OnceLock<Placement> = OnceLock::new();

/// How long after the start [`init_later`] prepares the placement when nothing needed it before:
/// after the first `/ping` of an orchestrator polling a new container (~1 ms), before an agent's
/// first command as a rule.
const WARM_UP: Duration = Duration::from_millis(20);

/// Says where commands are to be placed (`--cgroup-root`), at start. Nothing is looked at yet:
/// the hierarchies are found and execd's parent made by the first call that needs them (a spawn,
/// a limits check, `/capabilities`) or by [`init_later`], whichever comes first. Done on the
/// path to the first answer, this was ~0.4 ms of the start on a v1 host (six `mkdir`s), which
/// the kernel's cgroup work made no shorter on another thread beside the start (BENCHMARKS.md,
/// "The placement after the first answer").
pub fn configure(placement: Placement) {
    let _ = PLACEMENT.set(placement);
}

/// The placement prepared ([`cgroups`]) [`WARM_UP`] after now on the runtime's blocking pool,
/// unless something needed it before. Without a runtime, nothing: the first call that needs the
/// placement prepares it.
pub fn init_later() {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    rt.spawn(async move {
        tokio::time::sleep(WARM_UP).await;
        if GLOBAL.get().is_none() {
            let _ = tokio::task::spawn_blocking(cgroups).await;
        }
    });
}

/// The placement [`configure`] gave (none without it), detected and prepared once per process
/// on the first call; later calls return the first result.
fn cgroups() -> &'static Cgroups {
    GLOBAL.get_or_init(|| {
        let cg = setup(PLACEMENT.get().unwrap_or(&Placement::Off));
        if cg.mode != Mode::None {
            start_janitor();
        }
        tracing::info!(mode = cg.mode.as_str(), limits = ?cg.limits, "cgroup placement");
        cg
    })
}

/// The mode and usable limits (the placement is prepared first if it was not yet).
pub fn capabilities() -> Capabilities {
    let c = cgroups();
    Capabilities { cgroup: c.mode.as_str(), limits: c.limits.clone() }
}

/// Checks that every limit in `limits` can be applied here.
pub fn check_limits(limits: &Limits) -> Result<(), CgroupError> {
    if let Some(c) = limits.cpu {
        if !(0.01..=4096.0).contains(&c) {
            return Err(CgroupError::InvalidLimit { field: "cpu", reason: "must be between 0.01 and 4096".into() });
        }
    }
    if limits.pids == Some(0) {
        return Err(CgroupError::InvalidLimit { field: "pids", reason: "must be at least 1".into() });
    }
    let have = capabilities().limits;
    for (asked, name) in
        [(limits.memory.is_some(), "memory"), (limits.pids.is_some(), "pids"), (limits.cpu.is_some(), "cpu")]
    {
        if asked && !have.contains(&name) {
            return Err(CgroupError::Unavailable(name));
        }
    }
    Ok(())
}

/// A new leaf with `limits` applied; `Ok(None)` when placement is off or the leaf cannot be made
/// (then only a request with limits fails).
pub fn new_leaf(limits: &Limits) -> Result<Option<Leaf>, CgroupError> {
    check_limits(limits)?;
    let cg = cgroups();
    if cg.mode == Mode::None {
        return Ok(None);
    }
    match create_named(cg, "c", limits) {
        Ok(l) => Ok(Some(l)),
        Err(e) if limits.is_empty() => {
            tracing::warn!(error = %e, "cannot create a cgroup leaf; using the process group only");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A new leaf named `<prefix><n>` with the next free `n`. A name already taken is a leaf (or a
/// spare) an earlier execd with this same pid left (X50, kept while its processes run): never
/// reused, the next names are tried.
fn create_named(cg: &Cgroups, prefix: &str, limits: &Limits) -> Result<Leaf, CgroupError> {
    let mut created = Err(CgroupError::Unavailable("leaf"));
    for _ in 0..64 {
        created = Leaf::create(cg, &format!("{prefix}{}", cg.counter.fetch_add(1, Ordering::Relaxed)), limits);
        match &created {
            Err(CgroupError::Io { op: "mkdir", source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {}
            _ => break,
        }
    }
    created
}

/// A leaf for a spawn without limits: on v1 a spare one made ahead of time when one is ready
/// (its directories made and its files opened off the request path), else a new one as
/// [`new_leaf`]. A spare still carries its mark: the caller removes it with [`Leaf::unmark`]
/// once the child is spawned.
///
/// Measured with commands spaced apart (BENCHMARKS.md, "A leaf with nothing left to do on the
/// request path"): the five `mkdir`s and `open`s are ~0.18 ms of a `true` command's ~2.6 ms.
pub fn leaf_for_spawn(limits: &Limits) -> Result<Option<Leaf>, CgroupError> {
    let cg = cgroups();
    if limits.is_empty() && cg.mode == Mode::V1 {
        let spare = cg.spares.lock().unwrap_or_else(|e| e.into_inner()).as_mut().and_then(Vec::pop);
        if let Some(leaf) = spare {
            return Ok(Some(leaf));
        }
        // None ready (the first command, or a burst): more are made now. Otherwise
        // the spare taken is replaced when its leaf is removed, after the command, so that
        // making it does not compete with the command for the CPU.
        refill_later(cg);
    }
    new_leaf(limits)
}

pub(crate) fn refill_later(cg: &'static Cgroups) {
    if cg.spares.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_none_or(|s| s.len() >= SPARES) {
        return;
    }
    if cg.refilling.swap(true, Ordering::AcqRel) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || {
                refill(cg);
                cg.refilling.store(false, Ordering::Release);
            });
        }
        Err(_) => cg.refilling.store(false, Ordering::Release),
    }
}

/// Makes spare leaves until [`SPARES`] are ready (or one cannot be made).
fn refill(cg: &Cgroups) {
    loop {
        match cg.spares.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(s) if s.len() < SPARES => {}
            _ => return,
        }
        let mut leaf = match create_named(cg, "c", &Limits::default()) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot make a spare cgroup leaf");
                return;
            }
        };
        if let Err(e) = leaf.prepare_spare() {
            tracing::debug!(error = %e, "cannot open a spare cgroup leaf");
            return;
        }
        let mut spares = cg.spares.lock().unwrap_or_else(|e| e.into_inner());
        match spares.as_mut() {
            Some(s) => s.push(leaf),
            // Shut down meanwhile: the leaf is removed as it drops (after the lock).
            None => return,
        }
    }
}

/// Number of leaf directories under execd's parent(s) right now, spares not counted (for tests
/// and metrics).
pub fn leaf_count() -> usize {
    let Some(cg) = GLOBAL.get() else { return 0 };
    let dir = cg.v2_parent.clone().or_else(|| mark_parent(&cg.v1).map(Path::to_path_buf));
    dir.and_then(|d| std::fs::read_dir(d).ok())
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter(|e| !e.path().join(SPARE_MARK).is_dir())
                .count()
        })
        .unwrap_or(0)
}

/// Shutdown (D15): kill everything left in pending leaves (left-behind children of finished
/// commands), remove the leaves and execd's parent directories.
pub fn shutdown() {
    // Never prepared: nothing to remove, and nothing is made after this (a placement asked for
    // later finds none).
    let cg = GLOBAL.get_or_init(none);
    // Empty: removed as they drop (after the lock: a dropped leaf looks at the spares).
    let spares = cg.spares.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(spares);
    let mut pending = std::mem::take(&mut *cg.pending.lock().unwrap_or_else(|e| e.into_inner()));
    for dirs in &mut pending {
        dirs.kill_until_empty(Duration::from_secs(2));
        dirs.remove(Duration::from_millis(500));
    }
    let parents = cg.v2_parent.iter().cloned().chain(cg.v1.iter().map(|h| h.parent.clone()));
    for p in parents {
        let _ = std::fs::remove_dir(p);
    }
}

/// Takes over the leaf (its directories `dirs`) of a command an earlier execd lost (X50) whose
/// processes still run: they are reported, never killed (not at [`shutdown`] either), and the
/// janitor removes the leaf once it is empty, then its `execd-<pid>` parent when nothing else is
/// left in it. Without placement here (no janitor) a later start's sweep removes it.
pub fn adopt_lost(dirs: &[PathBuf]) {
    if dirs.is_empty() {
        return;
    }
    let cg = cgroups();
    if cg.mode != Mode::None {
        cg.adopted.lock().unwrap_or_else(|e| e.into_inner()).push(leaf::Dirs::adopted(dirs));
        // Under `pending`'s lock, so the janitor cannot miss it between its check and its wait.
        let _pending = cg.pending.lock().unwrap_or_else(|e| e.into_inner());
        cg.work.notify_one();
    }
}

pub(crate) fn pend(dirs: leaf::Dirs) {
    if let Some(cg) = GLOBAL.get() {
        cg.pending.lock().unwrap_or_else(|e| e.into_inner()).push(dirs);
        cg.work.notify_one();
    }
}

/// Starts the janitor [`JANITOR_PERIOD`] from now, once the start is done: sweeping beside the
/// start slowed it, and so did making the thread (~0.05 ms; BENCHMARKS.md, "exec → first
/// `/ping` taken apart"). Leaves that wait meanwhile are in its lists when it starts. Without a
/// runtime (unit tests) the thread starts now and waits the period itself.
fn start_janitor() {
    let spawn = |delay: Duration| {
        std::thread::Builder::new().name("cgroup-janitor".into()).spawn(move || janitor(delay)).ok();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                tokio::time::sleep(JANITOR_PERIOD).await;
                spawn(Duration::ZERO);
            });
        }
        Err(_) => spawn(JANITOR_PERIOD),
    }
}

fn janitor(delay: Duration) {
    // Started while `GLOBAL` may still be being set: wait for it rather than miss it.
    let cg = GLOBAL.wait();
    std::thread::sleep(delay);
    // Parents dead execds left. Nothing of this execd's is among them.
    let bases = cg.v2_parent.iter().chain(cg.v1.iter().map(|h| &h.parent)).filter_map(|p| p.parent());
    for base in bases {
        sweep_stale(base);
    }
    loop {
        // Nothing to look after: sleep until there is (an idle execd is not woken for nothing).
        let mut pending = cg.pending.lock().unwrap_or_else(|e| e.into_inner());
        while pending.is_empty() && cg.adopted.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            pending = cg.work.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        drop(pending);
        std::thread::sleep(JANITOR_PERIOD);
        let mut list = std::mem::take(&mut *cg.pending.lock().unwrap_or_else(|e| e.into_inner()));
        list.retain_mut(|d| {
            if d.populated() {
                return true;
            }
            if d.try_remove() {
                return false;
            }
            d.tries += 1;
            if d.tries >= MAX_REMOVE_TRIES {
                tracing::warn!(leaf = %d.describe(), "empty cgroup leaf could not be removed; giving up");
                return false;
            }
            true
        });
        cg.pending.lock().unwrap_or_else(|e| e.into_inner()).extend(list);
        // An adopted leaf's parent is this execd's own when both had the same pid: that one stays.
        let own: Vec<&Path> = cg.v2_parent.iter().chain(cg.v1.iter().map(|h| &h.parent)).map(|p| p.as_path()).collect();
        cg.adopted.lock().unwrap_or_else(|e| e.into_inner()).retain_mut(|d| {
            if d.populated() || !d.try_remove() {
                return true;
            }
            d.remove_parents(&own);
            false
        });
    }
}

fn none() -> Cgroups {
    Cgroups {
        mode: Mode::None,
        v2_parent: None,
        v1: Vec::new(),
        limits: Vec::new(),
        counter: AtomicU64::new(0),
        pending: Mutex::new(Vec::new()),
        adopted: Mutex::new(Vec::new()),
        work: Condvar::new(),
        spares: Mutex::new(Some(Vec::new())),
        refilling: std::sync::atomic::AtomicBool::new(false),
    }
}

fn setup(placement: &Placement) -> Cgroups {
    let parent_name = format!("execd-{}", std::process::id());
    match placement {
        Placement::Off => none(),
        Placement::Root(root) => {
            if !detect::is_cgroup2(root) {
                tracing::warn!(root = %root.display(), "--cgroup-root is not a cgroup v2 directory; no placement");
                return none();
            }
            setup_v2(root, &parent_name, false).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cgroup v2 root not writable; no placement");
                none()
            })
        }
        Placement::Auto => {
            let mounts = detect::read_text("/proc/self/mountinfo");
            let own = detect::read_text("/proc/self/cgroup");
            let mounts = detect::parse_mountinfo(&mounts);
            let (v2_path, v1_paths) = detect::parse_self_cgroup(&own);
            // v2 with real controllers first (production), then v1 hierarchies, then a bare v2.
            let v2_root = v2_path
                .as_deref()
                .and_then(|p| mounts.iter().find(|m| m.controllers.is_none()).and_then(|m| detect::dir_of(m, p)));
            let v2_rich = v2_root.as_ref().is_some_and(|r| {
                let c = detect::read_text(r.join("cgroup.controllers"));
                c.split_whitespace().any(|c| c == "memory" || c == "pids")
            });
            if let (Some(r), true) = (&v2_root, v2_rich) {
                let in_own = v2_path.as_deref() != Some("/");
                if let Ok(cg) = setup_v2(r, &parent_name, in_own) {
                    return cg;
                }
            }
            let v1 = setup_v1(&mounts, &v1_paths, &parent_name);
            if !v1.is_empty() {
                let mut limits = Vec::new();
                let has = |c: &str| v1.iter().any(|h| h.controllers.iter().any(|x| x == c));
                for (c, name) in [("memory", "memory"), ("pids", "pids"), ("cpu", "cpu")] {
                    if has(c) {
                        limits.push(name);
                    }
                }
                return Cgroups { mode: Mode::V1, v1, limits, ..none() };
            }
            if let Some(r) = v2_root {
                let in_own = v2_path.as_deref() != Some("/");
                if let Ok(cg) = setup_v2(&r, &parent_name, in_own) {
                    return cg;
                }
            }
            none()
        }
    }
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

/// v2: optionally move execd into `execd.daemon` (a cgroup with processes cannot hand controllers
/// to children), enable controllers down to `execd-<pid>`.
fn setup_v2(root: &Path, parent_name: &str, move_self: bool) -> Result<Cgroups, CgroupError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| CgroupError::Io { op, path, source }
    };
    if move_self {
        let d = root.join("execd.daemon");
        if !d.is_dir() {
            std::fs::create_dir(&d).map_err(io("mkdir", &d))?;
        }
        write(&d.join("cgroup.procs"), &std::process::id().to_string()).map_err(io("enter", &d))?;
    }
    let parent = root.join(parent_name);
    match std::fs::create_dir(&parent) {
        Err(e) if !(e.kind() == std::io::ErrorKind::AlreadyExists && parent.is_dir()) => Err(io("mkdir", &parent)(e))?,
        _ => {}
    }
    for dir in [root, parent.as_path()] {
        let offered = detect::read_text(dir.join("cgroup.controllers"));
        for c in detect::V2_CONTROLLERS {
            if offered.split_whitespace().any(|o| o == c) {
                let _ = write(&dir.join("cgroup.subtree_control"), &format!("+{c}"));
            }
        }
    }
    let enabled = detect::read_text(parent.join("cgroup.subtree_control"));
    let limits =
        ["memory", "pids", "cpu"].into_iter().filter(|c| enabled.split_whitespace().any(|e| e == *c)).collect();
    Ok(Cgroups { mode: Mode::V2, v2_parent: Some(parent), limits, ..none() })
}

fn setup_v1(mounts: &[detect::CgroupMount], own: &[(Vec<String>, String)], parent_name: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    // Whether a parent was there already: left by an earlier execd with this pid.
    let mut existed = false;
    for m in mounts {
        let Some(ctrls) = &m.controllers else { continue };
        if ctrls.is_empty() || out.iter().any(|h| h.controllers == *ctrls) {
            continue;
        }
        let Some((_, path)) = own.iter().find(|(c, _)| ctrls.iter().all(|x| c.contains(x))) else { continue };
        let Some(base) = detect::dir_of(m, path) else { continue };
        let parent = base.join(parent_name);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && parent.is_dir() => existed = true,
            Err(_) => continue,
        }
        let home = std::fs::OpenOptions::new()
            .write(true)
            .open(base.join("tasks"))
            .ok()
            .map(|f| std::sync::Arc::new(std::os::fd::OwnedFd::from(f)));
        out.push(Hierarchy { parent, controllers: ctrls.clone(), home });
    }
    // Spare leaves an earlier execd with this pid left (a restart in a fresh PID namespace):
    // empty, so removed in every hierarchy; the others are its commands' (X50).
    if let Some(marks) = mark_parent(&out).filter(|_| existed) {
        let dirs = std::fs::read_dir(marks).into_iter().flatten().flatten();
        for e in dirs.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            if std::fs::remove_dir(e.path().join(SPARE_MARK)).is_ok() && std::fs::remove_dir(e.path()).is_ok() {
                for h in &out {
                    let _ = std::fs::remove_dir(h.parent.join(e.file_name()));
                }
            }
        }
    }
    out
}

/// The v1 parent directory spare leaves are marked in (see [`SPARE_MARK`]): the `pids`
/// hierarchy's, else the first a leaf without a cpu limit has a directory in.
fn mark_parent(v1: &[Hierarchy]) -> Option<&Path> {
    v1.iter()
        .find(|h| h.controllers.iter().any(|c| c == "pids"))
        .or_else(|| v1.iter().find(|h| h.controllers.iter().any(|c| c != "cpu")))
        .map(|h| h.parent.as_path())
}

/// Removes empty `execd-<pid>` directories (and their empty leaves) of execd processes that died.
fn sweep_stale(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("execd-")).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(leaves) = std::fs::read_dir(e.path()) {
            for l in leaves.flatten().filter(|l| l.path().is_dir()) {
                let _ = std::fs::remove_dir(l.path().join(SPARE_MARK));
                let _ = std::fs::remove_dir(l.path());
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x23_memory_sizes() {
        assert_eq!(parse_memory("64M").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_memory("2g").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1048576").unwrap(), 1 << 20);
        assert!(parse_memory("12").is_err());
        assert!(parse_memory("M").is_err());
        assert!(parse_memory("5X").is_err());
        assert!(parse_memory("99999999999T").is_err());
    }

    #[test]
    fn x20_placement_flag() {
        assert_eq!(Placement::parse(""), Placement::Auto);
        assert_eq!(Placement::parse("none"), Placement::Off);
        assert_eq!(Placement::parse("/sys/fs/cgroup/x"), Placement::Root("/sys/fs/cgroup/x".into()));
    }
}
