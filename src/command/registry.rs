//! The command registry: id → [`Entry`] for foreground and background commands, with retention of
//! finished entries by age and count (DECISIONS D12). Evicting an entry deletes its journal.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::event::ExitInfo;
use crate::process::{ExitOutcome, GroupChild, Journal};

/// What `GET /command/status/{id}` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandStatus {
    pub id: String,
    pub content: String,
    pub running: bool,
    /// `None` while running.
    pub exit_code: Option<i32>,
    /// `""`, `exit status N`, `signal: killed` or the start failure.
    pub error: String,
    pub started_at: SystemTime,
    pub finished_at: Option<SystemTime>,
    /// X22 keys once finished (or failed to start).
    pub exit: Option<ExitInfo>,
    /// While running: output bytes lost so far because the state directory is full (once
    /// finished, `exit` says it).
    pub output_lost_bytes: u64,
}

/// One command (running or finished).
pub struct Entry {
    pub id: String,
    pub content: String,
    pub background: bool,
    pub started_at: SystemTime,
    /// `None` when the start failed (nothing was ever written).
    pub journal: Option<Journal>,
    /// The stdin pipe when the command was started with one (X10).
    stdin: Option<Arc<super::stdin::StdinHandle>>,
    /// The terminal of a `"tty":true` command (X15; holds it weakly).
    tty: Option<crate::process::tty::TtyControl>,
    state: Mutex<EntryState>,
}

struct EntryState {
    /// Present while the command runs; cleared at exit, so a late interrupt signals nothing.
    child: Option<Arc<GroupChild>>,
    /// After exit, while processes the command left behind (`&` children) live: an explicit
    /// interrupt of the finished command ends them (#17). Released once they are gone.
    leftover: Option<Arc<GroupChild>>,
    exit_code: Option<i32>,
    error: String,
    finished_at: Option<SystemTime>,
    exit: Option<ExitInfo>,
    /// An interrupt (DELETE, shutdown) was asked for while running.
    interrupted: bool,
}

impl Entry {
    /// A running command.
    pub fn running(id: String, content: String, background: bool, journal: Journal, child: Arc<GroupChild>) -> Entry {
        Entry {
            id,
            content,
            background,
            started_at: SystemTime::now(),
            journal: Some(journal),
            stdin: None,
            tty: None,
            state: Mutex::new(EntryState {
                child: Some(child),
                leftover: None,
                exit_code: None,
                error: String::new(),
                finished_at: None,
                exit: None,
                interrupted: false,
            }),
        }
    }

    /// A background command whose start failed (upstream: exit code 255 and the error).
    pub fn failed(id: String, content: String, error: String, exit: ExitInfo) -> Entry {
        let now = SystemTime::now();
        Entry {
            id,
            content,
            background: true,
            started_at: now,
            journal: None,
            stdin: None,
            tty: None,
            state: Mutex::new(EntryState {
                child: None,
                leftover: None,
                exit_code: Some(255),
                error,
                finished_at: Some(now),
                exit: Some(exit),
                interrupted: false,
            }),
        }
    }

    /// Attaches the command's stdin pipe (X10).
    pub(crate) fn with_stdin(mut self, stdin: Option<Arc<super::stdin::StdinHandle>>) -> Entry {
        self.stdin = stdin;
        self
    }

    /// Attaches the command's terminal (X15).
    pub(crate) fn with_tty(mut self, tty: Option<crate::process::tty::TtyControl>) -> Entry {
        self.tty = tty;
        self
    }

    /// The terminal, if the command was started with one.
    pub(crate) fn tty(&self) -> Option<crate::process::tty::TtyControl> {
        self.tty.clone()
    }

    /// The stdin pipe, if the command was started with one.
    pub(crate) fn stdin(&self) -> Option<Arc<super::stdin::StdinHandle>> {
        self.stdin.clone()
    }

    /// The process group while it runs.
    pub fn child(&self) -> Option<Arc<GroupChild>> {
        self.lock().child.clone()
    }

    /// A finished command of an earlier execd, loaded from its record (X50).
    pub fn restored(l: super::persist::Loaded) -> Entry {
        Entry {
            id: l.id,
            content: l.content,
            background: l.background,
            started_at: l.started_at,
            journal: l.journal,
            stdin: None,
            tty: None,
            state: Mutex::new(EntryState {
                child: None,
                leftover: None,
                exit_code: Some(l.exit_code),
                error: l.error,
                finished_at: Some(l.finished_at),
                exit: Some(l.exit),
                interrupted: false,
            }),
        }
    }

    /// Records the exit, finished at `finished_at`.
    pub fn finish(&self, outcome: ExitOutcome, exit: ExitInfo, finished_at: SystemTime) {
        let mut st = self.lock();
        st.exit = Some(exit);
        // Kept until [`Entry::release_leftover_if_gone`] (after the terminal event) or
        // [`Entry::leftover`] find nothing of it alive.
        st.leftover = st.child.take();
        st.exit_code = Some(outcome.code());
        st.error = outcome_error(outcome);
        st.finished_at = Some(finished_at);
    }

    pub fn status(&self) -> CommandStatus {
        let st = self.lock();
        CommandStatus {
            id: self.id.clone(),
            content: self.content.clone(),
            running: st.finished_at.is_none(),
            exit_code: st.exit_code,
            error: st.error.clone(),
            started_at: self.started_at,
            finished_at: st.finished_at,
            exit: st.exit.clone(),
            output_lost_bytes: self.journal.as_ref().map_or(0, |j| j.output_lost()),
        }
    }

