//! The event model of a watch and its bounded ring: [`WatchEvent`] (what `/events` streams),
//! [`Ring`] (the last N events, bounded by count and by path bytes, with sequence numbers that
//! never repeat), and [`Changes`] (X42: the events after a cursor folded per path). Pure: no
//! kernel, no I/O, table-tested here.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Create,
    Modify,
    Delete,
    Rename,
    /// Events were lost (kernel queue overflow, a resume from before the ring, a directory that
    /// could not be watched): the client rescans.
    Overflow,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Create => "create",
            EventType::Modify => "modify",
            EventType::Delete => "delete",
            EventType::Rename => "rename",
            EventType::Overflow => "overflow",
        }
    }
}

/// One event of a watch (X41). Paths are absolute, under the watched directory (non-UTF-8 bytes
/// replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEvent {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub is_dir: bool,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

impl WatchEvent {
    /// An event without a sequence number yet ([`Ring::push`] gives it one).
    pub fn new(kind: EventType, path: String, is_dir: bool) -> WatchEvent {
        WatchEvent { seq: 0, kind, path, old_path: None, is_dir, timestamp: now_ms() }
    }

    fn cost(&self) -> usize {
        EVENT_OVERHEAD + self.path.len() + self.old_path.as_ref().map_or(0, String::len)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Bytes counted per event besides its paths (the struct and the deque slot, roughly).
const EVENT_OVERHEAD: usize = 96;

/// What a reader gets from [`Ring::read_after`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadOut {
    /// Events after the cursor were evicted before this read: everything up to and including
    /// this sequence number is lost (the reader is told with one `overflow`).
    pub lost_up_to: Option<u64>,
    pub events: Vec<WatchEvent>,
}

/// The last events of a watch, at most `max_events` of them and at most `max_bytes` of paths.
/// Sequence numbers start at 1 and increase by one per event; cursor 0 means "nothing yet".
#[derive(Debug)]
pub struct Ring {
    events: VecDeque<WatchEvent>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Sequence number of the last event pushed (0: none).
    last: u64,
    /// Set when the watch ended (watched directory gone, watch deleted, shutdown).
    pub ended: bool,
}

impl Ring {
    pub fn new(max_events: usize, max_bytes: usize) -> Ring {
        Ring { events: VecDeque::new(), bytes: 0, max_events: max_events.max(1), max_bytes, last: 0, ended: false }
    }

    /// The sequence number of the newest event (0 when none).
    pub fn cursor(&self) -> u64 {
        self.last
    }

    /// Sequence number of the oldest event still held (`last + 1` when empty).
    fn first(&self) -> u64 {
        self.events.front().map_or(self.last + 1, |e| e.seq)
    }

    /// Appends `ev` with the next sequence number, evicting the oldest events beyond the bounds.
    pub fn push(&mut self, mut ev: WatchEvent) -> u64 {
        self.last += 1;
        ev.seq = self.last;
        self.bytes += ev.cost();
        self.events.push_back(ev);
        while self.events.len() > self.max_events || (self.bytes > self.max_bytes && self.events.len() > 1) {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.cost();
            }
        }
        self.last
    }

    /// Up to `max` events with a sequence number above `after`, oldest first. `after` must not be
    /// above [`Ring::cursor`] (callers check).
    pub fn read_after(&self, after: u64, max: usize) -> ReadOut {
        let first = self.first();
        let lost_up_to = (after + 1 < first).then(|| first - 1);
        let start = after.max(first - 1);
        // Sequence numbers are contiguous in the deque: index = seq - first.
        let skip = (start + 1 - first) as usize;
        let events = self.events.iter().skip(skip).take(max).cloned().collect();
        ReadOut { lost_up_to, events }
    }

    /// Every held event after `after`, folded per path (X42).
    pub fn changes(&self, after: u64) -> Changes {
        let out = self.read_after(after, usize::MAX);
        let mut c = Changes { cursor: self.last, overflow: out.lost_up_to.is_some(), ..Changes::default() };
        for ev in &out.events {
            c.apply(ev);
        }
        c
    }
}

/// X42: what changed after a cursor, one entry per path. A path created and then deleted in the
/// window appears nowhere; deleted and then created again is `modified`; a rename is a delete of
/// the old path and a create of the new one.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub cursor: u64,
    pub created: BTreeSet<String>,
    pub modified: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
    pub overflow: bool,
}

