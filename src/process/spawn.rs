//! Spawning a command as the leader of its own process group, and everything that signals or
//! waits for that group (DECISIONS D14, D16).
//!
//! [`spawn`] takes a [`SpawnSpec`] and returns a [`GroupChild`] plus its output pipes
//! ([`ChildPipes`]). The leader is watched through a pidfd and **is not reaped until
//! [`GroupChild::wait`]**; every group signal and the reap happen under one lock, and a reap waits
//! for a running [`GroupChild::terminate_group`] to finish. So a pid or pgid is never signalled
//! after the leader was reaped (a reaped pid may be recycled).
//!
//! Credentials come from `/etc/passwd` and `/etc/group` read directly (no NSS: the binary is
//! static); a uid without a passwd entry runs with gid = uid and no supplementary groups (D16).
#![allow(unsafe_code)]

use crate::event::{EndedBy, ExitInfo};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::Notify;

use crate::cgroup::{Leaf, Limits, Usage};
use crate::os::accounts;

/// How often [`GroupChild::terminate_group`] checks whether the group is gone.
const GROUP_POLL: Duration = Duration::from_millis(50);
/// After SIGKILL, how long [`GroupChild::terminate_group`] still waits for the group to vanish.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(1);

/// Where the child's stdin comes from (X10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    /// `/dev/null` (the default, as upstream).
    #[default]
    Null,
    /// A pipe whose write end is [`ChildPipes::stdin`].
    Pipe,
    /// A new pseudo-terminal of this size as stdin, stdout and stderr, the controlling terminal of
    /// a new session the child leads (X15 `"tty":true`). Its master is [`ChildPipes::stdin`] (input)
    /// and [`ChildPipes::stdout`] (the merged output; `stderr` is `None`); [`ChildPipes::tty`]
    /// resizes it. The spec's [`OutputMode`] is ignored.
    Tty { cols: u16, rows: u16 },
}

/// Where the child's stdout and stderr go. stdin is `/dev/null` unless [`spawn_io`] asks for a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Two pipes: [`ChildPipes::stdout`] and [`ChildPipes::stderr`].
    Separate,
    /// One pipe shared by stdout and stderr (write order kept): [`ChildPipes::stdout`] only.
    Merged,
    /// Both to `/dev/null`.
    Null,
}

/// uid, primary gid and supplementary groups to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub program: PathBuf,
    /// The child's `argv[0]`; `None`: `program` as given.
    pub arg0: Option<OsString>,
    pub args: Vec<OsString>,
    /// The complete environment (the child's env is cleared first), unless `inherit_env`.
    pub env: Vec<(String, String)>,
    /// The child keeps execd's own environment as it is and `env` is not used: nothing of it is
    /// copied for the spawn (see [`super::env::inheritable`]).
    pub inherit_env: bool,
    /// Working directory; `None`: execd's.
    pub cwd: Option<PathBuf>,
    /// Switch to these credentials (needs root); `None`: execd's own.
    pub credentials: Option<Credentials>,
    pub output: OutputMode,
}

impl SpawnSpec {
    /// `bash -c <command>` (or `sh -c` when there is no bash on execd's PATH), separate pipes,
    /// empty environment, execd's cwd.
    pub fn shell(command: &str) -> SpawnSpec {
        SpawnSpec {
            program: shell().to_path_buf(),
            arg0: None,
            args: vec!["-c".into(), command.into()],
            env: Vec::new(),
            inherit_env: false,
            cwd: None,
            credentials: None,
            output: OutputMode::Separate,
        }
    }
}

/// Why a spawn failed. The message is what clients see in the `error` event.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("error creating output pipe: {0}")]
    Pipe(#[source] io::Error),
    /// `stage`: what the child was doing when it failed (`cgroup`, `setgroups`, `setgid`,
    /// `setuid`, `chdir`, `execve`).
    #[error("fork/exec {program}: {source}")]
    Exec { program: String, stage: &'static str, source: io::Error },
    /// The cgroup leaf could not be made (only when limits were asked for).
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("error watching process {pid}: {source}")]
    Watch { pid: u32, source: io::Error },
}

/// How the leader ended, with what the command used (X22), read when the leader was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitReport {
    pub outcome: ExitOutcome,
    pub usage: Usage,
    /// No cgroup: `usage` is the leader's own (`wait4` rusage), `"usage_scope":"leader"`.
    pub leader_only: bool,
    /// The kernel OOM-killed a process of the leaf (memory limit, X23).
    pub oom_killed: bool,
}

/// How the group leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

impl ExitOutcome {
    /// The exit code as upstream reports it: the code, or -1 for a signal.
    pub fn code(self) -> i32 {
        match self {
            ExitOutcome::Exited(c) => c,
            ExitOutcome::Signaled(_) => -1,
        }
    }
    /// Go's `ProcessState.String()`: `exit status 3`, `signal: killed`.
    pub fn describe(self) -> String {
        match self {
            ExitOutcome::Exited(c) => format!("exit status {c}"),
            ExitOutcome::Signaled(s) => format!("signal: {}", signal_name(s)),
        }
    }
    pub fn success(self) -> bool {
        self == ExitOutcome::Exited(0)
    }
}

