//! The kernel side of one watch: its own inotify instance, read by its own thread, turned into
//! [`WatchEvent`]s (X41).
//!
//! Why an instance (and a thread) per watch rather than one shared: a kernel queue overflow then
//! costs only the watch that overflowed; two watches over the same tree never share a watch
//! descriptor (the kernel returns the same one for the same inode on one instance, which would need
//! reference counting); and deleting a watch is closing one descriptor, which drops all of its
//! kernel watches at once. The price is one inotify instance per watch against the per-user
//! `fs.inotify.max_user_instances` (128 by default): at most `--max-watches` (64) of them, and a
//! create that cannot get one is refused with a clear error, never a half-made watch.
//!
//! How events are made:
//! - A directory created (or moved in) under a recursive watch gets its kernel watch at once, then
//!   is scanned, and everything the scan finds is reported as `create`: what was created inside it
//!   before its watch existed is not lost (`mkdir -p a/b/c && touch a/b/c/f`). Paths the scan
//!   reported are remembered until the kernel queue has been read empty, so the kernel's own
//!   `IN_CREATE` for them (when they were made after the watch was added) is not reported twice.
//! - `IN_MOVED_FROM`/`IN_MOVED_TO` with the same cookie are one `rename`; a `MOVED_FROM` left
//!   unpaired for [`MOVE_WAIT`] moved out of the tree (`delete`), a `MOVED_TO` without a partner
//!   moved in (`create`). A renamed directory keeps its kernel watches; their paths are rewritten.
//! - `IN_MODIFY` on a path is held until the writer closes the file (`IN_CLOSE_WRITE`) or
//!   [`COALESCE`] has passed since the first one: a burst of writes is one `modify`. A path that
//!   had a `modify` less than [`COALESCE`] ago waits for the end of that window, so a burst of
//!   open-write-close cycles is at most one `modify` at its start and one per window after.
//! - `exclude` globs are matched against the path relative to the watched directory; an excluded
//!   directory gets no kernel watch and nothing below it is reported (`dir/**` also excludes
//!   `dir` itself).
//! - `IN_Q_OVERFLOW` is one `overflow` event; the tree is then walked again so that directories
//!   made meanwhile get their watches (their contents are the client's rescan).
//! - The watched directory deleted or moved away: a final `delete` for it, and the watch ends.
//! - `/proc` and `/sys` are not entered by a recursive walk (a watch on `/` stays small).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::ring::{EventType, WatchEvent};
use super::{Shared, WatchError};

/// Modify events on one path within this window are one event.
pub const COALESCE: Duration = Duration::from_millis(50);
/// How long a `MOVED_FROM` waits for its `MOVED_TO` before it counts as a move out of the tree.
pub const MOVE_WAIT: Duration = Duration::from_millis(20);
/// Events are handed to readers at the latest every this many (a long scan does not pile up).
const PUBLISH_BATCH: usize = 256;
/// Kernel views where inotify reports nothing useful and a recursive walk from `/` would add
/// thousands of watches: never entered (watch them directly if wanted).
const PSEUDO_FS: &[&str] = &["/proc", "/sys"];
/// At most this many exclude globs, each at most [`MAX_GLOB_LEN`] bytes.
pub const MAX_GLOBS: usize = 64;
const MAX_GLOB_LEN: usize = 1024;

/// What a directory watch listens for.
fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

/// The `exclude` globs of a watch, matched against paths relative to its root.
#[derive(Debug)]
pub struct Exclude {
    root: PathBuf,
    set: GlobSet,
}

impl Exclude {
    /// Compiles `globs` (globset syntax; `dir/**` also matches `dir`). A bad glob is an error
    /// naming it.
    pub fn new(root: &Path, globs: &[String]) -> Result<Exclude, WatchError> {
        if globs.len() > MAX_GLOBS {
            return Err(WatchError::Invalid(format!("exclude: at most {MAX_GLOBS} globs (got {})", globs.len())));
        }
        let mut b = GlobSetBuilder::new();
        for g in globs {
            if g.is_empty() || g.len() > MAX_GLOB_LEN {
                return Err(WatchError::Invalid(format!("exclude: a glob must have 1 to {MAX_GLOB_LEN} bytes")));
            }
            let bad = |e: globset::Error| WatchError::Invalid(format!("exclude: invalid glob {g:?}: {e}"));
            b.add(Glob::new(g).map_err(bad)?);
            if let Some(dir) = g.strip_suffix("/**").filter(|d| !d.is_empty()) {
                b.add(Glob::new(dir).map_err(bad)?);
            }
        }
        let set = b.build().map_err(|e| WatchError::Invalid(format!("exclude: {e}")))?;
        Ok(Exclude { root: root.to_path_buf(), set })
    }

