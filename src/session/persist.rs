//! Bash sessions across an execd restart (EXTENSIONS X50).
//!
//! A session never has a process between runs: its whole shell state is the newest complete
//! `state.<gen>.sh` in `<state_dir>/sessions/<id>/` (see [`super::bash`]): after every run that
//! ended by itself, the complete raw save bash wrote is renamed to it (before the run's terminal
//! event), and its compacted form is renamed over it (temporary file + rename, after the event);
//! either form restores the same state. So bringing sessions
//! back after `kill -9` is loading those directories: [`load`] takes every directory named like a
//! session id, keeps its newest state file that ends with the end marker, and removes everything
//! else in it (the command file and raw save of a run cut off by the kill, older or torn state
//! files). A directory without a usable state file is logged and removed. Nothing of a session
//! ever goes through argv: the state file is `source`d by the next run's bash.
//!
//! What does not come back: the run that was in progress (killed with execd's death or orphaned;
//! its state is that of before the run) and the creation `cwd` as a fallback for a working
//! directory that vanished (the state file's own `cd` still restores the working directory).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::Limits;

/// A session found on disk.
pub(super) struct Restored {
    pub id: String,
    pub dir: PathBuf,
    /// Generation of its state file.
    pub generation: u64,
    /// Time since its state file was written (for the idle collector).
    pub idle: Duration,
    /// The limits it was created with (X23), from [`LIMITS_FILE`].
    pub limits: Limits,
}

/// The file of a session's limits (X23), written at creation when it has any: a session capped at
/// 64 MiB stays capped after a restart. A session whose file cannot be read is not loaded (loading
/// it uncapped would lift a limit someone set).
pub(super) const LIMITS_FILE: &str = "limits.json";

/// Writes a new session's limits into its directory (nothing when it has none).
pub(super) fn write_limits(dir: &Path, limits: &Limits) -> io::Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(limits).map_err(io::Error::other)?;
    write_atomic(&dir.join(LIMITS_FILE), &json)
}

fn read_limits(dir: &Path) -> io::Result<Limits> {
    match std::fs::read(dir.join(LIMITS_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Limits::default()),
        Err(e) => Err(e),
    }
}

/// Writes `content` to `path` atomically: a 0600 temporary file beside it, then rename.
pub(super) fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let done = crate::state_dir::write_file(&tmp, content).and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// The temporary name [`write_atomic`] (and the compaction) write `path` under first.
pub(super) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Whether `s` has the form of a session id (a UUID with dashes, lowercase hex).
fn is_session_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// The generation of a state file name `state.<gen>.sh`.
fn state_generation(name: &str) -> Option<u64> {
    name.strip_prefix("state.")?.strip_suffix(".sh")?.parse().ok()
}

/// Loads the sessions under `root` (see the module docs); with `fresh`, removes them instead.
pub(super) fn load(root: &Path, fresh: bool) -> Vec<Restored> {
    if fresh {
        if let Err(e) = std::fs::remove_dir_all(root) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %root.display(), error = %e, "could not wipe the sessions directory");
            }
        }
        return Vec::new();
    }
    let Ok(rd) = std::fs::read_dir(root) else { return Vec::new() };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let dir = ent.path();
        let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let restored = if is_dir && is_session_id(&name) { load_one(&name, &dir) } else { None };
        match restored {
            Some(r) => out.push(r),
            None => {
                tracing::warn!(entry = %name, "unusable session directory after restart; removed");
                let _ = if is_dir { std::fs::remove_dir_all(&dir) } else { std::fs::remove_file(&dir) };
            }
        }
    }
    out
}

fn load_one(id: &str, dir: &Path) -> Option<Restored> {
    // Ours, a real directory, 0700 (refuses a swapped-in one: its state file would be sourced).
    crate::state_dir::create_dir(dir).ok()?;
    let limits = match read_limits(dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(session = id, error = %e, "the session's limits cannot be read");
            return None;
        }
    };
    let mut states: Vec<(u64, PathBuf)> = Vec::new();
    let mut others = Vec::new();
    for ent in std::fs::read_dir(dir).ok()?.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if name == LIMITS_FILE {
            continue;
        }
        match state_generation(&name) {
            Some(g) => states.push((g, ent.path())),
            None => others.push(ent.path()),
        }
    }
    states.sort_by_key(|(g, _)| std::cmp::Reverse(*g));
    let chosen = states.iter().position(|(_, p)| super::run::state_complete(p))?;
    let (generation, path) = states[chosen].clone();
    for (i, (_, p)) in states.iter().enumerate() {
        if i != chosen {
            let _ = std::fs::remove_file(p);
        }
    }
    for p in others {
        let _ = std::fs::remove_file(&p);
    }
    let idle =
        std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
    Some(Restored { id: id.to_string(), dir: dir.to_path_buf(), generation, idle, limits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x50_newest_complete_state_wins_and_leftovers_go() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("sessions");
        let id = "0b5a1c3e-1111-4222-8333-444455556666";
        let dir = root.join(id);
        crate::state_dir::create_dir(&dir).unwrap();
        let end = super::super::bash::STATE_END;
        std::fs::write(dir.join("state.3.sh"), format!("x=3\n{end}")).unwrap();
        std::fs::write(dir.join("state.4.sh"), "x=4\n").unwrap(); // torn
        std::fs::write(dir.join("cmd.4.sh"), "echo").unwrap();
        std::fs::write(dir.join("save.4.sh"), "").unwrap();
        crate::state_dir::create_dir(&root.join("not-a-session")).unwrap();
        let got = load(&root, false);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].id.as_str(), got[0].generation), (id, 3));
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.3.sh")]);
        assert!(!root.join("not-a-session").exists());
        assert!(load(&root, true).is_empty());
        assert!(!root.exists());
    }

    #[test]
    fn x23_a_session_keeps_its_limits_across_a_restart() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("sessions");
        let end = super::super::bash::STATE_END;
        let capped = root.join("0b5a1c3e-1111-4222-8333-444455556666");
        let plain = root.join("0b5a1c3e-1111-4222-8333-777777777777");
        let torn = root.join("0b5a1c3e-1111-4222-8333-888888888888");
        let limits = Limits { memory: Some(64 << 20), pids: Some(20), cpu: None };
        for dir in [&capped, &plain, &torn] {
            crate::state_dir::create_dir(dir).unwrap();
            std::fs::write(dir.join("state.0.sh"), format!("x=0\n{end}")).unwrap();
        }
        write_limits(&capped, &limits).unwrap();
        write_limits(&plain, &Limits::default()).unwrap();
        std::fs::write(torn.join(LIMITS_FILE), "{\"memory\":").unwrap();
        let mut got = load(&root, false);
        got.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(got.len(), 2, "the session whose limits cannot be read is not loaded uncapped");
        assert_eq!(got[0].limits, limits);
        assert!(capped.join(LIMITS_FILE).exists(), "the limits file survives the load");
        assert_eq!(got[1].limits, Limits::default());
        assert!(!plain.join(LIMITS_FILE).exists());
        assert!(!torn.exists());
    }
}