/// Go's names for signals (`signal: killed`).
pub fn signal_name(sig: i32) -> String {
    let name = match Signal::try_from(sig) {
        Ok(Signal::SIGKILL) => "killed",
        Ok(Signal::SIGTERM) => "terminated",
        Ok(Signal::SIGINT) => "interrupt",
        Ok(Signal::SIGHUP) => "hangup",
        Ok(Signal::SIGQUIT) => "quit",
        Ok(Signal::SIGPIPE) => "broken pipe",
        Ok(Signal::SIGSEGV) => "segmentation fault",
        Ok(Signal::SIGABRT) => "aborted",
        Ok(Signal::SIGBUS) => "bus error",
        Ok(Signal::SIGFPE) => "floating point exception",
        Ok(Signal::SIGILL) => "illegal instruction",
        Ok(Signal::SIGALRM) => "alarm clock",
        Ok(Signal::SIGUSR1) => "user defined signal 1",
        Ok(Signal::SIGUSR2) => "user defined signal 2",
        Ok(Signal::SIGTRAP) => "trace/breakpoint trap",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// `bash` from execd's PATH, else `sh`, else `/bin/sh` (looked up once).
pub fn shell() -> &'static Path {
    static SHELL: OnceLock<PathBuf> = OnceLock::new();
    SHELL.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        for name in ["bash", "sh"] {
            for dir in std::env::split_paths(&path) {
                let p = dir.join(name);
                if is_executable(&p) {
                    return p;
                }
            }
        }
        PathBuf::from("/bin/sh")
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Credentials for `uid` (and an explicit `gid`), from `/etc/passwd` and `/etc/group`.
pub fn resolve_credentials(uid: u32, gid: Option<u32>) -> Credentials {
    credentials_from(&accounts::read_passwd(), &accounts::read_group(), uid, gid)
}

/// [`resolve_credentials`] over given file contents (pure, for tests).
pub fn credentials_from(passwd: &str, group: &str, uid: u32, gid: Option<u32>) -> Credentials {
    match accounts::user(passwd, uid) {
        Some(user) => {
            let primary = user.gid.unwrap_or(uid);
            let mut groups = vec![primary];
            for g in accounts::groups(group).filter(|g| g.has_member(user.name)) {
                if !groups.contains(&g.gid) {
                    groups.push(g.gid);
                }
            }
            Credentials { uid, gid: gid.unwrap_or(primary), groups }
        }
        None => Credentials { uid, gid: gid.unwrap_or(uid), groups: Vec::new() },
    }
}

/// The read ends of the child's output pipes (see [`OutputMode`]).
#[derive(Debug, Default)]
pub struct ChildPipes {
    pub stdout: Option<OutputPipe>,
    pub stderr: Option<OutputPipe>,
    /// The write end of the child's stdin with [`StdinMode::Pipe`] (the master with
    /// [`StdinMode::Tty`]).
    pub stdin: Option<super::stdin::StdinPipe>,
    /// With [`StdinMode::Tty`]: the terminal's size control.
    pub tty: Option<super::tty::TtyControl>,
}

/// The read end of an output pipe, or the master of the child's terminal ([`StdinMode::Tty`]:
/// everything the child writes to it, `EIO` once no slave is open being end of file).
#[derive(Debug)]
pub struct OutputPipe {
    src: Source,
}

#[derive(Debug)]
enum Source {
    Pipe(pipe::Receiver),
    Tty(super::tty::Master),
}

impl OutputPipe {
    /// Reads what is available, waiting for data; `Ok(0)` at end of file. Cancel-safe.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.src {
            Source::Pipe(rx) => rx.read(buf).await,
            Source::Tty(m) => m.async_io(tokio::io::Interest::READABLE, |m| super::tty::read_master(m, buf)).await,
        }
    }

    /// Waits until the pipe is readable (data or end of file). Cancel-safe.
    pub async fn readable(&self) -> io::Result<()> {
        match &self.src {
            Source::Pipe(rx) => rx.readable().await,
            Source::Tty(m) => m.readable().await.map(drop),
        }
    }

    /// Reads without waiting; `WouldBlock` when nothing is there (use after [`Self::readable`]).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.src {
            Source::Pipe(rx) => rx.try_read(buf),
            Source::Tty(m) => m.try_io(tokio::io::Interest::READABLE, |m| super::tty::read_master(m, buf)),
        }
    }

    /// One non-blocking read syscall, bypassing the reactor's readiness cache: `Some(n)` bytes
    /// (`Some(0)` = end of file) or `None` when the pipe is empty right now. Used for the final
    /// drain after the leader exited: everything it wrote is in the pipe by then (a terminal's
    /// read flushes the line discipline's pending input first).
    pub fn read_now(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let fd = match &self.src {
            Source::Pipe(rx) => rx.as_raw_fd(),
            Source::Tty(m) => m.get_ref().as_raw_fd(),
        };
        loop {
            match nix::unistd::read(fd, buf) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(Errno::EIO) if matches!(self.src, Source::Tty(_)) => return Ok(Some(0)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Keeps reading (and discarding) until end of file in a background task, so that processes
    /// left behind by the command never get SIGPIPE (or block on a full terminal); the task ends
    /// when the last writer closes.
    pub fn discard_rest(mut self) {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = self.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

fn make_pipe() -> Result<(OutputPipe, OwnedFd), SpawnError> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Pipe(e.into()))?;
    let rx = pipe::Receiver::from_owned_fd(r).map_err(SpawnError::Pipe)?;
    Ok((OutputPipe { src: Source::Pipe(rx) }, w))
}

/// Starts `spec` as the leader of a new process group, in a cgroup leaf of its own where execd
/// has cgroups (X20). Must be called inside a tokio runtime.
pub fn spawn(spec: SpawnSpec) -> Result<(GroupChild, ChildPipes), SpawnError> {
    spawn_with(spec, &Limits::default())
}

/// Stages of the child between fork and exec, as reported through the stage pipe.
pub(crate) const STAGES: [&str; 6] = ["execve", "cgroup", "setgroups", "setgid", "setuid", "chdir"];

/// [`spawn`] with resource limits on the leaf (X23): fails with [`SpawnError::Cgroup`] when a
/// limit cannot be applied; without limits a missing cgroup only means "process group only".
pub fn spawn_with(spec: SpawnSpec, limits: &Limits) -> Result<(GroupChild, ChildPipes), SpawnError> {
    spawn_io(spec, limits, StdinMode::Null)
}

/// [`spawn_with`] with the child's stdin chosen (X10): a pipe's write end comes back in
/// [`ChildPipes::stdin`] (close-on-exec on execd's side, so no other child inherits it and EOF
/// arrives when execd drops it).
pub fn spawn_io(spec: SpawnSpec, limits: &Limits, stdin: StdinMode) -> Result<(GroupChild, ChildPipes), SpawnError> {
    let program = spec.program.display().to_string();
    let exec_err =
        |stage: &'static str, source: io::Error| SpawnError::Exec { program: program.clone(), stage, source };
    let (mut leaf, mut procs_fds) = open_leaf(limits, &program)?;
    let mut cmd = std::process::Command::new(&spec.program);
    if let Some(arg0) = &spec.arg0 {
        cmd.arg0(arg0);
    }
    cmd.args(&spec.args);
    if !spec.inherit_env {
        cmd.env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    }
    let (stdin_pipe, tty) = wire_stdin(&mut cmd, stdin)?;
    // A terminal's child leads a new session (so its own process group, pgid = pid) instead:
    // `setsid` fails in a process that already leads a group.
    if tty.is_none() {
        cmd.process_group(0);
    }
    // With a pre-exec step (cgroup, credentials) the chdir happens there too, after the switch,
    // as Go does, so a directory the user cannot enter is a start failure (stage `chdir`).
    // Without limits, credentials or a terminal, a v1 leaf is entered by the spawning thread
    // itself around the spawn (`Leaf::place_thread`), so the child needs no hook and std spawns
    // it by `posix_spawn` (a `vfork`) instead of a full `fork` of execd.
    let thread_placed = !procs_fds.is_empty()
        && limits.is_empty()
        && spec.credentials.is_none()
        && matches!(stdin, StdinMode::Null | StdinMode::Pipe)
        && leaf.as_ref().is_some_and(|l| l.can_place_thread());
    let use_hook = (!procs_fds.is_empty() && !thread_placed) || spec.credentials.is_some();
    let chdir_in_hook = match &spec.cwd {
        Some(cwd) if use_hook => Some(
            std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(cwd.as_os_str()))
                .map_err(|e| exec_err("chdir", io::Error::other(e)))?,
        ),
        Some(cwd) => {
            cmd.current_dir(cwd);
            None
        }
        None => None,
    };
    let mut pipes = ChildPipes { stdin: stdin_pipe, ..ChildPipes::default() };
    match &tty {
        Some(m) => {
            pipes.stdout = Some(OutputPipe { src: Source::Tty(m.clone()) });
            pipes.tty = Some(super::tty::TtyControl::new(m));
        }
        None => wire_output(&mut cmd, spec.output, &mut pipes)?,
    }
    let stage_pipe = if use_hook {
        let hook = Hook {
            procs_fds: std::mem::take(&mut procs_fds),
            strict_cgroup: !limits.is_empty(),
            creds: spec.credentials.clone(),
            chdir_in_hook,
        };
        Some(hook.install(&mut cmd)?)
    } else {
        None
    };
    let spawned = match (&leaf, thread_placed) {
        (Some(l), true) => {
            let placed = l.place_thread(&procs_fds);
            let spawned = cmd.spawn();
            drop(placed);
            spawned
        }
        _ => cmd.spawn(),
    };
    drop(procs_fds);
    // `cmd` still holds the write ends (and the cgroup descriptors); drop them so EOF arrives
    // when the child's side closes.
    drop(cmd);
    let child = match spawned {
        Ok(c) => c,
        Err(source) => return Err(exec_err(failed_stage(stage_pipe.as_ref(), spec.cwd.as_deref()), source)),
    };
    if let Some(l) = &mut leaf {
        // While the child starts: a spare leaf loses its mark, and the exit reads the usage
        // without opening files.
        l.unmark();
        l.prepare_usage();
    }
    let pid = child.id();
    // Dropping std's Child neither waits nor kills: we reap through the pidfd below.
    drop(child);
    Ok((GroupChild::watch(pid, leaf, tty.is_some())?, pipes))
}

/// The command's cgroup leaf and the `cgroup.procs` descriptors its child writes itself into.
/// Without limits a leaf that cannot be opened only means "process group only".
fn open_leaf(limits: &Limits, program: &str) -> Result<(Option<crate::cgroup::Leaf>, Vec<OwnedFd>), SpawnError> {
    let Some(leaf) = crate::cgroup::leaf_for_spawn(limits)? else { return Ok((None, Vec::new())) };
    match leaf.procs_files() {
        Ok(fds) => Ok((Some(leaf), fds)),
        Err(e) if limits.is_empty() => {
            tracing::warn!(error = %e, "cannot open the cgroup leaf; using the process group only");
            Ok((None, Vec::new()))
        }
        Err(source) => Err(SpawnError::Exec { program: program.to_string(), stage: "cgroup", source }),
    }
}

/// The child's stdin: nothing, a pipe (its write end returned), or a new terminal that is also
/// its stdout and stderr (its master returned).
fn wire_stdin(
    cmd: &mut std::process::Command,
    stdin: StdinMode,
) -> Result<(Option<super::stdin::StdinPipe>, Option<super::tty::Master>), SpawnError> {
    match stdin {
        StdinMode::Null => {
            cmd.stdin(Stdio::null());
            Ok((None, None))
        }
        StdinMode::Pipe => {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Pipe(e.into()))?;
            cmd.stdin(Stdio::from(r));
            Ok((Some(super::stdin::StdinPipe::new(w).map_err(SpawnError::Pipe)?), None))
        }
        StdinMode::Tty { cols, rows } => {
            let (m, slave) = super::tty::open_pty(cols, rows).map_err(SpawnError::Pipe)?;
            let slave_id = super::tty::FileId::of(slave.as_raw_fd());
            let dup = |f: &std::fs::File| f.try_clone().map_err(SpawnError::Pipe);
            cmd.stdin(Stdio::from(dup(&slave)?)).stdout(Stdio::from(dup(&slave)?)).stderr(Stdio::from(slave));
            // SAFETY: runs in the forked child before exec (and before the other hook, see
            // `Hook::install`); `become_controlling_tty` makes only raw, async-signal-safe syscalls.
            unsafe {
                cmd.pre_exec(super::tty::become_controlling_tty);
            }
            let master = super::tty::register(m).map_err(SpawnError::Pipe)?;
            let stdin = super::stdin::StdinPipe::tty(master.clone(), slave_id);
            Ok((Some(stdin), Some(master)))
        }
    }
}

