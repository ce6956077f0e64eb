//! Foreground `/command` and stateless `/code` against the real binary: stream framing (C20–C25),
//! foreground semantics (C30–C48), code routing (C90–C92), environment (C181), clone3 (C5) and
//! shutdown (C182).

use crate::common;

use std::time::{Duration, Instant};

use common::{parse_events, raw_texts, texts, without_pings, EventReader, TestServer, TIMEOUT};
use serde_json::{json, Value};

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server.client().post(server.url(path)).json(&body).send().await.unwrap()
}

/// Runs a command to the end and returns every event (pings included).
async fn run(server: &TestServer, body: Value) -> Vec<Value> {
    let resp = post(server, "/command", body).await;
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(TIMEOUT, resp.text()).await.expect("stream ended").unwrap();
    parse_events(&text)
}

async fn run_cmd(server: &TestServer, cmd: &str) -> Vec<Value> {
    without_pings(&run(server, json!({ "command": cmd })).await)
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn terminal(events: &[Value]) -> &Value {
    events.iter().rev().find(|e| e["type"] == "execution_complete" || e["type"] == "error").expect("terminal event")
}

async fn error_json(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    resp.json().await.unwrap()
}

#[tokio::test]
async fn c15_keys_match_case_insensitively_and_unknown_keys_are_ignored() {
    let s = TestServer::start();
    let ev = without_pings(&run(&s, json!({"Command": "echo hi", "foo": 1})).await);
    assert_eq!(texts(&ev, "stdout"), ["hi"]);
}

#[tokio::test]
async fn c20_first_event_is_init_and_events_are_bare_json_lines() {
    let s = TestServer::start();
    let resp = post(&s, "/command", json!({"command": "echo a; echo b >&2"})).await;
    let body = resp.text().await.unwrap();
    assert!(body.ends_with("\n\n"), "{body:?}");
    for line in body.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with('{') && !line.starts_with("data:") && !line.starts_with("event:"), "{line:?}");
    }
    let ev = parse_events(&body);
    assert_eq!(ev[0]["type"], "init");
    assert!(is_hex32(ev[0]["text"].as_str().unwrap()));
}

#[tokio::test]
async fn c21_stream_response_headers() {
    let s = TestServer::start();
    let resp = post(&s, "/command", json!({"command": "true"})).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-length").is_none());
}

#[tokio::test]
async fn c22_every_event_has_type_and_unix_ms_timestamp() {
    let s = TestServer::start();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for e in run(&s, json!({"command": "echo x; echo y >&2; exit 2"})).await {
        assert!(e["type"].is_string(), "{e}");
        let ts = e["timestamp"].as_i64().unwrap_or_else(|| panic!("no integer timestamp: {e}"));
        assert!((ts - now).abs() < 10_000, "{e}");
    }
}

#[tokio::test]
async fn c23_ping_right_after_init_then_every_3s() {
    let s = TestServer::start();
    let resp = post(&s, "/command", json!({"command": "sleep 6.6"})).await;
    let mut r = EventReader::new(resp);
    let init = r.next().await.unwrap();
    assert_eq!(init["type"], "init");
    let t0 = Instant::now();
    let first = r.next().await.unwrap();
    assert_eq!(first, json!({"type":"ping","text":"pong","timestamp": first["timestamp"]}));
    let mut ping_times = vec![];
    while let Some(e) = r.next().await {
        if e["type"] == "ping" {
            ping_times.push(t0.elapsed().as_secs_f64());
        }
    }
    assert!(ping_times.len() >= 2, "{ping_times:?}");
    assert!((ping_times[0] - 3.0).abs() < 0.5 && (ping_times[1] - 6.0).abs() < 0.5, "{ping_times:?}");
}

#[tokio::test]
async fn c24_stream_closes_right_after_terminal_event() {
    let s = TestServer::start();
    for cmd in ["true", "exit 4"] {
        let resp = post(&s, "/command", json!({ "command": cmd })).await;
        let mut r = EventReader::new(resp);
        loop {
            let e = r.next().await.expect("terminal before end");
            if e["type"] == "execution_complete" || e["type"] == "error" {
                break;
            }
        }
        let t = Instant::now();
        assert!(r.next().await.is_none(), "nothing after the terminal event");
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    }
}

