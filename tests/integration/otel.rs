//! OpenTelemetry export (EXTENSIONS X60) through the real binary, against a real OTLP/HTTP
//! receiver: `tests/otel/receiver.py`, run with the SDK venv's Python (the official
//! `opentelemetry-proto` package decodes the protobuf bodies), writes one JSON line per span and
//! metric point. Also: a collector that never answers does not slow a command and its drops are
//! counted, and with no `OTEL_*` variable nothing is started.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{parse_events, TestServer, TIMEOUT};
use serde_json::{json, Value};

/// The SDK venv's Python (`$EXECD_SDK_VENV`, else `<repo>/.venv`: tests/sdk/venv.sh), when it
/// has opentelemetry-proto.
fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("EXECD_SDK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import opentelemetry.proto.collector.trace.v1.trace_service_pb2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(py)
}

/// The receiver process and the file it writes.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// `None` (after `prerequisite_missing`) when the venv is not there.
    fn start() -> Option<Receiver> {
        let Some(py) = venv_python() else {
            common::prerequisite_missing("the SDK venv with opentelemetry-proto (bash tests/sdk/venv.sh)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("otlp.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/receiver.py");
        let mut child = Command::new(py)
            .arg(script)
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("receiver port line: {line:?}"));
        Some(Receiver { child, port, out, _dir: dir })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let records: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let errors: Vec<&Value> = records.iter().filter(|r| r["signal"] == "error").collect();
        assert!(errors.is_empty(), "undecodable exports: {errors:?}");
        records
    }

    /// Polls until `pick` finds something in the records.
    async fn wait_for<T>(&self, what: &str, mut pick: impl FnMut(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let records = self.records();
            if let Some(t) = pick(&records) {
                return t;
            }
            assert!(Instant::now() < deadline, "no {what} within {TIMEOUT:?}; received:\n{records:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Names of execd's threads (`/proc/<pid>/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

fn otel_threads(pid: u32) -> usize {
    thread_names(pid).iter().filter(|n| n.starts_with("OpenTelemetry")).count()
}

async fn capability_otel(s: &TestServer) -> Value {
    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    caps["features"]["otel"].clone()
}

async fn run(s: &TestServer, body: Value, traceparent: Option<&str>) -> Vec<Value> {
    let mut req = s.client().post(s.url("/command")).json(&body);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    parse_events(&r.text().await.unwrap())
}

fn exporting(r: &Receiver) -> common::ServerOptions {
    TestServer::options()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &r.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
}

#[tokio::test]
async fn x60_spans_continue_the_incoming_trace_with_execution_attributes() {
    let Some(r) = Receiver::start() else { return };
    let s = exporting(&r)
        .env("OTEL_SERVICE_NAME", "execd-under-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=x60")
        .env("OPENSANDBOX_ID", "sbx-60")
        .start();
    assert_eq!(capability_otel(&s).await, json!(true));
    // One batch thread for spans, one periodic reader for metrics.
    assert_eq!(otel_threads(s.pid()), 2, "{:?}", thread_names(s.pid()));

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let events = run(&s, json!({"command": "exit 3"}), Some(&format!("00-{trace_id}-{parent_id}-01"))).await;
    assert!(events.iter().any(|e| e["type"] == "execution_complete" || e["type"] == "error"), "{events:?}");

    let server = r
        .wait_for("server span for POST /command", |recs| {
            recs.iter().find(|x| x["signal"] == "span" && x["name"] == "/command" && x["trace_id"] == trace_id).cloned()
        })
        .await;
    assert_eq!(server["parent_span_id"], parent_id, "{server}");
    assert_eq!(server["kind"], 2, "SPAN_KIND_SERVER: {server}");
    assert_eq!(server["attributes"]["http.request.method"], "POST", "{server}");
    assert_eq!(server["attributes"]["http.route"], "/command", "{server}");
    assert_eq!(server["attributes"]["http.response.status_code"], 200, "{server}");
    assert_eq!(server["scope"], "opensandbox/execd");
    assert_eq!(server["resource"]["service.name"], "execd-under-test", "{server}");
    assert_eq!(server["resource"]["deployment.environment"], "x60", "{server}");
    assert_eq!(server["resource"]["sandbox_id"], "sbx-60", "{server}");

    let exec = r
        .wait_for("run_command span", |recs| {
            recs.iter()
                .find(|x| x["signal"] == "span" && x["name"] == "run_command" && x["trace_id"] == trace_id)
                .cloned()
        })
        .await;
    assert_eq!(exec["parent_span_id"], server["span_id"], "child of the server span: {exec}");
    assert_eq!(exec["attributes"]["exit_code"], 3, "{exec}");
    assert_eq!(exec["attributes"]["exit_reason"], "exited", "{exec}");
    assert_eq!(exec["attributes"]["result"], "failure", "{exec}");
    assert!(exec["attributes"]["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{exec}");
    assert!(exec["attributes"]["command_id"].as_str().is_some_and(|i| !i.is_empty()), "{exec}");
    // X22's usage (the cgroup leaf's, or the leader's rusage without one), flattened.
    for key in ["usage.cpu_user_ms", "usage.cpu_system_ms"] {
        assert!(exec["attributes"][key].is_number(), "{key}: {exec}");
    }

    // Without a traceparent: a new trace, its root the server span.
    run(&s, json!({"command": "true"}), None).await;
    let (root, child) = r
        .wait_for("a new trace", |recs| {
            let child = recs.iter().find(|x| {
                x["name"] == "run_command" && x["trace_id"] != trace_id && x["attributes"]["exit_code"] == 0
            })?;
            let root = recs.iter().find(|x| x["span_id"] == child["parent_span_id"])?;
            Some((root.clone(), child.clone()))
        })
        .await;
    assert_eq!(root["name"], "/command");
    assert_eq!(root["parent_span_id"], "", "{root}");
    assert_eq!(child["attributes"]["exit_reason"], "exited");
}

#[tokio::test]
async fn x60_session_run_span_carries_the_runs_exit() {
    let Some(r) = Receiver::start() else { return };
    let s = exporting(&r).start();
    let created: Value =
        s.client().post(s.url("/session")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let sid = created["session_id"].as_str().unwrap().to_string();
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let resp = s
        .client()
        .post(s.url(&format!("/session/{sid}/run")))
        .header("traceparent", format!("00-{trace_id}-10f067aa0ba902b7-01"))
        .json(&json!({"command": "exit 5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let exec = r
        .wait_for("run_in_session span", |recs| {
            recs.iter()
                .find(|x| x["signal"] == "span" && x["name"] == "run_in_session" && x["trace_id"] == trace_id)
                .cloned()
        })
        .await;
    let server =
        r.wait_for("server span", |recs| recs.iter().find(|x| x["span_id"] == exec["parent_span_id"]).cloned()).await;
    assert_eq!(server["attributes"]["http.route"], "/session/:id/run", "{server}");
    assert_eq!(exec["attributes"]["exit_code"], 5, "{exec}");
    assert_eq!(exec["attributes"]["exit_reason"], "exited", "{exec}");
    assert_eq!(exec["attributes"]["result"], "failure", "{exec}");
    assert_eq!(exec["attributes"]["command_id"], sid.as_str(), "{exec}");
    assert!(exec["attributes"]["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{exec}");
}

#[tokio::test]
async fn x60_metrics_keep_upstream_names_and_attributes() {
    let Some(r) = Receiver::start() else { return };
    let s = exporting(&r).env("OPENSANDBOX_ID", "sbx-61").start();
    run(&s, json!({"command": "true"}), None).await;
    let resp = s.client().get(s.url("/files/info?path=/no/such/file")).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let find = |recs: &[Value], name: &str, attr: (&str, Value)| {
        recs.iter().find(|x| x["signal"] == "metric" && x["name"] == name && x["attributes"][attr.0] == attr.1).cloned()
    };
    let exec = r
        .wait_for("execd.execution.duration", |recs| {
            find(recs, "execd.execution.duration", ("operation", json!("run_command")))
        })
        .await;
    assert_eq!(exec["type"], "histogram");
    assert_eq!(exec["unit"], "ms");
    assert_eq!(exec["scope"], "opensandbox/execd");
    assert_eq!(exec["attributes"]["result"], "success", "{exec}");
    assert_eq!(exec["attributes"]["sandbox_id"], "sbx-61", "{exec}");
    assert!(exec["count"].as_u64().unwrap() >= 1);
    assert_eq!(exec["resource"]["service.name"], format!("opensandbox-execd-{}", env!("CARGO_PKG_VERSION")));

    let http = r
        .wait_for("execd.http.request.duration", |recs| {
            find(recs, "execd.http.request.duration", ("http_route", json!("/command")))
        })
        .await;
    assert_eq!(http["attributes"]["http_method"], "POST", "{http}");
    assert_eq!(http["attributes"]["http_status_code"], 200, "{http}");

    let fs = r
        .wait_for("execd.filesystem.operations.duration", |recs| {
            find(recs, "execd.filesystem.operations.duration", ("operation", json!("get_file_info")))
        })
        .await;
    assert_eq!(fs["attributes"]["result"], "failure", "{fs}");

    for name in ["execd.system.cpu.usage", "execd.system.memory.usage_bytes", "execd.system.process.count"] {
        let g = r.wait_for(name, |recs| find(recs, name, ("sandbox_id", json!("sbx-61")))).await;
        assert_eq!(g["type"], "gauge", "{g}");
        assert!(g["value"].as_f64().is_some_and(|v| v >= 0.0), "{g}");
    }
    r.wait_for("network io in and out", |recs| {
        let net = "execd.system.network.io.bytes";
        find(recs, net, ("direction", json!("in"))).and(find(recs, net, ("direction", json!("out"))))
    })
    .await;
    // Both export threads still there (a panicking gauge callback would have ended the reader).
    assert_eq!(otel_threads(s.pid()), 2, "{:?}", thread_names(s.pid()));
}

/// Median wall time of `n` `POST /command true` runs.
async fn median_true(s: &TestServer, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run(s, json!({"command": "true"}), None).await;
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// The value of an unlabelled Prometheus sample.
async fn prom_value(s: &TestServer, name: &str) -> Option<f64> {
    let text = s.client().get(s.url("/metrics/prometheus")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn x60_a_collector_that_never_answers_does_not_slow_commands_and_drops_are_counted() {
    // Accepts connections and never reads or answers them.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    let off = TestServer::start();
    let on = TestServer::options()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{addr}"))
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "60000")
        .env("OTEL_BSP_SCHEDULE_DELAY", "10")
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "4")
        .start();
    median_true(&off, 3).await;
    median_true(&on, 3).await;
    let base = median_true(&off, 15).await;
    let hung = median_true(&on, 15).await;
    // Generous: a blocked request would take the export timeout (60 s).
    assert!(hung < base * 4 + Duration::from_millis(250), "with a hung collector {hung:?}, without OTel {base:?}");
    // 36 requests, two spans each, against a queue of 4 behind one export that never returns.
    let ok = common::wait_until_async(TIMEOUT, || async {
        prom_value(&on, "execd_otel_dropped_spans_total").await.is_some_and(|d| d >= 10.0)
    })
    .await;
    assert!(ok, "dropped spans: {:?}", prom_value(&on, "execd_otel_dropped_spans_total").await);
    assert_eq!(prom_value(&off, "execd_otel_dropped_spans_total").await, None);
}

#[tokio::test]
async fn x60_collector_down_export_errors_are_counted() {
    // A port nothing listens on: every export is refused at once.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = TestServer::options()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://127.0.0.1:{port}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "10")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
        .start();
    run(&s, json!({"command": "true"}), None).await;
    let ok = common::wait_until_async(TIMEOUT, || async {
        prom_value(&s, "execd_otel_span_export_errors_total").await.is_some_and(|d| d >= 1.0)
            && prom_value(&s, "execd_otel_dropped_spans_total").await.is_some_and(|d| d >= 1.0)
            && prom_value(&s, "execd_otel_metric_export_errors_total").await.is_some_and(|d| d >= 1.0)
    })
    .await;
    let text = s.client().get(s.url("/metrics/prometheus")).send().await.unwrap().text().await.unwrap();
    assert!(ok, "{text}");
}

#[tokio::test]
async fn x60_unset_starts_nothing() {
    let s = TestServer::options()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
        .env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "")
        .start();
    let before = thread_names(s.pid());
    assert!(!before.is_empty());
    assert_eq!(capability_otel(&s).await, json!(false));
    run(&s, json!({"command": "true"}), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).await;
    let after = thread_names(s.pid());
    assert_eq!(otel_threads(s.pid()), 0, "{after:?}");
    assert!(!before.iter().chain(&after).any(|n| n.starts_with("OpenTelemetry")), "{before:?} {after:?}");
    assert_eq!(prom_value(&s, "execd_otel_dropped_spans_total").await, None);
}

#[tokio::test]
async fn x60_unsupported_protocol_is_a_warning_and_no_export() {
    let s = TestServer::options()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .start();
    assert_eq!(capability_otel(&s).await, json!(false));
    assert_eq!(otel_threads(s.pid()), 0, "{:?}", thread_names(s.pid()));
    let ok = common::wait_until(TIMEOUT, || s.log().contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"));
    assert!(ok, "{}", s.log());
}
