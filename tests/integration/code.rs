//! Code interpreting (reference §6, checklist C91–C104, DECISIONS D50). C91–C93, C102 and C103 run
//! without Jupyter (or against a dead port). The rest run against a REAL Jupyter server: one per
//! test process, started on first use from the venv that `scripts/jupyter-test-env.sh` makes,
//! on a free loopback port with a token, and stopped by a watchdog when this process exits. Each
//! test starts its own execd and deletes the contexts it created. When the venv cannot be made,
//! those tests print SKIPPED and return locally, and fail in CI (`common::prerequisite_missing`).
//!
//! Kernels chunk their output as they like (ipykernel may send `"oops"` and `"\n"` as two
//! `stream` messages): tests compare the concatenated text of a stream, never single events.

use crate::common;

use std::os::unix::process::CommandExt;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{free_port, parse_events, without_pings, EventReader, TestServer};
use serde_json::{json, Value};

/// Bound on one whole run (the first run in a context includes the kernel's start-up, and other
/// tests start kernels at the same time).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long Jupyter itself may take to come up.
const JUPYTER_START: Duration = Duration::from_secs(90);

struct Jupyter {
    url: String,
    token: String,
}

/// The outcome of setting up the shared Jupyter server (once per test process).
enum Setup {
    Ready(Jupyter),
    /// No venv (no Python or no PyPI): the Jupyter tests skip (fail in CI).
    Unavailable(String),
    /// The venv is there but Jupyter did not come up: the Jupyter tests fail.
    Failed(String),
}

static JUPYTER: OnceLock<Setup> = OnceLock::new();

/// The shared Jupyter server, or `None` (SKIPPED printed; a panic in CI) when no venv can be made.
fn jupyter() -> Option<&'static Jupyter> {
    match JUPYTER.get_or_init(start_jupyter) {
        Setup::Ready(j) => Some(j),
        Setup::Unavailable(why) => {
            common::prerequisite_missing(&format!("no Jupyter venv ({why}); this Jupyter test cannot run"));
            None
        }
        Setup::Failed(why) => panic!("{why}"),
    }
}