#[tokio::test]
async fn c25_validation_failure_is_json_400_not_a_stream() {
    let s = TestServer::start();
    let v = error_json(post(&s, "/command", json!({"command": ""})).await, 400).await;
    assert_eq!(v["code"], "INVALID_REQUEST_BODY");
}

#[tokio::test]
async fn c30_stdout_stderr_then_execution_complete() {
    let s = TestServer::start();
    let ev = run_cmd(&s, "echo hello; echo errline 1>&2").await;
    assert_eq!(ev[0]["type"], "init");
    assert_eq!(texts(&ev, "stdout"), ["hello"]);
    assert_eq!(texts(&ev, "stderr"), ["errline"]);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "execution_complete");
    assert!(last.get("execution_time").is_none_or(|t| t.as_u64().is_some()));
    assert!(ev.iter().all(|e| e["type"] != "error"));
}

// C31–C33 as the newer upstream contract has them (docs/COMPATIBILITY.md): each event keeps its
// line ending, so the events joined are the output exactly. The 1.0.12 rule (`["a","\n","b"]`,
// endings stripped) lost blank lines in the SDKs' `Execution.text` and could not give back `\r\n`.

#[tokio::test]
async fn c31_blank_lines_are_kept_with_their_endings() {
    let s = TestServer::start();
    let ev = run_cmd(&s, r"printf 'a\n\nb\n\n\nc\n'").await;
    assert_eq!(raw_texts(&ev, "stdout"), ["a\n", "\n", "b\n", "\n", "\n", "c\n"]);
    assert_eq!(raw_texts(&ev, "stdout").concat(), "a\n\nb\n\n\nc\n");
}

#[tokio::test]
async fn c32_carriage_returns_and_crlf_are_kept() {
    let s = TestServer::start();
    let ev = run_cmd(&s, r"printf 'line1\nprog 10%%\rprog 20%%\rlast\n'").await;
    assert_eq!(raw_texts(&ev, "stdout"), ["line1\n", "prog 10%\r", "prog 20%\r", "last\n"]);
    let ev = run_cmd(&s, r"printf 'x\r\ny\r\n'").await;
    assert_eq!(raw_texts(&ev, "stdout"), ["x\r\n", "y\r\n"]);
    // The \r\n pair split across two writes (and two pipe reads): the joined text is still exact.
    let ev = run_cmd(&s, r"printf 'p\r'; sleep 0.3; printf '\nq\n'").await;
    assert_eq!(raw_texts(&ev, "stdout").concat(), "p\r\nq\n");
    let ev = run_cmd(&s, r"printf 'a\r\nb\rc'").await;
    assert_eq!(raw_texts(&ev, "stdout"), ["a\r\n", "b\r", "c"]);
}

#[tokio::test]
async fn c33_partial_line_is_sent_unterminated_before_execution_complete() {
    let s = TestServer::start();
    let ev = run_cmd(&s, "printf 'no-newline'").await;
    assert_eq!(raw_texts(&ev, "stdout"), ["no-newline"]);
    assert_eq!(ev.last().unwrap()["type"], "execution_complete");
}

/// Issue #24 part 2: stderr keeps its endings too, and the streams stay apart.
#[tokio::test]
async fn sdk24_output_stderr_keeps_endings_and_joins_exactly() {
    let s = TestServer::start();
    let ev = run_cmd(&s, r"printf 'e1\r\n\ne2' >&2; printf 'o1\n\n'").await;
    assert_eq!(raw_texts(&ev, "stderr"), ["e1\r\n", "\n", "e2"]);
    assert_eq!(raw_texts(&ev, "stdout"), ["o1\n", "\n"]);
}

/// Issue #24 part 2: a line over the cap is cut into pieces; only the last keeps the ending, and
/// the pieces joined are the line.
#[tokio::test]
async fn sdk24_output_long_line_pieces_join_exactly() {
    let s = TestServer::start();
    let ev = run_cmd(&s, "head -c 2500000 /dev/zero | tr '\\0' x; printf '\\r\\nend\\n'").await;
    let out = raw_texts(&ev, "stdout");
    let lens: Vec<usize> = out.iter().map(String::len).collect();
    assert_eq!(lens, [1 << 20, 1 << 20, 2_500_000 - 2 * (1 << 20) + 2, 4]);
    assert_eq!(out.concat(), format!("{}\r\nend\n", "x".repeat(2_500_000)));
}

