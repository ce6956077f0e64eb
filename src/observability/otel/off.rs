//! OpenTelemetry export (X60) when execd is built without the `otel` cargo feature: the same
//! surface as the real module, nothing behind it. An OTLP endpoint variable is reported at startup
//! (a warning) instead of being ignored silently.

use std::time::Duration;

use super::prom::{ExtraMetric, HistogramKind, Snapshot};

/// What the `OTEL_*` variables ask for (never anything in this build).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub metrics: bool,
}

impl Settings {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Settings>, String> {
        let asked = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .iter()
        .any(|k| env(k).is_some_and(|v| !v.trim().is_empty()));
        if asked {
            return Err("this execd was built without the `otel` cargo feature: no OTLP export".to_string());
        }
        Ok(None)
    }
}

pub type GaugeSource = Box<dyn Fn() -> Snapshot + Send + Sync>;

/// Never constructed in this build.
pub enum Otel {}

impl Otel {
    pub fn start(
        _: &Settings,
        _: &dyn Fn(&str) -> Option<String>,
        _: tokio::runtime::Handle,
        _: &[(String, String)],
        _: GaugeSource,
    ) -> Result<Otel, String> {
        Err("built without the `otel` feature".to_string())
    }

    pub fn extra_metrics(&self) -> Vec<ExtraMetric> {
        match *self {}
    }

    pub fn record(&self, _: HistogramKind, _: &'static [&'static str], _: &[&str], _: Duration) {
        match *self {}
    }

    pub fn shutdown(&self, _: Duration) {
        match *self {}
    }

    pub fn execution_span(&self, _: &'static str, _: Duration) -> Option<ExecutionSpan> {
        match *self {}
    }
}

/// Never constructed in this build.
pub enum ExecutionSpan {}

pub struct ExecutionEnd<'a> {
    pub id: Option<&'a str>,
    pub exit_code: Option<i32>,
    pub exit_reason: Option<&'a str>,
    pub success: bool,
    pub duration: Duration,
    pub usage: Option<serde_json::Value>,
}

impl ExecutionSpan {
    pub fn end(self, _: &ExecutionEnd<'_>) {
        match self {}
    }
}