    /// Releases the finished command's process handle unless something of it still runs.
    pub fn release_leftover_if_gone(&self) {
        let _ = self.leftover();
    }

    /// What the finished command left running, if anything is still alive (released when not).
    pub fn leftover(&self) -> Option<Arc<GroupChild>> {
        let mut st = self.lock();
        let alive = st.leftover.as_ref().is_some_and(|c| c.leftovers_alive());
        if !alive {
            st.leftover = None;
        }
        st.leftover.clone()
    }

    /// Takes what the finished command left running, if anything is still alive: the caller
    /// ends it, and dropping the handle then lets its cgroup leaf go.
    pub fn take_leftover(&self) -> Option<Arc<GroupChild>> {
        self.lock().leftover.take().filter(|c| c.leftovers_alive())
    }

    /// Records that execd was asked to interrupt the command (for `exit_reason`).
    pub fn mark_interrupted(&self) {
        self.lock().interrupted = true;
    }

    pub fn interrupted(&self) -> bool {
        self.lock().interrupted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        // Short critical sections only; never held across an await.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The status `error` of a command that ended with `outcome`.
pub fn outcome_error(outcome: ExitOutcome) -> String {
    if outcome.success() {
        String::new()
    } else {
        outcome.describe()
    }
}

/// Retention limits for finished entries.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub ttl: Duration,
    pub max_finished: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Arc<Entry>>,
    /// Finished ids, oldest first, with the instant they finished.
    finished: VecDeque<(Instant, String)>,
}

/// Thread-safe registry.
pub struct Registry {
    inner: Mutex<Inner>,
    retention: Retention,
    /// Where the command records live (X50): eviction deletes them too.
    record_dir: Option<std::path::PathBuf>,
}

impl Registry {
    pub fn new(retention: Retention) -> Registry {
        Registry { inner: Mutex::new(Inner::default()), retention, record_dir: None }
    }

    /// A registry whose evictions also delete the records in `dir` (X50).
    pub fn with_records(retention: Retention, dir: std::path::PathBuf) -> Registry {
        Registry { inner: Mutex::new(Inner::default()), retention, record_dir: Some(dir) }
    }

    /// Adds a finished entry of an earlier execd that finished at wall-clock `finished_at`
    /// (entries must come oldest first); retention then counts its age from that time.
    pub fn insert_restored(&self, entry: Arc<Entry>, finished_at: SystemTime) {
        let age = SystemTime::now().duration_since(finished_at).unwrap_or_default();
        let now = Instant::now();
        // An age beyond what Instant can express (older than the boot) is simply expired.
        let at = now.checked_sub(age).unwrap_or_else(|| now.checked_sub(self.retention.ttl).unwrap_or(now));
        let id = entry.id.clone();
        let mut g = self.lock();
        g.entries.insert(id.clone(), entry);
        g.finished.push_back((at, id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Short critical sections only (map operations); never held across an await.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, entry: Arc<Entry>) {
        let finished = entry.status().finished_at.is_some();
        let id = entry.id.clone();
        let mut g = self.lock();
        g.entries.insert(id.clone(), entry);
        if finished {
            g.finished.push_back((Instant::now(), id));
        }
        drop(g);
        if finished {
            self.evict(Instant::now());
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.lock().entries.get(id).cloned()
    }

    /// Marks `id` finished (for retention) and enforces the limits.
    pub fn mark_finished(&self, id: &str) {
        self.lock().finished.push_back((Instant::now(), id.to_string()));
        self.evict(Instant::now());
    }

    /// Every entry, running and finished (the X53 inventory sorts and pages them).
    pub fn snapshot(&self) -> Vec<Arc<Entry>> {
        self.lock().entries.values().cloned().collect()
    }

    /// Every entry that still runs.
    pub fn running(&self) -> Vec<Arc<Entry>> {
        self.lock().entries.values().filter(|e| e.child().is_some()).cloned().collect()
    }

    /// Finished entries whose leftover processes still live (see [`Entry::leftover`]); lets go
    /// of the others' leftovers.
    pub fn with_leftovers(&self) -> Vec<Arc<Entry>> {
        self.snapshot().into_iter().filter(|e| e.child().is_none() && e.leftover().is_some()).collect()
    }

    /// Number of entries (running and finished).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts finished entries older than the TTL and beyond the count cap, oldest first, and
    /// deletes their journals. Returns how many were evicted.
    pub fn evict(&self, now: Instant) -> usize {
        let mut victims = Vec::new();
        {
            let mut g = self.lock();
            while let Some((at, _)) = g.finished.front() {
                let expired = now.saturating_duration_since(*at) >= self.retention.ttl;
                if !expired && g.finished.len() <= self.retention.max_finished {
                    break;
                }
                let Some((_, id)) = g.finished.pop_front() else { break };
                if let Some(e) = g.entries.remove(&id) {
                    victims.push(e);
                }
            }
        }
        // File deletion outside the lock.
        for e in &victims {
            if let Some(j) = &e.journal {
                j.remove_files();
            }
            if let Some(dir) = &self.record_dir {
                super::persist::remove(dir, &e.id);
            }
        }
        victims.len()
    }
}
