//! What this execd offers on this machine (EXTENSIONS X2): one key per extension, with a value
//! saying whether it is usable here (`true`/`false`) or which variants are (a string or a list).
//! Clients branch on these keys, never on versions. `api::capabilities` serves them.
//!
//! Each domain contributes its keys through one small function in [`PROVIDERS`]; an extension that
//! lands adds (or fills in) its domain's function. Keys of extensions that do not exist yet are
//! reported as unavailable (`false`, `"none"`, `[]`), so a client can tell "absent" from "unknown".
//! Machine probes are cheap and run once per process.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// One domain's keys.
pub type Provider = fn() -> Vec<(&'static str, Value)>;

/// Every domain's contribution, in the order they appear in the answer (keys are sorted anyway).
pub const PROVIDERS: &[Provider] =
    &[command, files, pty, proxy, isolation_and_limits, platform, lifetime, observability, terminal];

/// The `features` object: every provider's keys. A key given twice is a programming error
/// (debug builds panic); the later one wins.
pub fn features() -> Map<String, Value> {
    let mut out = Map::new();
    for provider in PROVIDERS {
        for (key, value) in provider() {
            let previous = out.insert(key.to_string(), value);
            debug_assert!(previous.is_none(), "capability {key} given twice");
        }
    }
    out
}

/// Commands: `argv` (newer upstream contract), the resumable event stream (DECISIONS D11).
/// `stdin` (X10–X12), `signal` (X14), the bounded `output` view (X16) and WebSocket exec (X15;
/// `tty`: whether `"tty":true` gives the command a PTY, i.e. whether one can be opened here).
fn command() -> Vec<(&'static str, Value)> {
    vec![
        ("argv", json!(true)),
        ("command_events", json!(true)),
        ("stdin", json!(true)),
        // X10 on `POST /session/{id}/run`: what its `stdin` takes (no open pipe there).
        ("session_stdin", json!(["string"])),
        ("command_signal", json!(true)),
        ("command_output", json!(true)),
        ("command_ws", json!({"tty": pty_usable()})),
    ]
}

/// Files: line ranges on downloads (upstream 1.0.19), per-identity routes (issue #24 part 4)
/// where execd may switch credentials, directory archives both ways (X30, X31), content search
/// (X32), resumable and digest-checked uploads (X33, X34), file watches (X40) where inotify works.
fn files() -> Vec<(&'static str, Value)> {
    vec![
        ("line_ranges", json!(true)),
        ("identity_files", json!(can_switch_credentials())),
        ("archive", json!(crate::fs::archive::Format::ALL.map(|f| f.as_str()))),
        ("grep", json!(true)),
        ("tus", json!({"version": crate::fs::tus::TUS_VERSION, "extensions": crate::fs::tus::TUS_EXTENSIONS})),
        ("upload_raw", json!(true)),
        ("watch", json!(crate::watch::available())),
    ]
}

/// `/pty`: usable when a pseudo-terminal can be opened (pipe mode works without one, but the
/// route's point is a terminal).
fn pty() -> Vec<(&'static str, Value)> {
    vec![("pty", json!(pty_usable()))]
}

fn proxy() -> Vec<(&'static str, Value)> {
    vec![("proxy", json!(true))]
}

/// cgroups per command (X20–X23): the mode detected at startup (`"v2"`, `"v1"` or `"none"`) and
/// the limits a request may ask for (X23).
fn isolation_and_limits() -> Vec<(&'static str, Value)> {
    let c = crate::cgroup::capabilities();
    vec![("cgroup", json!(c.cgroup)), ("limits", json!(c.limits))]
}

/// Process-level features: acting as init (X51, true when `--init` runs this execd), and the
/// architecture this binary was built for (X55: `x86_64`, `aarch64`).
fn platform() -> Vec<(&'static str, Value)> {
    vec![("init", json!(crate::init::active())), ("arch", json!(std::env::consts::ARCH))]
}

/// Lifetime and operations (X50–X53): `init` (above, with the platform keys), `GET /ready`, the
/// `GET /command` inventory, and restart survival of records, journals and sessions.
fn lifetime() -> Vec<(&'static str, Value)> {
    vec![("ready", json!(true)), ("command_inventory", json!(true)), ("restart_survival", json!(true))]
}

/// Observability (X60–X62): `/metrics/prometheus` always; the audit log when `--audit-log` is
/// set (`AUDIT_LOG` is filled at startup); OpenTelemetry export when configured and started (`OTEL`).
fn observability() -> Vec<(&'static str, Value)> {
    let audit = AUDIT_LOG.get().copied().unwrap_or(false);
    vec![
        ("prometheus", json!(true)),
        ("audit_log", json!(audit)),
        ("otel", json!(OTEL.get().copied().unwrap_or(false))),
    ]
}

/// Whether OTLP export was configured and started (set once at startup, X60).
pub static OTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether this process writes an audit log (set once by `AppState::new`).
pub static AUDIT_LOG: OnceLock<bool> = OnceLock::new();

/// The browser terminal `GET /terminal` (X70): whether this build embeds xterm.js.
fn terminal() -> Vec<(&'static str, Value)> {
    vec![("terminal", json!(crate::pty::web_assets::embedded()))]
}

/// Whether a pseudo-terminal can be opened here (checked once).
fn pty_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        use crate::process::tty::{open_pty, DEFAULT_COLS, DEFAULT_ROWS};
        open_pty(DEFAULT_COLS, DEFAULT_ROWS).is_ok()
    })
}

/// CAP_SETUID and CAP_SETGID (bits 7 and 6) in the effective set: execd may act as another
/// uid/gid. Read from `/proc/self/status` once; unreadable means no.
fn can_switch_credentials() -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    *CAN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status").ok().and_then(|s| effective_caps(&s)).is_some_and(|caps| {
            const SETGID: u64 = 1 << 6;
            const SETUID: u64 = 1 << 7;
            caps & (SETGID | SETUID) == SETGID | SETUID
        })
    })
}

/// The `CapEff:` hex mask of a `/proc/<pid>/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x2_every_key_once_and_known_values() {
        let f = features();
        for key in [
            "argv",
            "line_ranges",
            "identity_files",
            "grep",
            "pty",
            "proxy",
            "cgroup",
            "stdin",
            "command_ws",
            "watch",
            "init",
            "arch",
            "otel",
        ] {
            assert!(f.contains_key(key), "{key} missing from {f:?}");
        }
        assert!(["v2", "v1", "none"].contains(&f["cgroup"].as_str().unwrap()), "{f:?}");
        assert!(f["limits"].is_array());
        assert_eq!(f["archive"], json!(["tar", "tar.gz", "tar.zst", "zip"]));
        let total: usize = PROVIDERS.iter().map(|p| p().len()).sum();
        assert_eq!(total, f.len(), "a key is given by two providers");
    }

    #[test]
    fn x2_effective_caps_parse() {
        assert_eq!(effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n"), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(effective_caps("CapPrm:\t00\n"), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }
}