    /// Whether `path` (under the root) is excluded. The root itself never is.
    pub fn excludes(&self, path: &Path) -> bool {
        match path.strip_prefix(&self.root) {
            Ok(rel) if !rel.as_os_str().is_empty() => self.set.is_match(rel),
            _ => false,
        }
    }
}

/// A `MOVED_FROM` waiting for its `MOVED_TO`.
struct PendingMove {
    cookie: u32,
    path: PathBuf,
    is_dir: bool,
    excluded: bool,
    at: Instant,
}

/// One raw kernel event, copied out of the read buffer.
struct Raw {
    wd: i32,
    mask: EventMask,
    cookie: u32,
    name: Option<OsString>,
}

/// One watch's inotify instance and the state that turns its events into [`WatchEvent`]s.
pub struct Engine {
    inotify: Inotify,
    root: PathBuf,
    recursive: bool,
    exclude: Exclude,
    root_wd: i32,
    /// Kernel watch id → (descriptor, absolute directory path).
    by_wd: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Directory path → kernel watch id (ordered, so a subtree is one range).
    by_path: BTreeMap<PathBuf, i32>,
    moves: Vec<PendingMove>,
    /// Paths with a held `modify`, and when it is due.
    mods: HashMap<PathBuf, Instant>,
    /// When a `modify` last went out per path (entries older than [`COALESCE`] are dropped).
    recent: HashMap<PathBuf, Instant>,
    /// Paths a scan reported since the kernel queue was last read empty.
    scanned: HashSet<PathBuf>,
    /// Events not yet handed to readers.
    out: Vec<WatchEvent>,
    ended: bool,
    shared: Arc<Shared>,
}

/// Adding a kernel watch failed because of a kernel limit.
struct LimitReached(io::Error);

fn read_limit(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}")).map(|s| s.trim().to_string()).unwrap_or("?".into())
}

