//! OpenTelemetry export over OTLP/HTTP protobuf (EXTENSIONS X60), with the official crates.
//!
//! Started only when an OTLP endpoint variable is set ([`Settings::from_env`]); otherwise nothing
//! here exists: no provider, no thread. When started:
//!
//! * traces: the API layer opens a server span per request (continuing a W3C `traceparent`) and
//!   makes it the current context while the handler and the response body run; executions open a
//!   child span ([`Otel::execution_span`]). Finished spans go through a bounded queue ([`Gate`]
//!   in front of the SDK's batch processor) to the exporter thread; a full queue or a failed
//!   export drops spans and counts them, it never waits.
//! * metrics: every histogram observation of [`super::prom::Registry`] is also recorded into the
//!   OTel instrument of upstream's name (reference §13), and upstream's observable gauges read
//!   a [`super::prom::Snapshot`]; the SDK's periodic reader exports them
//!   (`OTEL_METRIC_EXPORT_INTERVAL`).
//!
//! The exporter's HTTP client is execd's hyper ([`client`]), plain `http://` only.

mod client;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;

use super::prom::{ExtraMetric, HistogramKind, Snapshot};

/// The meter and tracer name (upstream's meter).
pub const SCOPE: &str = "opensandbox/execd";
/// Export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set (the specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished spans waiting for export when `OTEL_BSP_MAX_QUEUE_SIZE` is not set.
const DEFAULT_QUEUE: usize = 2048;
/// How long a gauge reading is reused (each gauge's callback asks for one per collection).
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub traces: bool,
    pub metrics: bool,
    pub timeout: Duration,
    pub queue: usize,
}

