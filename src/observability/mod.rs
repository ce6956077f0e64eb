//! Observability (EXTENSIONS X60–X62): the metrics behind `GET /metrics/prometheus` ([`prom`]),
//! the audit log ([`audit`]), and the `/proc` gauges ([`system`]). No HTTP here: the API layer
//! (`api::observe`) hands each request over as plain strings in a [`RequestContext`], and the
//! command, session and code subsystems report executions through
//! [`Observability::exec_observer`].
//!
//! The execution observer starts in the task of the request that started the execution, so it reads
//! that request's context (peer, route) from the task-local [`REQUEST`].

pub mod audit;
pub mod otel;
pub mod prom;
pub mod system;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::event::{ExecEnd, ExecObserver, ExecStart};

tokio::task_local! {
    /// The request being served, set by the API layer around its handler.
    pub static REQUEST: Arc<RequestContext>;
}

/// What the API layer knows about a request, for the execution observer.
#[derive(Debug)]
pub struct RequestContext {
    pub peer: Option<SocketAddr>,
    pub method: String,
    /// The route template (`/command`, `/session/:id/run`), or `unknown`.
    pub route: String,
    /// Set when the command observer saw an execution start in this request (so the API layer
    /// does not count it a second time).
    pub execution_observed: AtomicBool,
}

/// A file mutation to audit.
#[derive(Debug, Default)]
pub struct FileMutation {
    pub peer: Option<SocketAddr>,
    pub method: String,
    pub route: String,
    pub operation: &'static str,
    pub paths: Vec<String>,
    /// Whether `paths` is every path the request named (false: the body was too large or not
    /// readable as expected).
    pub paths_complete: bool,
    /// Request body bytes received.
    pub bytes: u64,
    pub status: u16,
    /// The identity of a `/v1/filesystem/{uid}/{gid}` route, else execd's own.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub duration: Duration,
}

struct Inner {
    metrics: prom::Registry,
    audit: Option<audit::AuditLog>,
    /// OpenTelemetry export (X60), when the `OTEL_*` variables ask for it.
    otel: std::sync::OnceLock<Arc<otel::Otel>>,
}

/// Cheap-to-clone handle shared by the API layer and the command observer.
#[derive(Clone)]
pub struct Observability {
    inner: Arc<Inner>,
}

