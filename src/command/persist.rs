//! Command records on disk (EXTENSIONS X50): what lets `/command/status/{id}`, `/logs`, `/events`
//! and the inventory answer the same after execd was killed and restarted.
//!
//! Beside each journal `<journal_dir>/<id>.{out,idx}` (created with the first output, so a
//! command that prints nothing has none) lives `<id>.json` (0600 through [`crate::state_dir`]):
//! created once, then replaced so that a reader sees the old or the new record, never a mix
//! (in place when both fit in one page, else a temporary file and a rename; see [`save`]):
//!
//! - at start, a *running* record: id, content, start time, the leader's pid with its `/proc`
//!   start time and the boot id, and the directories of its cgroup leaf (X20) if it has one, so
//!   that a later execd can find the command's leftover processes without mistaking a recycled
//!   pid for them (written without fsync: it only has to survive execd's death, not the
//!   machine's);
//! - at the end, before the terminal event is published and the status turns finished, the
//!   *finished* record: exit code, error, the X22 exit, times, the journal's extent and its
//!   terminal event. It is fsynced right after the rename, off the command's latency path
//!   ([`sync`]: a `fdatasync` cost 0.4–1.1 ms per command here, on a floor of about 1.3 ms).
//!
//! At start [`load`] reads every record. A finished one comes back as it was. A running one means
//! execd died while the command ran: its journal is recovered up to the last whole index record
//! ([`Journal::recover`]), it is reported finished with `exit_reason:"lost"`, exit code -1 and an
//! error naming the processes of its process group and of its cgroup leaf still alive (they are
//! reported, never killed: RELIABILITY.md section 7), and its finished record is written at once. Files that do not
//! parse, journals without a record and leftover temporaries are logged and removed; none of them
//! stops execd from starting.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cgroup::Usage;
use crate::event::{EventError, EventKind, ExecEvent, ExitInfo};
use crate::process::journal::Extent;
use crate::process::Journal;

/// Format version of a record file.
const VERSION: u32 = 1;

/// One command record file. Written by `record_json` byte for byte as this derived `Serialize`
/// would write it (the derive is that writer's test oracle), read back through `Deserialize`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub id: String,
    pub content: String,
    pub background: bool,
    pub started_at: Time,
    /// Whether there is a journal (a background command whose start failed has none).
    #[serde(default)]
    pub has_journal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Running>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finished>,
}

/// A wall-clock instant, exactly (status answers it to the nanosecond).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Time {
    pub secs: u64,
    pub nanos: u32,
}

impl Time {
    pub fn from_system(t: SystemTime) -> Time {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Time { secs: d.as_secs(), nanos: d.subsec_nanos() }
    }
    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.secs, self.nanos.min(999_999_999))
    }
}

/// Who ran the command while it runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Running {
    /// The leader's pid, which is also the process group id (D14).
    pub pid: u32,
    /// The leader's start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub pid_start: Option<u64>,
    pub boot_id: Option<String>,
    /// The command's cgroup leaf: one directory on v2, one per hierarchy on v1; empty without a
    /// leaf (and in records of execd versions before it was recorded). Its `cgroup.procs` also
    /// lists the processes that left the process group (`setsid`, daemons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup: Vec<PathBuf>,
}

/// The end of a command.
#[derive(Debug, Serialize, Deserialize)]
pub struct Finished {
    pub exit_code: i32,
    pub error: String,
    pub finished_at: Time,
    pub exit: ExitRec,
    #[serde(default)]
    pub journal: Option<Extent>,
    #[serde(default)]
    pub terminal: Option<EventRec>,
}

/// [`ExitInfo`] as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExitRec {
    pub exit_reason: String,
    pub signal: Option<String>,
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    pub stage: Option<String>,
    pub usage: Option<Usage>,
    pub usage_scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lost_bytes: Option<u64>,
}

/// A terminal [`ExecEvent`] as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventRec {
    pub kind: String,
    pub text: String,
    pub execution_time: u64,
    pub timestamp: i64,
    pub error: Option<(String, String, Vec<String>)>,
    pub exit: Option<ExitRec>,
}

const REASONS: [&str; 7] = ["exited", "signaled", "timeout", "interrupted", "oom_killed", "spawn_failed", "lost"];