/// stdout and stderr of a child without a terminal.
fn wire_output(cmd: &mut std::process::Command, output: OutputMode, pipes: &mut ChildPipes) -> Result<(), SpawnError> {
    match output {
        OutputMode::Separate => {
            let (out, w_out) = make_pipe()?;
            let (err, w_err) = make_pipe()?;
            cmd.stdout(Stdio::from(w_out)).stderr(Stdio::from(w_err));
            pipes.stdout = Some(out);
            pipes.stderr = Some(err);
        }
        OutputMode::Merged => {
            let (out, w) = make_pipe()?;
            let w2 = w.try_clone().map_err(SpawnError::Pipe)?;
            cmd.stdout(Stdio::from(w)).stderr(Stdio::from(w2));
            pipes.stdout = Some(out);
        }
        OutputMode::Null => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    Ok(())
}

/// The child's steps between fork and exec: enter the cgroup leaf, switch credentials, chdir.
struct Hook {
    procs_fds: Vec<OwnedFd>,
    /// Limits were asked: failing to enter the leaf fails the start.
    strict_cgroup: bool,
    creds: Option<Credentials>,
    chdir_in_hook: Option<std::ffi::CString>,
}

impl Hook {
    /// Installs the hook on `cmd` and returns the stage pipe: the child writes the index of the
    /// failing stage ([`STAGES`]) into it before failing (close-on-exec, so a successful exec
    /// leaves it empty).
    fn install(self, cmd: &mut std::process::Command) -> Result<(OwnedFd, OwnedFd), SpawnError> {
        let stage_pipe =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| SpawnError::Pipe(e.into()))?;
        let Hook { procs_fds, strict_cgroup, creds, chdir_in_hook } = self;
        let creds = creds.map(|c| {
            let groups: Vec<Gid> = c.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            (groups, Gid::from_raw(c.gid), Uid::from_raw(c.uid))
        });
        let stage_fd = stage_pipe.1.as_raw_fd();
        // SAFETY: runs in the forked child before exec; it only makes async-signal-safe syscalls
        // (write, setgroups, setgid, setuid, chdir) on data prepared before the fork (no
        // allocation). Order matters: the cgroup is entered while still root, and groups and gid
        // must change while we are still root.
        unsafe {
            cmd.pre_exec(move || {
                let fail = |stage: u8, e: io::Error| {
                    let _ = nix::libc::write(stage_fd, [stage].as_ptr().cast(), 1);
                    e
                };
                if let Err(e) = crate::cgroup::leaf::enter(&procs_fds) {
                    if strict_cgroup {
                        return Err(fail(1, e));
                    }
                }
                if let Some((groups, gid, uid)) = &creds {
                    nix::unistd::setgroups(groups).map_err(|e| fail(2, e.into()))?;
                    nix::unistd::setgid(*gid).map_err(|e| fail(3, e.into()))?;
                    nix::unistd::setuid(*uid).map_err(|e| fail(4, e.into()))?;
                }
                if let Some(dir) = &chdir_in_hook {
                    nix::unistd::chdir(dir.as_c_str()).map_err(|e| fail(5, e.into()))?;
                }
                Ok(())
            });
        }
        Ok(stage_pipe)
    }
}