#[tokio::test]
async fn c34_nonzero_exit_is_an_error_event_without_complete() {
    let s = TestServer::start();
    let ev = run_cmd(&s, "echo before; exit 3").await;
    assert_eq!(texts(&ev, "stdout"), ["before"]);
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"], json!({"ename":"CommandExecError","evalue":"3","traceback":["exit status 3"]}));
    assert!(ev.iter().all(|e| e["type"] != "execution_complete"));
}

#[tokio::test]
async fn c35_unknown_command_gives_127() {
    let s = TestServer::start();
    let ev = run_cmd(&s, "nonexistent-cmd-xyz").await;
    assert!(texts(&ev, "stderr").iter().any(|t| t.contains("nonexistent-cmd-xyz")));
    assert_eq!(terminal(&ev)["error"]["evalue"], "127");
}

#[tokio::test]
async fn c36_cwd_is_used() {
    let s = TestServer::start();
    let ev = without_pings(&run(&s, json!({"command": "pwd", "cwd": "/tmp"})).await);
    assert_eq!(texts(&ev, "stdout"), ["/tmp"]);
}

#[tokio::test]
async fn c37_missing_cwd_is_400_and_tilde_is_home() {
    let s = TestServer::start();
    let v = error_json(post(&s, "/command", json!({"command": "pwd", "cwd": "/does/not/exist"})).await, 400).await;
    assert_eq!(v["code"], "INVALID_REQUEST_BODY");
    assert!(v["message"].as_str().unwrap().contains("cwd"), "{v}");
    let home = std::env::var("HOME").unwrap();
    let ev = without_pings(&run(&s, json!({"command": "pwd", "cwd": "~"})).await);
    assert_eq!(texts(&ev, "stdout"), [home]);
    // Validated and run with the same merged env: a cwd from the request's envs works.
    let ev = without_pings(&run(&s, json!({"command": "pwd", "cwd": "$WD", "envs": {"WD": "/tmp"}})).await);
    assert_eq!(texts(&ev, "stdout"), ["/tmp"]);
}

#[tokio::test]
async fn c38_request_envs_reach_the_command() {
    let s = TestServer::start();
    let ev = without_pings(&run(&s, json!({"command": "echo $FOO", "envs": {"FOO": "bar"}})).await);
    assert_eq!(texts(&ev, "stdout"), ["bar"]);
    let ev = run_cmd(&s, "echo $FOO").await;
    assert_eq!(raw_texts(&ev, "stdout"), ["\n"]);
}

#[tokio::test]
async fn c39_execd_envs_file_is_reread_and_overridden_by_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envs");
    std::fs::write(&file, "X1=from-file\n").unwrap();
    let s = TestServer::options().env("EXECD_ENVS", file.to_str().unwrap()).start();
    assert_eq!(texts(&run_cmd(&s, "echo $X1").await, "stdout"), ["from-file"]);
    let ev = without_pings(&run(&s, json!({"command": "echo $X1", "envs": {"X1": "req"}})).await);
    assert_eq!(texts(&ev, "stdout"), ["req"]);
    std::fs::write(&file, "X1=edited\n").unwrap();
    assert_eq!(texts(&run_cmd(&s, "echo $X1").await, "stdout"), ["edited"]);
}

#[tokio::test]
async fn c40_invalid_requests_are_400_naming_the_field() {
    let s = TestServer::start();
    let cases = [
        (json!({"command": ""}), "command"),
        (json!({"command": "x", "timeout": -1}), "timeout"),
        (json!({"command": "x", "gid": 1}), "gid"),
        (json!({"command": "x", "uid": -1}), "uid"),
        (json!({"command": "x", "timeout": "5"}), "timeout"),
    ];
    for (body, field) in cases {
        let v = error_json(post(&s, "/command", body.clone()).await, 400).await;
        assert_eq!(v["code"], "INVALID_REQUEST_BODY", "{body}");
        assert!(v["message"].as_str().unwrap().contains(field), "{body}: {v}");
    }
    let resp = s.client().post(s.url("/command")).body("").send().await.unwrap();
    assert_eq!(error_json(resp, 400).await["code"], "INVALID_REQUEST_BODY");
}

#[tokio::test]
async fn c41_timeout_kills_the_whole_group() {
    let s = TestServer::start();
    let t = Instant::now();
    let ev = without_pings(&run(&s, json!({"command": "sleep 10 & echo $!; sleep 10", "timeout": 500})).await);
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
    assert_eq!(terminal(&ev)["error"]["evalue"], "-1");
    assert_eq!(terminal(&ev)["error"]["traceback"], json!(["signal: killed"]));
    let child: i32 = texts(&ev, "stdout")[0].parse().unwrap();
    assert!(common::wait_until(TIMEOUT, || !common::pid_alive(child)), "background child survived");
}