impl Settings {
    /// `Ok(None)`: no endpoint set (or `OTEL_SDK_DISABLED=true`), nothing to start. `Err`: set
    /// but not usable here (a protocol other than `http/protobuf`, an `https://` endpoint).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, String> {
        let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let exporter_none = |k: &str| env(k).is_some_and(|v| v.trim() == "none");
        let any = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        let traces = (any || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !exporter_none("OTEL_TRACES_EXPORTER");
        let metrics = (any || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) && !exporter_none("OTEL_METRICS_EXPORTER");
        if !traces && !metrics {
            return Ok(None);
        }
        for (on, var) in [
            (true, "OTEL_EXPORTER_OTLP_PROTOCOL"),
            (traces, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            (metrics, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
        ] {
            if let Some(p) = env(var).filter(|p| on && !p.trim().is_empty()) {
                if p.trim() != "http/protobuf" {
                    return Err(format!("{var}={p} is not supported: execd exports http/protobuf only"));
                }
            }
        }
        for (on, var) in [
            (true, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (traces, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            (metrics, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
        ] {
            if let Some(e) = env(var).filter(|e| on && !e.trim().is_empty()) {
                if !e.trim().to_ascii_lowercase().starts_with("http://") {
                    return Err(format!(
                        "{var}={e} is not supported: execd exports to http:// endpoints only (no TLS)"
                    ));
                }
            }
        }
        let millis = |k: &str| env(k).and_then(|v| v.trim().parse::<u64>().ok());
        let timeout = millis("OTEL_EXPORTER_OTLP_TIMEOUT").map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT);
        let queue = millis("OTEL_BSP_MAX_QUEUE_SIZE").filter(|q| *q > 0).map(|q| q as usize).unwrap_or(DEFAULT_QUEUE);
        Ok(Some(Settings { traces, metrics, timeout, queue }))
    }
}

/// Export counters, shown in `/metrics/prometheus`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Finished spans not exported: queue full, or their export failed.
    pub dropped_spans: AtomicU64,
    pub span_export_errors: AtomicU64,
    pub metric_export_errors: AtomicU64,
}

/// Reads the gauges (cpu, memory, processes, network) for the observable instruments. Called on
/// the SDK's reader thread, never on a runtime thread.
pub type GaugeSource = Box<dyn Fn() -> Snapshot + Send + Sync>;

/// The running export.
pub struct Otel {
    tracer_provider: Option<SdkTracerProvider>,
    tracer: Option<SdkTracer>,
    meter_provider: Option<SdkMeterProvider>,
    histograms: Option<[Histogram<f64>; 3]>,
    constant: Vec<KeyValue>,
    stats: Arc<Stats>,
}

impl Otel {
    /// Builds the providers (the SDK starts one thread per signal). `constant`: the attributes
    /// put on every metric point (`sandbox_id`, `OPENSANDBOX_EXECD_METRICS_EXTRA_ATTRS`).
    pub fn start(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
        runtime: tokio::runtime::Handle,
        constant: &[(String, String)],
        gauges: GaugeSource,
    ) -> Result<Otel, String> {
        let resource = resource(env, constant);
        let stats = Arc::new(Stats::default());
        let http = || Arc::new(client::HyperClient::new(runtime.clone(), settings.timeout));
        let constant: Vec<KeyValue> = constant.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();

        let mut otel =
            Otel { tracer_provider: None, tracer: None, meter_provider: None, histograms: None, constant, stats };
        if settings.traces {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(SharedClient(http()))
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(settings.timeout)
                .build()
                .map_err(|e| format!("trace exporter: {e}"))?;
            let pending = Arc::new(AtomicUsize::new(0));
            let exporter = CountingSpans { inner: exporter, pending: pending.clone(), stats: otel.stats.clone() };
            // The SDK's queue is one larger than the gate's bound, so the gate is what drops.
            let config = BatchConfigBuilder::default().with_max_queue_size(settings.queue + 1).build();
            let batch = BatchSpanProcessor::builder(exporter).with_batch_config(config).build();
            let gate = Gate { inner: batch, pending, bound: settings.queue, stats: otel.stats.clone() };
            let provider =
                SdkTracerProvider::builder().with_span_processor(gate).with_resource(resource.clone()).build();
            otel.tracer = Some(provider.tracer(SCOPE));
            otel.tracer_provider = Some(provider);
        }
        if settings.metrics {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(SharedClient(http()))
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(settings.timeout)
                .build()
                .map_err(|e| format!("metric exporter: {e}"))?;
            let exporter = CountingMetrics { inner: exporter, stats: otel.stats.clone() };
            let reader = PeriodicReader::builder(exporter).build();
            let provider = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
            let meter = provider.meter(SCOPE);
            otel.histograms = Some(histograms(&meter));
            gauges_on(&meter, gauges, &otel.constant);
            otel.meter_provider = Some(provider);
        }
        Ok(otel)
    }

    pub fn tracing(&self) -> bool {
        self.tracer.is_some()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The Prometheus counters of the export.
    pub fn extra_metrics(&self) -> Vec<ExtraMetric> {
        let s = &self.stats;
        let counter = |name, help, v: &AtomicU64| ExtraMetric {
            name,
            help,
            counter: true,
            value: v.load(Ordering::Relaxed) as f64,
        };
        vec![
            counter(
                "execd_otel_dropped_spans_total",
                "Finished spans not exported to the OTLP collector (queue full or export failed).",
                &s.dropped_spans,
            ),
            counter("execd_otel_span_export_errors_total", "Failed OTLP span exports.", &s.span_export_errors),
            counter("execd_otel_metric_export_errors_total", "Failed OTLP metric exports.", &s.metric_export_errors),
        ]
    }

    /// Records one histogram observation (the same one `/metrics/prometheus` counts).
    pub fn record(&self, kind: HistogramKind, labels: &'static [&'static str], values: &[&str], d: Duration) {
        let Some(h) = &self.histograms else { return };
        let idx = match kind {
            HistogramKind::Http => 0,
            HistogramKind::Execution => 1,
            HistogramKind::Filesystem => 2,
        };
        let mut attrs = self.constant.clone();
        for (k, v) in labels.iter().zip(values) {
            attrs.push(match (*k, v.parse::<i64>()) {
                ("http_status_code", Ok(code)) => KeyValue::new(*k, code),
                _ => KeyValue::new(*k, v.to_string()),
            });
        }
        h[idx].record(d.as_secs_f64() * 1000.0, &attrs);
    }

    /// A server span for a request, child of `parent` (the extracted `traceparent`, or empty).
    pub fn request_span(&self, parent: &Context, method: &str, route: &str) -> Option<Context> {
        let tracer = self.tracer.as_ref()?;
        let span = tracer
            .span_builder(route.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("http.route", route.to_string()),
            ])
            .start_with_context(tracer, parent);
        Some(parent.with_span(span))
    }

    /// A child span of the current context for one execution (`run_command`, `run_code`,
    /// `run_in_session`), started `ago` before now; ended by [`ExecutionSpan::end`] or on drop.
    pub fn execution_span(&self, operation: &'static str, ago: Duration) -> Option<ExecutionSpan> {
        let tracer = self.tracer.as_ref()?;
        let start = SystemTime::now().checked_sub(ago).unwrap_or_else(SystemTime::now);
        let span = tracer
            .span_builder(operation)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([KeyValue::new("operation", operation)])
            .start_with_context(tracer, &Context::current());
        Some(ExecutionSpan { span })
    }

    /// Flushes and stops both providers, waiting at most `limit` (a collector that hangs must
    /// not hold up execd's exit).
    pub fn shutdown(&self, limit: Duration) {
        let tp = self.tracer_provider.clone();
        let mp = self.meter_provider.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("otel-shutdown".into()).spawn(move || {
            if let Some(p) = tp {
                let _ = p.shutdown();
            }
            if let Some(p) = mp {
                let _ = p.shutdown();
            }
            let _ = tx.send(());
        });
        if spawned.is_ok() {
            let _ = rx.recv_timeout(limit);
        }
    }
}

/// An execution's span; the attributes are set when it ends.
pub struct ExecutionSpan {
    span: opentelemetry_sdk::trace::Span,
}

/// How an execution ended, for its span.
pub struct ExecutionEnd<'a> {
    pub id: Option<&'a str>,
    pub exit_code: Option<i32>,
    pub exit_reason: Option<&'a str>,
    pub success: bool,
    pub duration: Duration,
    /// cgroup (or rusage) usage as JSON numbers, when known.
    pub usage: Option<serde_json::Value>,
}

impl ExecutionSpan {
    pub fn end(mut self, e: &ExecutionEnd<'_>) {
        let s = &mut self.span;
        if let Some(id) = e.id {
            s.set_attribute(KeyValue::new("command_id", id.to_string()));
        }
        if let Some(code) = e.exit_code {
            s.set_attribute(KeyValue::new("exit_code", i64::from(code)));
        }
        if let Some(r) = e.exit_reason {
            s.set_attribute(KeyValue::new("exit_reason", r.to_string()));
        }
        s.set_attribute(KeyValue::new("result", if e.success { "success" } else { "failure" }));
        s.set_attribute(KeyValue::new("duration_ms", e.duration.as_secs_f64() * 1000.0));
        if let Some(serde_json::Value::Object(u)) = &e.usage {
            for (k, v) in u {
                if let Some(n) = v.as_i64() {
                    s.set_attribute(KeyValue::new(format!("usage.{k}"), n));
                }
            }
        }
        if !e.success {
            s.set_status(Status::error(e.exit_reason.unwrap_or("failure").to_string()));
        }
        s.end();
    }
}

/// Ends a request's server span with its status (called when the response body has ended).
pub fn end_request_span(cx: &Context, status: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
}

/// The resource: the SDK's detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), upstream's
/// service name when neither names one, and upstream's `sandbox_id`.
fn resource(env: &dyn Fn(&str) -> Option<String>, constant: &[(String, String)]) -> Resource {
    let named = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|v| v.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    let mut b = Resource::builder();
    if !named {
        b = b.with_service_name(format!("opensandbox-execd-{}", env!("CARGO_PKG_VERSION")));
    }
    if let Some((_, id)) = constant.iter().find(|(k, _)| k == "sandbox_id") {
        b = b.with_attribute(KeyValue::new("sandbox_id", id.clone()));
    }
    b.build()
}

/// Upstream's three histograms (milliseconds), with `/metrics/prometheus`' bucket bounds.
fn histograms(meter: &Meter) -> [Histogram<f64>; 3] {
    let h = |name: &'static str, desc: &'static str| {
        meter
            .f64_histogram(name)
            .with_unit("ms")
            .with_description(desc)
            .with_boundaries(super::prom::BUCKETS_MS.to_vec())
            .build()
    };
    [
        h("execd.http.request.duration", "Duration of HTTP requests until the response body ended."),
        h("execd.execution.duration", "Duration of command, code and session executions."),
        h("execd.filesystem.operations.duration", "Duration of filesystem operations."),
    ]
}

/// Upstream's observable gauges, read from one cached [`Snapshot`] per collection.
fn gauges_on(meter: &Meter, source: GaugeSource, constant: &[KeyValue]) {
    let cache: Arc<Mutex<Option<(Instant, Snapshot)>>> = Arc::new(Mutex::new(None));
    let read = Arc::new(move || {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        match &*c {
            Some((at, s)) if at.elapsed() < SNAPSHOT_TTL => s.clone(),
            // Never block a runtime thread (a shutdown called from one collects once more).
            _ if tokio::runtime::Handle::try_current().is_ok() => {
                c.as_ref().map(|(_, s)| s.clone()).unwrap_or_default()
            }
            _ => {
                let s = source();
                *c = Some((Instant::now(), s.clone()));
                s
            }
        }
    });
    let with = |extra: &[KeyValue]| -> Vec<KeyValue> { constant.iter().chain(extra).cloned().collect() };
    let base = with(&[]);
    let (r, a) = (read.clone(), base.clone());
    meter
        .u64_observable_gauge("execd.system.process.count")
        .with_description("Processes visible to execd.")
        .with_callback(move |o| {
            if let Some(v) = r().process_count {
                o.observe(v, &a)
            }
        })
        .build();
    let (r, a) = (read.clone(), base.clone());
    meter
        .f64_observable_gauge("execd.system.cpu.usage")
        .with_unit("%")
        .with_description("Busy percentage of the sandbox's CPUs.")
        .with_callback(move |o| {
            if let Some(v) = r().cpu_used_pct {
                o.observe(v, &a)
            }
        })
        .build();
    let (r, a) = (read.clone(), base.clone());
    meter
        .u64_observable_gauge("execd.system.memory.usage_bytes")
        .with_unit("By")
        .with_description("Memory in use by the sandbox.")
        .with_callback(move |o| {
            if let Some(v) = r().mem_used_bytes {
                o.observe(v as u64, &a)
            }
        })
        .build();
    let (r, inn, out) =
        (read.clone(), with(&[KeyValue::new("direction", "in")]), with(&[KeyValue::new("direction", "out")]));
    meter
        .u64_observable_gauge("execd.system.network.io.bytes")
        .with_unit("By")
        .with_description("Bytes received (in) and sent (out) on every interface but lo.")
        .with_callback(move |o| {
            let s = r();
            if let (Some(i), Some(x)) = (s.network_in_bytes, s.network_out_bytes) {
                o.observe(i, &inn);
                o.observe(x, &out);
            }
        })
        .build();
    let (tcp, udp) = (with(&[KeyValue::new("protocol", "tcp")]), with(&[KeyValue::new("protocol", "udp")]));
    meter
        .u64_observable_gauge("execd.system.network.connections.active")
        .with_description("Established TCP connections and open UDP sockets.")
        .with_callback(move |o| {
            let s = read();
            if let (Some(t), Some(u)) = (s.tcp_connections, s.udp_connections) {
                o.observe(t, &tcp);
                o.observe(u, &udp);
            }
        })
        .build();
}

/// The HTTP client, shareable by the two exporters.
#[derive(Debug, Clone)]
struct SharedClient(Arc<client::HyperClient>);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for SharedClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<bytes::Bytes>,
    ) -> Result<opentelemetry_http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        self.0.send_bytes(request).await
    }
}

