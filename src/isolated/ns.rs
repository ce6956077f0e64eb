//! The namespace side of isolated sessions: execd re-executes itself (`/proc/self/exe`) as a small
//! single-threaded helper that builds the session's namespaces and then becomes the session's
//! shell. No tokio and no HTTP here; everything runs in a fresh process, so mount, `unshare` and
//! `setns` need no care about other threads.
//!
//! Three helper modes (the first argument, never given by users):
//! - `init` (stage 1, in execd's PID namespace): `unshare` mount, PID, UTS, IPC (and network when
//!   `share_net` is false) namespaces, spawns stage 2 (the first process of the new PID namespace),
//!   prints `PID <host pid of stage 2>`, waits for it and exits with its status.
//! - `stage2` (PID 1 of the session): makes every mount private, binds `/` read-only onto a new
//!   root, mounts the session's overlays and binds, a private `/tmp`, a fresh `/proc`, hides
//!   execd's state directory behind an empty tmpfs, `pivot_root`s, sets the hostname, drops to the
//!   session's uid/gid, prints `READY` and `exec`s bash (stderr joined to stdout).
//! - `enter` (background runs): `setns` into every namespace of a running session, then runs
//!   `bash -c <code>` there as the session's uid and exits with its status.
//!
//! Why native rather than bubblewrap: sandbox images need not carry one more binary (issue #23),
//! and execd runs as root in the sandbox, so it can do the few mount calls itself. The semantics
//! follow upstream's bwrap invocation (read-only root, private /tmp and /proc, hostname
//! `sandbox`, PID namespace whose death kills every process in it).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde::{Deserialize, Serialize};

/// First argument that makes `execd` a helper instead of a daemon.
pub const HELPER_ARG: &str = "__execd-isolated";

/// One mount in the session's view, in the order they are made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountSpec {
    /// Copy-on-write view of `path`; writes go to `upper` (`work` is overlayfs' scratch). With
    /// `tmpfs`, upper and work live on a tmpfs mounted at `tmpfs` inside the namespace only.
    Overlay { path: PathBuf, upper: PathBuf, work: PathBuf, tmpfs: Option<PathBuf> },
    /// `source` bound at `dest`, read-only or not.
    Bind { source: PathBuf, dest: PathBuf, readonly: bool },
}

/// Everything stage 2 needs to build the session's view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NsSpec {
    /// An empty directory (host path) that becomes the session's root.
    pub new_root: PathBuf,
    pub mounts: Vec<MountSpec>,
    /// Host paths covered by an empty read-only tmpfs inside the session (execd's state).
    pub hide: Vec<PathBuf>,
    pub private_tmp: bool,
    pub new_net: bool,
    pub uid: u32,
    pub gid: u32,
    /// Set `no_new_privs` (strict profile).
    pub no_new_privs: bool,
    /// Working directory of the shell (the primary mount).
    pub cwd: PathBuf,
}

/// If this process was started as a helper, runs it and returns its exit code.
pub fn helper_main() -> Option<u8> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(HELPER_ARG.as_ref()) {
        return None;
    }
    let mode = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
    let rest = &args[3.min(args.len())..];
    let res = match mode {
        "init" => stage1(rest),
        "stage2" => stage2(rest),
        "enter" => enter(rest),
        "probe" => probe(rest),
        _ => Err(format!("unknown helper mode {mode:?}")),
    };
    match res {
        Ok(code) => Some(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "execd isolation: {e}");
            Some(125)
        }
    }
}

fn spec_arg(rest: &[OsString]) -> Result<NsSpec, String> {
    let raw = rest.first().and_then(|a| a.to_str()).ok_or("missing spec")?;
    serde_json::from_str(raw).map_err(|e| format!("bad spec: {e}"))
}

/// Exit code of a finished child, shell style (128 + signal).
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => (128 + s) as u8,
        _ => 255,
    }
}

fn stage1(rest: &[OsString]) -> Result<u8, String> {
    let spec = spec_arg(rest)?;
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.new_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    if spec.new_net {
        // A new network namespace starts with `lo` down; upstream's bwrap brings it up, and
        // programs that talk to themselves over 127.0.0.1 (test servers, language servers) need it.
        loopback_up()?;
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // Its own process group: a run's SIGINT goes to stage 2's group and never reaches us.
    let mut child = Command::new(exe)
        .arg(HELPER_ARG)
        .arg("stage2")
        .args(rest)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn stage 2: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "PID {}", child.id());
        let _ = out.flush();
    }
    let status = child.wait().map_err(|e| format!("wait stage 2: {e}"))?;
    Ok(exit_code(status))
}

