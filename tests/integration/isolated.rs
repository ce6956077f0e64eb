//! `/v1/isolated/*` against the real binary (ISOLATED.md, issue #23): sessions in their own
//! namespaces, runs (streamed and background), per-session files, diff and commit, and proof of
//! the isolation itself (overlay writes stay private, sessions do not see each other, delete
//! leaves no process, mount or upper layer behind). Needs root (namespaces, overlayfs).

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{parse_events, texts, without_pings, TestServer, TIMEOUT};
use serde_json::{json, Value};

/// A server whose isolation works here, or None (skipped locally, failure in CI).
async fn server() -> Option<TestServer> {
    if !nix::unistd::geteuid().is_root() {
        common::prerequisite_missing("isolated sessions need root");
        return None;
    }
    let s = TestServer::options().env("FOO_TOKEN", "secret-x").start();
    let caps: Value = s.client().get(s.url("/v1/isolated/capabilities")).send().await.unwrap().json().await.unwrap();
    if caps["available"] != true {
        common::prerequisite_missing(&format!("isolation unavailable here: {}", caps["message"]));
        return None;
    }
    Some(s)
}

async fn create(s: &TestServer, body: Value) -> (u16, Value) {
    let r = s.client().post(s.url("/v1/isolated/session")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create_ok(s: &TestServer, body: Value) -> String {
    let (st, v) = create(s, body).await;
    assert_eq!(st, 201, "{v}");
    v["session_id"].as_str().unwrap().to_string()
}

/// A foreground run: (events without pings, stdout lines).
async fn run(s: &TestServer, sid: &str, body: Value) -> (Vec<Value>, Vec<String>) {
    let r = s.client().post(s.url(&format!("/v1/isolated/session/{sid}/run"))).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = without_pings(&parse_events(&r.text().await.unwrap()));
    let out = texts(&events, "stdout");
    (events, out)
}

async fn sh(s: &TestServer, sid: &str, code: &str) -> Vec<String> {
    let (events, out) = run(s, sid, json!({ "code": code })).await;
    assert!(events.iter().any(|e| e["type"] == "execution_complete"), "{code}: {events:?}");
    out
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.client().get(s.url(path)).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn delete(s: &TestServer, sid: &str) -> u16 {
    s.client().delete(s.url(&format!("/v1/isolated/session/{sid}"))).send().await.unwrap().status().as_u16()
}

fn mounts_mentioning(what: &str) -> usize {
    std::fs::read_to_string("/proc/mounts").unwrap().lines().filter(|l| l.contains(what)).count()
}

#[tokio::test]
async fn i26_capabilities_shape_and_i5_disabled_is_503() {
    let s = TestServer::options().arg("--isolation").arg("off").start();
    let (st, caps) = get(&s, "/v1/isolated/capabilities").await;
    assert_eq!(st, 200);
    assert_eq!(caps["available"], false);
    assert!(caps["message"].as_str().unwrap().contains("disabled"));
    for k in ["setpriv_available", "userns_available", "commit_supported", "diff_supported"] {
        assert!(caps[k].is_boolean(), "{k}: {caps}");
    }
    for k in ["cap_drop", "seccomp", "landlock", "ebpf"] {
        assert_eq!(caps["hardening"][k]["state"], "disabled");
    }
    let (st, v) = create(&s, json!({"workspace": {"path": "/tmp"}})).await;
    assert_eq!(st, 503);
    assert_eq!(v["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(get(&s, "/v1/isolated/sessions").await.0, 503);
}

#[tokio::test]
async fn i8_create_validation_400() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path().display().to_string();
    let bad = [
        json!({}),
        json!({"workspace": {"path": p, "mode": "bogus"}}),
        json!({"overlays": [{"path": p, "mode": "rw", "persist": true}]}),
        json!({"workspace": {"path": "relative/x"}}),
        json!({"overlays": [{"path": p}, {"path": p}]}),
        json!({"workspace": {"path": format!("{p}/")}}),
        json!({"workspace": {"path": p}, "profile": "lax"}),
        json!({"workspace": {"path": p}, "binds": [{"source": "/etc"}]}),
        json!({"overlays": (0..17).map(|i| json!({"path": format!("{p}/d{i}")})).collect::<Vec<_>>()}),
        json!({"workspace": {"path": p}, "uid": -1}),
    ];
    for body in bad {
        let (st, v) = create(&s, body.clone()).await;
        assert_eq!(st, 400, "{body} -> {v}");
        assert_eq!(v["code"], "INVALID_REQUEST_BODY", "{body}");
        assert!(v["message"].is_string());
    }
    let (st, v) = create(&s, json!({"workspace": {"path": p}, "uid_mode": "userns"})).await;
    assert_eq!((st, v["code"].as_str()), (503, Some("NOT_SUPPORTED")));
    assert_eq!(get(&s, "/v1/isolated/sessions").await.1["sessions"], json!([]));
}

#[tokio::test]
async fn i2_i10_i11_i12_session_lifecycle() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path().display().to_string();
    let body = json!({"workspace": {"path": p, "mode": "rw"}, "profile": "balanced", "share_net": true, "idle_timeout_seconds": 0});
    let (st, created) = create(&s, body).await;
    assert_eq!(st, 201, "{created}");
    let sid = created["session_id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&sid).unwrap().to_string(), sid);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let other = create_ok(&s, json!({"workspace": {"path": p}})).await;
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!(st, 200);
    assert_eq!(v["status"], "active");
    assert_eq!(v["workspace"], json!({"path": p, "mode": "rw"}));
    assert_eq!(v["profile"], "balanced");
    assert_eq!(v["share_net"], true);
    assert_eq!(v["idle_timeout_seconds"], 0);
    assert!(v.get("idle_remaining_seconds").is_none());
    assert_eq!(v["last_run_at"], v["created_at"]);
    let (_, list) = get(&s, "/v1/isolated/sessions").await;
    let ids: Vec<&str> =
        list["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&sid.as_str()) && ids.contains(&other.as_str()), "{list}");
    let r = s.client().delete(s.url(&format!("/v1/isolated/session/{sid}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(delete(&s, &sid).await, 404);
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!((st, v["code"].as_str()), (404, Some("SESSION_NOT_FOUND")));
    assert_eq!(get(&s, "/v1/isolated/session/not-a-uuid").await.0, 404);
    let (_, list) = get(&s, "/v1/isolated/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(delete(&s, &other).await, 200);
}

#[tokio::test]
async fn i14_i17_runs_stream_keep_state_and_report_exit_codes() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let (events, out) = run(&s, &sid, json!({"code": "echo a; echo b >&2"})).await;
    assert_eq!(out, ["a", "b"]);
    assert_eq!(events.last().unwrap()["type"], "execution_complete");
    assert!(events.iter().all(|e| e["timestamp"].is_i64()));
    let (events, _) = run(&s, &sid, json!({"code": "sh -c 'exit 3'"})).await;
    let last = events.last().unwrap();
    assert_eq!((last["type"].as_str(), last["error"]["evalue"].as_str()), (Some("error"), Some("3")));
    assert!(!events.iter().any(|e| e["type"] == "execution_complete"));
    // State persists (cd, export), envs do not leak, quotes survive.
    sh(&s, &sid, "export X=1; cd /tmp").await;
    assert_eq!(sh(&s, &sid, "echo $X; pwd").await, ["1", "/tmp"]);
    let (_, out) = run(&s, &sid, json!({"code": "echo $Y", "envs": {"Y": "v w"}})).await;
    assert_eq!(out, ["v w"]);
    assert_eq!(sh(&s, &sid, "echo ${Y:-unset}; echo \"it's\"").await, ["unset", "it's"]);
    // A reader of stdin gets EOF instead of the next run's input.
    assert_eq!(sh(&s, &sid, "cat; echo after").await, ["after"]);
    // Secrets in execd's environment do not reach the session (I33).
    assert_eq!(sh(&s, &sid, "echo ${FOO_TOKEN:-none} ${EXECD_ACCESS_TOKEN:-none}").await, ["none none"]);
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!(st, 200);
    assert_ne!(v["last_run_at"], v["created_at"]);
    // Blank code: 400; unknown session: 404 JSON before any stream.
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let zero = "00000000-0000-0000-0000-000000000000";
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{zero}/run")))
        .json(&json!({"code": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "SESSION_NOT_FOUND");
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i16_timeout_interrupts_the_run_and_keeps_the_session() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let t0 = Instant::now();
    let (events, _) = run(&s, &sid, json!({"code": "sleep 30", "timeout_seconds": 1})).await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{events:?}");
    assert_eq!(sh(&s, &sid, "echo ok").await, ["ok"]);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i28_i32_namespaces_pid_hostname_tmp_and_net() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let a = create_ok(&s, json!({"workspace": {"path": ws.path()}, "share_net": false})).await;
    let b = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let out = sh(&s, &a, "echo $$; hostname; ls /proc | grep -c '^[0-9]'").await;
    assert_eq!(out[0], "1", "{out:?}");
    assert_eq!(out[1], "sandbox");
    assert!(out[2].parse::<u32>().unwrap() < 10, "{out:?}");
    let ifaces = sh(&s, &a, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert_eq!(ifaces, ["lo"]);
    // ... and `lo` is up (as bwrap leaves it): 127.0.0.1 answers "refused", not "unreachable".
    let lo = sh(&s, &a, "(exec 3<>/dev/tcp/127.0.0.1/9) 2>&1 | grep -q refused && echo refused").await;
    assert_eq!(lo, ["refused"]);
    // Private /tmp: b does not see a's file, the host neither.
    sh(&s, &a, "echo secret > /tmp/only-a").await;
    assert_eq!(sh(&s, &b, "ls /tmp/only-a 2>&1 >/dev/null | wc -l").await, ["1"]);
    assert!(!Path::new("/tmp/only-a").exists());
    // The root is read-only, and execd's state directory is hidden.
    let (events, _) = run(&s, &a, json!({"code": "touch /etc/x-isolated"})).await;
    assert_eq!(events.last().unwrap()["type"], "error");
    // A minimal /dev, and no mounting in a strict session (capabilities dropped).
    assert_eq!(
        sh(&s, &a, "ls /dev | grep -c -E '^(vd|sd|nvme|loop)'; echo hi > /dev/null && echo ok").await,
        ["0", "ok"]
    );
    let (events, _) = run(&s, &a, json!({"code": "mount -t tmpfs t /mnt"})).await;
    assert_eq!(events.last().unwrap()["type"], "error");
    let state = s.state_dir().display().to_string();
    assert_eq!(sh(&s, &b, &format!("ls -A {state} 2>/dev/null | wc -l")).await, ["0"]);
    assert_eq!(delete(&s, &a).await, 200);
    assert_eq!(delete(&s, &b).await, 200);
}

#[tokio::test]
async fn i23_i24_i25_overlay_writes_stay_private_until_commit() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    std::fs::write(w.join("keep.txt"), "keep").unwrap();
    std::fs::write(w.join("gone.txt"), "gone").unwrap();
    std::fs::write(w.join("edit.txt"), "old").unwrap();
    std::fs::write(w.join("host.txt"), "host").unwrap();
    let a = create_ok(&s, json!({"workspace": {"path": w}})).await;
    let b = create_ok(&s, json!({"workspace": {"path": w}})).await;
    let wd = w.display();
    sh(
        &s,
        &a,
        &format!("echo new > {wd}/new.txt; rm {wd}/gone.txt; echo edited > {wd}/edit.txt; echo s > {wd}/host.txt"),
    )
    .await;
    // The host and the other session see none of it.
    assert!(!w.join("new.txt").exists());
    assert_eq!(std::fs::read_to_string(w.join("edit.txt")).unwrap(), "old");
    assert!(w.join("gone.txt").exists());
    assert_eq!(
        sh(&s, &b, &format!("cat {wd}/edit.txt; echo; ls {wd}")).await,
        ["old", "edit.txt", "gone.txt", "host.txt", "keep.txt"]
    );
    // Diff: exactly the changes.
    let (st, d) = get(&s, &format!("/v1/isolated/session/{a}/diff")).await;
    assert_eq!(st, 200, "{d}");
    let mut changes: Vec<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    changes.sort();
    let want = [("edit.txt", "modified"), ("gone.txt", "deleted"), ("host.txt", "modified"), ("new.txt", "created")];
    assert_eq!(changes, want.map(|(a, b)| (a.to_string(), b.to_string())));
    // The host changes host.txt after the session started: a conflict, not overwritten.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(w.join("host.txt"), "host2").unwrap();
    let r = s.client().post(s.url(&format!("/v1/isolated/session/{a}/commit"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rep: Value = r.json().await.unwrap();
    assert_eq!(rep["conflicts"].as_array().unwrap().len(), 1, "{rep}");
    assert!(rep["conflicts"][0]["path"].as_str().unwrap().ends_with("host.txt"));
    assert_eq!(std::fs::read_to_string(w.join("new.txt")).unwrap(), "new\n");
    assert_eq!(std::fs::read_to_string(w.join("edit.txt")).unwrap(), "edited\n");
    assert_eq!(std::fs::read_to_string(w.join("host.txt")).unwrap(), "host2");
    assert!(!w.join("gone.txt").exists());
    assert_eq!(std::fs::read_to_string(w.join("keep.txt")).unwrap(), "keep");
    // Later writes stay private again; a new session sees the committed files.
    sh(&s, &a, &format!("echo later > {wd}/later.txt")).await;
    assert!(!w.join("later.txt").exists());
    let c = create_ok(&s, json!({"workspace": {"path": w}})).await;
    assert_eq!(sh(&s, &c, &format!("cat {wd}/new.txt")).await, ["new"]);
    for sid in [&a, &b, &c] {
        assert_eq!(delete(&s, sid).await, 200);
    }
}

#[tokio::test]
async fn i22_i23_files_act_in_the_session_view() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    std::fs::write(w.join("lower.txt"), "lower").unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": w}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let c = s.client();
    let f = format!("{}/sub/api.txt", w.display());
    let boundary = "XISOLATEDBOUNDARY";
    let meta = json!({"path": f, "mode": 644});
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n\r\n{meta}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"api.txt\"\r\n\r\nhello\n\r\n--{boundary}--\r\n"
    );
    let r = c
        .post(s.url(&format!("{base}/files/upload")))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Private to the session, and visible to its processes at once.
    assert!(!w.join("sub/api.txt").exists());
    assert_eq!(sh(&s, &sid, &format!("cat {f}")).await, ["hello"]);
    let r = c.get(s.url(&format!("{base}/files/download"))).query(&[("path", &f)]).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello\n");
    let (st, info) = get(&s, &format!("{base}/files/info?path={f}")).await;
    assert_eq!((st, info[&f]["size"].as_u64(), info[&f]["mode"].as_u64()), (200, Some(6), Some(644)));
    // Session-written files are visible to the API; listing merges both layers.
    sh(&s, &sid, &format!("echo x > {}/b.txt", w.display())).await;
    let (_, found) = get(&s, &format!("{base}/files/search?path={}&pattern=*.txt", w.display())).await;
    assert_eq!(found.as_array().unwrap().len(), 3, "{found}");
    let (_, list) = get(&s, &format!("{base}/directories/list?path={}", w.display())).await;
    let names: Vec<&str> =
        list.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["b.txt", "lower.txt", "sub"]);
    // chmod and delete of a lower file: the host keeps its file and mode.
    let lower = format!("{}/lower.txt", w.display());
    let r = c
        .post(s.url(&format!("{base}/files/permissions")))
        .json(&json!({ &lower: {"mode": 755} }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, info) = get(&s, &format!("{base}/files/info?path={lower}")).await;
    assert_eq!(info[&lower]["mode"], 755);
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(std::fs::metadata(w.join("lower.txt")).unwrap().permissions().mode() & 0o777, 0o755);
    let r = c.delete(s.url(&format!("{base}/files"))).query(&[("path", &lower)]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, &format!("{base}/files/info?path={lower}")).await.0, 404);
    assert!(w.join("lower.txt").exists());
    // replace, mv, mkdir.
    let r = c
        .post(s.url(&format!("{base}/files/replace?verbose=true")))
        .json(&json!({ &f: {"old": "hello", "new": "bye"} }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()[&f]["replacedCount"], 1);
    let moved = format!("{}/moved.txt", w.display());
    let r = c.post(s.url(&format!("{base}/files/mv"))).json(&json!([{"src": f, "dest": moved}])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sh(&s, &sid, &format!("cat {moved}")).await, ["bye"]);
    let d = format!("{}/newdir/x", w.display());
    let r = c.post(s.url(&format!("{base}/directories"))).json(&json!({ &d: {"mode": 700} })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sh(&s, &sid, &format!("stat -c %a {d}")).await, ["700"]);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i23_ro_writes_refused_reads_work() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("r.txt"), "r").unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path(), "mode": "ro"}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let f = format!("{}/r.txt", ws.path().display());
    let r = s.client().get(s.url(&format!("{base}/files/download"))).query(&[("path", &f)]).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "r");
    let r = s.client().delete(s.url(&format!("{base}/files"))).query(&[("path", &f)]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FORBIDDEN");
    let (events, out) = run(&s, &sid, json!({"code": format!("touch {}/t", ws.path().display())})).await;
    assert_eq!(events.last().unwrap()["type"], "error");
    assert!(out.join(" ").contains("Read-only"), "{out:?}");
    // Background runs need a writable primary (I18).
    let r = s
        .client()
        .post(s.url(&format!("{base}/run")))
        .json(&json!({"code": "true", "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i18_i19_i20_background_run_status_and_logs() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let t0 = Instant::now();
    let r = s
        .client()
        .post(s.url(&format!("{base}/run")))
        .json(&json!({"code": "echo start; echo $$; sleep 1; echo done >&2; exit 7", "background": true, "envs": {"Z": "z"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let started: Value = r.json().await.unwrap();
    assert_eq!(started["session_id"], sid.as_str());
    let rid = started["run_id"].as_str().unwrap().to_string();
    let (_, st) = get(&s, &format!("{base}/runs/{rid}")).await;
    assert_eq!(st["running"], true, "{st}");
    assert!(st.get("exit_code").is_none());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        let (_, st) = get(&s, &format!("{base}/runs/{rid}")).await;
        if st["running"] == false || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["exit_code"], 7, "{status}");
    assert!(status["finished_at"].is_string());
    assert!(status.get("error").is_none());
    let r = s.client().get(s.url(&format!("{base}/runs/{rid}/logs"))).send().await.unwrap();
    let cursor: u64 = r.headers()["EXECD-ISOLATED-TAIL-CURSOR"].to_str().unwrap().parse().unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(cursor as usize, text.len());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "start");
    assert!(lines[1].parse::<u32>().unwrap() < 20, "runs in the session's PID namespace: {text}");
    assert_eq!(lines[2], "done");
    let r = s.client().get(s.url(&format!("{base}/runs/{rid}/logs?cursor={}", cursor + 100))).send().await.unwrap();
    assert_eq!(r.headers()["EXECD-ISOLATED-TAIL-CURSOR"], cursor.to_string().as_str());
    assert_eq!(r.text().await.unwrap(), "");
    let r = s.client().get(s.url(&format!("{base}/runs/{rid}/logs?cursor=6"))).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), text[6..]);
    assert_eq!(get(&s, &format!("{base}/runs/{rid}/logs?cursor=-1")).await.0, 400);
    assert_eq!(get(&s, &format!("{base}/runs/no-such-run")).await.0, 404);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i36_delete_kills_everything_and_leaves_nothing_behind() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let iso = s.state_dir().join("isolated").join(&sid);
    assert!(iso.join("upper0").is_dir());
    // A process that escapes its group, and a background run.
    sh(&s, &sid, "setsid nohup sleep 300 >/dev/null 2>&1 &").await;
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": "sleep 301", "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let sleepers = || {
        let out = std::process::Command::new("pgrep").args(["-f", "^sleep 30[01]$"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert!(common::wait_until(TIMEOUT, || sleepers() == 2), "both sleepers run");
    assert_eq!(delete(&s, &sid).await, 200);
    assert!(common::wait_until(Duration::from_secs(5), || sleepers() == 0), "nothing survives delete");
    assert!(!iso.exists(), "session directory removed");
    assert_eq!(mounts_mentioning(&sid), 0);
}

#[tokio::test]
async fn i35_idle_sessions_are_collected() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}, "idle_timeout_seconds": 1})).await;
    let (_, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert!(v["idle_remaining_seconds"].as_u64().unwrap() <= 1);
    let gone =
        common::wait_until_async(TIMEOUT, || async { get(&s, &format!("/v1/isolated/session/{sid}")).await.0 == 404 })
            .await;
    assert!(gone);
    assert!(common::wait_until(TIMEOUT, || !s.state_dir().join("isolated").join(&sid).exists()));
}

#[tokio::test]
async fn i1_routes_work_through_the_proxy() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let pre = format!("/proxy/{}/v1/isolated", s.port);
    let r = s
        .client()
        .post(s.url(&format!("{pre}/session")))
        .json(&json!({"workspace": {"path": ws.path()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sid = r.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_string();
    let r = s
        .client()
        .post(s.url(&format!("{pre}/session/{sid}/run")))
        .json(&json!({"code": "echo via-proxy"}))
        .send()
        .await
        .unwrap();
    let events = without_pings(&parse_events(&r.text().await.unwrap()));
    assert_eq!(texts(&events, "stdout"), ["via-proxy"]);
    let r = s.client().delete(s.url(&format!("{pre}/session/{sid}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
