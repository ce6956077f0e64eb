//! The operating-system surface the domain modules share, written once: pidfds ([`pidfd`]),
//! process scans over `/proc` ([`proc`]) and the account files ([`accounts`]). No HTTP, no domain
//! types: plain values in, plain values (or `std::io::Error`) out.

pub mod accounts;
pub mod pidfd;
pub mod proc;

/// This boot's id (`/proc/sys/kernel/random/boot_id`): state written in the same boot survived
/// at most a process restart, so what was in the page cache then is still there. Read once (a
/// boot does not change under a running process; it was read per command and per tus chunk).
pub fn boot_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string()))
        .clone()
}