#[tokio::test]
async fn c42_uid_and_gid() {
    if nix_uid() != 0 {
        common::prerequisite_missing("needs root");
        return;
    }
    let s = TestServer::start();
    let ev = without_pings(&run(&s, json!({"command": "id -u", "uid": 65534})).await);
    assert_eq!(texts(&ev, "stdout"), ["65534"]);
    let ev = without_pings(&run(&s, json!({"command": "id -g", "uid": 65534, "gid": 65534})).await);
    assert_eq!(texts(&ev, "stdout"), ["65534"]);
    // D16: a uid without a passwd entry runs with gid = uid, never root's group.
    let ev = without_pings(&run(&s, json!({"command": "id -u; id -g; id -G", "uid": 54321})).await);
    assert_eq!(texts(&ev, "stdout"), ["54321", "54321", "54321"]);
}

#[tokio::test]
async fn start_failure_gives_init_then_error_and_no_record() {
    if nix_uid() != 0 {
        common::prerequisite_missing("needs root");
        return;
    }
    let s = TestServer::start();
    // /root is 0700: user 65534 cannot enter it, so the start fails after the credential switch.
    let ev = without_pings(&run(&s, json!({"command": "pwd", "cwd": "/root", "uid": 65534})).await);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[0]["type"], "init");
    assert_eq!(ev[1]["error"]["ename"], "CommandExecError");
    assert!(ev[1]["error"]["evalue"].as_str().unwrap().contains("ermission denied"), "{ev:?}");
    let id = ev[0]["text"].as_str().unwrap();
    let resp = s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 404, "a failed foreground start is not registered");
}

fn nix_uid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn c43_status_is_running_right_after_init() {
    let s = TestServer::start();
    let mut r = EventReader::new(post(&s, "/command", json!({"command": "sleep 1"})).await);
    let id = r.next().await.unwrap()["text"].as_str().unwrap().to_string();
    let st: Value = s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["running"], true, "{st}");
    r.rest().await;
}

async fn start_and_get_id(s: &TestServer, body: Value) -> (String, EventReader) {
    let mut r = EventReader::new(post(s, "/command", body).await);
    let init = r.next().await.unwrap();
    assert_eq!(init["type"], "init");
    (init["text"].as_str().unwrap().to_string(), r)
}

#[tokio::test]
async fn c44_interrupt_terminates_the_group_and_the_stream_ends_with_minus_1() {
    let s = TestServer::start();
    let (id, mut r) = start_and_get_id(&s, json!({"command": "sleep 30"})).await;
    let t = Instant::now();
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "0");
    assert!(t.elapsed() < Duration::from_millis(3500), "{:?}", t.elapsed());
    let ev = without_pings(&r.rest().await);
    assert_eq!(terminal(&ev)["error"]["evalue"], "-1");
    assert_eq!(terminal(&ev)["error"]["traceback"], json!(["signal: terminated"]));

    // A group that ignores SIGTERM gets SIGKILL after 3 s; the answer comes when it is gone.
    let (id, mut r) = start_and_get_id(&s, json!({"command": "trap '' TERM; sleep 30 & echo $!; sleep 30"})).await;
    let child: i32 = loop {
        let e = r.next_non_ping().await.unwrap();
        if e["type"] == "stdout" {
            break e["text"].as_str().unwrap().trim_end().parse().unwrap();
        }
    };
    let t = Instant::now();
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_millis(4500), "{took:?}");
    assert!(!common::pid_alive(child), "group member survived the interrupt");
    let ev = without_pings(&r.rest().await);
    assert_eq!(terminal(&ev)["error"]["traceback"], json!(["signal: killed"]));
}

