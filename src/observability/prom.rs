//! The metrics behind `GET /metrics/prometheus` (EXTENSIONS X61): duration histograms fed by the
//! API layer and the execution hook, and the text exposition format (version 0.0.4) they render to.
//!
//! Names follow upstream's OpenTelemetry instruments (reference §13) translated the way the
//! OpenTelemetry → Prometheus compatibility rules translate them: dots become underscores, the
//! unit becomes a suffix (`ms` → `_milliseconds`, `%` → `_percent`, bytes already end in
//! `_bytes`), counters end in `_total`. Label names are the OTel attribute names.
//!
//! Memory is bounded: each histogram family keeps at most [`MAX_SERIES`] label sets; a sample
//! for a new label set beyond that is counted in `execd_metrics_series_dropped_total` instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (milliseconds) of the histogram buckets: 1 ms to 10 minutes.
pub const BUCKETS_MS: [f64; 16] =
    [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 600000.0];

/// Label sets kept per histogram family.
pub const MAX_SERIES: usize = 512;

/// One label set's observations.
#[derive(Debug, Clone, Default)]
struct Series {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; BUCKETS_MS.len() + 1],
    count: u64,
    sum_ms: f64,
}

/// A histogram family: name, help text, label names, and its series.
struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// A std mutex: held for a map lookup and a few additions, never across an await.
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl Family {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
        Family { name, help, labels, series: Mutex::new(BTreeMap::new()) }
    }

    /// Adds one observation; false when the label set is new and the family is full.
    fn observe(&self, values: &[&str], d: Duration) -> bool {
        debug_assert_eq!(values.len(), self.labels.len());
        let ms = d.as_secs_f64() * 1000.0;
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let len = map.len();
        let series = match map.get_mut(&key) {
            Some(s) => s,
            None if len >= MAX_SERIES => return false,
            None => map.entry(key).or_default(),
        };
        let slot = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len());
        series.buckets[slot] += 1;
        series.count += 1;
        series.sum_ms += ms;
        true
    }

    fn render(&self, out: &mut String, constant: &[(String, String)]) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (values, s) in &map {
            let pairs: Vec<(&str, &str)> = constant
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(self.labels.iter().copied().zip(values.iter().map(String::as_str)))
                .collect();
            let mut cumulative = 0;
            for (i, n) in s.buckets.iter().enumerate() {
                cumulative += n;
                let le = BUCKETS_MS.get(i).map(|b| format_value(*b)).unwrap_or_else(|| "+Inf".into());
                let mut with_le = pairs.clone();
                with_le.push(("le", &le));
                let _ = writeln!(out, "{}_bucket{} {cumulative}", self.name, label_set(&with_le));
            }
            let _ = writeln!(out, "{}_sum{} {}", self.name, label_set(&pairs), format_value(s.sum_ms));
            let _ = writeln!(out, "{}_count{} {}", self.name, label_set(&pairs), s.count);
        }
    }
}

/// Which histogram an observation went to (for the OpenTelemetry sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramKind {
    Http,
    Execution,
    Filesystem,
}

/// Another consumer of every histogram observation: (which, label names, values, duration).
pub type Sink = Box<dyn Fn(HistogramKind, &'static [&'static str], &[&str], Duration) + Send + Sync>;

/// Every metric execd accumulates itself (gauges read at scrape time come in a [`Snapshot`]).
pub struct Registry {
    http: Family,
    execution: Family,
    filesystem: Family,
    series_dropped: AtomicU64,
    /// Audit lines that could not be written (disk full, file removed and not re-creatable).
    pub audit_write_errors: AtomicU64,
    /// Audit lines written.
    pub audit_lines: AtomicU64,
    /// Attributes on every sample: `sandbox_id` (`OPENSANDBOX_ID`) and the pairs of
    /// `OPENSANDBOX_EXECD_METRICS_EXTRA_ATTRS`, as upstream puts on every point.
    constant: Vec<(String, String)>,
    /// OpenTelemetry export (X60), when started.
    sink: std::sync::OnceLock<Sink>,
}

/// Readings taken when `/metrics/prometheus` is scraped.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// `GET /metrics`' record: busy CPU percentage and memory in use (None: could not be read).
    pub cpu_used_pct: Option<f64>,
    pub cpu_count: Option<f64>,
    pub mem_used_bytes: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    /// Processes visible in `/proc`.
    pub process_count: Option<u64>,
    /// Bytes received and sent on every interface but `lo`.
    pub network_in_bytes: Option<u64>,
    pub network_out_bytes: Option<u64>,
    /// Established TCP connections and open UDP sockets.
    pub tcp_connections: Option<u64>,
    pub udp_connections: Option<u64>,
    /// Commands known to execd (running and retained finished ones).
    pub commands_tracked: u64,
    /// Extra counters and gauges from other parts (OpenTelemetry export), rendered as given.
    pub extra: Vec<ExtraMetric>,
}

