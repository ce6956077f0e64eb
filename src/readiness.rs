//! Readiness (EXTENSIONS X52): can this execd take work right now? `api::ready` serves it as
//! `GET /ready`; `/ping` stays the cheap liveness probe.
//!
//! Checks: the state directory takes a write; free disk and free inodes of its filesystem are above
//! the floors (flags); there is pids headroom (`pids.max` − `pids.current` of execd's cgroup and
//! its ancestors when a pids controller limits them, else the kernel's `pid_max` and
//! `threads-max` against the tasks that exist); Jupyter answers when one is configured.
//!
//! Every check has a deadline and the whole answer comes within [`DEADLINE`]. The filesystem
//! probes run on one blocking thread at a time: while a probe is stuck (a hung mount), later calls
//! report it as failing instead of piling up more stuck threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The whole check finishes within this (the X52 contract says never longer than 1 s).
pub const DEADLINE: Duration = Duration::from_millis(800);
/// Deadline of the filesystem and pids probes.
const FS_DEADLINE: Duration = Duration::from_millis(500);
/// Deadline of the Jupyter request.
const JUPYTER_DEADLINE: Duration = Duration::from_millis(500);
/// At least this many more tasks must be creatable.
pub const MIN_PIDS_HEADROOM: u64 = 32;

/// Settings (built from `Config` by `state.rs`).
#[derive(Debug, Clone)]
pub struct ReadinessOpts {
    pub state_dir: PathBuf,
    /// Free bytes (for unprivileged users) below this: not ready.
    pub min_free_bytes: u64,
    /// Free inodes below this: not ready (filesystems without an inode limit pass).
    pub min_free_inodes: u64,
    /// `""`: no Jupyter configured, no check.
    pub jupyter_host: String,
    pub jupyter_token: String,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `state_dir`, `disk`, `inodes`, `pids`, `jupyter`.
    pub name: &'static str,
    pub ok: bool,
    /// What was measured, or why it failed.
    pub detail: String,
}

/// Every check, and whether all passed.
#[derive(Debug, Clone)]
pub struct Report {
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// Cheap-to-clone handle.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ReadinessOpts,
    /// `None` without Jupyter; `Some(Err)` when the host does not parse (reported, not fatal).
    jupyter: Option<Result<crate::code::jupyter::JupyterClient, String>>,
    /// A blocking probe is running (single flight).
    probing: AtomicBool,
    probe_seq: AtomicU64,
}

impl Readiness {
    pub fn new(opts: ReadinessOpts) -> Readiness {
        let jupyter = (!opts.jupyter_host.trim().is_empty()).then(|| {
            crate::code::jupyter::JupyterClient::new(
                &opts.jupyter_host,
                &opts.jupyter_token,
                JUPYTER_DEADLINE,
                Duration::ZERO,
            )
            .map_err(|e| e.to_string())
        });
        Readiness {
            inner: Arc::new(Inner { opts, jupyter, probing: AtomicBool::new(false), probe_seq: AtomicU64::new(0) }),
        }
    }

    /// Runs every check (concurrently, each with its deadline).
    pub async fn check(&self) -> Report {
        let fs = self.fs_checks();
        let jupyter = self.jupyter_check();
        let (mut checks, jupyter) = tokio::join!(fs, jupyter);
        checks.extend(jupyter);
        Report { ready: checks.iter().all(|c| c.ok), checks }
    }

    async fn fs_checks(&self) -> Vec<Check> {
        let names = ["state_dir", "disk", "inodes", "pids"];
        let failed = |why: &str| names.iter().map(|n| Check { name: n, ok: false, detail: why.to_string() }).collect();
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return failed("an earlier probe of the state directory has not finished (hung filesystem?)");
        }
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            // Cleared when the probe ends, however late.
            struct Release<'a>(&'a AtomicBool);
            impl Drop for Release<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                }
            }
            let _release = Release(&inner.probing);
            let seq = inner.probe_seq.fetch_add(1, Ordering::Relaxed);
            let mut out = vec![probe_write(&inner.opts.state_dir, seq)];
            out.extend(probe_space(&inner.opts));
            out.push(probe_pids());
            out
        });
        match tokio::time::timeout(FS_DEADLINE, task).await {
            Ok(Ok(checks)) => checks,
            Ok(Err(_)) => failed("the probe failed"),
            Err(_) => failed(&format!("no answer from the state directory within {FS_DEADLINE:?}")),
        }
    }

    async fn jupyter_check(&self) -> Option<Check> {
        let client = match self.inner.jupyter.as_ref()? {
            Ok(c) => c,
            Err(e) => return Some(Check { name: "jupyter", ok: false, detail: e.clone() }),
        };
        let answer =
            tokio::time::timeout(JUPYTER_DEADLINE, client.request(hyper::Method::GET, "/api/status", None)).await;
        Some(match answer {
            Ok(Ok(a)) if a.status == 200 => Check { name: "jupyter", ok: true, detail: "reachable".into() },
            Ok(Ok(a)) => Check { name: "jupyter", ok: false, detail: format!("answered {}", a.status) },
            Ok(Err(e)) => Check { name: "jupyter", ok: false, detail: e.to_string() },
            Err(_) => Check { name: "jupyter", ok: false, detail: format!("no answer within {JUPYTER_DEADLINE:?}") },
        })
    }
}