/// The stage a failed start failed at: what the hook's child reported, else `chdir` for a
/// missing directory, else `execve`.
fn failed_stage(stage_pipe: Option<&(OwnedFd, OwnedFd)>, cwd: Option<&std::path::Path>) -> &'static str {
    if let Some((r, _)) = stage_pipe {
        let mut b = [0u8; 1];
        if let Ok(1) = nix::unistd::read(r.as_raw_fd(), &mut b) {
            return STAGES.get(b[0] as usize).copied().unwrap_or("execve");
        }
        return "execve";
    }
    if cwd.is_some_and(|c| !c.is_dir()) {
        "chdir"
    } else {
        "execve"
    }
}

struct State {
    /// Set when the leader has been reaped; from then on nothing is signalled.
    outcome: Option<ExitOutcome>,
    /// Usage and OOM state read at the reap.
    report: Option<ExitReport>,
    /// Running `terminate_group` calls; the reap waits for them.
    holds: usize,
}

/// A running process group whose leader we spawned. Share it with `Arc`; every method takes
/// `&self`. Call [`GroupChild::wait`] once the work is done (dropping it unreaped SIGKILLs the
/// group and reaps the leader on a helper thread).
pub struct GroupChild {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    /// The cgroup leaf of the command (X20); `None`: process group only.
    leaf: Option<Leaf>,
    /// The leader leads a session of its own ([`StdinMode::Tty`]): without a leaf, the session's
    /// other process groups (job control) are signalled and waited for too.
    session: bool,
    state: Mutex<State>,
    released: Notify,
}

