//! Filesystem work done as another user (issue #24 part 4, the per-identity filesystem routes):
//! the kernel checks every path lookup, open, create, rename and metadata change of that
//! work against the chosen uid, gid and supplementary groups, and what is created belongs to them.
//! execd's own uid never changes.
//!
//! **How.** Linux keeps credentials per thread; only the libc wrappers of `setuid`, `setgroups`
//! and friends broadcast a change to every thread. A blocking thread that runs work for an
//! identity switches *its own* filesystem credentials with raw syscalls, in this order:
//! `setgroups` (the identity's supplementary groups), `setfsgid`, `setfsuid`; then runs the work;
//! then switches back (fsuid, fsgid, groups) before the thread returns to the pool. A non-zero
//! fsuid makes the kernel clear the filesystem capabilities (`CAP_DAC_OVERRIDE`, `CAP_CHOWN`,
//! `CAP_FOWNER`, …) from the thread's effective set, and an fsuid of 0 restores them, so the work
//! has exactly the identity's rights. The switch back is done by a guard's `Drop` (so also on a
//! panic) and checked; if the thread's credentials cannot be proven restored the process aborts
//! rather than let a pool thread serve other work with the wrong credentials. Cost: about a dozen
//! syscalls per job, a few microseconds (measured by `switch_cost_is_small`).
//!
//! **Which work.** An async request handler enters [`scope`]; every blocking job it starts
//! through [`spawn_blocking`] (which `fs::blocking`, the walks of list and search, and search's
//! stat batches use) runs under the identity. So does a job started from a thread already under
//! it (search's walker dispatching batches). Reading or writing an already open descriptor needs
//! no credentials, so the chunked I/O of downloads and uploads stays on the ordinary pool.
//!
//! **Paths.** Under an identity, relative paths resolve from `/`, `~` and `$HOME` are the
//! account's home directory (`/` without a passwd entry) and no other variable of execd's
//! environment is expanded ([`expand`]).
//!
//! The few writes execd does for itself during such a job (its private journal of temporary
//! names, the upload spool) go through [`as_execd`], which briefly restores execd's credentials
//! on the thread.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::os::accounts;

/// The largest uid or gid accepted (`u32::MAX` is the kernel's "no id", -1).
pub const MAX_ID: u32 = 4_294_967_294;

/// Who filesystem work runs as: uid, primary gid, supplementary groups, home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// From the account's passwd and group entries (none for a uid without a passwd entry);
    /// execd's own groups are never inherited.
    pub groups: Vec<u32>,
    /// `~` and `$HOME`: the account's home directory, `/` without a passwd entry.
    pub home: String,
}

/// Why work cannot run as an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The ids are out of range.
    #[error("{0}")]
    Invalid(String),
    /// execd cannot take these credentials (it lacks `CAP_SETUID`/`CAP_SETGID`, or the platform
    /// has no per-thread credentials).
    #[error("cannot act as uid {uid} gid {gid}: {source}")]
    Unavailable { uid: u32, gid: u32, source: io::Error },
}

impl Identity {
    /// The identity for `uid`/`gid` from `/etc/passwd` and `/etc/group` (blocking: reads them).
    pub fn lookup(uid: u32, gid: u32) -> Result<Identity, IdentityError> {
        if uid > MAX_ID || gid > MAX_ID {
            return Err(IdentityError::Invalid(format!("uid and gid must be between 0 and {MAX_ID}")));
        }
        let (passwd, group) = (accounts::read_passwd(), accounts::read_group());
        let creds = crate::process::spawn::credentials_from(&passwd, &group, uid, Some(gid));
        let home = accounts::user(&passwd, uid).and_then(|u| u.home).unwrap_or("/").to_string();
        Ok(Identity { uid, gid, groups: creds.groups, home })
    }

    /// Checks that this thread can take the identity and give it back (blocking, cheap). Run
    /// once per request before any work, so that an execd without the privilege answers a
    /// clear error instead of failing in the middle of an operation.
    pub fn probe(&self) -> Result<(), IdentityError> {
        let guard = Switch::enter(self).map_err(|source| IdentityError::Unavailable {
            uid: self.uid,
            gid: self.gid,
            source,
        })?;
        drop(guard);
        Ok(())
    }