fn intern(s: &str, known: &[&'static str]) -> Option<&'static str> {
    known.iter().copied().find(|k| *k == s)
}

impl ExitRec {
    pub fn from_info(x: &ExitInfo) -> ExitRec {
        ExitRec {
            exit_reason: x.exit_reason.to_string(),
            signal: x.signal.clone(),
            errno: x.errno,
            errno_name: x.errno_name.clone(),
            stage: x.stage.map(str::to_string),
            usage: x.usage,
            usage_scope: x.usage_scope.map(str::to_string),
            output_lost_bytes: x.output_lost_bytes,
        }
    }

    /// Back to an [`ExitInfo`]; an unknown reason reads as `lost`, an unknown stage as none.
    pub fn to_info(&self) -> ExitInfo {
        ExitInfo {
            exit_reason: intern(&self.exit_reason, &REASONS).unwrap_or("lost"),
            signal: self.signal.clone(),
            errno: self.errno,
            errno_name: self.errno_name.clone(),
            stage: self.stage.as_deref().and_then(|s| intern(s, &crate::process::spawn::STAGES)),
            usage: self.usage,
            usage_scope: self.usage_scope.as_deref().and_then(|s| intern(s, &["leader"])),
            output_lost_bytes: self.output_lost_bytes,
        }
    }
}

impl EventRec {
    pub fn from_event(e: &ExecEvent) -> EventRec {
        EventRec {
            kind: e.kind.as_str().to_string(),
            text: e.text.clone(),
            execution_time: e.execution_time,
            timestamp: e.timestamp,
            error: e.error.as_ref().map(|x| (x.ename.clone(), x.evalue.clone(), x.traceback.clone())),
            exit: e.exit.as_deref().map(ExitRec::from_info),
        }
    }

    /// Back to the event; `None` for a kind that is not terminal.
    pub fn to_event(&self) -> Option<ExecEvent> {
        let kind = match self.kind.as_str() {
            "execution_complete" => EventKind::ExecutionComplete,
            "error" => EventKind::Error,
            _ => return None,
        };
        let mut e = ExecEvent::new_at(kind, self.text.clone(), self.timestamp);
        e.execution_time = self.execution_time;
        e.error = self.error.as_ref().map(|(ename, evalue, traceback)| {
            Box::new(EventError { ename: ename.clone(), evalue: evalue.clone(), traceback: traceback.clone() })
        });
        e.exit = self.exit.as_ref().map(|x| Box::new(x.to_info()));
        Some(e)
    }
}

/// Path of the record of command `id`.
pub fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Largest record written over the one before in place: one page, which a single `pwrite` at
/// offset 0 puts into the page cache whole or not at all, whatever signal kills execd (the kernel
/// checks for a fatal signal between pages, not within one).
const IN_PLACE_MAX: usize = 4096;

/// Writes the first record of a command, which has none yet: straight into `<id>.json`, no
/// temporary and no rename (one file created instead of two names). A kill mid-write leaves an
/// empty or partial file, which [`load`] removes with its journal, as it would a command with no
/// record at all (the record is written after the spawn either way).
pub fn save_new(dir: &Path, rec: &Record) -> io::Result<()> {
    let text = super::record_json::to_vec(rec)?;
    io::Write::write_all(&mut crate::state_dir::create_file(&record_path(dir, &rec.id))?, &text)
}

/// Writes `rec` over the record of the same command so that a later execd reads the old one or
/// the new one, never a mix: in place when both fit in one page (the new text padded with
/// spaces, which JSON ignores, to cover the old), else as a temporary file renamed over it. With
/// `fsync` the data is synced before this returns.
pub fn save(dir: &Path, rec: &Record, fsync: bool) -> io::Result<()> {
    let path = record_path(dir, &rec.id);
    let mut text = super::record_json::to_vec(rec)?;
    if let Some(f) = overwrite_in_place(&path, &mut text)? {
        if fsync {
            f.sync_data()?;
        }
        return Ok(());
    }
    let tmp = dir.join(format!("{}.json.tmp", rec.id));
    let mut f = crate::state_dir::create_file(&tmp)?;
    io::Write::write_all(&mut f, &text)?;
    if fsync {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(&tmp, &path)
}

/// [`save`] when it can write in place (see there); returns the file to sync, or `None` when the
/// record has to go through a temporary and a rename instead (nothing written).
pub fn save_in_place(dir: &Path, rec: &Record) -> io::Result<Option<std::fs::File>> {
    let mut text = super::record_json::to_vec(rec)?;
    overwrite_in_place(&record_path(dir, &rec.id), &mut text)
}

/// Writes `text` over the existing record at `path` in one `pwrite` at offset 0 when the old and
/// the padded new text fit in [`IN_PLACE_MAX`]; `None` (nothing written) when there is no such
/// record or either is larger. Creating a file costs ~0.1–0.5 ms on this host's ext4, reopening
/// one ~6 µs.
fn overwrite_in_place(path: &Path, text: &mut Vec<u8>) -> io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::FileExt;
    if text.len() > IN_PLACE_MAX {
        return Ok(None);
    }
    let f = match crate::state_dir::open_existing(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let old = f.metadata()?.len() as usize;
    if old > IN_PLACE_MAX {
        return Ok(None);
    }
    if text.len() < old {
        text.resize(old, b' ');
    }
    // One system call for one page: whole or nothing (see IN_PLACE_MAX).
    let n = f.write_at(text, 0)?;
    if n != text.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write of a command record"));
    }
    Ok(Some(f))
}

/// Flushes the record of `id` to disk (best effort: a record that did not reach the disk before a
/// machine crash reads as `lost` after it, as a command that was running).
pub fn sync(dir: &Path, id: &str) {
    if let Ok(f) = std::fs::File::open(record_path(dir, id)) {
        let _ = f.sync_data();
    }
}

/// How long the first finished record of a batch waits for others before they are synced.
pub const SYNC_WINDOW: Duration = Duration::from_millis(20);
/// Records waiting at most (their descriptors are held); the one that fills the batch has it
/// synced at once.
pub const SYNC_MAX: usize = 64;

/// Finished records waiting for their `fdatasync`, synced together by one blocking task at most
/// [`SYNC_WINDOW`] after the first of them came: back-to-back commands share one thread wake-up
/// and one sync pass instead of a hand-off each (RELIABILITY.md section 7: only a crash of the
/// machine in that window can lose a record).
#[derive(Default)]
pub struct SyncQueue {
    /// The files, and whether a task is on its way to sync them.
    pending: std::sync::Mutex<(Vec<std::fs::File>, bool)>,
}

impl SyncQueue {
    /// Queues `file` for its `fdatasync`; must be called inside a tokio runtime.
    pub fn push(self: &std::sync::Arc<Self>, file: std::fs::File) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.0.push(file);
        if p.0.len() >= SYNC_MAX {
            let batch = std::mem::take(&mut p.0);
            drop(p);
            tokio::task::spawn_blocking(move || sync_all(batch));
        } else if !p.1 {
            p.1 = true;
            drop(p);
            let queue = self.clone();
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(SYNC_WINDOW);
                queue.flush();
            });
        }
    }

    /// Syncs what waits now (the batch task, and shutdown).
    pub fn flush(&self) {
        let batch = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.1 = false;
            std::mem::take(&mut p.0)
        };
        sync_all(batch);
    }
}