impl std::fmt::Debug for GroupChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupChild").field("pid", &self.pid).finish()
    }
}

impl GroupChild {
    /// Takes over the just-spawned leader `pid`: a pidfd registered with the runtime reaps it.
    fn watch(pid: u32, leaf: Option<Leaf>, session: bool) -> Result<GroupChild, SpawnError> {
        let watch = |source| SpawnError::Watch { pid, source };
        let pidfd = crate::os::pidfd::open(pid).map_err(watch)?;
        // SAFETY: an OwnedFd owns its descriptor for its whole life and always returns the same one.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| watch(e.into()))?;
        Ok(GroupChild {
            pid: Pid::from_raw(pid as i32),
            pidfd,
            leaf,
            session,
            state: Mutex::new(State { outcome: None, report: None, holds: 0 }),
            released: Notify::new(),
        })
    }

    /// The leader's pid (= the process group id).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends `sig` to the whole group and to every process of the cgroup leaf (which also holds
    /// those that left the group with `setsid`), or of a terminal's session without a leaf; each
    /// process once. Fails with ESRCH once the leader has been reaped.
    pub fn signal_group(&self, sig: Signal) -> io::Result<()> {
        // The lock orders this kill against the reap in `wait`: never signal a reaped pgid.
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.outcome.is_some() {
            return Err(Errno::ESRCH.into());
        }
        let res = killpg(self.pid, sig).map_err(io::Error::from);
        // Then every other process of the command, once (a second SIGINT is a second interrupt):
        // the leaf's processes outside the group (`setsid`, job control), or without a leaf, for
        // a terminal's command, the other groups of its session.
        let pgid = self.pid.as_raw();
        let others: Vec<i32> = match &self.leaf {
            Some(leaf) => leaf
                .pids()
                .into_iter()
                .filter(|&p| nix::unistd::getpgid(Some(Pid::from_raw(p))).map(Pid::as_raw) != Ok(pgid))
                .collect(),
            None if self.session => {
                members_of(pgid, true).into_iter().filter(|&(_, g)| g != pgid).map(|(p, _)| p).collect()
            }
            None => Vec::new(),
        };
        for p in others {
            let _ = kill(Pid::from_raw(p), sig);
        }
        match &self.leaf {
            Some(_) => Ok(()),
            None => res,
        }
    }

    /// SIGKILL to the whole group and one kill round over the cgroup leaf (`cgroup.kill` on v2,
    /// freeze → SIGKILL → thaw on v1; X21). Errors ignored: the group may be gone already.
    pub fn kill_group(&self) {
        let _ = self.signal_group(Signal::SIGKILL);
        if let Some(leaf) = &self.leaf {
            // The leaf names no pids across the reap (v2 `cgroup.kill`, or a frozen v1 cgroup whose
            // pids cannot exit while listed), so this is safe even after the leader was reaped.
            leaf.kill_round();
        }
    }