    /// Runs `f` on this (blocking) thread as this identity. Panics, without running `f`, if the
    /// credentials cannot be taken (after a successful [`Identity::probe`] they always can).
    pub fn run<T>(self: &Arc<Self>, f: impl FnOnce() -> T) -> T {
        let _guard = match Switch::enter(self) {
            Ok(g) => g,
            Err(e) => panic!("cannot act as uid {} gid {}: {e}", self.uid, self.gid),
        };
        ACTIVE.with(|a| *a.borrow_mut() = Some(self.clone()));
        let _unmark = Unmark;
        f()
    }
}

tokio::task_local! {
    /// The identity of the request whose handler is running (see [`scope`]).
    static TASK: Arc<Identity>;
}

thread_local! {
    /// The identity this blocking thread is running work for, while it does.
    static ACTIVE: RefCell<Option<Arc<Identity>>> = const { RefCell::new(None) };
}

/// Clears [`ACTIVE`] when a job ends (declared after the credentials guard: dropped before it).
struct Unmark;

impl Drop for Unmark {
    fn drop(&mut self) {
        ACTIVE.with(|a| *a.borrow_mut() = None);
    }
}

/// Runs the future `f` (a request handler) with `identity`: blocking jobs it starts through
/// [`spawn_blocking`] run as that identity.
pub async fn scope<F: Future>(identity: Arc<Identity>, f: F) -> F::Output {
    TASK.scope(identity, f).await
}

/// The identity in force here: this thread's job's, else the running request handler's.
pub fn current() -> Option<Arc<Identity>> {
    ACTIVE.with(|a| a.borrow().clone()).or_else(|| TASK.try_with(Arc::clone).ok())
}

/// Runs blocking `f` on tokio's blocking pool, as the [`current`] identity if there is one.
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_blocking_on(&tokio::runtime::Handle::current(), f)
}

/// [`spawn_blocking`] on the runtime `rt` (for callers on a plain thread).
pub fn spawn_blocking_on<F, T>(rt: &tokio::runtime::Handle, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match current() {
        // A new thread inherits its creator's credentials, and the pool may create one here:
        // from a thread acting for an identity, spawn with execd's credentials back in place.
        Some(id) => as_execd(|| rt.spawn_blocking(move || id.run(f))),
        None => rt.spawn_blocking(f),
    }
}

/// Runs `f` with execd's own credentials: for execd's private bookkeeping (journal, spool) done
/// in the middle of a job for an identity. Outside such a job it just runs `f`.
pub fn as_execd<T>(f: impl FnOnce() -> T) -> T {
    let Some(id) = ACTIVE.with(|a| a.borrow().clone()) else { return f() };
    let saved = SAVED.with(|s| s.borrow().clone());
    let Some(saved) = saved else { return f() };
    if let Err(e) = saved.apply() {
        fatal("restoring execd's credentials", &e);
    }
    struct Reenter<'a>(&'a Identity);
    impl Drop for Reenter<'_> {
        fn drop(&mut self) {
            if let Err(e) = Creds::of(self.0).apply() {
                // The job would go on with execd's rights: never.
                fatal("taking the identity back", &e);
            }
        }
    }
    let _back = Reenter(&id);
    f()
}

/// Expands a path given to a route run as `identity` (see the module docs): `~` and `$HOME`
/// become the home directory, other variables stay literal, and a relative result is taken
/// from `/`. Empty stays empty (the routes refuse it).
pub fn expand(s: &str, identity: &Identity) -> String {
    let e = crate::expand::expand_path(s, |name| (name == "HOME").then(|| identity.home.clone()));
    if e.is_empty() || Path::new(&e).is_absolute() {
        e
    } else {
        format!("/{e}")
    }
}

/// A thread's filesystem credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Creds {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
}

thread_local! {
    /// The credentials a switched thread had before (restored by [`Switch`]'s drop).
    static SAVED: RefCell<Option<Creds>> = const { RefCell::new(None) };
}

impl Creds {
    fn of(id: &Identity) -> Creds {
        Creds { fsuid: id.uid, fsgid: id.gid, groups: id.groups.clone() }
    }