/// A counter or gauge contributed by another part (name already in Prometheus form).
#[derive(Debug, Clone)]
pub struct ExtraMetric {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub value: f64,
}

impl Registry {
    /// An empty registry with the constant attributes read from `env`.
    pub fn new(env: impl Fn(&str) -> Option<String>) -> Registry {
        Registry {
            http: Family::new(
                "execd_http_request_duration_milliseconds",
                "Duration of HTTP requests until the response body ended (execd.http.request.duration).",
                &["http_method", "http_route", "http_status_code"],
            ),
            execution: Family::new(
                "execd_execution_duration_milliseconds",
                "Duration of command, code and session executions (execd.execution.duration).",
                &["operation", "result"],
            ),
            filesystem: Family::new(
                "execd_filesystem_operations_duration_milliseconds",
                "Duration of filesystem operations (execd.filesystem.operations.duration).",
                &["operation", "result"],
            ),
            series_dropped: AtomicU64::new(0),
            audit_write_errors: AtomicU64::new(0),
            audit_lines: AtomicU64::new(0),
            constant: constant_attributes(&env),
            sink: std::sync::OnceLock::new(),
        }
    }

    /// The constant attributes (also put on OpenTelemetry points).
    pub fn constant_attributes(&self) -> &[(String, String)] {
        &self.constant
    }

    /// Also hands every later observation to `sink` (set once).
    pub fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, d: Duration) {
        let status = status.to_string();
        self.observe(HistogramKind::Http, &self.http, &[method, route, &status], d);
    }

    /// `operation`: `run_command`, `run_code` or `run_in_session`.
    pub fn observe_execution(&self, operation: &str, success: bool, d: Duration) {
        self.observe(HistogramKind::Execution, &self.execution, &[operation, result(success)], d);
    }

    pub fn observe_filesystem(&self, operation: &str, success: bool, d: Duration) {
        self.observe(HistogramKind::Filesystem, &self.filesystem, &[operation, result(success)], d);
    }

    fn observe(&self, kind: HistogramKind, family: &Family, values: &[&str], d: Duration) {
        self.count_drop(family.observe(values, d));
        if let Some(sink) = self.sink.get() {
            sink(kind, family.labels, values, d);
        }
    }

    fn count_drop(&self, kept: bool) {
        if !kept {
            self.series_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text exposition format (0.0.4) of everything.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.http.render(&mut out, &self.constant);
        self.execution.render(&mut out, &self.constant);
        self.filesystem.render(&mut out, &self.constant);
        let c = &self.constant;
        let mut single = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(v) = value {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                let _ = writeln!(out, "{name}{} {}", label_set(&pairs(c, &[])), format_value(v));
            }
        };
        single(
            "execd_system_process_count",
            "gauge",
            "Processes visible to execd (execd.system.process.count).",
            snap.process_count.map(|v| v as f64),
        );
        single(
            "execd_system_cpu_usage_percent",
            "gauge",
            "Busy percentage of the sandbox's CPUs over the last second (execd.system.cpu.usage).",
            snap.cpu_used_pct,
        );
        single(
            "execd_system_memory_usage_bytes",
            "gauge",
            "Memory in use by the sandbox (execd.system.memory.usage_bytes).",
            snap.mem_used_bytes,
        );
        single(
            "execd_system_cpu_count",
            "gauge",
            "CPUs available to the sandbox (GET /metrics cpu_count).",
            snap.cpu_count,
        );
        single(
            "execd_system_memory_total_bytes",
            "gauge",
            "Memory available to the sandbox (GET /metrics mem_total_mib).",
            snap.mem_total_bytes,
        );
        single(
            "execd_commands_tracked",
            "gauge",
            "Commands execd knows: running and retained finished ones.",
            Some(snap.commands_tracked as f64),
        );
        single(
            "execd_metrics_series_dropped_total",
            "counter",
            "Observations dropped because their histogram already had the maximum number of label sets.",
            Some(self.series_dropped.load(Ordering::Relaxed) as f64),
        );
        single(
            "execd_audit_lines_total",
            "counter",
            "Lines written to the audit log.",
            Some(self.audit_lines.load(Ordering::Relaxed) as f64),
        );
        single(
            "execd_audit_write_errors_total",
            "counter",
            "Audit lines that could not be written.",
            Some(self.audit_write_errors.load(Ordering::Relaxed) as f64),
        );
        for m in &snap.extra {
            single(m.name, if m.counter { "counter" } else { "gauge" }, m.help, Some(m.value));
        }
        render_network(&mut out, c, snap);
        out
    }
}