    /// Kills everything (repeated kill rounds, for forks racing the first one) until nothing of
    /// the command is alive or `within` passed.
    pub async fn kill_all(&self, within: Duration) {
        let end = Instant::now() + within;
        loop {
            self.kill_group();
            if !self.group_alive() || Instant::now() >= end {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether this command has a cgroup leaf.
    pub fn in_cgroup(&self) -> bool {
        self.leaf.is_some()
    }

    /// The directories of the command's cgroup leaf (none without one), for its record (X50).
    pub fn leaf_paths(&self) -> Vec<PathBuf> {
        self.leaf.as_ref().map(Leaf::paths).unwrap_or_default()
    }

    /// Usage, OOM and exit status, once the leader has been reaped.
    pub fn report(&self) -> Option<ExitReport> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).report
    }

    /// The leaf's OOM state now (false without a memory controller).
    pub fn oom_killed(&self) -> bool {
        self.leaf.as_ref().is_some_and(|l| l.oom_killed())
    }

    /// Resolves when the leader has exited (it stays unreaped, so the group can still be signalled).
    pub async fn exited(&self) {
        // Level-triggered: once the pidfd is readable it stays readable, so the guard is not cleared.
        if let Ok(guard) = self.pidfd.readable().await {
            drop(guard);
        }
    }

    /// Whether the leader has exited (non-blocking).
    pub fn has_exited(&self) -> bool {
        if self.state.lock().unwrap_or_else(|e| e.into_inner()).outcome.is_some() {
            return true;
        }
        let mut fds =
            [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(self.pidfd.get_ref()), nix::poll::PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// The outcome if the leader has been reaped.
    pub fn outcome(&self) -> Option<ExitOutcome> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).outcome
    }

    /// Waits for the leader to exit and reaps it (after any running `terminate_group` finished).
    /// Idempotent: later calls return the same outcome.
    pub async fn wait(&self) -> ExitOutcome {
        loop {
            self.exited().await;
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(o) = st.outcome {
                    return o;
                }
                if st.holds == 0 {
                    let (o, rusage) = reap(self.pid);
                    let report = match &self.leaf {
                        Some(l) => {
                            ExitReport { outcome: o, usage: l.usage(), leader_only: false, oom_killed: l.oom_killed() }
                        }
                        None => ExitReport { outcome: o, usage: rusage, leader_only: true, oom_killed: false },
                    };
                    st.outcome = Some(o);
                    st.report = Some(report);
                    return o;
                }
            }
            released.await;
        }
    }

    /// SIGTERM to every process of the command that has not had one from these calls yet: the first
    /// call (`termed` empty) signals the group and the leaf as [`GroupChild::signal_group`] does;
    /// each later one the processes born since, found in the leaf or the group. A shell that
    /// traps EXIT or TERM (a session run's bash, D20) and takes the first SIGTERM just before it
    /// forks its next command runs that command to its end before its trap: the command, born
    /// after the signal, never had one, and would hold the whole grace period (`sleep 30` after
    /// `echo up`: CI runs 51 and 127). Callers repeat this while they wait out the grace.
    pub fn terminate_new(&self, termed: &mut Vec<i32>) {
        if termed.is_empty() {
            // Listed before the signal: one born in between gets a second SIGTERM at the next
            // call rather than none (listed after, it could be counted without having had one).
            let before = self.live_pids();
            if self.signal_group(Signal::SIGTERM).is_ok() || self.leaf.is_some() {
                termed.push(self.pid.as_raw());
                termed.extend(before);
            }
            return;
        }
        // Under the lock, as every group signal: never after the leader was reaped.
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.outcome.is_some() {
            return;
        }
        for p in self.live_pids() {
            if !termed.contains(&p) {
                let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
                termed.push(p);
            }
        }
    }

    /// The processes of the command now: its leaf's, else the members of its process group (and,
    /// for a terminal's command, of its session), from `/proc`.
    fn live_pids(&self) -> Vec<i32> {
        match &self.leaf {
            Some(leaf) => leaf.pids(),
            None => members_of(self.pid.as_raw(), self.session).into_iter().map(|(p, _)| p).collect(),
        }
    }