fn sync_all(files: Vec<std::fs::File>) {
    for f in files {
        let _ = f.sync_data();
    }
}

/// Removes the record of `id` (eviction).
pub fn remove(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(record_path(dir, id));
}

/// The running record of a command just spawned with leader `pid` and cgroup leaf directories
/// `cgroup` (empty: none).
pub fn running_record(
    id: &str,
    content: &str,
    background: bool,
    started_at: SystemTime,
    pid: u32,
    cgroup: Vec<PathBuf>,
) -> Record {
    let running = Running { pid, pid_start: proc_start_time(pid as i32), boot_id: crate::os::boot_id(), cgroup };
    Record { running: Some(running), ..record(id, content, background, started_at, true) }
}

/// The finished record of a command.
pub fn finished_record(
    id: &str,
    content: &str,
    background: bool,
    started_at: SystemTime,
    has_journal: bool,
    finished: Finished,
) -> Record {
    Record { finished: Some(finished), ..record(id, content, background, started_at, has_journal) }
}

/// A record with neither a running nor a finished part.
fn record(id: &str, content: &str, background: bool, started_at: SystemTime, has_journal: bool) -> Record {
    Record {
        v: VERSION,
        id: id.to_string(),
        content: content.to_string(),
        background,
        started_at: Time::from_system(started_at),
        has_journal,
        running: None,
        finished: None,
    }
}

