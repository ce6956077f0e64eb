//! The command inventory (EXTENSIONS X53, upstream opensandbox-group/OpenSandbox PR #1309): a
//! bounded, paginated list of the commands the registry holds (running, and finished ones still
//! retained by D12), for a client that lost its ids.
//!
//! Order is `started_at` descending, then `id` descending. The cursor is a keyset position (the
//! last item's `started_at` and `id`), so a page never repeats or skips an item because another
//! command started or an old one was evicted meanwhile: new commands sort before the position,
//! evicted ones simply vanish. The cursor is opaque to clients, and bound to the `running` filter
//! and to this process (a cursor from another filter or an earlier execd is refused, as upstream).
//! No command text, environment or output is listed.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{CommandManager, CommandStatus};

/// Page size when the client names none (upstream: 50).
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page a client may ask for (upstream: 1..=100, larger is refused, not clamped).
pub const MAX_LIMIT: usize = 100;
/// Longest cursor accepted; ours are far shorter (a keyset position and two short tags).
const MAX_CURSOR_LEN: usize = 512;
const CURSOR_VERSION: &str = "c1";

/// Which commands to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningFilter {
    /// No `running` parameter: running and finished.
    All,
    /// `running=true`.
    Running,
    /// `running=false`: finished (any outcome).
    Finished,
}

impl RunningFilter {
    fn tag(self) -> &'static str {
        match self {
            RunningFilter::All => "all",
            RunningFilter::Running => "running",
            RunningFilter::Finished => "finished",
        }
    }

    fn admits(self, running: bool) -> bool {
        match self {
            RunningFilter::All => true,
            RunningFilter::Running => running,
            RunningFilter::Finished => !running,
        }
    }
}

/// One inventory request.
#[derive(Debug, Clone)]
pub struct InventoryQuery {
    pub filter: RunningFilter,
    pub limit: usize,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page. Each status has its `content` emptied: the inventory never carries command text.
#[derive(Debug)]
pub struct InventoryPage {
    pub commands: Vec<CommandStatus>,
    pub limit: usize,
    /// Present when more commands follow this page.
    pub next_cursor: Option<String>,
}

/// Why a request was refused (all are the client's fault).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    #[error("limit must be between 1 and {MAX_LIMIT}, got {0}")]
    Limit(usize),
    #[error("cursor is not valid: {0}")]
    Cursor(&'static str),
}

/// A keyset position: the last listed command.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    started_ns: u128,
    id: String,
}

impl Position {
    /// Whether `(started_ns, id)` comes after this position in the listing order.
    fn precedes(&self, started_ns: u128, id: &str) -> bool {
        started_ns < self.started_ns || (started_ns == self.started_ns && id < self.id.as_str())
    }
}

/// A random tag for this process: cursors of an earlier execd (or another sandbox) are refused.
fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string())
}

fn encode_cursor(filter: RunningFilter, pos: &Position) -> String {
    let raw = format!("{CURSOR_VERSION}.{}.{}.{}.{}", instance(), filter.tag(), pos.started_ns, pos.id);
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(filter: RunningFilter, cursor: &str) -> Result<Position, InventoryError> {
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_LEN {
        return Err(InventoryError::Cursor("malformed"));
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| InventoryError::Cursor("malformed"))?;
    let raw = String::from_utf8(raw).map_err(|_| InventoryError::Cursor("malformed"))?;
    // The id is last and may itself contain dots.
    let mut parts = raw.splitn(5, '.');
    let (Some(version), Some(inst), Some(tag), Some(ns), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InventoryError::Cursor("malformed"));
    };
    if version != CURSOR_VERSION {
        return Err(InventoryError::Cursor("malformed"));
    }
    if inst != instance() {
        return Err(InventoryError::Cursor("issued by another execd process; restart without a cursor"));
    }
    if tag != filter.tag() {
        return Err(InventoryError::Cursor("issued for another running filter; keep the filter across pages"));
    }
    let started_ns = ns.parse::<u128>().map_err(|_| InventoryError::Cursor("malformed"))?;
    if id.is_empty() {
        return Err(InventoryError::Cursor("malformed"));
    }
    Ok(Position { started_ns, id: id.to_string() })
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl CommandManager {
    /// One page of the inventory (see the module docs for order and cursor).
    pub fn inventory(&self, q: &InventoryQuery) -> Result<InventoryPage, InventoryError> {
        if q.limit == 0 || q.limit > MAX_LIMIT {
            return Err(InventoryError::Limit(q.limit));
        }
        let after = q.cursor.as_deref().map(|c| decode_cursor(q.filter, c)).transpose()?;
        // Keys only (no content cloned); the registry lock is held just for the snapshot.
        let mut keyed: Vec<(u128, std::sync::Arc<super::Entry>)> = self
            .inner
            .registry
            .snapshot()
            .into_iter()
            .filter(|e| q.filter.admits(e.child().is_some()))
            .map(|e| (nanos(e.started_at), e))
            .filter(|(ns, e)| after.as_ref().is_none_or(|p| p.precedes(*ns, &e.id)))
            .collect();
        keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id.cmp(&a.1.id)));
        let more = keyed.len() > q.limit;
        keyed.truncate(q.limit);
        let next_cursor = match keyed.last() {
            Some((ns, e)) if more => Some(encode_cursor(q.filter, &Position { started_ns: *ns, id: e.id.clone() })),
            _ => None,
        };
        let commands = keyed
            .into_iter()
            .map(|(_, e)| {
                let mut st = e.status();
                st.content = String::new();
                // A command may finish between the filter and here; the filter wins for this page.
                st
            })
            .collect();
        Ok(InventoryPage { commands, limit: q.limit, next_cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x53_cursor_round_trip_and_binding() {
        let pos = Position { started_ns: 1_700_000_000_123_456_789, id: "a.b-c".into() };
        let c = encode_cursor(RunningFilter::Running, &pos);
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{c}");
        assert_eq!(decode_cursor(RunningFilter::Running, &c), Ok(pos.clone()));
        assert!(
            matches!(decode_cursor(RunningFilter::All, &c), Err(InventoryError::Cursor(m)) if m.contains("filter"))
        );
        assert!(decode_cursor(RunningFilter::Running, "!!").is_err());
        assert!(decode_cursor(RunningFilter::Running, "").is_err());
        assert!(decode_cursor(RunningFilter::Running, &"A".repeat(600)).is_err());
        let other = URL_SAFE_NO_PAD.encode("c1.000000000000.running.5.x");
        assert!(
            matches!(decode_cursor(RunningFilter::Running, &other), Err(InventoryError::Cursor(m)) if m.contains("process"))
        );
    }

    #[test]
    fn x53_keyset_order() {
        let p = Position { started_ns: 10, id: "m".into() };
        assert!(p.precedes(9, "z"));
        assert!(p.precedes(10, "a"));
        assert!(!p.precedes(10, "m"));
        assert!(!p.precedes(10, "n"));
        assert!(!p.precedes(11, "a"));
    }
}