    /// Interrupt (C44): SIGTERM to the group (and to what it forks during the grace, once each:
    /// [`GroupChild::terminate_new`]), then SIGKILL if it is still there after `grace`. Returns
    /// when the group is gone or, after the SIGKILL, about one more second passed.
    pub async fn terminate_group(&self, grace: Duration) {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.outcome.is_some() {
                return;
            }
            st.holds += 1;
        }
        // Released on drop, so a cancelled interrupt (client gone) never blocks the reap.
        let _hold = HoldGuard(self);
        let mut termed = Vec::new();
        self.terminate_new(&mut termed);
        let deadline = Instant::now() + grace;
        let gone = loop {
            if !self.group_alive() {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(GROUP_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
            self.terminate_new(&mut termed);
        };
        if !gone {
            self.kill_all(AFTER_KILL_WAIT).await;
        }
    }

    /// After the leader was reaped: whether what it left behind (`&` children that outlived a
    /// foreground command) is alive: the processes of its cgroup leaf, else the live members of
    /// its process group.
    ///
    /// Cheap (one `cgroup.procs` read, or one `kill(-pgid, 0)`), as it runs at every finish; a
    /// zombie member counts as alive without a leaf.
    pub fn leftovers_alive(&self) -> bool {
        match &self.leaf {
            Some(leaf) => leaf.populated(),
            None if self.id_taken() => false,
            None if self.session => !self.members().is_empty(),
            None => !matches!(killpg(self.pid, None), Err(Errno::ESRCH)),
        }
    }

    /// Whether the group's id now names someone else's group: once the leader is reaped, the
    /// kernel keeps its id allocated only while a member of the group (or session) lives, and
    /// hands it out again after a pid wrap (pid_max 32 768 wrapped every 3–5 minutes in this
    /// project's CI). So a live process *with that pid* means the group is gone and the id was
    /// reused, by a new leader whose group (often another command's) must not be signalled.
    fn id_taken(&self) -> bool {
        self.outcome().is_some() && crate::os::proc::Stat::read(self.pid.as_raw()).is_some()
    }

    /// [`Self::leftovers_alive`] without counting zombies (a `/proc` scan without a leaf).
    fn leftovers_live(&self) -> bool {
        match &self.leaf {
            Some(leaf) => leaf.populated(),
            None => !self.members().is_empty(),
        }
    }

    /// The live (non-zombie) processes of the group, or of the session for a terminal's command.
    fn members(&self) -> Vec<i32> {
        if self.id_taken() {
            return Vec::new();
        }
        members_of(self.pid.as_raw(), self.session).into_iter().map(|(p, _)| p).collect()
    }

    /// Ends what the command left behind (#17: an explicit interrupt of a finished command):
    /// SIGTERM to every leftover process, SIGKILL rounds after `grace`. Without a leaf the
    /// members of the process group are signalled one by one, as found in `/proc` (the group id is
    /// not signalled: the leader was reaped). Returns when nothing is left or about one more
    /// second passed after the SIGKILL.
    pub async fn kill_leftovers(&self, grace: Duration) {
        let signal = |sig: Signal| match &self.leaf {
            Some(leaf) if sig == Signal::SIGKILL => leaf.kill_round(),
            Some(leaf) => leaf.signal_all(sig),
            None => {
                for p in self.members() {
                    let _ = kill(Pid::from_raw(p), sig);
                }
            }
        };
        signal(Signal::SIGTERM);
        for (sig, within) in [(None, grace), (Some(Signal::SIGKILL), AFTER_KILL_WAIT)] {
            let end = Instant::now() + within;
            loop {
                if let Some(sig) = sig {
                    signal(sig);
                }
                if !self.leftovers_live() || Instant::now() >= end {
                    break;
                }
                tokio::time::sleep(GROUP_POLL.min(end.saturating_duration_since(Instant::now()))).await;
            }
            if !self.leftovers_live() {
                return;
            }
        }
    }

    /// Whether any live (non-zombie) process is left in the group or the cgroup leaf.
    pub fn group_alive(&self) -> bool {
        if self.leaf.as_ref().is_some_and(|l| l.populated()) {
            return true;
        }
        // EPERM (members under another uid) still means the group exists.
        if let (Err(Errno::ESRCH), false) = (killpg(self.pid, None), self.session) {
            return false;
        }
        if !self.has_exited() {
            return true;
        }
        // The unreaped leader keeps the group "existing"; look for live members.
        !self.members().is_empty()
    }
}

struct HoldGuard<'a>(&'a GroupChild);

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).holds -= 1;
        self.0.released.notify_waiters();
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.outcome.is_none() {
            let _ = killpg(self.pid, Signal::SIGKILL);
            if let Some(leaf) = &self.leaf {
                leaf.kill_round();
            }
            let pid = self.pid;
            std::thread::spawn(move || reap(pid));
        }
    }
}

/// Reaps `pid` with `wait4`, returning its status and its own resource usage (children it
/// waited for included, as `/usr/bin/time` reports).
fn reap(pid: Pid) -> (ExitOutcome, Usage) {
    loop {
        let mut status: nix::libc::c_int = 0;
        // SAFETY: `rusage` is plain old data the kernel fills in; zeroed is a valid value.
        let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into the two out-parameters, which live across the call.
        let rc = unsafe { nix::libc::wait4(pid.as_raw(), &mut status, nix::libc::__WALL, &mut ru) };
        if rc < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            tracing::warn!(pid = pid.as_raw(), error = %e, "wait4 failed");
            return (ExitOutcome::Exited(1), Usage::default());
        }
        let ms = |tv: nix::libc::timeval| (tv.tv_sec as u64) * 1000 + (tv.tv_usec as u64) / 1000;
        let usage = Usage {
            cpu_user_ms: ms(ru.ru_utime),
            cpu_system_ms: ms(ru.ru_stime),
            // ru_maxrss is in KiB on Linux.
            peak_memory_bytes: Some((ru.ru_maxrss as u64).saturating_mul(1024)),
            io_read_bytes: None,
            io_write_bytes: None,
            pids_peak: None,
        };
        match WaitStatus::from_raw(pid, status) {
            Ok(WaitStatus::Exited(_, code)) => return (ExitOutcome::Exited(code), usage),
            Ok(WaitStatus::Signaled(_, sig, _)) => return (ExitOutcome::Signaled(sig as i32), usage),
            _ => continue,
        }
    }
}

/// Non-zombie processes whose process group is `pgid` (from `/proc/*/stat`).
pub fn live_group_members(pgid: i32) -> usize {
    group_members(pgid).len()
}

/// The non-zombie processes whose process group is `pgid` (from `/proc/*/stat`).
fn group_members(pgid: i32) -> Vec<i32> {
    members_of(pgid, false).into_iter().map(|(p, _)| p).collect()
}

/// The non-zombie processes whose process group (or, with `session`, session) is `id`, with
/// their process group: `(pid, pgid)`.
fn members_of(id: i32, session: bool) -> Vec<(i32, i32)> {
    crate::os::proc::members_of(id, session)
}