impl Changes {
    fn apply(&mut self, ev: &WatchEvent) {
        match ev.kind {
            EventType::Create => self.created_path(&ev.path),
            EventType::Modify => {
                if !self.created.contains(&ev.path) {
                    self.modified.insert(ev.path.clone());
                }
            }
            EventType::Delete => self.deleted_path(&ev.path),
            EventType::Rename => {
                if let Some(old) = &ev.old_path {
                    self.deleted_path(old);
                }
                self.created_path(&ev.path);
            }
            EventType::Overflow => self.overflow = true,
        }
    }

    fn created_path(&mut self, p: &str) {
        if self.deleted.remove(p) {
            self.modified.insert(p.to_string());
        } else if !self.modified.contains(p) {
            self.created.insert(p.to_string());
        }
    }

    fn deleted_path(&mut self, p: &str) {
        if self.created.remove(p) {
            return;
        }
        self.modified.remove(p);
        self.deleted.insert(p.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventType, path: &str) -> WatchEvent {
        WatchEvent::new(kind, path.to_string(), false)
    }

    fn rename(old: &str, new: &str) -> WatchEvent {
        let mut e = ev(EventType::Rename, new);
        e.old_path = Some(old.to_string());
        e
    }

    #[test]
    fn x41_ring_numbers_evicts_and_reports_loss() {
        let mut r = Ring::new(3, usize::MAX);
        assert_eq!(r.read_after(0, 10), ReadOut::default());
        for i in 0..5 {
            assert_eq!(r.push(ev(EventType::Create, &format!("/f{i}"))), i + 1);
        }
        assert_eq!(r.cursor(), 5);
        let out = r.read_after(0, 10);
        assert_eq!(out.lost_up_to, Some(2));
        assert_eq!(out.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        let out = r.read_after(2, 10);
        assert_eq!(out.lost_up_to, None);
        assert_eq!(out.events.len(), 3);
        let out = r.read_after(3, 1);
        assert_eq!(out.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
        assert!(r.read_after(5, 10).events.is_empty());
    }

    #[test]
    fn x41_ring_is_bounded_by_bytes() {
        let mut r = Ring::new(1000, 10 * (EVENT_OVERHEAD + 10));
        for i in 0..100 {
            r.push(ev(EventType::Create, &format!("/{i:09}")));
        }
        assert_eq!(r.events.len(), 10);
        assert_eq!(r.read_after(0, 100).lost_up_to, Some(90));
        // One event larger than the budget is still kept (alone).
        r.push(ev(EventType::Create, &"x".repeat(10_000)));
        assert_eq!(r.events.len(), 1);
    }

    #[test]
    fn x42_changes_fold_per_path() {
        let mut r = Ring::new(100, usize::MAX);
        for e in [
            ev(EventType::Create, "/a"),
            ev(EventType::Modify, "/a"),
            ev(EventType::Modify, "/b"),
            ev(EventType::Create, "/tmp1"),
            ev(EventType::Delete, "/tmp1"),
            ev(EventType::Delete, "/c"),
            ev(EventType::Create, "/c"),
            ev(EventType::Modify, "/d"),
            ev(EventType::Delete, "/d"),
            rename("/e", "/f"),
            rename("/a", "/g"),
        ] {
            r.push(e);
        }
        let c = r.changes(0);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(c.cursor, 11);
        assert_eq!(c.created, set(&["/f", "/g"]));
        assert_eq!(c.modified, set(&["/b", "/c"]));
        assert_eq!(c.deleted, set(&["/d", "/e"]));
        assert!(!c.overflow);
        let c = r.changes(9);
        assert_eq!(c.created, set(&["/f", "/g"]));
        assert_eq!(c.deleted, set(&["/a", "/e"]));
        let mut small = Ring::new(2, usize::MAX);
        for i in 0..4 {
            small.push(ev(EventType::Create, &format!("/{i}")));
        }
        assert!(small.changes(0).overflow);
        assert!(!small.changes(2).overflow);
    }

    #[test]
    fn x41_event_json_shape() {
        let mut e = rename("/w/a", "/w/b");
        e.seq = 7;
        e.timestamp = 1;
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq":7,"type":"rename","path":"/w/b","old_path":"/w/a","is_dir":false,"timestamp":1})
        );
        let v = serde_json::to_value(ev(EventType::Overflow, "/w")).unwrap();
        assert!(v.get("old_path").is_none());
    }
}