impl Engine {
    /// Makes the inotify instance and the kernel watches of the whole tree (nothing is reported
    /// for what already exists). Refuses, and leaves nothing behind, when a kernel limit is hit.
    pub fn start(root: PathBuf, recursive: bool, exclude: Exclude, shared: Arc<Shared>) -> Result<Engine, WatchError> {
        let shown = root.display().to_string();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(WatchError::NotADirectory(shown)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WatchError::PathNotFound(shown)),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Err(WatchError::PathNotFound(shown)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(WatchError::PermissionDenied { path: shown, source: e })
            }
            Err(source) => return Err(WatchError::Io { what: format!("stat {shown}"), source }),
        }
        let inotify = Inotify::init().map_err(|e| match e.raw_os_error() {
            Some(libc::EMFILE) => WatchError::KernelLimit(format!(
                "no inotify instance left for this user (fs.inotify.max_user_instances = {}): {e}",
                read_limit("max_user_instances")
            )),
            Some(libc::ENFILE) | Some(libc::ENOMEM) => {
                WatchError::KernelLimit(format!("cannot create an inotify instance: {e}"))
            }
            _ => WatchError::Unavailable(e),
        })?;
        let mut engine = Engine {
            inotify,
            root: root.clone(),
            recursive,
            exclude,
            root_wd: -1,
            by_wd: HashMap::new(),
            by_path: BTreeMap::new(),
            moves: Vec::new(),
            mods: HashMap::new(),
            recent: HashMap::new(),
            scanned: HashSet::new(),
            out: Vec::new(),
            ended: false,
            shared,
        };
        // The root may be reached through a symlink (as given); everything below is not followed.
        let wd = engine.inotify.watches().add(&root, dir_mask()).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => limit_error(&e),
            Some(libc::EACCES) | Some(libc::EPERM) => WatchError::PermissionDenied { path: shown.clone(), source: e },
            Some(libc::ENOENT) => WatchError::PathNotFound(shown.clone()),
            Some(libc::ENOTDIR) => WatchError::NotADirectory(shown.clone()),
            _ => WatchError::Io { what: format!("inotify_add_watch {shown}"), source: e },
        })?;
        engine.root_wd = wd.get_watch_descriptor_id();
        engine.by_path.insert(root.clone(), engine.root_wd);
        engine.by_wd.insert(engine.root_wd, (wd, root.clone()));
        if recursive {
            if let Err(LimitReached(e)) = engine.add_subtrees(&root, false) {
                return Err(limit_error(&e));
            }
        }
        engine.publish();
        Ok(engine)
    }

    /// Reads and translates events until `stop` is closed by the other side or the watched
    /// directory is gone; then marks the watch ended.
    pub fn run(mut self, stop: OwnedFd) {
        let mut buf = vec![0u8; 64 * 1024];
        while !self.ended {
            let timeout = match self.next_deadline() {
                None => PollTimeout::NONE,
                Some(at) => {
                    let ms = at.saturating_duration_since(Instant::now()).as_millis().min(60_000) as u16;
                    PollTimeout::from(ms.max(1))
                }
            };
            let (readable, stopped) = {
                let mut fds = [
                    PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch: poll failed; ending the watch");
                        break;
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if stopped {
                break;
            }
            if readable {
                self.drain(&mut buf);
            }
            self.expire(Instant::now());
            self.publish();
        }
        self.publish();
        self.shared.end();
    }

    /// Reads the kernel queue until it is empty.
    fn drain(&mut self, buf: &mut [u8]) {
        loop {
            let batch: Vec<Raw> = match self.inotify.read_events(buf) {
                Ok(events) => events
                    .map(|e| Raw {
                        wd: e.wd.get_watch_descriptor_id(),
                        mask: e.mask,
                        cookie: e.cookie,
                        name: e.name.map(|n| n.to_os_string()),
                    })
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watch: reading inotify failed; ending the watch");
                    self.ended = true;
                    break;
                }
            };
            for raw in batch {
                self.handle(raw);
            }
            if self.out.len() >= PUBLISH_BATCH {
                self.publish();
            }
        }
        // Every kernel event of a path made before a scan ended has now been read.
        self.scanned.clear();
    }

    fn handle(&mut self, raw: Raw) {
        let mask = raw.mask;
        if mask.contains(EventMask::Q_OVERFLOW) {
            let root = self.root.clone();
            self.emit(EventType::Overflow, &root, true);
            self.resync();
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            self.forget_wd(raw.wd);
            if raw.wd == self.root_wd {
                self.end_root();
            }
            return;
        }
        let Some(dir) = self.by_wd.get(&raw.wd).map(|(_, p)| p.clone()) else { return };
        let Some(name) = raw.name else {
            // About the watched directory itself; a subdirectory's parent reports it instead.
            if raw.wd == self.root_wd
                && mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::UNMOUNT)
            {
                self.end_root();
            }
            return;
        };
        let path = dir.join(name);
        let is_dir = mask.contains(EventMask::ISDIR);
        // Inside a directory whose MOVED_FROM waits for its partner: the directory's kernel
        // watches still carry its old path. Left to the move (a rename re-scans nothing, a move
        // out drops the subtree).
        if self.moves.iter().any(|m| m.is_dir && path.starts_with(&m.path) && path != m.path) {
            return;
        }
        if mask.contains(EventMask::CREATE) {
            self.on_create(path, is_dir);
        } else if mask.contains(EventMask::MODIFY) {
            if !is_dir && !self.exclude.excludes(&path) {
                self.mods.entry(path).or_insert_with(|| Instant::now() + COALESCE);
            }
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            if self.mods.contains_key(&path) {
                match self.recent.get(&path) {
                    // Within the window of the last one: goes out at its end.
                    Some(last) if *last + COALESCE > Instant::now() => {
                        let due = *last + COALESCE;
                        self.mods.insert(path, due);
                    }
                    _ => {
                        self.mods.remove(&path);
                        self.emit_modify(path);
                    }
                }
            }
        } else if mask.contains(EventMask::DELETE) {
            if !self.exclude.excludes(&path) {
                self.scanned.remove(&path);
                self.mods.remove(&path);
                self.emit(EventType::Delete, &path, is_dir);
            }
        } else if mask.contains(EventMask::MOVED_FROM) {
            // A held modify goes out before the path changes name.
            if self.mods.remove(&path).is_some() {
                self.emit_modify(path.clone());
            }
            self.scanned.remove(&path);
            let excluded = self.exclude.excludes(&path);
            self.moves.push(PendingMove { cookie: raw.cookie, path, is_dir, excluded, at: Instant::now() });
        } else if mask.contains(EventMask::MOVED_TO) {
            self.on_moved_to(raw.cookie, path, is_dir);
        }
    }

    fn on_create(&mut self, path: PathBuf, is_dir: bool) {
        if self.exclude.excludes(&path) || self.scanned.remove(&path) {
            return;
        }
        self.emit(EventType::Create, &path, is_dir);
        if is_dir && self.recursive {
            self.watch_new_dir(&path);
        }
    }

    fn on_moved_to(&mut self, cookie: u32, path: PathBuf, is_dir: bool) {
        let from = self.moves.iter().position(|m| m.cookie == cookie).map(|i| self.moves.remove(i));
        let Some(from) = from else {
            // Moved in from outside the tree.
            return self.on_create(path, is_dir);
        };
        match (from.excluded, self.exclude.excludes(&path)) {
            (false, false) => {
                let mut ev = WatchEvent::new(EventType::Rename, lossy(&path), is_dir);
                ev.old_path = Some(lossy(&from.path));
                self.push(ev);
                if is_dir && self.recursive {
                    if self.by_path.contains_key(&from.path) {
                        self.rekey(&from.path, &path);
                    } else {
                        // Renamed before its creation was handled (so never watched): watch it
                        // now and report what is inside.
                        self.watch_new_dir(&path);
                    }
                }
            }
            (false, true) => {
                self.emit(EventType::Delete, &from.path, is_dir);
                if is_dir {
                    self.unwatch_tree(&from.path);
                }
            }
            (true, false) => self.on_create(path, is_dir),
            (true, true) => {}
        }
    }

    /// A new directory under a recursive watch: watch it and what is already inside, reporting
    /// the contents. A kernel limit hit here is an `overflow` (the client cannot trust the tree).
    fn watch_new_dir(&mut self, dir: &Path) {
        let added = match self.add_one(dir) {
            Ok(true) => self.add_subtrees(dir, true),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(LimitReached(e)) = added {
            tracing::warn!(dir = %dir.display(), error = %e, "watch: kernel watch limit reached");
            self.emit(EventType::Overflow, dir, true);
        }
    }

    /// One kernel watch on `dir` (not following a symlink). A directory that vanished or cannot
    /// be read is skipped; a kernel limit is an error.
    fn add_one(&mut self, dir: &Path) -> Result<bool, LimitReached> {
        match self.inotify.watches().add(dir, dir_mask() | WatchMask::DONT_FOLLOW) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                self.by_path.insert(dir.to_path_buf(), id);
                self.by_wd.insert(id, (wd, dir.to_path_buf()));
                Ok(true)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::ENOMEM)) => Err(LimitReached(e)),
            Err(_) => Ok(false),
        }
    }

    /// Watches every directory below `dir` (already watched), depth first; with `report`, every
    /// entry found is reported as `create` (once, see `scanned`).
    fn add_subtrees(&mut self, dir: &Path, report: bool) -> Result<(), LimitReached> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            let mut subdirs = Vec::new();
            for entry in entries.flatten() {
                let path = entry.path();
                if self.exclude.excludes(&path) {
                    continue;
                }
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && PSEUDO_FS.iter().any(|p| path == Path::new(p)) {
                    continue;
                }
                if report && self.scanned.insert(path.clone()) {
                    self.emit(EventType::Create, &path, is_dir);
                }
                if is_dir {
                    subdirs.push(path);
                }
            }
            for sub in subdirs {
                if self.add_one(&sub)? {
                    stack.push(sub);
                }
            }
        }
        Ok(())
    }

    /// After a queue overflow: forget pending state and make the kernel watches match the tree
    /// again (new directories watched, watches of directories no longer in it removed).
    fn resync(&mut self) {
        self.moves.clear();
        self.mods.clear();
        self.recent.clear();
        self.scanned.clear();
        if !self.recursive {
            return;
        }
        let old = std::mem::take(&mut self.by_wd);
        self.by_path.clear();
        if let Some(root) = old.get(&self.root_wd).cloned() {
            self.by_path.insert(self.root.clone(), self.root_wd);
            self.by_wd.insert(self.root_wd, root);
        }
        let root = self.root.clone();
        if let Err(LimitReached(e)) = self.add_subtrees(&root, false) {
            tracing::warn!(error = %e, "watch: kernel watch limit reached while resyncing");
            self.emit(EventType::Overflow, &root, true);
        }
        for (id, (wd, _)) in old {
            if !self.by_wd.contains_key(&id) {
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    /// Directory paths at or below `prefix`, with their watch ids.
    fn subtree(&self, prefix: &Path) -> Vec<(PathBuf, i32)> {
        self.by_path
            .range(prefix.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(prefix))
            .map(|(p, id)| (p.clone(), *id))
            .collect()
    }

    /// A directory renamed inside the tree: its kernel watches stay, their paths change.
    fn rekey(&mut self, old: &Path, new: &Path) {
        for (p, id) in self.subtree(old) {
            self.by_path.remove(&p);
            let moved = match p.strip_prefix(old) {
                Ok(rest) if !rest.as_os_str().is_empty() => new.join(rest),
                _ => new.to_path_buf(),
            };
            if let Some(entry) = self.by_wd.get_mut(&id) {
                entry.1 = moved.clone();
            }
            self.by_path.insert(moved, id);
        }
    }

    /// A directory left the tree (moved out or into an excluded place): drop its kernel watches.
    fn unwatch_tree(&mut self, dir: &Path) {
        for (p, id) in self.subtree(dir) {
            self.by_path.remove(&p);
            if let Some((wd, _)) = self.by_wd.remove(&id) {
                let _ = self.inotify.watches().remove(wd);
            }
        }
    }

    fn forget_wd(&mut self, id: i32) {
        if let Some((_, p)) = self.by_wd.remove(&id) {
            if self.by_path.get(&p) == Some(&id) {
                self.by_path.remove(&p);
            }
        }
    }

    fn end_root(&mut self) {
        if !self.ended {
            let root = self.root.clone();
            self.emit(EventType::Delete, &root, true);
            self.ended = true;
        }
    }

    /// Moves that found no partner in time left the tree; held modifies whose window closed go
    /// out.
    fn expire(&mut self, now: Instant) {
        if self.moves.iter().any(|m| m.at + MOVE_WAIT <= now) {
            let (due, keep): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.moves).into_iter().partition(|m| m.at + MOVE_WAIT <= now);
            self.moves = keep;
            for m in due.into_iter().filter(|m| !m.excluded) {
                self.emit(EventType::Delete, &m.path, m.is_dir);
                if m.is_dir {
                    self.unwatch_tree(&m.path);
                }
            }
        }
        if self.mods.values().any(|due| *due <= now) {
            let mut due: Vec<(PathBuf, Instant)> =
                self.mods.iter().filter(|(_, due)| **due <= now).map(|(p, t)| (p.clone(), *t)).collect();
            due.sort_by_key(|(_, t)| *t);
            for (p, _) in due {
                self.mods.remove(&p);
                self.emit_modify(p);
            }
        }
        self.recent.retain(|_, last| *last + COALESCE > now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let moves = self.moves.iter().map(|m| m.at + MOVE_WAIT);
        moves.chain(self.mods.values().copied()).min()
    }

    fn emit_modify(&mut self, path: PathBuf) {
        self.emit(EventType::Modify, &path, false);
        self.recent.insert(path, Instant::now());
    }

    fn emit(&mut self, kind: EventType, path: &Path, is_dir: bool) {
        self.push(WatchEvent::new(kind, lossy(path), is_dir));
    }

    fn push(&mut self, ev: WatchEvent) {
        self.out.push(ev);
        if self.out.len() >= PUBLISH_BATCH {
            self.publish();
        }
    }

    /// Hands the pending events to the ring and wakes the readers.
    fn publish(&mut self) {
        self.shared.kernel_watches.store(self.by_wd.len(), std::sync::atomic::Ordering::Relaxed);
        if !self.out.is_empty() {
            self.shared.publish(&mut self.out);
        }
    }
}

fn limit_error(e: &io::Error) -> WatchError {
    WatchError::KernelLimit(format!(
        "inotify watch limit reached (fs.inotify.max_user_watches = {}): {e}",
        read_limit("max_user_watches")
    ))
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x40_exclude_globs() {
        let globs: Vec<String> = ["node_modules/**", "*.log", "**/.git/**"].iter().map(|s| s.to_string()).collect();
        let ex = Exclude::new(Path::new("/w"), &globs).unwrap();
        for (p, want) in [
            ("/w", false),
            ("/w/node_modules", true),
            ("/w/node_modules/x/y.js", true),
            ("/w/src/node_modules", false),
            ("/w/a.log", true),
            ("/w/d/a.log", true),
            ("/w/.git", true),
            ("/w/sub/.git/HEAD", true),
            ("/w/src/main.rs", false),
            ("/other/a.log", false),
        ] {
            assert_eq!(ex.excludes(Path::new(p)), want, "{p}");
        }
        assert!(matches!(Exclude::new(Path::new("/w"), &["a[".to_string()]), Err(WatchError::Invalid(_))));
        assert!(matches!(Exclude::new(Path::new("/w"), &[String::new()]), Err(WatchError::Invalid(_))));
    }
}