/// The structured exit of a process (X22), from what this module observed. (An `impl` of
/// [`crate::event::ExitInfo`] here: the event vocabulary does not know processes.)
impl ExitInfo {
    /// From the reap report and what execd did to the command.
    pub fn from_report(report: &ExitReport, ended_by: EndedBy) -> ExitInfo {
        let signal = match report.outcome {
            ExitOutcome::Signaled(s) => Some(
                nix::sys::signal::Signal::try_from(s)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("SIG{s}")),
            ),
            ExitOutcome::Exited(_) => None,
        };
        let exit_reason = match (ended_by, report.oom_killed, report.outcome) {
            (EndedBy::Timeout, _, _) => "timeout",
            (EndedBy::Interrupt, _, _) => "interrupted",
            (_, true, _) => "oom_killed",
            (_, _, ExitOutcome::Signaled(_)) => "signaled",
            (_, _, ExitOutcome::Exited(_)) => "exited",
        };
        ExitInfo {
            exit_reason,
            signal,
            errno: None,
            errno_name: None,
            stage: None,
            usage: Some(report.usage),
            usage_scope: report.leader_only.then_some("leader"),
            output_lost_bytes: None,
        }
    }

    /// A start failure: errno and stage where known.
    pub fn spawn_failed(err: &SpawnError) -> ExitInfo {
        use SpawnError;
        let (errno, stage) = match err {
            SpawnError::Exec { stage, source, .. } => (source.raw_os_error(), Some(*stage)),
            SpawnError::Pipe(e) | SpawnError::Watch { source: e, .. } => (e.raw_os_error(), None),
            SpawnError::Cgroup(_) => (None, Some("cgroup")),
        };
        ExitInfo {
            exit_reason: "spawn_failed",
            signal: None,
            errno,
            errno_name: errno.map(|n| format!("{:?}", nix::errno::Errno::from_raw(n))),
            stage,
            usage: None,
            usage_scope: None,
            output_lost_bytes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/:/bin/false\nu:x:1000:100::/home/u:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\ndev:x:200:u,v\nother:x:300:v\n";

    #[test]
    fn credentials_table() {
        assert_eq!(
            credentials_from(PASSWD, GROUP, 1000, None),
            Credentials { uid: 1000, gid: 100, groups: vec![100, 200] }
        );
        assert_eq!(
            credentials_from(PASSWD, GROUP, 1000, Some(7)),
            Credentials { uid: 1000, gid: 7, groups: vec![100, 200] }
        );
        assert_eq!(credentials_from(PASSWD, GROUP, 4242, None), Credentials { uid: 4242, gid: 4242, groups: vec![] });
        assert_eq!(credentials_from(PASSWD, GROUP, 65534, None).gid, 65534);
    }

    #[test]
    fn outcome_wording() {
        assert_eq!(ExitOutcome::Exited(3).describe(), "exit status 3");
        assert_eq!(ExitOutcome::Signaled(9).describe(), "signal: killed");
        assert_eq!(ExitOutcome::Signaled(15).describe(), "signal: terminated");
        assert_eq!(ExitOutcome::Signaled(9).code(), -1);
    }

    #[tokio::test]
    async fn group_is_terminated_and_leader_reaped() {
        let mut spec = SpawnSpec::shell("sleep 30 & sleep 30; echo never");
        spec.env = vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())];
        let (child, _pipes) = spawn(spec).unwrap();
        let pgid = child.pid() as i32;
        assert!(tokio::time::timeout(Duration::from_secs(5), async {
            while live_group_members(pgid) < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok());
        child.terminate_group(Duration::from_secs(3)).await;
        assert_eq!(live_group_members(pgid), 0);
        assert_eq!(child.wait().await, ExitOutcome::Signaled(15));
        assert!(child.signal_group(Signal::SIGTERM).is_err(), "no signal after reap");
    }

    /// A reaped leader's id handed to another group (simulated: pointed at a live leader of a
    /// group of its own) counts as gone, and that group gets no signal.
    #[tokio::test]
    async fn a_reaped_group_id_taken_by_another_group_is_left_alone() {
        use std::os::unix::process::CommandExt;
        let mut spec = SpawnSpec::shell("true");
        spec.env = vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())];
        let (mut child, _pipes) = spawn(spec).unwrap();
        assert_eq!(child.wait().await, ExitOutcome::Exited(0));
        let mut other = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        child.pid = Pid::from_raw(other.id() as i32);
        let (alive, group) = (child.leftovers_alive(), child.group_alive());
        child.kill_leftovers(Duration::from_millis(100)).await;
        let untouched = other.try_wait().unwrap().is_none();
        let _ = other.kill();
        let _ = other.wait();
        assert!(!alive && !group, "the other group was taken for this command's leftovers");
        assert!(untouched, "the other group was signalled");
    }

    #[tokio::test]
    async fn output_and_exit_code() {
        let mut spec = SpawnSpec::shell("echo out; echo err >&2; exit 4");
        spec.output = OutputMode::Merged;
        let (child, mut pipes) = spawn(spec).unwrap();
        let mut out = pipes.stdout.take().unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = out.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(all, b"out\nerr\n");
        assert_eq!(child.wait().await, ExitOutcome::Exited(4));
        assert_eq!(child.wait().await, ExitOutcome::Exited(4));
    }
}