/// What [`load`] found of one command.
pub struct Loaded {
    pub id: String,
    pub content: String,
    pub background: bool,
    pub started_at: SystemTime,
    pub journal: Option<Journal>,
    pub exit_code: i32,
    pub error: String,
    pub finished_at: SystemTime,
    pub exit: ExitInfo,
}

/// A command id as execd makes them (32 lowercase hex digits); anything else in the directory is
/// not ours to interpret.
fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Loads every record in `dir` (see the module docs), oldest finish first. Bad files are logged
/// and removed.
pub fn load(dir: &Path) -> Vec<Loaded> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut ids = std::collections::BTreeSet::new();
    let mut journals = std::collections::BTreeSet::new();
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let (stem, ext) = name.split_once('.').unwrap_or((&name, ""));
        match ext {
            "json" if is_id(stem) => {
                ids.insert(stem.to_string());
            }
            "out" | "idx" if is_id(stem) => {
                journals.insert(stem.to_string());
            }
            _ => {
                tracing::warn!(file = %name, "unknown file in the command directory; removed");
                let _ = std::fs::remove_file(ent.path());
            }
        }
    }
    let mut out = Vec::new();
    for id in &ids {
        match load_one(dir, id) {
            Ok(l) => out.push(l),
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "command record unusable after restart; dropped");
                remove_all(dir, id);
            }
        }
    }
    for id in journals.difference(&ids) {
        tracing::warn!(id = %id, "journal without a command record; removed");
        remove_all(dir, id);
    }
    out.sort_by_key(|l| l.finished_at);
    out
}

fn remove_all(dir: &Path, id: &str) {
    for ext in ["json", "out", "idx"] {
        let _ = std::fs::remove_file(dir.join(format!("{id}.{ext}")));
    }
}

fn load_one(dir: &Path, id: &str) -> io::Result<Loaded> {
    let text = io::read_to_string(crate::state_dir::open_file(&record_path(dir, id))?)?;
    let rec: Record = serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if rec.v != VERSION || rec.id != id {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "record version or id does not match"));
    }
    if let Some(f) = &rec.finished {
        let journal = match (rec.has_journal, f.journal) {
            (true, Some(ext)) => {
                Some(Journal::open_finished(dir, id, ext, f.terminal.as_ref().and_then(|t| t.to_event()))?)
            }
            (true, None) => return Err(io::Error::new(io::ErrorKind::InvalidData, "finished record without extent")),
            (false, _) => None,
        };
        return Ok(Loaded {
            id: rec.id,
            content: rec.content,
            background: rec.background,
            started_at: rec.started_at.to_system(),
            journal,
            exit_code: f.exit_code,
            error: f.error.clone(),
            finished_at: f.finished_at.to_system(),
            exit: f.exit.to_info(),
        });
    }
    // Running when execd died: lost.
    let ext = Journal::recover(dir, id)?;
    let leftovers = rec.running.as_ref().map(leftover_pids).unwrap_or_default();
    let mut error = "lost: execd stopped while the command ran".to_string();
    if !leftovers.is_empty() {
        let list: Vec<String> = leftovers.iter().map(|p| p.to_string()).collect();
        let leaf = rec.running.as_ref().map(|r| r.cgroup.as_slice()).unwrap_or_default();
        let place = if leaf.is_empty() { "its process group" } else { "its process group or cgroup leaf" };
        // The leaf stays while they run; the janitor removes it after (RELIABILITY.md section 7).
        let leaf: Vec<PathBuf> = leaf.iter().filter(|d| is_leaf_dir(d)).cloned().collect();
        crate::cgroup::adopt_lost(&leaf);
        error.push_str(&format!("; still running in {place}: {}", list.join(", ")));
        tracing::warn!(
            id = %id,
            pids = ?leftovers,
            leaf = ?leaf,
            "a command lost at restart left processes running; not killed"
        );
    }
    let exit = ExitInfo::lost();
    let terminal =
        ExecEvent::error(crate::event::COMMAND_EXEC_ERROR, "-1", vec![error.clone()]).with_exit(exit.clone());
    let finished_at = SystemTime::now();
    let finished = Finished {
        exit_code: -1,
        error: error.clone(),
        finished_at: Time::from_system(finished_at),
        exit: ExitRec::from_info(&exit),
        journal: Some(ext),
        terminal: Some(EventRec::from_event(&terminal)),
    };
    let rec = Record { running: None, finished: Some(finished), ..rec };
    save(dir, &rec, true)?;
    let journal = Journal::open_finished(dir, id, ext, Some(terminal))?;
    Ok(Loaded {
        id: rec.id,
        content: rec.content,
        background: rec.background,
        started_at: rec.started_at.to_system(),
        journal: Some(journal),
        exit_code: -1,
        error,
        finished_at,
        exit,
    })
}