fn start_jupyter() -> Setup {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/jupyter-test-env.sh");
    let out = match Command::new(&script).stdin(Stdio::null()).stderr(Stdio::inherit()).output() {
        Ok(o) => o,
        Err(e) => return Setup::Unavailable(format!("{}: {e}", script.display())),
    };
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || bin.is_empty() {
        return Setup::Unavailable(format!("scripts/jupyter-test-env.sh failed: {}", out.status));
    }
    let root = std::env::temp_dir().join(format!("execd-code-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&root) {
        return Setup::Failed(format!("creating {}: {e}", root.display()));
    }
    let port = free_port();
    let token = uuid_hex();
    let log = root.join("jupyter.log");
    // The watchdog outlives nothing: when this test process exits it stops Jupyter (SIGTERM,
    // then SIGKILL after 5 s; kernels exit with their parent) and removes the root.
    let watchdog = r#"
        jupyter="$1"; root="$2"; parent="$3"; shift 3
        "$jupyter" server "$@" >"$root/jupyter.log" 2>&1 &
        j=$!
        while kill -0 "$parent" 2>/dev/null && kill -0 "$j" 2>/dev/null; do sleep 0.5; done
        kill -TERM "$j" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$j" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$j" 2>/dev/null
        rm -rf "$root"
    "#;
    // Its own process group: jupyter_client signals kernel process groups when it restarts or
    // kills a kernel; nothing it does may reach this test process or the shell that runs it.
    let spawned = Command::new("bash")
        .process_group(0)
        .arg("-c")
        .arg(watchdog)
        .arg("watchdog")
        .arg(&bin)
        .arg(&root)
        .arg(std::process::id().to_string())
        .args([
            "--ServerApp.ip=127.0.0.1".to_string(),
            format!("--ServerApp.port={port}"),
            "--ServerApp.port_retries=0".to_string(),
            format!("--ServerApp.token={token}"),
            format!("--ServerApp.root_dir={}", root.display()),
            "--ServerApp.allow_root=True".to_string(),
            "--no-browser".to_string(),
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        return Setup::Failed(format!("starting the Jupyter watchdog: {e}"));
    }
    if !common::wait_until(JUPYTER_START, || jupyter_status_ok(port, &token)) {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        return Setup::Failed(format!("Jupyter did not answer within {JUPYTER_START:?}; log:\n{log}"));
    }
    Setup::Ready(Jupyter { url: format!("http://127.0.0.1:{port}"), token })
}

/// `GET /api/status` with the token, over a raw socket; true on 200.
fn jupyter_status_ok(port: u16, token: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    // Jupyter refuses non-local Host headers (403).
    let req = format!("GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {token}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

fn uuid_hex() -> String {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An execd wired to the shared Jupyter.
fn execd_with(j: &Jupyter) -> TestServer {
    TestServer::options().arg("--jupyter-host").arg(&j.url).arg("--jupyter-token").arg(&j.token).start()
}

/// An execd configured with a Jupyter at a port where nothing listens.
fn execd_dead_jupyter() -> TestServer {
    let url = format!("http://127.0.0.1:{}", free_port());
    TestServer::options().arg("--jupyter-host").arg(&url).arg("--jupyter-token").arg("t").start()
}

async fn json_of(resp: reqwest::Response) -> Value {
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    resp.json().await.unwrap()
}

async fn create_context(s: &TestServer, language: &str) -> String {
    let resp = s.client().post(s.url("/code/context")).json(&json!({"language": language})).send().await.unwrap();
    let status = resp.status();
    let v = json_of(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["language"], language);
    let id = v["id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    id
}

async fn delete_context(s: &TestServer, id: &str) {
    let resp = s.client().delete(s.url(&format!("/code/contexts/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

fn code_body(code: &str, ctx: Option<&str>) -> Value {
    match ctx {
        Some(id) => json!({"code": code, "context": {"id": id, "language": "python"}}),
        None => json!({"code": code, "context": {"language": "python"}}),
    }
}

/// Starts a Python run and checks the stream headers.
async fn start_run(s: &TestServer, code: &str, ctx: Option<&str>) -> EventReader {
    start_run_body(s, &code_body(code, ctx)).await
}

/// Starts a run of any `POST /code` body and checks the stream headers.
async fn start_run_body(s: &TestServer, body: &Value) -> EventReader {
    let resp = s.client().post(s.url("/code")).json(body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    EventReader::new(resp)
}

/// Runs Python `code` to the end of its stream; every event but pings.
async fn run(s: &TestServer, code: &str, ctx: Option<&str>) -> Vec<Value> {
    run_body(s, &code_body(code, ctx)).await
}

/// Runs a `POST /code` body to the end of its stream; every event but pings.
async fn run_body(s: &TestServer, body: &Value) -> Vec<Value> {
    let mut reader = start_run_body(s, body).await;
    let events = tokio::time::timeout(RUN_TIMEOUT, reader.rest()).await.expect("run did not end in time");
    for e in &events {
        assert!(e["timestamp"].as_i64().unwrap() > 0, "{e}");
    }
    without_pings(&events)
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn result_texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "result")
        .map(|e| e["results"]["text"].as_str().unwrap_or("").into())
        .collect()
}

/// The concatenated text of every event of stream `kind` (`stdout`/`stderr`): how a kernel splits
/// its output into messages is its own business.
fn stream_text(events: &[Value], kind: &str) -> String {
    events.iter().filter(|e| e["type"] == kind).map(|e| e["text"].as_str().unwrap()).collect()
}

fn stdout_text(events: &[Value]) -> String {
    stream_text(events, "stdout")
}

/// Reads events until `pred` holds for everything read so far (bounded); returns it all.
async fn read_until(reader: &mut EventReader, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(RUN_TIMEOUT, async {
        while let Some(e) = reader.next().await {
            seen.push(e);
            if pred(&seen) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "event not seen; got {seen:?}");
    seen
}

/// Reads until the concatenated stdout so far contains `needle` (it may span messages).
async fn read_until_stdout(reader: &mut EventReader, needle: &str) -> Vec<Value> {
    read_until(reader, |seen| stdout_text(seen).contains(needle)).await
}

// ---- without Jupyter ----

#[tokio::test]
async fn c91_jupyter_language_without_jupyter_is_500_before_any_event() {
    let s = TestServer::start();
    let resp = s.client().post(s.url("/code")).json(&code_body("print(1)", None)).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let v = json_of(resp).await;
    assert_eq!(v["code"], "RUNTIME_ERROR");
    assert!(v["message"].as_str().unwrap().contains("not configured"), "{v}");
}

#[tokio::test]
async fn c92_unknown_language_is_500_and_sql_is_not_offered() {
    let s = TestServer::start();
    for lang in ["cobol", "sql", "Python"] {
        let body = json!({"code": "x", "context": {"language": lang}});
        let resp = s.client().post(s.url("/code")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 500, "{lang}");
        let v = json_of(resp).await;
        assert_eq!(v["code"], "RUNTIME_ERROR");
        assert!(v["message"].as_str().unwrap().contains("unknown language"), "{v}");
    }
}

#[tokio::test]
async fn c93_context_without_or_with_dead_jupyter_fails_within_10s() {
    let none = TestServer::start();
    let dead = execd_dead_jupyter();
    for s in [&none, &dead] {
        let t = Instant::now();
        let resp = s.client().post(s.url("/code/context")).json(&json!({"language": "python"})).send().await.unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(json_of(resp).await["code"], "RUNTIME_ERROR");
        let resp = s.client().post(s.url("/code")).json(&code_body("1", None)).send().await.unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(json_of(resp).await["code"], "RUNTIME_ERROR");
        assert!(t.elapsed() < Duration::from_secs(20), "two calls took {:?}", t.elapsed());
    }
    // Each call alone is bounded by 10 s (D50).
    let t = Instant::now();
    let resp = dead.client().post(dead.url("/code/context")).json(&json!({"language": "python"})).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(json_of(resp).await["message"].as_str().unwrap().contains("unreachable"));
}

#[tokio::test]
async fn c102_delete_contexts_needs_language_and_command_contexts_are_unsupported() {
    let s = TestServer::start();
    let resp = s.client().delete(s.url("/code/contexts")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v = json_of(resp).await;
    assert_eq!(v["code"], "MISSING_QUERY");
    assert_eq!(v["message"], "missing query parameter 'language'");
    for lang in ["command", "background-command", "sql"] {
        let resp = s.client().get(s.url(&format!("/code/contexts?language={lang}"))).send().await.unwrap();
        assert_eq!(resp.status(), 500, "{lang}");
        let v = json_of(resp).await;
        assert_eq!(v["message"], format!("unsupported language context operation: {lang}"));
    }
    let resp = s.client().get(s.url("/code/contexts?language=python")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(resp).await, json!([]));
    let resp = s.client().delete(s.url("/code/contexts?language=python")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn c103_unknown_context_is_404_and_unknown_run_context_is_500() {
    let s = execd_dead_jupyter();
    for req in [s.client().get(s.url("/code/contexts/unknown")), s.client().delete(s.url("/code/contexts/unknown"))] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let v = json_of(resp).await;
        assert_eq!(v, json!({"code": "CONTEXT_NOT_FOUND", "message": "context unknown not found"}));
    }
    let resp = s.client().post(s.url("/code")).json(&code_body("1", Some("unknown"))).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(json_of(resp).await["message"], "error running codes context not found");
}

// ---- against a real Jupyter server ----

#[tokio::test]
async fn c94_create_list_and_get_context() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let list: Value = json_of(s.client().get(s.url("/code/contexts?language=python")).send().await.unwrap()).await;
    assert!(list.as_array().unwrap().iter().any(|c| c["id"] == id.as_str() && c["language"] == "python"), "{list}");
    let all: Value = json_of(s.client().get(s.url("/code/contexts")).send().await.unwrap()).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let resp = s.client().get(s.url(&format!("/code/contexts/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(resp).await, json!({"id": id, "language": "python"}));
    // A cwd is created (with parents) and echoed.
    let cwd = s.dir.path().join("work/sub");
    let body = json!({"language": "python", "cwd": cwd.to_str().unwrap()});
    let resp = s.client().post(s.url("/code/context")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v = json_of(resp).await;
    assert_eq!(v["cwd"], cwd.to_str().unwrap());
    assert!(cwd.is_dir());
    // No kernelspec for the language: an error at once, not a hang.
    let t = Instant::now();
    let resp = s.client().post(s.url("/code/context")).json(&json!({"language": "cobol"})).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(json_of(resp).await["message"].as_str().unwrap().contains("no kernel specs"));
    assert!(t.elapsed() < Duration::from_secs(10));
    delete_context(&s, &id).await;
    delete_context(&s, v["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn c95_expression_streams_init_count_result_complete() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let events = run(&s, "2 + 2", Some(&id)).await;
    assert_eq!(kinds(&events), ["init", "execution_count", "result", "execution_complete"], "{events:?}");
    assert_eq!(events[0]["text"], id.as_str());
    assert!(events[1]["execution_count"].as_u64().unwrap() >= 1);
    assert_eq!(events[2]["results"]["text"], "4");
    assert!(events[2]["results"].get("text/plain").is_none());
    delete_context(&s, &id).await;
}

#[tokio::test]
async fn c96_print_gives_stdout_with_newline_and_no_count() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let events = run(&s, "print(\"Hello\")", Some(&id)).await;
    assert_eq!(stdout_text(&events), "Hello\n");
    assert_eq!(kinds(&events).first(), Some(&"init"));
    assert_eq!(kinds(&events).last(), Some(&"execution_complete"));
    assert!(!kinds(&events).contains(&"execution_count"), "{events:?}");
    // ipykernel may deliver `oops` and `\n` as two stderr messages (seen on a fresh-clone CI run).
    let events = run(&s, "import sys; print('oops', file=sys.stderr)", Some(&id)).await;
    assert_eq!(stream_text(&events, "stderr"), "oops\n", "{events:?}");
    assert_eq!(kinds(&events).last(), Some(&"execution_complete"));
    delete_context(&s, &id).await;
}

#[tokio::test]
async fn c97_error_gives_status_error_with_traceback_then_complete() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let events = run(&s, "undefined_var", Some(&id)).await;
    assert_eq!(kinds(&events), ["init", "status", "error", "execution_complete"], "{events:?}");
    assert_eq!(events[1]["text"], "error");
    let err = &events[2]["error"];
    assert_eq!(err["ename"], "NameError");
    assert!(err["evalue"].as_str().unwrap().contains("undefined_var"));
    assert!(!err["traceback"].as_array().unwrap().is_empty());
    delete_context(&s, &id).await;
}

/// Issue #13: tslab (TypeScript) reports `throw new Error("x")` only as stderr plus an
/// `execute_reply` with status `error` and no `ename`. execd must not invent an `error` event with
/// empty `ename`/`evalue` (upstream's e2e test reads `errors[0].name`): upstream streams `init`,
/// `stderr`, `execution_complete`. The kernel here is `execd-tslab-like`, a wrapper kernel that
/// `scripts/jupyter-test-env.sh` registers and that answers exactly as tslab's jupyter.ts does.
#[tokio::test]
async fn hx_jupyter_error_reply_without_ename_gives_stderr_then_complete() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "typescript").await;
    let body = |code: &str| json!({"code": code, "context": {"id": id, "language": "typescript"}});
    let events = run_body(&s, &body("throw new Error(\"x\")")).await;
    let mut shape = kinds(&events);
    shape.dedup();
    assert_eq!(shape, ["init", "stderr", "execution_complete"], "{events:?}");
    assert!(stream_text(&events, "stderr").starts_with("Error: x\n"), "{events:?}");
    // The context is fine afterwards.
    let events = run_body(&s, &body("1")).await;
    assert_eq!(stdout_text(&events), "1\n", "{events:?}");
    assert_eq!(kinds(&events).last(), Some(&"execution_complete"));
    delete_context(&s, &id).await;
}

#[tokio::test]
async fn c98_state_persists_between_runs_of_a_context() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let events = run(&s, "answer = 6 * 7", Some(&id)).await;
    assert_eq!(kinds(&events), ["init", "execution_complete"], "{events:?}");
    assert_eq!(result_texts(&run(&s, "answer", Some(&id)).await), ["42"]);
    delete_context(&s, &id).await;
}

#[tokio::test]
async fn c99_default_context_is_shared_and_created_once() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    // Two concurrent first calls: one default context (single-flight). The loser either runs
    // after the winner or is told the context is busy (409, before any event).
    let call = |code: &'static str| {
        let c = s.client();
        let url = s.url("/code");
        async move { c.post(url).json(&code_body(code, None)).send().await.unwrap() }
    };
    let (a, b) = tokio::join!(call("2+2"), call("2+2"));
    let mut init_ids = Vec::new();
    for resp in [a, b] {
        if resp.status() == 409 {
            assert_eq!(json_of(resp).await["code"], "CONFLICT");
            continue;
        }
        assert_eq!(resp.status(), 200);
        let events = without_pings(&parse_events(&resp.text().await.unwrap()));
        assert_eq!(result_texts(&events), ["4"], "{events:?}");
        init_ids.push(events[0]["text"].as_str().unwrap().to_string());
    }
    assert!(!init_ids.is_empty());
    let list: Value = json_of(s.client().get(s.url("/code/contexts?language=python")).send().await.unwrap()).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert!(init_ids.iter().all(|i| *i == id));
    // State is shared between default-context calls.
    run(&s, "shared = 'yes'", None).await;
    let events = run(&s, "shared", None).await;
    assert_eq!(events[0]["text"], id.as_str());
    assert_eq!(result_texts(&events), ["'yes'"]);
    let resp = s.client().delete(s.url("/code/contexts?language=python")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn c100_interrupt_ends_a_long_loop_and_the_context_stays_usable() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let code = "import time\nprint('started', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)\n";
    let mut reader = start_run(&s, code, Some(&id)).await;
    read_until_stdout(&mut reader, "started").await;
    let t = Instant::now();
    let resp = s.client().delete(s.url(&format!("/code?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rest = tokio::time::timeout(Duration::from_secs(60), reader.rest()).await.expect("stream did not end");
    assert!(t.elapsed() < Duration::from_secs(60));
    let rest = without_pings(&rest);
    let err = rest.iter().find(|e| e["type"] == "error").unwrap_or_else(|| panic!("no error: {rest:?}"));
    assert_eq!(err["error"]["ename"], "KeyboardInterrupt");
    assert_eq!(kinds(&rest).last(), Some(&"execution_complete"));
    assert_eq!(result_texts(&run(&s, "1 + 1", Some(&id)).await), ["2"]);
    delete_context(&s, &id).await;
}

#[tokio::test]
async fn c101_deleted_context_is_gone_and_delete_by_language_empties_the_list() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    delete_context(&s, &id).await;
    let resp = s.client().get(s.url(&format!("/code/contexts/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(json_of(resp).await["code"], "CONTEXT_NOT_FOUND");
    // The kernel is gone from Jupyter too, and running in the context is "not found".
    let resp = s.client().post(s.url("/code")).json(&code_body("1", Some(&id))).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    // Delete by language: every context of it, then the list is [].
    let a = create_context(&s, "python").await;
    let b = create_context(&s, "python").await;
    assert_ne!(a, b);
    let resp = s.client().delete(s.url("/code/contexts?language=python")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = json_of(s.client().get(s.url("/code/contexts?language=python")).send().await.unwrap()).await;
    assert_eq!(list, json!([]));
    let resp = s.client().delete(s.url("/code/contexts?language=bash")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = json_of(s.client().get(s.url("/code/contexts?language=bash")).send().await.unwrap()).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn c104_concurrent_run_in_one_context_is_rejected_with_409_before_init() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let mut first = start_run(&s, "import time\nprint('go', flush=True)\ntime.sleep(60)", Some(&id)).await;
    read_until_stdout(&mut first, "go").await;
    let resp = s.client().post(s.url("/code")).json(&code_body("1", Some(&id))).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    let v = json_of(resp).await;
    assert_eq!(v["code"], "CONFLICT");
    assert!(v["message"].as_str().unwrap().contains("busy"), "{v}");
    // Once the first run ends (interrupted here), the context takes runs again.
    let resp = s.client().delete(s.url(&format!("/code?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::timeout(Duration::from_secs(60), first.rest()).await.expect("first run did not end");
    let ok = common::wait_until_async(common::TIMEOUT, || async {
        let resp = s.client().post(s.url("/code")).json(&code_body("3 * 3", Some(&id))).send().await.unwrap();
        resp.status() == 200 && result_texts(&without_pings(&parse_events(&resp.text().await.unwrap()))) == ["9"]
    })
    .await;
    assert!(ok);
    delete_context(&s, &id).await;
}

#[tokio::test]
async fn d50_display_data_is_streamed_as_a_result_event() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let id = create_context(&s, "python").await;
    let code = "from IPython.display import display, HTML\ndisplay('shown')\ndisplay(HTML('<b>x</b>'))\n'value'";
    let events = run(&s, code, Some(&id)).await;
    let results: Vec<&Value> = events.iter().filter(|e| e["type"] == "result").collect();
    assert_eq!(results.len(), 3, "{events:?}");
    assert_eq!(results[0]["results"]["text"], "'shown'");
    assert_eq!(results[1]["results"]["text/html"], "<b>x</b>");
    assert_eq!(results[2]["results"]["text"], "'value'");
    assert_eq!(kinds(&events).last(), Some(&"execution_complete"));
    delete_context(&s, &id).await;
}

#[tokio::test]
async fn d50_interrupt_of_a_command_id_still_works_through_code() {
    // DELETE /code?id= falls through to the command interrupt for ids that are not contexts.
    let s = TestServer::start();
    let resp = s.client().delete(s.url("/code?id=nope")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let resp = s.client().delete(s.url("/code")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(json_of(resp).await["code"], "MISSING_QUERY");
}

#[tokio::test]
async fn d50_default_context_is_replaced_when_its_kernel_is_gone() {
    let Some(j) = jupyter() else { return };
    let s = execd_with(j);
    let first = run(&s, "1", None).await;
    let old = first[0]["text"].as_str().unwrap().to_string();
    // Delete the Jupyter session behind execd's back (as a Jupyter restart would).
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/sessions/{old}", j.url))
        .header("Authorization", format!("token {}", j.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let events = run(&s, "2 * 21", None).await;
    assert_eq!(result_texts(&events), ["42"], "{events:?}");
    let new = events[0]["text"].as_str().unwrap();
    assert_ne!(new, old);
    let list: Value = json_of(s.client().get(s.url("/code/contexts?language=python")).send().await.unwrap()).await;
    assert_eq!(list, json!([{"id": new, "language": "python"}]));
    delete_context(&s, new).await;
}

#[tokio::test]
async fn d15_shutdown_ends_a_running_code_stream_with_an_error_event() {
    let Some(j) = jupyter() else { return };
    let mut s = execd_with(j);
    let id = create_context(&s, "python").await;
    let mut reader = start_run(&s, "import time\nprint('go', flush=True)\ntime.sleep(60)", Some(&id)).await;
    read_until_stdout(&mut reader, "go").await;
    let pid = s.pid();
    let status = tokio::task::spawn_blocking(move || {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    });
    let rest = tokio::time::timeout(Duration::from_secs(30), reader.rest()).await.expect("stream did not end");
    status.await.unwrap();
    let rest = without_pings(&rest);
    let last = rest.last().unwrap_or_else(|| panic!("no terminal event"));
    assert_eq!(last["type"], "error", "{rest:?}");
    assert_eq!(last["error"]["ename"], "RUNTIME_ERROR");
    assert_eq!(s.terminate().and_then(|st| st.code()), Some(0));
    // The kernel outlives execd (the Jupyter server owns it); clean it up directly.
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/sessions/{id}", j.url))
        .header("Authorization", format!("token {}", j.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn x62_jupyter_code_is_audited_with_its_outcome() {
    let Some(j) = jupyter() else { return };
    let audit = tempfile::tempdir().unwrap();
    let path = audit.path().join("audit.log");
    let s = TestServer::options()
        .arg("--jupyter-host")
        .arg(&j.url)
        .arg("--jupyter-token")
        .arg(&j.token)
        .arg(&format!("--audit-log={}", path.display()))
        .start();
    let ctx = create_context(&s, "python").await;
    run(&s, "print(1)", Some(&ctx)).await;
    run(&s, "1/0", Some(&ctx)).await;
    let lines = wait_for_audit_lines(&path, 2).await;
    for l in &lines {
        assert_eq!(l["kind"], "execution", "{l}");
        assert_eq!(l["operation"], "run_code", "{l}");
        assert_eq!(l["route"], "/code", "{l}");
        assert_eq!(l["id"], ctx.as_str(), "{l}");
        assert_eq!(l["exit_reason"], "exited", "{l}");
        assert_eq!(l["exit_code"], Value::Null, "a kernel has no exit code: {l}");
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0, "{l}");
    }
    assert_eq!(lines[0]["success"], true, "{}", lines[0]);
    assert_eq!(lines[1]["success"], false, "ZeroDivisionError: {}", lines[1]);
    assert_eq!(lines[1]["command"], "1/0");
    delete_context(&s, &ctx).await;
}

/// The audit log's lines, once there are at least `n` (bounded wait).
async fn wait_for_audit_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} audit lines, want {n}: {lines:#?}", lines.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