/// Creates, writes and removes a file in the state directory.
fn probe_write(dir: &Path, seq: u64) -> Check {
    use std::io::Write;
    let path = dir.join(format!(".ready-probe-{}-{seq}", std::process::id()));
    let res =
        std::fs::OpenOptions::new().write(true).create_new(true).open(&path).and_then(|mut f| f.write_all(b"ready\n"));
    let _ = std::fs::remove_file(&path);
    match res {
        Ok(()) => Check { name: "state_dir", ok: true, detail: "writable".into() },
        Err(e) => Check { name: "state_dir", ok: false, detail: format!("cannot write in the state directory: {e}") },
    }
}

/// Free bytes and inodes of the state directory's filesystem against the floors.
fn probe_space(opts: &ReadinessOpts) -> [Check; 2] {
    match nix::sys::statvfs::statvfs(&opts.state_dir) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let disk = Check {
                name: "disk",
                ok: free >= opts.min_free_bytes,
                detail: format!("{free} bytes free (floor {})", opts.min_free_bytes),
            };
            // A filesystem without an inode table (some tmpfs, btrfs) reports 0 files.
            let inodes = if s.files() == 0 {
                Check { name: "inodes", ok: true, detail: "no inode limit".into() }
            } else {
                let free = s.files_available();
                Check {
                    name: "inodes",
                    ok: free >= opts.min_free_inodes,
                    detail: format!("{free} inodes free (floor {})", opts.min_free_inodes),
                }
            };
            [disk, inodes]
        }
        Err(e) => {
            let why = format!("statvfs of the state directory failed: {e}");
            [Check { name: "disk", ok: false, detail: why.clone() }, Check { name: "inodes", ok: false, detail: why }]
        }
    }
}

/// Tasks that can still be created: the tightest pids cgroup limit on execd's path, else the
/// kernel's limits.
fn probe_pids() -> Check {
    let headroom = match cgroup_pids_headroom() {
        Some((h, max, cur)) => (h, format!("{h} more tasks allowed (cgroup pids.max {max}, pids.current {cur})")),
        None => match kernel_pids_headroom() {
            Some((h, limit, tasks)) => (h, format!("{h} more tasks allowed (kernel limit {limit}, {tasks} tasks)")),
            None => return Check { name: "pids", ok: true, detail: "no pids limit readable".into() },
        },
    };
    Check { name: "pids", ok: headroom.0 >= MIN_PIDS_HEADROOM, detail: headroom.1 }
}

/// `(headroom, max, current)` of the most constrained pids cgroup from execd's own up to the root.
fn cgroup_pids_headroom() -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if ctrl.is_empty() {
            dirs.push(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')));
        } else if ctrl.split(',').any(|c| c == "pids") {
            dirs.push(Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/')));
        }
    }
    let mut best: Option<(u64, u64, u64)> = None;
    for dir in dirs {
        let mut d = Some(dir.as_path());
        while let Some(p) = d {
            if !p.starts_with("/sys/fs/cgroup") {
                break;
            }
            let max = std::fs::read_to_string(p.join("pids.max")).ok();
            let cur = std::fs::read_to_string(p.join("pids.current")).ok();
            if let (Some(max), Some(cur)) = (max, cur) {
                if let (Ok(max), Ok(cur)) = (max.trim().parse::<u64>(), cur.trim().parse::<u64>()) {
                    let h = max.saturating_sub(cur);
                    if best.is_none_or(|b| h < b.0) {
                        best = Some((h, max, cur));
                    }
                }
            }
            d = p.parent();
        }
    }
    best
}

/// `(headroom, limit, tasks)` from `pid_max`, `threads-max` and the task count in `/proc/loadavg`.
fn kernel_pids_headroom() -> Option<(u64, u64, u64)> {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let limit = match (read("/proc/sys/kernel/pid_max"), read("/proc/sys/kernel/threads-max")) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    let tasks = loadavg_tasks(&std::fs::read_to_string("/proc/loadavg").ok()?)?;
    Some((limit.saturating_sub(tasks), limit, tasks))
}

/// The task count of a `/proc/loadavg` line (`0.00 0.01 0.05 1/123 4567` → 123).
fn loadavg_tasks(line: &str) -> Option<u64> {
    line.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x52_loadavg_tasks() {
        assert_eq!(loadavg_tasks("4.02 2.53 1.31 6/134 7131\n"), Some(134));
        assert_eq!(loadavg_tasks("garbage"), None);
    }

    #[tokio::test]
    async fn x52_checks_pass_on_a_writable_dir_and_fail_with_a_high_floor() {
        let dir = std::env::temp_dir().join(format!("execd-ready-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = ReadinessOpts {
            state_dir: dir.clone(),
            min_free_bytes: 1,
            min_free_inodes: 1,
            jupyter_host: String::new(),
            jupyter_token: String::new(),
        };
        let r = Readiness::new(opts.clone()).check().await;
        assert!(r.ready, "{r:?}");
        assert_eq!(r.checks.iter().map(|c| c.name).collect::<Vec<_>>(), ["state_dir", "disk", "inodes", "pids"]);
        let r = Readiness::new(ReadinessOpts { min_free_bytes: u64::MAX, ..opts.clone() }).check().await;
        assert!(!r.ready);
        assert!(r.checks.iter().any(|c| c.name == "disk" && !c.ok), "{r:?}");
        let r = Readiness::new(ReadinessOpts { jupyter_host: "http://127.0.0.1:9".into(), ..opts }).check().await;
        assert!(r.checks.iter().any(|c| c.name == "jupyter" && !c.ok), "{r:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