impl Observability {
    /// Opens the audit log when `audit_log` is given.
    pub fn new(
        audit_log: Option<&Path>,
        audit_max_bytes: u64,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Observability, audit::AuditError> {
        let audit = audit_log.map(|p| audit::AuditLog::open(p, audit_max_bytes)).transpose()?;
        let inner = Inner { metrics: prom::Registry::new(env), audit, otel: std::sync::OnceLock::new() };
        Ok(Observability { inner: Arc::new(inner) })
    }

    /// Starts OpenTelemetry export when `env` sets an OTLP endpoint (X60). `Ok(false)`: not asked
    /// for (nothing started); `Err`: asked for but not possible (no export, the caller warns).
    pub fn start_otel(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        runtime: tokio::runtime::Handle,
        gauges: otel::GaugeSource,
    ) -> Result<bool, String> {
        let Some(settings) = otel::Settings::from_env(env)? else { return Ok(false) };
        let started =
            Arc::new(otel::Otel::start(&settings, env, runtime, self.metrics().constant_attributes(), gauges)?);
        if self.inner.otel.set(started.clone()).is_err() {
            return Ok(true);
        }
        if settings.metrics {
            self.metrics().set_sink(Box::new(move |kind, labels, values, d| started.record(kind, labels, values, d)));
        }
        Ok(true)
    }

    /// Exports what is still queued (spans, a last metric collection), waiting at most `limit`.
    pub async fn stop_otel(&self, limit: Duration) {
        if let Some(o) = self.inner.otel.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || o.shutdown(limit)).await;
        }
    }

    /// The running OpenTelemetry export, if any.
    pub fn otel(&self) -> Option<&otel::Otel> {
        self.inner.otel.get().map(|o| &**o)
    }

    pub fn metrics(&self) -> &prom::Registry {
        &self.inner.metrics
    }

    pub fn audit_enabled(&self) -> bool {
        self.inner.audit.is_some()
    }

    /// The observer to install on the command, session and code managers: metrics, a span and an
    /// audit line per execution.
    pub fn exec_observer(&self) -> ExecObserver {
        let obs = self.clone();
        Arc::new(move |start: &ExecStart<'_>| {
            let ctx = REQUEST.try_with(Arc::clone).ok();
            if let Some(c) = &ctx {
                c.execution_observed.store(true, Ordering::Relaxed);
            }
            // `POST /code` with a shell language runs a command: it is still code to the metrics.
            let operation = match ctx.as_deref().map(|c| c.route.as_str()) {
                Some("/code") => "run_code",
                _ => start.operation,
            };
            let span = obs.otel().and_then(|o| o.execution_span(operation, Duration::ZERO));
            let record = obs.audit_enabled().then(|| {
                // A command without a cwd runs in execd's; a session or a context knows its own.
                let cwd = start.cwd.map(|p| p.display().to_string()).or_else(|| {
                    (start.operation == "run_command")
                        .then(|| std::env::current_dir().ok().map(|p| p.display().to_string()))
                        .flatten()
                });
                json!({
                    "kind": "execution",
                    "peer": ctx.as_deref().and_then(|c| c.peer).map(|p| p.to_string()),
                    "method": ctx.as_deref().map(|c| c.method.clone()),
                    "route": ctx.as_deref().map(|c| c.route.clone()),
                    "operation": operation,
                    "id": start.id,
                    "command": crate::telemetry::command_excerpt(start.command),
                    "command_len": start.command.len(),
                    "cwd": cwd,
                    "uid": start.uid.unwrap_or_else(|| rustix::process::geteuid().as_raw()),
                    // With a uid and no gid: the account's primary group, resolved at spawn (null here).
                    "gid": match (start.uid, start.gid) {
                        (_, Some(g)) => Some(g),
                        (None, None) => Some(rustix::process::getegid().as_raw()),
                        (Some(_), None) => None,
                    },
                    "background": start.background,
                })
            });
            let obs = obs.clone();
            let id = start.id.to_string();
            Box::new(move |end: &ExecEnd<'_>| {
                obs.inner.metrics.observe_execution(operation, end.success, end.duration);
                if let Some(span) = span {
                    span.end(&otel::ExecutionEnd {
                        id: Some(&id),
                        exit_code: end.exit_code,
                        exit_reason: Some(end.exit.exit_reason),
                        success: end.success,
                        duration: end.duration,
                        usage: end.exit.usage.as_ref().and_then(|u| serde_json::to_value(u).ok()),
                    });
                }
                if let Some(mut record) = record {
                    record["exit_code"] = json!(end.exit_code);
                    record["exit_reason"] = json!(end.exit.exit_reason);
                    record["success"] = json!(end.success);
                    if let Some(sig) = &end.exit.signal {
                        record["signal"] = json!(sig);
                    }
                    if let Some(u) = &end.exit.usage {
                        record["usage"] = json!(u);
                    }
                    record["duration_ms"] = json!(millis(end.duration));
                    obs.audit(record);
                }
            })
        })
    }

    /// An execution no observer saw (it failed before it started), measured by the API layer
    /// from request to the end of its stream.
    pub fn execution_by_request(&self, operation: &'static str, success: bool, d: Duration) {
        self.inner.metrics.observe_execution(operation, success, d);
        if let Some(span) = self.otel().and_then(|o| o.execution_span(operation, d)) {
            let end =
                otel::ExecutionEnd { id: None, exit_code: None, exit_reason: None, success, duration: d, usage: None };
            span.end(&end);
        }
    }

    /// Audits a file mutation (no-op without an audit log).
    pub fn file_mutation(&self, m: FileMutation) {
        if !self.audit_enabled() {
            return;
        }
        self.audit(json!({
            "kind": "file",
            "peer": m.peer.map(|p| p.to_string()),
            "method": m.method,
            "route": m.route,
            "operation": m.operation,
            "paths": m.paths,
            "paths_complete": m.paths_complete,
            "bytes": m.bytes,
            "status": m.status,
            "uid": m.uid.unwrap_or_else(|| rustix::process::geteuid().as_raw()),
            "gid": m.gid.unwrap_or_else(|| rustix::process::getegid().as_raw()),
            "duration_ms": millis(m.duration),
        }));
    }

    fn audit(&self, mut record: Value) {
        let Some(log) = &self.inner.audit else { return };
        record["time"] = json!(rfc3339(SystemTime::now()));
        match log.write(&record) {
            Ok(()) => {
                self.inner.metrics.audit_lines.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.inner.metrics.audit_write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "audit line lost");
            }
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
