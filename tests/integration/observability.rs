//! Observability (EXTENSIONS X61, X62) through the real binary: `GET /metrics/prometheus` values
//! move with traffic, and the audit log (`--audit-log`) has one complete line per execution and
//! file mutation, scrubbed, private, and rotated once without a torn or lost line under
//! concurrency. The exposition format itself is checked with the official Python parser in
//! `tests/sdk/test_prometheus.py`.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use std::time::{Duration, Instant};

use common::{parse_events, TestServer, TIMEOUT};
use serde_json::{json, Value};

/// The value of the sample whose name and labels are exactly `series` (`name{a="b",...}`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn scrape(s: &TestServer) -> String {
    let r = s.client().get(s.url("/metrics/prometheus")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// Runs a foreground command and returns its events.
async fn run(s: &TestServer, body: Value) -> Vec<Value> {
    let r = s.client().post(s.url("/command")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    parse_events(&r.text().await.unwrap())
}

#[tokio::test]
async fn x61_prometheus_values_follow_requests() {
    let s = TestServer::start();
    let before = scrape(&s).await;
    let ping = r#"execd_http_request_duration_milliseconds_count{http_method="GET",http_route="/ping",http_status_code="200"}"#;
    let ok_runs = r#"execd_execution_duration_milliseconds_count{operation="run_command",result="success"}"#;
    let failed_runs = r#"execd_execution_duration_milliseconds_count{operation="run_command",result="failure"}"#;
    let info_missing =
        r#"execd_filesystem_operations_duration_milliseconds_count{operation="get_file_info",result="failure"}"#;
    let status_route = r#"execd_http_request_duration_milliseconds_count{http_method="GET",http_route="/command/status/:id",http_status_code="404"}"#;
    // The test harness's readiness pings came first.
    let pings_before = sample(&before, ping).unwrap_or(0.0);
    for name in [ok_runs, failed_runs, info_missing, status_route] {
        assert_eq!(sample(&before, name), None, "{name} before any request:\n{before}");
    }
    for _ in 0..3 {
        assert_eq!(s.client().get(s.url("/ping")).send().await.unwrap().status(), 200);
    }
    run(&s, json!({"command": "true"})).await;
    run(&s, json!({"command": "true"})).await;
    run(&s, json!({"command": "exit 3"})).await;
    let r = s.client().get(s.url("/files/info?path=/no/such/file")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s.client().get(s.url("/command/status/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // The execution is recorded by the command's waiter, just after the stream's last event.
    let deadline = Instant::now() + TIMEOUT;
    let after = loop {
        let text = scrape(&s).await;
        if sample(&text, failed_runs) == Some(1.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sample(&after, ping), Some(pings_before + 3.0), "{after}");
    assert_eq!(sample(&after, ok_runs), Some(2.0), "{after}");
    assert_eq!(sample(&after, info_missing), Some(1.0), "{after}");
    assert_eq!(sample(&after, status_route), Some(1.0), "{after}");
    // The stream's duration is part of the request's (measured to the end of the body).
    let cmd_sum = r#"execd_http_request_duration_milliseconds_sum{http_method="POST",http_route="/command",http_status_code="200"}"#;
    assert!(sample(&after, cmd_sum).unwrap() > 0.0, "{after}");
    // Gauges read at scrape time.
    assert!(sample(&after, "execd_system_process_count").unwrap() >= 1.0, "{after}");
    assert!(sample(&after, "execd_system_memory_usage_bytes").unwrap() > 0.0, "{after}");
    assert!(sample(&after, "execd_commands_tracked").unwrap() >= 3.0, "{after}");
    assert!(sample(&after, r#"execd_system_network_connections_active{protocol="tcp"}"#).is_some(), "{after}");
    // An unknown path does not grow the label space.
    s.client().get(s.url("/no/such/route/12345")).send().await.unwrap();
    let text = scrape(&s).await;
    assert!(!text.contains("12345"), "{text}");
    assert!(
        sample(&text, r#"execd_http_request_duration_milliseconds_count{http_method="GET",http_route="unknown",http_status_code="404"}"#)
            .is_some(),
        "{text}"
    );
}

#[tokio::test]
async fn x61_prometheus_constant_attributes_and_auth() {
    let s = TestServer::options()
        .token("tok")
        .env("OPENSANDBOX_ID", "sb-42")
        .env("OPENSANDBOX_EXECD_METRICS_EXTRA_ATTRS", "team=ml")
        .start();
    let r = reqwest::Client::new().get(s.url("/metrics/prometheus")).send().await.unwrap();
    assert_eq!(r.status(), 401, "the route needs the token like every route");
    let text = scrape(&s).await;
    let unauthorized = r#"execd_http_request_duration_milliseconds_count{sandbox_id="sb-42",team="ml",http_method="GET",http_route="/metrics/prometheus",http_status_code="401"}"#;
    assert_eq!(sample(&text, unauthorized), Some(1.0), "{text}");
    assert!(sample(&text, r#"execd_system_process_count{sandbox_id="sb-42",team="ml"}"#).is_some(), "{text}");
    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["prometheus"], true);
    assert_eq!(caps["features"]["audit_log"], false);
}

/// Every line of the audit log (and its rotation) as JSON; panics on a torn line.
fn audit_lines(path: &Path) -> Vec<Value> {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    let mut out = Vec::new();
    for p in [Path::new(&rotated), path] {
        let Ok(text) = std::fs::read_to_string(p) else { continue };
        assert!(text.is_empty() || text.ends_with('\n'), "last line of {} is not whole", p.display());
        for l in text.lines() {
            out.push(serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")));
        }
    }
    out
}

async fn wait_for_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let lines = audit_lines(path);
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} audit lines, want {n}: {lines:#?}", lines.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn audit_server(max_bytes: Option<u64>) -> (TestServer, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut opts = TestServer::options().arg(&format!("--audit-log={}", path.display()));
    if let Some(m) = max_bytes {
        opts = opts.arg(&format!("--audit-log-max-bytes={m}"));
    }
    (opts.start(), path, dir)
}

#[tokio::test]
async fn x62_audit_line_per_execution_with_every_field() {
    let (s, path, _dir) = audit_server(None);
    let cwd = tempfile::tempdir().unwrap();
    let events =
        run(&s, json!({"command": "GITHUB_TOKEN=hunter2 sh -c 'exit 3' --password=hunter2", "cwd": cwd.path()})).await;
    let id = events.iter().find(|e| e["type"] == "init").unwrap()["text"].as_str().unwrap().to_string();
    let lines = wait_for_lines(&path, 1).await;
    let l = &lines[0];
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(l["kind"], "execution", "{l}");
    assert_eq!(l["id"], id.as_str(), "{l}");
    assert_eq!(l["route"], "/command", "{l}");
    assert_eq!(l["method"], "POST", "{l}");
    assert_eq!(l["operation"], "run_command", "{l}");
    assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
    let cmd = l["command"].as_str().unwrap();
    assert!(!cmd.contains("hunter2"), "secret in the audit log: {l}");
    assert!(cmd.contains("GITHUB_TOKEN=***") && cmd.contains("--password=***"), "{l}");
    assert_eq!(l["cwd"], cwd.path().display().to_string(), "{l}");
    assert_eq!(l["uid"], rustix_uid(), "{l}");
    assert!(l["gid"].is_u64(), "{l}");
    assert_eq!(l["exit_code"], 3, "{l}");
    assert_eq!(l["exit_reason"], "exited", "{l}");
    assert!(l["duration_ms"].as_f64().unwrap() >= 0.0, "{l}");
    assert_eq!(l["background"], false, "{l}");
    let t = l["time"].as_str().unwrap();
    assert!(t.len() >= 20 && t.ends_with('Z') && t.contains('T'), "{l}");
    assert!(!std::fs::read_to_string(&path).unwrap().contains("hunter2"));

    // A background command is audited when it ends; an argv command shows its argv.
    let r = s
        .client()
        .post(s.url("/command"))
        .json(&json!({"argv": ["sh", "-c", "sleep 0.2; exit 1"], "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let lines = wait_for_lines(&path, 2).await;
    let l = &lines[1];
    assert_eq!(l["background"], true, "{l}");
    assert_eq!(l["exit_code"], 1, "{l}");
    assert_eq!(l["command"], r#"["sh","-c","sleep 0.2; exit 1"]"#, "{l}");
    assert!(l["duration_ms"].as_f64().unwrap() >= 200.0, "{l}");
    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["audit_log"], true);
}

#[tokio::test]
async fn x62_session_runs_are_audited_with_their_exit() {
    let (s, path, _dir) = audit_server(None);
    let created: Value =
        s.client().post(s.url("/session")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let sid = created["session_id"].as_str().unwrap().to_string();
    let cwd = tempfile::tempdir().unwrap();
    let run = |body: Value| {
        let (s, sid) = (&s, &sid);
        async move {
            let r = s.client().post(s.url(&format!("/session/{sid}/run"))).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    run(json!({"command": "API_KEY=hunter2 false", "cwd": cwd.path()})).await;
    let l = &wait_for_lines(&path, 1).await[0];
    assert_eq!(l["kind"], "execution", "{l}");
    assert_eq!(l["operation"], "run_in_session", "{l}");
    assert_eq!(l["route"], "/session/:id/run", "{l}");
    assert_eq!(l["id"], sid.as_str(), "{l}");
    assert_eq!(l["command"], "API_KEY=*** false", "{l}");
    assert_eq!(l["cwd"], cwd.path().display().to_string(), "{l}");
    assert_eq!(l["exit_code"], 1, "{l}");
    assert_eq!(l["exit_reason"], "exited", "{l}");
    assert_eq!(l["success"], false, "{l}");
    assert!(l["duration_ms"].as_f64().unwrap() >= 0.0, "{l}");
    assert!(!std::fs::read_to_string(&path).unwrap().contains("hunter2"));

    // Without a cwd the run is in the session's directory, which only bash knows: none is claimed.
    run(json!({"command": "true"})).await;
    let l = &wait_for_lines(&path, 2).await[1];
    assert_eq!(l["exit_code"], 0, "{l}");
    assert_eq!(l["success"], true, "{l}");
    assert_eq!(l["cwd"], Value::Null, "{l}");

    // A run that outlives its timeout is audited as such, when execd has ended it.
    run(json!({"command": "sleep 30", "timeout": 300})).await;
    let l = &wait_for_lines(&path, 3).await[2];
    assert_eq!(l["exit_reason"], "timeout", "{l}");
    assert_eq!(l["success"], false, "{l}");
    assert!(l["duration_ms"].as_f64().unwrap() < 20_000.0, "{l}");

    // The Prometheus execution counter sees the same three runs.
    let text = scrape(&s).await;
    let runs: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("execd_execution_duration_milliseconds_count") && l.contains("operation=\"run_in_session\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(runs, 3.0, "{text}");
}

fn rustix_uid() -> u32 {
    // The test runs as the same uid as the execd it starts.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn multipart(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (path, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n\
                 Content-Type: application/json\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; \
                 name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                json!({"path": path})
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn x62_audit_line_per_file_mutation() {
    let (s, path, _dir) = audit_server(None);
    let work = tempfile::tempdir().unwrap();
    let d = |n: &str| work.path().join(n).display().to_string();
    let c = s.client();
    let r = c.post(s.url("/directories")).json(&json!({ d("sub"): {"mode": 755} })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = multipart("XyZ", &[(&d("sub/a.txt"), b"hello"), (&d("sub/b.txt"), b"world!")]);
    let len = body.len() as u64;
    let r = c
        .post(s.url("/files/upload"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = c
        .post(s.url("/files/mv"))
        .json(&json!([{"src": d("sub/a.txt"), "dest": d("sub/c.txt")}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.delete(s.url(&format!("/files?path={}", d("sub/c.txt")))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Reads are not audited.
    let r = c.get(s.url(&format!("/files/info?path={}", d("sub/b.txt")))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let lines = wait_for_lines(&path, 4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let want = [
        ("make_directories", "/directories", vec![d("sub")]),
        ("upload_file", "/files/upload", vec![d("sub/a.txt"), d("sub/b.txt")]),
        ("move_files", "/files/mv", vec![d("sub/a.txt"), d("sub/c.txt")]),
        ("remove_files", "/files", vec![d("sub/c.txt")]),
    ];
    // One line per mutation; an upload's line may come after a later request's when its
    // metadata parser finished after the response (bounded wait), so lines are matched by operation.
    let by_op = |op: &str| lines.iter().find(|l| l["operation"] == op).unwrap_or_else(|| panic!("no {op}: {lines:#?}"));
    for (op, route, paths) in want {
        let l = by_op(op);
        assert_eq!(l["kind"], "file", "{l}");
        assert_eq!(l["route"], route, "{l}");
        assert_eq!(l["paths"], json!(paths), "{l}");
        assert_eq!(l["paths_complete"], true, "{l}");
        assert_eq!(l["status"], 200, "{l}");
        assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
        assert_eq!(l["uid"], rustix_uid(), "{l}");
        assert!(l["time"].is_string() && l["duration_ms"].is_f64(), "{l}");
    }
    assert_eq!(by_op("upload_file")["bytes"], len, "{lines:#?}");
    assert_eq!(by_op("remove_files")["bytes"], 0, "{lines:#?}");
}

#[tokio::test]
async fn x62_audit_rotation_under_50_concurrent_writers() {
    // Each line is about 400 bytes (long paths): 50 lines need one rotation at 12 000 bytes,
    // and fit in the two files.
    let (s, path, _dir) = audit_server(Some(12_000));
    let work = tempfile::tempdir().unwrap();
    let pad = "p".repeat(120);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = s.client();
        let url = s.url("/directories");
        let dir = work.path().join(format!("{pad}{i:02}")).display().to_string();
        tasks.push(tokio::spawn(async move {
            let r = c.post(url).json(&json!({ dir.clone(): {"mode": 755} })).send().await.unwrap();
            assert_eq!(r.status(), 200);
            dir
        }));
    }
    let mut want = Vec::new();
    for t in tasks {
        want.push(t.await.unwrap());
    }
    let lines = wait_for_lines(&path, 50).await;
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    assert!(Path::new(&rotated).exists(), "no rotation happened");
    for p in [path.as_path(), Path::new(&rotated)] {
        assert!(std::fs::metadata(p).unwrap().len() <= 12_000);
        assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let mut got: Vec<String> = lines.iter().map(|l| l["paths"][0].as_str().unwrap().to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every line once, none lost");
}