    /// This thread's credentials.
    fn current() -> io::Result<Creds> {
        Ok(Creds { fsuid: sys::fsuid(), fsgid: sys::fsgid(), groups: sys::groups()? })
    }

    /// Makes these the thread's credentials, and checks that they are. Groups and fsgid first:
    /// they need `CAP_SETGID`, which a thread keeps whatever its fsuid.
    fn apply(&self) -> io::Result<()> {
        sys::set_groups(&self.groups)?;
        sys::set_fsgid(self.fsgid);
        sys::set_fsuid(self.fsuid);
        let mut now = Creds::current()?;
        // The kernel keeps the groups sorted.
        let mut want = self.groups.clone();
        want.sort_unstable();
        want.dedup();
        now.groups.sort_unstable();
        if now.fsuid != self.fsuid || now.fsgid != self.fsgid || now.groups != want {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}

/// The credentials of a thread switched to an identity; dropping it switches back.
struct Switch {
    saved: Creds,
}

impl Switch {
    fn enter(id: &Identity) -> io::Result<Switch> {
        if SAVED.with(|s| s.borrow().is_some()) {
            return Err(io::Error::other("this thread already acts for an identity"));
        }
        let saved = Creds::current()?;
        if let Err(e) = Creds::of(id).apply() {
            // Partly switched: back, or abort.
            if let Err(e2) = saved.apply() {
                fatal("restoring credentials after a failed switch", &e2);
            }
            return Err(e);
        }
        SAVED.with(|s| *s.borrow_mut() = Some(saved.clone()));
        Ok(Switch { saved })
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        // fsuid first: it brings the filesystem capabilities back.
        sys::set_fsuid(self.saved.fsuid);
        if let Err(e) = self.saved.apply() {
            fatal("restoring credentials after a job", &e);
        }
        SAVED.with(|s| *s.borrow_mut() = None);
    }
}

/// A thread whose credentials cannot be proven right must not run anything else.
fn fatal(what: &str, e: &io::Error) -> ! {
    tracing::error!(error = %e, "{what} failed: aborting");
    eprintln!("execd: {what} failed: {e}; aborting");
    std::process::abort()
}

/// The raw per-thread syscalls (the libc wrappers of `setgroups` would change every thread).
#[allow(unsafe_code)]
mod sys {
    use std::io;

    /// The thread's fsuid (`setfsuid(-1)` changes nothing and returns it).
    pub fn fsuid() -> u32 {
        // SAFETY: setfsuid takes one integer; -1 is invalid, so nothing changes.
        unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 }
    }

    pub fn fsgid() -> u32 {
        // SAFETY: as for fsuid.
        unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 }
    }

    /// Sets the thread's fsuid; success is checked by reading it back.
    pub fn set_fsuid(uid: u32) {
        // SAFETY: one integer argument; affects only the calling thread.
        unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    }

    pub fn set_fsgid(gid: u32) {
        // SAFETY: as for set_fsuid.
        unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    }

    /// The thread's supplementary groups.
    pub fn groups() -> io::Result<Vec<u32>> {
        // SAFETY: size 0 asks for the count only; the pointer is not used.
        let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut v = vec![0 as libc::gid_t; n as usize];
        // SAFETY: the buffer holds `n` gids, and `n` is passed as its size.
        let m = unsafe { libc::syscall(libc::SYS_getgroups, n as libc::c_int, v.as_mut_ptr()) };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        v.truncate(m as usize);
        Ok(v)
    }