/// Sets `IFF_UP` on `lo` in the calling process's network namespace (SIOCGIFFLAGS, then
/// SIOCSIFFLAGS on a throwaway datagram socket; neither nix nor rustix wraps these two ioctls).
#[allow(unsafe_code)]
fn loopback_up() -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket() takes no pointers; a non-negative result is a new descriptor we own.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(format!("socket for lo: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns; OwnedFd closes it once.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value (empty name, no flags).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into the ifreq we pass,
    // which lives on our stack for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut ifr) } < 0 {
        return Err(format!("read flags of lo: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS just wrote.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and flags from the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &ifr) } < 0 {
        return Err(format!("bring lo up: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn join(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), String> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))?;
    if readonly {
        remount_ro(target)?;
    }
    Ok(())
}

fn remount_ro(target: &Path) -> Result<(), String> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .or_else(|_| {
            // A mount with nosuid/nodev/noexec must keep them on remount.
            let extra = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(None::<&str>, target, None::<&str>, flags | extra, None::<&str>)
        })
        .map_err(|e| format!("remount {} read-only: {e}", target.display()))
}

fn tmpfs(target: &Path, opts: &str, flags: MsFlags) -> Result<(), String> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(opts))
        .map_err(|e| format!("tmpfs on {}: {e}", target.display()))
}

/// Mount points under `root` (from mountinfo), deepest last.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(root))
        .collect()
}

fn stage2(rest: &[OsString]) -> Result<u8, String> {
    let spec = spec_arg(rest)?;
    // Die with stage 1 (and so with execd's teardown of it).
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("make mounts private: {e}"))?;
    let root = &spec.new_root;
    bind(Path::new("/"), root, false)?;
    // The whole root read-only (the device tree is replaced below).
    for m in mounts_under(root) {
        // Some special mounts refuse; the root itself must not.
        let res = remount_ro(&m);
        if m == *root {
            res?;
        }
    }
    minimal_dev(root)?;
    for h in &spec.hide {
        let t = join(root, h);
        if t.is_dir() {
            tmpfs(&t, "mode=000,size=4k", MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
        }
    }
    // /tmp first, so that mounts under /tmp land on the private one.
    let tmp_is_mount = spec.mounts.iter().any(|m| match m {
        MountSpec::Overlay { path, .. } => path == Path::new("/tmp"),
        MountSpec::Bind { dest, .. } => dest == Path::new("/tmp"),
    });
    if spec.private_tmp && !tmp_is_mount {
        tmpfs(&join(root, Path::new("/tmp")), "mode=1777", MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    }
    for m in &spec.mounts {
        match m {
            MountSpec::Overlay { path, upper, work, tmpfs: eph } => {
                if let Some(t) = eph {
                    tmpfs(t, "mode=755", MsFlags::empty())?;
                    for d in [upper, work] {
                        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
                    }
                }
                let opts =
                    format!("lowerdir={},upperdir={},workdir={}", path.display(), upper.display(), work.display());
                let target = join(root, path);
                let _ = std::fs::create_dir_all(&target);
                mount(Some("overlay"), &target, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
                    .map_err(|e| format!("overlay on {}: {e}", path.display()))?;
            }
            MountSpec::Bind { source, dest, readonly } => {
                let target = join(root, dest);
                if source.is_dir() {
                    let _ = std::fs::create_dir_all(&target);
                }
                bind(source, &target, *readonly)?;
            }
        }
    }
    let proc_dir = join(root, Path::new("/proc"));
    let pflags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &proc_dir, Some("proc"), pflags, None::<&str>).map_err(|e| format!("mount /proc: {e}"))?;
    nix::unistd::chdir(root).map_err(|e| format!("chdir new root: {e}"))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    let _ = std::fs::write("/proc/sys/kernel/hostname", "sandbox");
    become_user(spec.uid, spec.gid, spec.no_new_privs)?;
    let _ = std::env::set_current_dir(&spec.cwd).or_else(|_| std::env::set_current_dir("/"));
    nix::unistd::dup2(1, 2).map_err(|e| format!("dup2: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    }
    let err = Command::new("bash").args(["--noprofile", "--norc"]).exec();
    Err(format!("exec bash: {err}"))
}

/// A fresh `/dev` with only the harmless nodes (bound from the host), `pts`-less: the host's
/// block devices and the like are not reachable from a session.
fn minimal_dev(root: &Path) -> Result<(), String> {
    let dev = join(root, Path::new("/dev"));
    tmpfs(&dev, "mode=755,size=64k", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(n);
        if !host.exists() {
            continue;
        }
        let target = dev.join(n);
        std::fs::write(&target, b"").map_err(|e| format!("create {}: {e}", target.display()))?;
        bind(&host, &target, false)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, dev.join(link));
    }
    // Per-run output FIFOs (made by execd from inside the namespace, shell.rs).
    let fifos = dev.join(".execd");
    std::fs::create_dir(&fifos).map_err(|e| format!("mkdir {}: {e}", fifos.display()))?;
    std::fs::set_permissions(&fifos, std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .map_err(|e| format!("chmod {}: {e}", fifos.display()))?;
    let shm = dev.join("shm");
    let _ = std::fs::create_dir(&shm);
    tmpfs(&shm, "mode=1777", MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
}

/// Capabilities a session keeps (Docker's default set without `MKNOD`); every other one
/// leaves the bounding set, so the shell (even as root) cannot mount, load modules, trace, ...
const KEPT_CAPS: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 29, 31];

fn drop_capabilities() -> Result<(), String> {
    for cap in 0..64u32 {
        if KEPT_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory of ours.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(format!("drop capability {cap}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Both profiles lose the dangerous capabilities (a `balanced` root shell could otherwise unmount
/// its overlay and reach the host's workspace, I29); only `strict` also sets `no_new_privs`.
fn become_user(uid: u32, gid: u32, no_new_privs: bool) -> Result<(), String> {
    drop_capabilities()?;
    if uid != 0 || gid != 0 {
        nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).map_err(|e| format!("setgid {gid}: {e}"))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(|e| format!("setuid {uid}: {e}"))?;
    }
    if no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    Ok(())
}

/// `enter <init pid> <uid> <gid> <nnp 0|1> <cwd>`; the code comes on stdin (never in argv) and
/// is handed to bash as a memfd script, so the run's stdin is `/dev/null`.
fn enter(rest: &[OsString]) -> Result<u8, String> {
    let arg = |i: usize| rest.get(i).and_then(|a| a.to_str()).ok_or(format!("missing argument {i}"));
    let pid: i32 = arg(0)?.parse().map_err(|_| "bad pid")?;
    let uid: u32 = arg(1)?.parse().map_err(|_| "bad uid")?;
    let gid: u32 = arg(2)?.parse().map_err(|_| "bad gid")?;
    let nnp = arg(3)? == "1";
    let cwd = arg(4)?.to_string();
    let mut code = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut code).map_err(|e| format!("read code: {e}"))?;
    let script =
        rustix::fs::memfd_create(c"execd-run", rustix::fs::MemfdFlags::empty()).map_err(|e| format!("memfd: {e}"))?;
    let mut f = std::fs::File::from(script);
    f.write_all(&code).map_err(|e| format!("write code: {e}"))?;
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    enter_namespaces(pid)?;
    become_user(uid, gid, nnp)?;
    let mut cmd = Command::new("bash");
    // bash reads the script from the inherited memfd (no CLOEXEC), through the session's /proc.
    cmd.arg(format!("/proc/self/fd/{fd}")).stdin(std::process::Stdio::null());
    if Path::new(&cwd).is_dir() {
        cmd.current_dir(&cwd);
    }
    let status = cmd.status().map_err(|e| format!("spawn bash: {e}"))?;
    Ok(exit_code(status))
}

/// Joins the namespaces of `pid` (the session's PID 1); the mount namespace last, since it
/// changes the root and with it the view of `/proc/<pid>`.
fn enter_namespaces(pid: i32) -> Result<(), String> {
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let files = kinds
        .iter()
        .map(|(k, f)| {
            std::fs::File::open(format!("/proc/{pid}/ns/{k}"))
                .map(|fd| (fd, *f))
                .map_err(|e| format!("open ns {k}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (fd, f) in files {
        setns(&fd, f).map_err(|e| format!("setns {f:?}: {e}"))?;
    }
    Ok(())
}

/// `probe <scratch dir>`: can this host build a session? New namespaces, a private mount tree and
/// an overlay mount in `scratch`. Prints the reason on failure.
fn probe(rest: &[OsString]) -> Result<u8, String> {
    let dir = PathBuf::from(rest.first().ok_or("missing scratch dir")?);
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    unshare(flags).map_err(|e| format!("cannot create namespaces (mount, pid, uts, ipc, net): {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("cannot make mounts private: {e}"))?;
    tmpfs(&dir, "mode=700", MsFlags::empty())?;
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir(dir.join(d)).map_err(|e| format!("mkdir: {e}"))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("l").display(),
        dir.join("u").display(),
        dir.join("w").display()
    );
    mount(Some("overlay"), &dir.join("m"), Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
        .map_err(|e| format!("overlayfs unavailable: {e}"))?;
    Ok(0)
}

/// Joins the calling thread (only) to the mount namespace `ns`, so that paths resolve as the
/// session sees them. The thread first stops sharing its root and cwd with the rest of execd
/// (`unshare(CLONE_FS)`); call it only on a thread made for the purpose, which exits afterwards.
pub fn join_mount_ns_this_thread(ns: &std::fs::File) -> std::io::Result<()> {
    unshare(CloneFlags::CLONE_FS).map_err(std::io::Error::from)?;
    setns(ns, CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
    Ok(())
}