/// `(pgrp, starttime)` of `pid` from `/proc/<pid>/stat`; `None` for a zombie (it is gone, only
/// not reaped yet).
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let st = crate::os::proc::Stat::read(pid)?;
    if st.state() == "Z" {
        return None;
    }
    Some((st.pgrp()?, st.start_time()?))
}

fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// Live processes of a lost command, sorted, each once: the members of its process group (same
/// boot, group id = the leader's pid, started no earlier than the leader: a recycled group id
/// would belong to a later process) and the processes in its cgroup leaf (which also holds those
/// that left the group). Nothing from another boot.
fn leftover_pids(r: &Running) -> Vec<i32> {
    let (Some(start), Some(boot)) = (r.pid_start, r.boot_id.as_deref()) else { return Vec::new() };
    if crate::os::boot_id().as_deref() != Some(boot) {
        return Vec::new();
    }
    let mut pids: Vec<i32> = crate::os::proc::pids()
        .filter(|&pid| matches!(proc_stat(pid), Some((pg, t)) if pg == r.pid as i32 && t >= start))
        .collect();
    pids.extend(leaf_pids(&r.cgroup));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The processes in a recorded cgroup leaf (the union of its directories' `cgroup.procs`: on v1
/// every hierarchy holds the same processes, unless one could not be entered). A directory is
/// read only if it looks like a leaf execd made (`…/execd-<pid>/c<n>`, absolute, no `..`) and
/// lies on a cgroup filesystem; zombies (exited, not yet reaped by their new parent) are left out.
fn leaf_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in dirs.iter().filter(|d| is_leaf_dir(d)) {
        let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) else { continue };
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|&p| proc_stat(p).is_some()));
    }
    pids
}