/// The bounded queue in front of the batch processor: at most `bound` finished spans wait for
/// export; one more is dropped and counted (the SDK's own drop count is not readable).
#[derive(Debug)]
struct Gate {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
    bound: usize,
    stats: Arc<Stats>,
}

impl opentelemetry_sdk::trace::SpanProcessor for Gate {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.bound {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.stats.dropped_spans.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The span exporter, counting what leaves the queue and what fails.
#[derive(Debug)]
struct CountingSpans {
    inner: opentelemetry_otlp::SpanExporter,
    pending: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

impl opentelemetry_sdk::trace::SpanExporter for CountingSpans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.pending.fetch_sub(n.min(self.pending.load(Ordering::Acquire)), Ordering::AcqRel);
        let r = self.inner.export(batch).await;
        if r.is_err() {
            self.stats.span_export_errors.fetch_add(1, Ordering::Relaxed);
            self.stats.dropped_spans.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The metric exporter, counting failed exports.
struct CountingMetrics {
    inner: opentelemetry_otlp::MetricExporter,
    stats: Arc<Stats>,
}

impl opentelemetry_sdk::metrics::exporter::PushMetricExporter for CountingMetrics {
    async fn export(&self, metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics) -> OTelSdkResult {
        let r = self.inner.export(metrics).await;
        if r.is_err() {
            self.stats.metric_export_errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, String> {
        let map: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_env(&|k: &str| map.get(k).cloned())
    }

    #[test]
    fn x60_settings_from_the_standard_variables() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        let both = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap().unwrap();
        assert!(both.traces && both.metrics);
        assert_eq!((both.timeout, both.queue), (DEFAULT_TIMEOUT, DEFAULT_QUEUE));
        let m = settings(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4318/v1/metrics")]).unwrap().unwrap();
        assert!(!m.traces && m.metrics);
        let t = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_METRICS_EXPORTER", "none")])
            .unwrap()
            .unwrap();
        assert!(t.traces && !t.metrics);
        let tuned = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "250"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "7"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((tuned.timeout, tuned.queue), (Duration::from_millis(250), 7));
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        for bad in [
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")],
        ] {
            assert!(settings(&bad).is_err(), "{bad:?}");
        }
    }
}
