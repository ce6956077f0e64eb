//! Background commands, status and logs (C50–C60), the resumable `/events` stream (D11) and
//! retention (C180, D12), against the real binary.

use crate::common;

use std::time::{Duration, Instant};

use common::{parse_events, without_pings, EventReader, TestServer, TIMEOUT};
use serde_json::{json, Value};

async fn start_bg(s: &TestServer, body: Value) -> (String, Vec<Value>, Duration) {
    let t = Instant::now();
    let resp = s.client().post(s.url("/command")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ev = parse_events(&resp.text().await.unwrap());
    let id = ev[0]["text"].as_str().unwrap().to_string();
    (id, ev, t.elapsed())
}

async fn status(s: &TestServer, id: &str) -> (u16, Value) {
    let resp = s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn wait_finished(s: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (code, st) = status(s, id).await;
        assert_eq!(code, 200, "{st}");
        if st["running"] == false {
            return st;
        }
        assert!(Instant::now() < deadline, "still running: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(status, tail cursor, body)` of `/logs`.
async fn logs(s: &TestServer, id: &str, cursor: Option<&str>) -> (u16, Option<u64>, Vec<u8>) {
    let q = cursor.map(|c| format!("?cursor={c}")).unwrap_or_default();
    let resp = s.client().get(s.url(&format!("/command/{id}/logs{q}"))).send().await.unwrap();
    let code = resp.status().as_u16();
    let cur = resp.headers().get("execd-commands-tail-cursor").map(|v| v.to_str().unwrap().parse().unwrap());
    if code == 200 {
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    }
    (code, cur, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn c50_background_stream_is_init_and_complete_and_closes_fast() {
    let s = TestServer::start();
    let (id, ev, took) = start_bg(&s, json!({"command": "sleep 30", "background": true})).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let types: Vec<String> = without_pings(&ev).iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["init", "execution_complete"]);
    s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
}

#[tokio::test]
async fn c51_status_while_running() {
    let s = TestServer::start();
    let (id, _, _) = start_bg(&s, json!({"command": "sleep 30", "background": true})).await;
    // Registered before init (no race, unlike upstream).
    let (code, st) = status(&s, &id).await;
    assert_eq!(code, 200);
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["content"], "sleep 30");
    assert_eq!(st["running"], true);
    assert!(chrono_like(st["started_at"].as_str().unwrap()));
    assert!(st.get("exit_code").is_none() && st.get("finished_at").is_none(), "{st}");
    s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}

#[tokio::test]
async fn c52_finished_status_and_logs_hold_both_streams() {
    let s = TestServer::start();
    let cmd = "sh -c 'echo log-line-1; echo log-line-2 1>&2'";
    let (id, _, _) = start_bg(&s, json!({"command": cmd, "background": true})).await;
    let st = wait_finished(&s, &id).await;
    assert_eq!(st["exit_code"], 0);
    assert!(st.get("error").is_none(), "{st}");
    assert!(st["finished_at"].as_str().unwrap() >= st["started_at"].as_str().unwrap());
    let (code, cur, body) = logs(&s, &id, None).await;
    assert_eq!(code, 200);
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.contains("log-line-1") && text.contains("log-line-2"), "{text}");
    assert_eq!(cur, Some(body.len() as u64));
}

#[tokio::test]
async fn c53_logs_cursor_returns_only_new_bytes() {
    let s = TestServer::start();
    let cmd = "echo one; sleep 0.4; echo two; sleep 0.4; echo three";
    let (id, _, _) = start_bg(&s, json!({"command": cmd, "background": true})).await;
    let mut cursor = 0u64;
    let mut all = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (code, cur, body) = logs(&s, &id, Some(&cursor.to_string())).await;
        assert_eq!(code, 200);
        let cur = cur.unwrap();
        assert!(cur >= cursor);
        assert_eq!(cur - cursor, body.len() as u64);
        all.extend_from_slice(&body);
        cursor = cur;
        if status(&s, &id).await.1["running"] == false && logs(&s, &id, Some(&cursor.to_string())).await.2.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all, b"one\ntwo\nthree\n");
    let (_, cur, body) = logs(&s, &id, Some(&cursor.to_string())).await;
    assert!(body.is_empty());
    assert_eq!(cur, Some(cursor));
    let (_, cur, body) = logs(&s, &id, Some("9999")).await;
    assert!(body.is_empty());
    assert_eq!(cur, Some(9999), "a cursor past the end is echoed");
}

#[tokio::test]
async fn c54_cursor_abc_is_zero_and_negative_is_400() {
    let s = TestServer::start();
    let (id, _, _) = start_bg(&s, json!({"command": "echo hi", "background": true})).await;
    wait_finished(&s, &id).await;
    assert_eq!(logs(&s, &id, Some("abc")).await.2, b"hi\n");
    let resp = s.client().get(s.url(&format!("/command/{id}/logs?cursor=-1"))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "INVALID_REQUEST_BODY");
    assert!(v["message"].as_str().unwrap().contains("cursor"));
}

#[tokio::test]
async fn c55_logs_of_unknown_id_is_400_and_foreground_ids_have_logs_d11() {
    let s = TestServer::start();
    let resp = s.client().get(s.url("/command/nope/logs")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "INVALID_REQUEST_BODY");
    // DECISIONS D11: foreground commands have a journal too (stdout and stderr merged).
    let resp = s.client().post(s.url("/command")).json(&json!({"command": "echo out; echo err >&2"})).send().await;
    let ev = parse_events(&resp.unwrap().text().await.unwrap());
    let id = ev[0]["text"].as_str().unwrap();
    let (code, cur, body) = logs(&s, id, None).await;
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
    assert_eq!(cur, Some(8));
}

#[tokio::test]
async fn c56_status_of_unknown_id_is_404_invalid_request_body() {
    let s = TestServer::start();
    let (code, v) = status(&s, "nope").await;
    assert_eq!(code, 404);
    assert_eq!(v["code"], "INVALID_REQUEST_BODY");
    assert_eq!(v["message"], "command not found: nope");
}

#[tokio::test]
async fn c57_background_exit_code_and_error() {
    let s = TestServer::start();
    let (id, _, _) = start_bg(&s, json!({"command": "exit 5", "background": true})).await;
    let st = wait_finished(&s, &id).await;
    assert_eq!(st["exit_code"], 5);
    assert_eq!(st["error"], "exit status 5");
}

#[tokio::test]
async fn c58_background_timeout_kills_the_group() {
    let s = TestServer::start();
    let t = Instant::now();
    let (id, _, _) =
        start_bg(&s, json!({"command": "sleep 10 & echo $!; sleep 10", "background": true, "timeout": 500})).await;
    let st = wait_finished(&s, &id).await;
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
    assert_eq!(st["exit_code"], -1);
    assert_eq!(st["error"], "signal: killed");
    let pid: i32 = String::from_utf8(logs(&s, &id, None).await.2).unwrap().trim().parse().unwrap();
    assert!(common::wait_until(TIMEOUT, || !common::pid_alive(pid)));
}

#[tokio::test]
async fn c59_interrupting_a_background_command() {
    let s = TestServer::start();
    let (id, _, _) = start_bg(&s, json!({"command": "sleep 30", "background": true})).await;
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let st = wait_finished(&s, &id).await;
    assert_eq!(st["exit_code"], -1);
}

#[tokio::test]
async fn c60_background_stdout_and_stderr_interleave_in_write_order() {
    let s = TestServer::start();
    let cmd = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done";
    let (id, _, _) = start_bg(&s, json!({"command": cmd, "background": true})).await;
    wait_finished(&s, &id).await;
    let body = String::from_utf8(logs(&s, &id, None).await.2).unwrap();
    let want: String = (1..=5).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(body, want);
}

#[tokio::test]
async fn background_leader_exit_kills_the_rest_of_the_group() {
    let s = TestServer::start();
    let (id, _, _) = start_bg(&s, json!({"command": "sleep 30 & echo $!", "background": true})).await;
    wait_finished(&s, &id).await;
    let pid: i32 = String::from_utf8(logs(&s, &id, None).await.2).unwrap().trim().parse().unwrap();
    assert!(common::wait_until(TIMEOUT, || !common::pid_alive(pid)), "group member outlived the leader");
}

#[tokio::test]
async fn foreground_leftover_children_do_not_hold_the_stream() {
    let s = TestServer::start();
    let t = Instant::now();
    let resp = s.client().post(s.url("/command")).json(&json!({"command": "sleep 30 & echo started"})).send().await;
    let ev = without_pings(&parse_events(&resp.unwrap().text().await.unwrap()));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(common::texts(&ev, "stdout"), ["started"]);
    assert_eq!(ev.last().unwrap()["type"], "execution_complete");
}

/// Reads an `/events` response into `(id, event, data)` triples until it ends.
async fn read_sse(resp: reqwest::Response) -> Vec<(Option<u64>, String, Value)> {
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(TIMEOUT, resp.text()).await.unwrap().unwrap();
    body.split("\n\n")
        .filter(|b| !b.is_empty() && !b.starts_with(':'))
        .map(|block| {
            let (mut id, mut ev, mut data) = (None, String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (id, ev, data)
        })
        .collect()
}

#[tokio::test]
async fn events_replay_follow_and_resume_from_any_offset() {
    let s = TestServer::start();
    let cmd = "for i in $(seq 1 50); do echo line-$i; echo err-$i >&2; sleep 0.01; done";
    let (id, _, _) = start_bg(&s, json!({"command": cmd, "background": true})).await;
    // A reader attached while the command runs follows it to the end.
    let live = read_sse(s.client().get(s.url(&format!("/command/{id}/events"))).send().await.unwrap()).await;
    assert_eq!(live[0].1, "init");
    assert_eq!(live.last().unwrap().1, "execution_complete");
    let (_, _, full) = logs(&s, &id, None).await;
    let total = full.len() as u64;
    assert_eq!(live.last().unwrap().0, Some(total));
    for from in [0u64, 7, total / 2, total] {
        for how in ["query", "header"] {
            let mut req = s.client().get(s.url(&format!("/command/{id}/events")));
            req = if how == "query" {
                req.query(&[("after", from.to_string())])
            } else {
                req.header("Last-Event-ID", from.to_string())
            };
            let ev = read_sse(req.send().await.unwrap()).await;
            let bytes: String = ev
                .iter()
                .filter(|(_, k, _)| k == "stdout" || k == "stderr")
                .map(|(_, _, d)| d["text"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(bytes.as_bytes(), &full[from as usize..], "from {from} via {how}");
            let ids: Vec<u64> = ev.iter().filter_map(|(i, _, _)| *i).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1] || (w[0] == w[1] && w[1] == total)), "{ids:?}");
        }
    }
    let resp = s.client().get(s.url(&format!("/command/{id}/events?after=x"))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = s.client().get(s.url("/command/nope/events")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn events_of_a_foreground_command_tell_stdout_from_stderr() {
    let s = TestServer::start();
    let resp = s.client().post(s.url("/command")).json(&json!({"command": "echo o; echo e >&2"})).send().await;
    let id = parse_events(&resp.unwrap().text().await.unwrap())[0]["text"].as_str().unwrap().to_string();
    let ev = read_sse(s.client().get(s.url(&format!("/command/{id}/events"))).send().await.unwrap()).await;
    let out: Vec<(String, String)> = ev
        .iter()
        .filter(|(_, k, _)| k == "stdout" || k == "stderr")
        .map(|(_, k, d)| (k.clone(), d["text"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        out.contains(&("stdout".into(), "o\n".into())) && out.contains(&("stderr".into(), "e\n".into())),
        "{out:?}"
    );
    assert!(ev.iter().all(|(_, _, d)| d["timestamp"].is_i64()));
}

fn journal_files(s: &TestServer) -> usize {
    std::fs::read_dir(s.state_dir().join("commands")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn c180_finished_commands_and_journals_are_evicted_by_ttl_and_count() {
    let s = TestServer::options().arg("--command-retention-ttl=1s").start();
    let (id, _, _) = start_bg(&s, json!({"command": "echo x", "background": true})).await;
    wait_finished(&s, &id).await;
    assert!(common::wait_until_async(TIMEOUT, || async { status(&s, &id).await.0 == 404 }).await);
    assert_eq!(journal_files(&s), 0, "journal files left behind");

    let s = TestServer::options().arg("--command-retention-count=2").start();
    let mut ids = vec![];
    for i in 0..4 {
        let resp = s.client().post(s.url("/command")).json(&json!({"command": format!("echo {i}")})).send().await;
        let ev = parse_events(&resp.unwrap().text().await.unwrap());
        let id = ev[0]["text"].as_str().unwrap().to_string();
        wait_finished(&s, &id).await;
        ids.push(id);
    }
    assert_eq!(status(&s, &ids[0]).await.0, 404);
    assert_eq!(status(&s, &ids[1]).await.0, 404);
    assert_eq!(status(&s, &ids[2]).await.0, 200);
    assert_eq!(status(&s, &ids[3]).await.0, 200);
    assert_eq!(journal_files(&s), 6, "two journals (2 files and a record each, X50) remain");
    // A running command is never evicted.
    let mut r =
        EventReader::new(s.client().post(s.url("/command")).json(&json!({"command": "sleep 1"})).send().await.unwrap());
    let id = r.next().await.unwrap()["text"].as_str().unwrap().to_string();
    assert_eq!(status(&s, &id).await.1["running"], true);
    r.rest().await;
}

#[tokio::test]
async fn background_start_failure_is_recorded_with_255_and_a_runtime_error_event() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        common::prerequisite_missing("needs root");
        return;
    }
    let s = TestServer::start();
    let body = json!({"command": "pwd", "cwd": "/root", "uid": 65534, "background": true});
    let (id, ev, _) = start_bg(&s, body).await;
    let ev = without_pings(&ev);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[1]["type"], "error");
    assert_eq!(ev[1]["error"]["ename"], "RUNTIME_ERROR", "DECISIONS D4");
    let (code, st) = status(&s, &id).await;
    assert_eq!(code, 200);
    assert_eq!(st["running"], false);
    assert_eq!(st["exit_code"], 255);
    assert!(st["error"].as_str().unwrap().contains("ermission denied"), "{st}");
}