/// Whether `dir` has the shape of an execd leaf and lies on a cgroup (v1 or v2) filesystem.
fn is_leaf_dir(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    let numbered = |name: Option<&std::ffi::OsStr>, prefix: &str| {
        name.and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix))
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    };
    dir.is_absolute()
        && !dir.components().any(|c| matches!(c, std::path::Component::ParentDir))
        && numbered(dir.file_name(), "c")
        && numbered(dir.parent().and_then(Path::file_name), "execd-")
        && statfs(dir).is_ok_and(|s| [CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC].contains(&s.filesystem_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SyncQueue {
        fn waiting(&self) -> (usize, bool) {
            let p = self.pending.lock().unwrap();
            (p.0.len(), p.1)
        }
    }

    /// X50: finished records wait together for one sync pass, at most `SYNC_WINDOW`, and a full
    /// batch goes at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn x50_finished_records_are_synced_in_batches_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let file = |i: usize| std::fs::File::create(dir.path().join(format!("{i}.json"))).unwrap();
        let q = std::sync::Arc::new(SyncQueue::default());
        let started = std::time::Instant::now();
        for i in 0..3 {
            q.push(file(i));
        }
        assert_eq!(q.waiting(), (3, true), "one task on its way for the three");
        while q.waiting() != (0, false) {
            assert!(started.elapsed() < Duration::from_secs(10), "the batch was never synced");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(started.elapsed() >= SYNC_WINDOW, "synced before the window closed");

        for i in 0..SYNC_MAX - 1 {
            q.push(file(i));
        }
        assert_eq!(q.waiting(), (SYNC_MAX - 1, true));
        q.push(file(SYNC_MAX));
        assert_eq!(q.waiting().0, 0, "a full batch is handed to a sync task at once");
        q.flush();
        assert_eq!(q.waiting(), (0, false));
    }

    #[test]
    fn x50_exit_and_terminal_round_trip() {
        let exit = ExitInfo {
            exit_reason: "spawn_failed",
            signal: None,
            errno: Some(2),
            errno_name: Some("ENOENT".into()),
            stage: Some("chdir"),
            usage: None,
            usage_scope: Some("leader"),
            output_lost_bytes: Some(7),
        };
        let ev = ExecEvent::error("CommandExecError", "2", vec!["x".into()]).with_exit(exit.clone()).at(42);
        let back = EventRec::from_event(&ev).to_event().unwrap();
        assert_eq!(back.to_json(), ev.to_json());
        assert_eq!(ExitRec::from_info(&exit).to_info(), exit);
        let ok = ExecEvent::complete(17).at(5);
        assert_eq!(EventRec::from_event(&ok).to_event().unwrap().to_json(), ok.to_json());
    }

    #[test]
    fn x50_only_execd_leaves_on_a_cgroup_filesystem_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("execd-12/c3");
        std::fs::create_dir_all(&fake).unwrap();
        std::fs::write(fake.join("cgroup.procs"), format!("{}\n", std::process::id())).unwrap();
        // The right shape, but not a cgroup filesystem.
        assert!(!is_leaf_dir(&fake));
        assert!(leaf_pids(&[fake]).is_empty());
        for bad in [
            "relative/execd-1/c1",
            "/sys/fs/cgroup/pids/execd-1/../c1",
            "/sys/fs/cgroup/pids/x/c1",
            "/sys/fs/cgroup/pids/execd-1/cx",
        ] {
            assert!(!is_leaf_dir(Path::new(bad)), "{bad}");
        }
        // A record of an execd that did not record leaves still parses.
        let r: Running = serde_json::from_str(r#"{"pid":1,"pid_start":null,"boot_id":null}"#).unwrap();
        assert!(r.cgroup.is_empty());
    }

    /// A record replaced in place keeps its file (no temporary, no new inode) and parses with the
    /// padding that covers a longer predecessor; one over a page goes through a rename.
    #[test]
    fn x50_records_are_replaced_in_place_within_a_page_and_renamed_beyond() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let id = "0123456789abcdef0123456789abcdef";
        let started = SystemTime::now();
        // A running record longer than the finished one that replaces it.
        let running = running_record(id, &"x".repeat(3000), false, started, std::process::id(), Vec::new());
        save_new(dir, &running).unwrap();
        let inode = std::fs::metadata(record_path(dir, id)).unwrap().ino();
        let old_len = std::fs::metadata(record_path(dir, id)).unwrap().len();
        let finished = |content: &str| {
            let exit = ExitInfo::lost();
            let f = Finished {
                exit_code: 3,
                error: String::new(),
                finished_at: Time::from_system(started),
                exit: ExitRec::from_info(&exit),
                journal: Some(Extent::default()),
                terminal: None,
            };
            finished_record(id, content, false, started, true, f)
        };
        save(dir, &finished("short"), true).unwrap();
        let meta = std::fs::metadata(record_path(dir, id)).unwrap();
        assert_eq!((meta.ino(), meta.len()), (inode, old_len), "not replaced in place, or not padded");
        let loaded = load(dir);
        assert_eq!(loaded.len(), 1);
        assert_eq!((loaded[0].content.as_str(), loaded[0].exit_code), ("short", 3));
        // Over a page: a temporary renamed over it (a new inode, no temporary left).
        save(dir, &finished(&"y".repeat(IN_PLACE_MAX)), false).unwrap();
        assert_ne!(std::fs::metadata(record_path(dir, id)).unwrap().ino(), inode);
        let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(load(dir)[0].content.len(), IN_PLACE_MAX);
    }

    #[test]
    fn x50_ids_are_checked() {
        assert!(is_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_id("../x"));
        assert!(!is_id("0123456789ABCDEF0123456789abcdef"));
    }
}