    /// Sets the calling thread's supplementary groups (the raw syscall: this thread only).
    pub fn set_groups(groups: &[u32]) -> io::Result<()> {
        // SAFETY: the pointer and length describe `groups`, which outlives the call.
        let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Where a path given as `s` leads for the current identity, if any (used by `fs::path`).
pub(crate) fn expand_current(s: &str) -> Option<String> {
    current().map(|id| expand(s, &id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_ids(field: &str) -> Vec<u32> {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line[field.len()..].split_whitespace().map(|v| v.parse().unwrap()).collect()
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn id(uid: u32, gid: u32, groups: Vec<u32>) -> Arc<Identity> {
        Arc::new(Identity { uid, gid, groups, home: "/".into() })
    }

    #[test]
    fn expand_table() {
        let who = Identity { uid: 1, gid: 1, groups: vec![], home: "/home/u".into() };
        let cases = [
            ("", ""),
            ("/a/b", "/a/b"),
            ("a/b", "/a/b"),
            ("./a", "/./a"),
            ("~", "/home/u"),
            ("~/x", "/home/u/x"),
            ("$HOME/x", "/home/u/x"),
            ("$PATH/x", "/$PATH/x"),
        ];
        for (given, want) in cases {
            assert_eq!(expand(given, &who), want, "{given:?}");
        }
    }

    #[test]
    fn run_switches_only_this_thread_and_restores_it() {
        if !is_root() {
            return;
        }
        let before = (status_ids("Uid:"), status_ids("Gid:"), status_ids("Groups:"));
        let who = id(4242, 4343, vec![5000, 4343]);
        // A thread that already exists reads its credentials while this one is switched.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            wait.recv().unwrap();
            status_ids("Uid:")
        });
        let seen = who.run(|| {
            go.send(()).unwrap();
            let other = other.join().unwrap();
            (status_ids("Uid:"), status_ids("Gid:"), status_ids("Groups:"), other, current().map(|c| c.uid))
        });
        // real, effective, saved unchanged; fs ids switched; another thread untouched.
        assert_eq!(seen.0, vec![0, 0, 0, 4242]);
        assert_eq!(seen.1, vec![0, 0, 0, 4343]);
        assert_eq!(seen.2, vec![4343, 5000]);
        assert_eq!(seen.3, vec![0, 0, 0, 0]);
        assert_eq!(seen.4, Some(4242));
        assert_eq!((status_ids("Uid:"), status_ids("Gid:"), status_ids("Groups:")), before);
        assert!(current().is_none());
    }

    #[test]
    fn a_panicking_job_still_restores_the_thread() {
        if !is_root() {
            return;
        }
        let before = (status_ids("Uid:"), status_ids("Groups:"));
        let who = id(4242, 4242, vec![]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| who.run(|| panic!("boom"))));
        assert!(r.is_err());
        assert_eq!((status_ids("Uid:"), status_ids("Groups:")), before);
        assert!(current().is_none());
        // And the thread can switch again.
        assert_eq!(who.run(|| status_ids("Uid:")), vec![0, 0, 0, 4242]);
    }

    #[test]
    fn as_execd_briefly_restores_and_takes_the_identity_back() {
        if !is_root() {
            return;
        }
        let who = id(4242, 4242, vec![]);
        let (inside, back) = who.run(|| (as_execd(|| status_ids("Uid:")), status_ids("Uid:")));
        assert_eq!(inside, vec![0, 0, 0, 0]);
        assert_eq!(back, vec![0, 0, 0, 4242]);
    }

    #[test]
    fn work_is_checked_as_the_identity() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let who = id(4242, 4242, vec![]);
        let denied = who.run(|| std::fs::write(private.join("x"), b"x"));
        assert_eq!(denied.unwrap_err().raw_os_error(), Some(libc::EACCES));
        let own = dir.path().join("own");
        who.run(|| std::fs::write(&own, b"x")).unwrap();
        let meta = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&own).unwrap());
        assert_eq!(meta, 4242);
    }

    #[tokio::test]
    async fn jobs_of_a_scoped_task_run_as_the_identity() {
        if !is_root() {
            return;
        }
        let who = id(4242, 4242, vec![]);
        let inside = scope(who, async { spawn_blocking(|| status_ids("Uid:")).await.unwrap() }).await;
        assert_eq!(inside, vec![0, 0, 0, 4242]);
        let outside = spawn_blocking(|| status_ids("Uid:")).await.unwrap();
        assert_eq!(outside, vec![0, 0, 0, 0]);
    }

    #[test]
    fn switch_cost_is_small() {
        if !is_root() {
            return;
        }
        let who = id(4242, 4242, vec![4242, 100]);
        let n = 2000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            who.run(|| ());
        }
        let per = start.elapsed() / n;
        eprintln!("identity switch and restore: {per:?} per job");
        assert!(per < std::time::Duration::from_millis(1), "{per:?}");
    }
}