/// C44: what the command forks after the SIGTERM gets one too, within the grace: here the TERM
/// trap's `sleep 30` (a shell that takes the signal just before forking its next command does
/// the same). It ends, so the trap's `exit 7` ends the command long before the 3 s grace would
/// have SIGKILLed it.
#[tokio::test]
async fn c44_what_the_command_forks_after_the_sigterm_gets_one_too() {
    let s = TestServer::start();
    let cmd = "trap 'sleep 30; exit 7' TERM; echo up; while :; do sleep 0.05; done";
    let (id, mut r) = start_and_get_id(&s, json!({ "command": cmd })).await;
    assert_eq!(r.next_non_ping().await.unwrap()["text"], "up\n");
    let t = Instant::now();
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() < Duration::from_millis(2500), "the trap's sleep held the grace: {:?}", t.elapsed());
    let ev = without_pings(&r.rest().await);
    assert_eq!(terminal(&ev)["error"]["evalue"], "7", "{ev:?}");
}

#[tokio::test]
async fn c45_interrupt_of_finished_unknown_or_missing_id() {
    let s = TestServer::start();
    let ev = run_cmd(&s, "true").await;
    let id = ev[0]["text"].as_str().unwrap();
    let v = error_json(s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap(), 500).await;
    assert_eq!(v["code"], "RUNTIME_ERROR");
    assert!(v["message"].as_str().unwrap().contains("not running"), "{v}");
    let v = error_json(s.client().delete(s.url("/command?id=nope")).send().await.unwrap(), 500).await;
    assert_eq!(v["code"], "RUNTIME_ERROR");
    let v = error_json(s.client().delete(s.url("/command")).send().await.unwrap(), 400).await;
    assert_eq!(v["code"], "MISSING_QUERY");
}

#[tokio::test]
async fn c46_client_disconnect_does_not_kill_the_command() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let cmd = format!("sleep 1.5; touch {}", marker.display());
    let (id, r) = start_and_get_id(&s, json!({ "command": cmd })).await;
    drop(r);
    assert!(common::wait_until(TIMEOUT, || marker.exists()), "marker never appeared");
    assert_eq!(s.client().get(s.url("/ping")).send().await.unwrap().status(), 200);
    let st: Value = s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap();
    assert!(
        common::wait_until_async(TIMEOUT, || async {
            let st: Value =
                s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap();
            st["exit_code"] == 0
        })
        .await,
        "{st}"
    );
}

#[tokio::test]
async fn c47_all_output_comes_before_the_terminal_event() {
    let s = TestServer::start();
    for cmd in ["seq 1 2000; seq 1 2000 >&2; exit 1", "seq 1 2000 >&2; printf tail"] {
        let ev = run(&s, json!({ "command": cmd })).await;
        let ev = without_pings(&ev);
        let last = ev.len() - 1;
        assert!(ev[last]["type"] == "error" || ev[last]["type"] == "execution_complete");
        assert!(ev[..last].iter().all(|e| e["type"] != "error" && e["type"] != "execution_complete"));
        assert_eq!(texts(&ev, "stderr").len(), 2000);
    }
}

#[tokio::test]
async fn c48_200k_short_lines_arrive_complete_and_in_order() {
    let s = TestServer::start();
    let ev = run_cmd(&s, "seq 1 200000").await;
    let out = texts(&ev, "stdout");
    assert_eq!(out.len(), 200_000);
    for (i, t) in out.iter().enumerate() {
        assert_eq!(t, &(i + 1).to_string());
    }
}

