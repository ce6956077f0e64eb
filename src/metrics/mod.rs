//! System metrics for `GET /metrics` and `/metrics/watch` (§8, DECISIONS D40): the [`Metrics`]
//! record, [`MetricsError`], the background CPU [`MetricsSampler`], and the `/proc` + cgroup v2
//! readers in [`source`]. No HTTP here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

mod sampler;
pub mod source;

pub use sampler::MetricsSampler;
pub use source::SysRoot;

/// One metrics record, as sent on the wire. Every figure satisfies C140's ranges:
/// `cpu_count >= 1`, `0 <= cpu_used_pct <= 100`, `mem_total_mib > 0`, `0 <= mem_used_mib <= mem_total_mib`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// CPUs available: `ceil(cpu.max quota / period)` under a cgroup v2 limit, else the host's.
    pub cpu_count: f64,
    /// Busy percentage of those CPUs over the last (about) one second window.
    pub cpu_used_pct: f64,
    pub mem_total_mib: f64,
    pub mem_used_mib: f64,
    /// Unix milliseconds when the record was assembled.
    pub timestamp: i64,
}

/// Why metrics could not be collected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cannot parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("no CPU sample within {0:?}")]
    Timeout(Duration),
    #[error("execd is shutting down")]
    ShuttingDown,
}