/// The network families: bytes by direction and connections by protocol.
fn render_network(out: &mut String, c: &[(String, String)], snap: &Snapshot) {
    if let (Some(rx), Some(tx)) = (snap.network_in_bytes, snap.network_out_bytes) {
        let name = "execd_system_network_io_bytes_total";
        let _ = writeln!(out, "# HELP {name} Bytes received (in) and sent (out) on every interface but lo (execd.system.network.io.bytes).");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (dir, v) in [("in", rx), ("out", tx)] {
            let _ = writeln!(out, "{name}{} {v}", label_set(&pairs(c, &[("direction", dir)])));
        }
    }
    if let (Some(tcp), Some(udp)) = (snap.tcp_connections, snap.udp_connections) {
        let name = "execd_system_network_connections_active";
        let _ = writeln!(
            out,
            "# HELP {name} Established TCP connections and open UDP sockets (execd.system.network.connections.active)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (proto, v) in [("tcp", tcp), ("udp", udp)] {
            let _ = writeln!(out, "{name}{} {v}", label_set(&pairs(c, &[("protocol", proto)])));
        }
    }
}

fn result(success: bool) -> &'static str {
    if success {
        "success"
    } else {
        "failure"
    }
}

fn pairs<'a>(constant: &'a [(String, String)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    constant.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(more.iter().copied()).collect()
}

/// `{a="x",b="y"}`, or nothing without labels. Values escaped as the format requires.
fn label_set(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// A sample value: integers without a fraction, others as Rust prints them (valid Go floats).
fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// A valid Prometheus label name made from `name`: invalid characters become `_`, a leading
/// digit gets a `_` in front; `None` for an empty name or one reserved (`__` prefix).
pub fn label_name(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.starts_with("__") {
        return None;
    }
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    Some(s)
}

/// `sandbox_id` from `OPENSANDBOX_ID` and the `k=v,k2=v2` pairs of
/// `OPENSANDBOX_EXECD_METRICS_EXTRA_ATTRS` (reference §13); at most 16, names made valid, later
/// duplicates and the names execd uses itself ignored.
pub fn constant_attributes(env: &impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    const OWN: &[&str] =
        &["http_method", "http_route", "http_status_code", "operation", "result", "le", "direction", "protocol"];
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: &str| {
        if let Some(k) = label_name(k) {
            if out.len() < 16 && !OWN.contains(&k.as_str()) && !out.iter().any(|(n, _)| *n == k) {
                out.push((k, v.to_string()));
            }
        }
    };
    if let Some(id) = env("OPENSANDBOX_ID").filter(|v| !v.is_empty()) {
        add("sandbox_id", &id);
    }
    if let Some(extra) = env("OPENSANDBOX_EXECD_METRICS_EXTRA_ATTRS") {
        for pair in extra.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                add(k, v.trim());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x61_histogram_renders_cumulative_buckets() {
        let r = Registry::new(|_| None);
        r.observe_http("GET", "/ping", 200, Duration::from_micros(500));
        r.observe_http("GET", "/ping", 200, Duration::from_millis(7));
        let text = r.render(&Snapshot::default());
        let b = |le: &str| {
            format!(
                "execd_http_request_duration_milliseconds_bucket{{http_method=\"GET\",http_route=\"/ping\",http_status_code=\"200\",le=\"{le}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 1\n", b("1"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", b("5"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", b("10"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", b("+Inf"))), "{text}");
        assert!(text.contains("execd_http_request_duration_milliseconds_count{http_method=\"GET\",http_route=\"/ping\",http_status_code=\"200\"} 2\n"));
    }

    #[test]
    fn x61_series_are_bounded_and_labels_escaped() {
        let r = Registry::new(|_| None);
        for i in 0..MAX_SERIES + 10 {
            r.observe_filesystem(&format!("op{i}"), true, Duration::ZERO);
        }
        assert_eq!(r.series_dropped.load(Ordering::Relaxed), 10);
        assert_eq!(label_set(&[("a", "x\"y\\z\nw")]), "{a=\"x\\\"y\\\\z\\nw\"}");
    }

    #[test]
    fn x61_constant_attributes_from_env() {
        let env = |k: &str| match k {
            "OPENSANDBOX_ID" => Some("sb-1".to_string()),
            "OPENSANDBOX_EXECD_METRICS_EXTRA_ATTRS" => Some("team=ml, 9x=1,bad-name=2,le=3,__x=4".to_string()),
            _ => None,
        };
        let attrs = constant_attributes(&env);
        let want: Vec<(String, String)> = [("sandbox_id", "sb-1"), ("team", "ml"), ("_9x", "1"), ("bad_name", "2")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(attrs, want);
    }
}