#[tokio::test]
async fn c90_code_without_language_runs_a_shell_command() {
    let s = TestServer::start();
    let resp = post(&s, "/code", json!({"code": "echo hi"})).await;
    assert_eq!(resp.status(), 200);
    let ev = without_pings(&parse_events(&resp.text().await.unwrap()));
    assert_eq!(ev[0]["type"], "init");
    assert!(is_hex32(ev[0]["text"].as_str().unwrap()));
    assert_eq!(texts(&ev, "stdout"), ["hi"]);
    assert_eq!(ev.last().unwrap()["type"], "execution_complete");
    // DELETE /code?id= interrupts like DELETE /command.
    let mut r = EventReader::new(post(&s, "/code", json!({"code": "sleep 30"})).await);
    let id = r.next().await.unwrap()["text"].as_str().unwrap().to_string();
    let resp = s.client().delete(s.url(&format!("/code?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(terminal(&without_pings(&r.rest().await))["error"]["evalue"], "-1");
}

#[tokio::test]
async fn c91_jupyter_language_without_jupyter_is_500_json_before_any_event() {
    let s = TestServer::start();
    let v =
        error_json(post(&s, "/code", json!({"code": "print(1)", "context": {"language": "python"}})).await, 500).await;
    assert_eq!(v["code"], "RUNTIME_ERROR");
    assert!(v["message"].as_str().unwrap().contains("not configured"), "{v}");
}

#[tokio::test]
async fn c92_unknown_language_is_500_json() {
    let s = TestServer::start();
    let v = error_json(post(&s, "/code", json!({"code": "x", "context": {"language": "cobol"}})).await, 500).await;
    assert!(v["message"].as_str().unwrap().contains("unknown language"), "{v}");
}

#[tokio::test]
async fn c181_children_do_not_see_the_access_token() {
    let s = TestServer::options().token("sekrit").start();
    let ev = run_cmd(&s, "env").await;
    let out = texts(&ev, "stdout");
    assert!(out.iter().any(|l| l.starts_with("PATH=")), "env printed nothing useful");
    assert!(!out.iter().any(|l| l.contains("EXECD_ACCESS_TOKEN") || l.contains("sekrit")), "{out:?}");
}

/// C181 both ways a child's environment is made: inherited as it is (no envs asked: execd
/// removed its internal variables from its own environment at start) and built (envs in the
/// request): neither shows the tokens, and the rest of execd's environment is there.
#[tokio::test]
async fn c181_internal_variables_reach_no_child_inherited_or_built() {
    let s = TestServer::options().token("sekrit").env("JUPYTER_TOKEN", "jupy").env("EXECD_C181_MARK", "kept").start();
    for body in [json!({ "command": "env" }), json!({ "command": "env", "envs": { "ASKED": "yes" } })] {
        let out = texts(&without_pings(&run(&s, body.clone()).await), "stdout");
        assert!(out.iter().any(|l| l == "EXECD_C181_MARK=kept"), "{body}: {out:?}");
        let leaked =
            |l: &String| ["sekrit", "jupy", "EXECD_ACCESS_TOKEN", "JUPYTER_TOKEN"].iter().any(|t| l.contains(t));
        assert!(!out.iter().any(leaked), "{body}: {out:?}");
    }
}

const CLONE3_PROBE: &str = "python3 -c 'import ctypes,ctypes.util; l=ctypes.CDLL(None, use_errno=True); \
    r=l.syscall(435, None, 0); print(r, ctypes.get_errno())'";

#[tokio::test]
async fn c5_clone3_compat_makes_clone3_fail_with_enosys_in_children() {
    if std::process::Command::new("python3").arg("-c").arg("1").output().is_err() {
        common::prerequisite_missing("no python3");
        return;
    }
    let on = TestServer::options().env("EXECD_CLONE3_COMPAT", "1").start();
    let out = texts(&run_cmd(&on, CLONE3_PROBE).await, "stdout");
    assert_eq!(out, ["-1 38"], "ENOSYS expected");
    let off = TestServer::start();
    let out = texts(&run_cmd(&off, CLONE3_PROBE).await, "stdout");
    assert!(out == ["-1 22"] || out == ["-1 14"], "EINVAL/EFAULT expected without the filter: {out:?}");
}

#[tokio::test]
async fn c182_sigterm_to_execd_ends_commands_and_streams_and_exits_0() {
    let mut s = TestServer::start();
    let (_id, mut r) =
        start_and_get_id(&s, json!({"command": "trap 'echo got-term; exit 0' TERM; sleep 30 & wait"})).await;
    // The trap is installed once the shell runs; wait for the `ping` that follows init, then a bit
    // more by polling the group (the shell has forked `sleep` once it is waiting).
    assert_eq!(r.next().await.unwrap()["type"], "ping");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = tokio::spawn(async move { without_pings(&r.rest().await) });
    let status = tokio::task::spawn_blocking(move || {
        let st = s.terminate();
        (st, s)
    })
    .await
    .unwrap();
    assert_eq!(status.0.and_then(|st| st.code()), Some(0), "execd exit status");
    let ev = reader.await.unwrap();
    assert_eq!(texts(&ev, "stdout"), ["got-term"]);
    assert_eq!(ev.last().unwrap()["type"], "execution_complete", "{ev:?}");
}

// Issue #24 part 1: `argv` on `POST /command` (the current SDKs' `commands.run([...])`).

fn write_exe(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn sdk24_argv_runs_without_a_shell_and_passes_arguments_exactly() {
    let s = TestServer::start();
    let argv = json!(["printf", "<%s>", "", "a b", "'q' \"d\"", "$HOME", "*", "x;y", "\\n"]);
    let ev = without_pings(&run(&s, json!({ "argv": argv })).await);
    assert_eq!(raw_texts(&ev, "stdout"), ["<><a b><'q' \"d\"><$HOME><*><x;y><\\n>"], "{ev:?}");
    assert_eq!(ev.last().unwrap()["type"], "execution_complete");
    // argv[0] reaches the program as given, not as the resolved path.
    let ev = without_pings(&run(&s, json!({"argv": ["sh", "-c", "echo $0"]})).await);
    assert_eq!(texts(&ev, "stdout"), ["sh"]);
}

#[tokio::test]
async fn sdk24_argv_relative_executable_resolves_against_cwd() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    write_exe(&dir.path().join("bin/tool"), "#!/bin/sh\necho \"tool $1 $(pwd)\"\n");
    let cwd = dir.path().to_str().unwrap();
    let ev = without_pings(&run(&s, json!({"argv": ["bin/tool", "x"], "cwd": cwd})).await);
    assert_eq!(texts(&ev, "stdout"), [format!("tool x {cwd}")]);
    let ev = without_pings(&run(&s, json!({"argv": ["./bin/tool", "y"], "cwd": cwd})).await);
    assert_eq!(texts(&ev, "stdout"), [format!("tool y {cwd}")]);
    // Not looked up in PATH: a relative name with a `/` that is not under cwd fails.
    let ev = without_pings(&run(&s, json!({"argv": ["bin/tool"], "cwd": "/"})).await);
    assert_eq!(terminal(&ev)["type"], "error", "{ev:?}");
}

#[tokio::test]
async fn sdk24_argv_bare_name_uses_absolute_entries_of_the_child_path() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_req) = (dir.path().join("file"), dir.path().join("req"));
    std::fs::create_dir(&from_file).unwrap();
    std::fs::create_dir(&from_req).unwrap();
    write_exe(&from_file.join("mytool"), "#!/bin/sh\necho file\n");
    write_exe(&from_req.join("mytool"), "#!/bin/sh\necho req\n");
    // Not executable: skipped in favour of a later entry.
    std::fs::write(from_req.join("plain"), "#!/bin/sh\necho plain\n").unwrap();
    let envs = dir.path().join("envs");
    std::fs::write(&envs, format!("PATH={}:/usr/bin:/bin\n", from_file.display())).unwrap();
    let s = TestServer::options().env("EXECD_ENVS", envs.to_str().unwrap()).start();
    // EXECD_ENVS' PATH is the child's PATH.
    let ev = without_pings(&run(&s, json!({"argv": ["mytool"]})).await);
    assert_eq!(texts(&ev, "stdout"), ["file"]);
    // The request's envs win over EXECD_ENVS.
    let path = format!("{}:/usr/bin:/bin", from_req.display());
    let ev = without_pings(&run(&s, json!({"argv": ["mytool"], "envs": {"PATH": path}})).await);
    assert_eq!(texts(&ev, "stdout"), ["req"]);
    // A relative PATH entry is never searched, even when the tool is right there in cwd.
    let cwd = from_req.to_str().unwrap();
    let ev = without_pings(&run(&s, json!({"argv": ["mytool"], "cwd": cwd, "envs": {"PATH": ".:bin"}})).await);
    assert_eq!(terminal(&ev)["type"], "error", "{ev:?}");
    let ev = without_pings(&run(&s, json!({"argv": ["plain"], "envs": {"PATH": path}})).await);
    assert!(terminal(&ev)["error"]["evalue"].as_str().unwrap().contains("not found"), "{ev:?}");
}

#[tokio::test]
async fn sdk24_argv_missing_executable_is_a_terminal_error_event() {
    let s = TestServer::start();
    let ev = without_pings(&run(&s, json!({"argv": ["no-such-tool-xyz", "a"]})).await);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[0]["type"], "init");
    assert_eq!(ev[1]["type"], "error");
    assert_eq!(ev[1]["error"]["ename"], "CommandExecError");
    let msg = r#"exec: "no-such-tool-xyz": executable file not found in $PATH"#;
    assert_eq!(ev[1]["error"]["evalue"], msg);
    assert_eq!(ev[1]["error"]["traceback"], json!([msg]));
    // A path that does not exist: the exec failure, naming the path.
    let dir = tempfile::tempdir().unwrap();
    let ev = without_pings(&run(&s, json!({"argv": ["./nope"], "cwd": dir.path()})).await);
    let evalue = terminal(&ev)["error"]["evalue"].as_str().unwrap().to_string();
    assert!(
        evalue.contains(&format!("{}/./nope", dir.path().display())) && evalue.contains("No such file"),
        "{evalue}"
    );
    // In the background: registered as failed (exit code 255), as a failed shell spawn.
    let ev = without_pings(&run(&s, json!({"argv": ["no-such-tool-xyz"], "background": true})).await);
    let id = ev[0]["text"].as_str().unwrap();
    let st: Value = s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["exit_code"], 255, "{st}");
    assert!(st["error"].as_str().unwrap().contains("executable file not found"), "{st}");
    assert_eq!(st["content"], r#"["no-such-tool-xyz"]"#);
}

#[tokio::test]
async fn sdk24_argv_with_command_or_neither_or_bad_argv_is_json_400() {
    let s = TestServer::start();
    let cases = [
        (json!({"command": "echo a", "argv": ["echo", "b"]}), "argv"),
        (json!({}), "command"),
        (json!({"argv": null}), "command"),
        (json!({"argv": []}), "argv"),
        (json!({"argv": [""]}), "argv"),
        (json!({"argv": ["echo", "a\u{0}b"]}), "argv[1]"),
        (json!({"argv": "echo a"}), "argv"),
        (json!({"argv": ["echo", 1]}), "argv"),
    ];
    for (body, field) in cases {
        let v = error_json(post(&s, "/command", body.clone()).await, 400).await;
        assert_eq!(v["code"], "INVALID_REQUEST_BODY", "{body}");
        assert!(v["message"].as_str().unwrap().contains(field), "{body}: {v}");
    }
}

#[tokio::test]
async fn sdk24_argv_takes_cwd_envs_timeout_and_background_like_command() {
    let s = TestServer::start();
    let ev = without_pings(&run(&s, json!({"argv": ["pwd"], "cwd": "/tmp"})).await);
    assert_eq!(texts(&ev, "stdout"), ["/tmp"]);
    // envs reach the program, and argv text is never expanded with them.
    let ev = without_pings(&run(&s, json!({"argv": ["printenv", "FOO"], "envs": {"FOO": "bar"}})).await);
    assert_eq!(raw_texts(&ev, "stdout"), ["bar\n"]);
    let ev = without_pings(&run(&s, json!({"argv": ["echo", "$FOO"], "envs": {"FOO": "bar"}})).await);
    assert_eq!(texts(&ev, "stdout"), ["$FOO"]);
    let t = Instant::now();
    let ev = without_pings(&run(&s, json!({"argv": ["sleep", "30"], "timeout": 300})).await);
    assert_eq!(terminal(&ev)["type"], "error", "{ev:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // Background: init + complete at once; status `content` is the argv as a JSON array.
    let ev = without_pings(&run(&s, json!({"argv": ["sh", "-c", "echo bg-$0", "x y"], "background": true})).await);
    let id = ev[0]["text"].as_str().unwrap().to_string();
    assert_eq!(ev.last().unwrap()["type"], "execution_complete");
    let status = || async {
        s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json::<Value>().await.unwrap()
    };
    assert!(common::wait_until_async(TIMEOUT, || async { status().await["exit_code"] == 0 }).await);
    assert_eq!(status().await["content"], r#"["sh","-c","echo bg-$0","x y"]"#);
    let logs = s.client().get(s.url(&format!("/command/{id}/logs"))).send().await.unwrap().text().await.unwrap();
    assert_eq!(logs, "bg-x y\n");
}

#[tokio::test]
async fn sdk24_argv_runs_as_uid() {
    if nix_uid() != 0 {
        common::prerequisite_missing("needs root");
        return;
    }
    let s = TestServer::start();
    let ev = without_pings(&run(&s, json!({"argv": ["id", "-u"], "uid": 65534})).await);
    assert_eq!(texts(&ev, "stdout"), ["65534"]);
}

/// Issue #24 part 2 on `/code`'s shell path: the same framing as `/command`.
#[tokio::test]
async fn sdk24_output_code_shell_path_keeps_line_endings() {
    let s = TestServer::start();
    let resp = post(&s, "/code", json!({"code": r"printf 'a\n\nb\r\nc'"})).await;
    let ev = without_pings(&parse_events(&resp.text().await.unwrap()));
    assert_eq!(raw_texts(&ev, "stdout"), ["a\n", "\n", "b\r\n", "c"]);
}
