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
    server_with(TestServer::options()).await
}

async fn server_with(opts: common::ServerOptions) -> Option<TestServer> {
    if !common::is_root() {
        common::prerequisite_missing("isolated sessions need root");
        return None;
    }
    let s = opts.env("FOO_TOKEN", "secret-x").start();
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
async fn i2_session_id_is_a_lowercase_uuid_and_created_at_is_utc() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let (st, created) = create(&s, json!({"workspace": {"path": ws.path()}})).await;
    assert_eq!(st, 201, "{created}");
    let sid = created["session_id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&sid).unwrap().to_string(), sid);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(get(&s, "/v1/isolated/session/not-a-uuid").await.0, 404);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i10_list_shows_active_sessions_then_drops_a_deleted_one() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let a = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let b = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let (st, list) = get(&s, "/v1/isolated/sessions").await;
    assert_eq!(st, 200);
    let sessions = list["sessions"].as_array().unwrap();
    let mut ids: Vec<&str> = sessions.iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = [a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want, "{list}");
    for x in sessions {
        assert_eq!(x["status"], "active", "{x}");
        assert!(x["created_at"].as_str().unwrap().ends_with('Z'), "{x}");
        assert!(x["last_run_at"].as_str().unwrap().ends_with('Z'), "{x}");
    }
    assert_eq!(delete(&s, &a).await, 200);
    let (_, list) = get(&s, "/v1/isolated/sessions").await;
    let ids: Vec<&str> =
        list["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [b.as_str()]);
    assert_eq!(delete(&s, &b).await, 200);
}

#[tokio::test]
async fn i11_get_echoes_the_creation_parameters() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path().display().to_string();
    let body = json!({"workspace": {"path": p, "mode": "rw"}, "profile": "balanced", "share_net": true, "idle_timeout_seconds": 0});
    let sid = create_ok(&s, body).await;
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!(st, 200);
    assert_eq!(v["session_id"], sid.as_str());
    assert_eq!(v["status"], "active");
    assert_eq!(v["workspace"], json!({"path": p, "mode": "rw"}));
    assert_eq!(v["profile"], "balanced");
    assert_eq!(v["share_net"], true);
    assert_eq!(v["idle_timeout_seconds"], 0);
    assert!(v.get("idle_remaining_seconds").is_none(), "no idle countdown for 0: {v}");
    assert_eq!(v["last_run_at"], v["created_at"]);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i12_delete_is_200_with_an_empty_body_then_404() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let r = s.client().delete(s.url(&format!("/v1/isolated/session/{sid}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(delete(&s, &sid).await, 404);
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!((st, v["code"].as_str()), (404, Some("SESSION_NOT_FOUND")));
    assert_eq!(get(&s, "/v1/isolated/sessions").await.1["sessions"], json!([]));
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
async fn i28_namespaces_pid_hostname_tmp_root_and_dev() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let a = create_ok(&s, json!({"workspace": {"path": ws.path()}, "share_net": false})).await;
    let b = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let out = sh(&s, &a, "echo $$; hostname; ls /proc | grep -c '^[0-9]'").await;
    assert_eq!(out[0], "1", "{out:?}");
    assert_eq!(out[1], "sandbox");
    assert!(out[2].parse::<u32>().unwrap() < 10, "{out:?}");
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

/// The network interfaces `/proc/net/dev` lists, as seen by a run in `sid`.
async fn interfaces(s: &TestServer, sid: &str) -> Vec<String> {
    sh(s, sid, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | LC_ALL=C sort").await
}

#[tokio::test]
async fn i32_share_net_false_leaves_only_a_working_loopback() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let private = create_ok(&s, json!({"workspace": {"path": ws.path()}, "share_net": false})).await;
    let shared = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    assert_eq!(interfaces(&s, &private).await, ["lo"]);
    // `lo` is up (as bwrap leaves it): 127.0.0.1 answers "refused", not "unreachable".
    let lo = sh(&s, &private, "(exec 3<>/dev/tcp/127.0.0.1/9) 2>&1 | grep -q refused && echo refused").await;
    assert_eq!(lo, ["refused"]);
    // The default (share_net true) is the sandbox's own network.
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let mut host: Vec<String> = host.lines().skip(2).map(|l| l.split(':').next().unwrap().trim().to_string()).collect();
    host.sort();
    assert_eq!(interfaces(&s, &shared).await, host);
    assert_eq!(delete(&s, &private).await, 200);
    assert_eq!(delete(&s, &shared).await, 200);
}

/// An overlay session `a` (and a second one, `b`) over a fresh workspace of four files, after
/// `a` created `new.txt`, deleted `gone.txt` and changed `edit.txt` and `host.txt`.
async fn overlay_with_changes(s: &TestServer) -> (tempfile::TempDir, String, String) {
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path();
    std::fs::write(w.join("keep.txt"), "keep").unwrap();
    std::fs::write(w.join("gone.txt"), "gone").unwrap();
    std::fs::write(w.join("edit.txt"), "old").unwrap();
    std::fs::write(w.join("host.txt"), "host").unwrap();
    let a = create_ok(s, json!({"workspace": {"path": w}})).await;
    let b = create_ok(s, json!({"workspace": {"path": w}})).await;
    let wd = w.display();
    sh(
        s,
        &a,
        &format!("echo new > {wd}/new.txt; rm {wd}/gone.txt; echo edited > {wd}/edit.txt; echo s > {wd}/host.txt"),
    )
    .await;
    (ws, a, b)
}

#[tokio::test]
async fn i23_overlay_writes_stay_private_to_the_session() {
    let Some(s) = server().await else { return };
    let (ws, a, b) = overlay_with_changes(&s).await;
    let w = ws.path();
    let wd = w.display();
    // The session sees its own changes; the host and the other session see none of them.
    assert_eq!(
        sh(&s, &a, &format!("cat {wd}/edit.txt; ls {wd}")).await,
        ["edited", "edit.txt", "host.txt", "keep.txt", "new.txt"]
    );
    assert!(!w.join("new.txt").exists());
    assert_eq!(std::fs::read_to_string(w.join("edit.txt")).unwrap(), "old");
    assert!(w.join("gone.txt").exists());
    assert_eq!(
        sh(&s, &b, &format!("cat {wd}/edit.txt; echo; ls {wd}")).await,
        ["old", "edit.txt", "gone.txt", "host.txt", "keep.txt"]
    );
    for sid in [&a, &b] {
        assert_eq!(delete(&s, sid).await, 200);
    }
}

#[tokio::test]
async fn i24_diff_lists_exactly_the_changes() {
    let Some(s) = server().await else { return };
    let (_ws, a, b) = overlay_with_changes(&s).await;
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
    // A session that changed nothing has an empty diff.
    let (st, d) = get(&s, &format!("/v1/isolated/session/{b}/diff")).await;
    assert_eq!((st, d["changes"].clone()), (200, json!([])), "{d}");
    for sid in [&a, &b] {
        assert_eq!(delete(&s, sid).await, 200);
    }
}

#[tokio::test]
async fn i25_commit_writes_back_and_reports_a_host_change_as_a_conflict() {
    let Some(s) = server().await else { return };
    let (ws, a, b) = overlay_with_changes(&s).await;
    let w = ws.path();
    let wd = w.display();
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

/// Starts `code` as a background run in `sid`; returns the run id once the run is accepted.
async fn start_background(s: &TestServer, sid: &str, code: &str) -> String {
    let t0 = Instant::now();
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": code, "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(t0.elapsed() < Duration::from_secs(5), "a background run answers at once");
    let started: Value = r.json().await.unwrap();
    assert_eq!(started["session_id"], sid);
    started["run_id"].as_str().unwrap().to_string()
}

/// Polls the run's status until it is no longer running (deadline [`TIMEOUT`]).
async fn wait_run(s: &TestServer, sid: &str, rid: &str) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (st, v) = get(s, &format!("/v1/isolated/session/{sid}/runs/{rid}")).await;
        assert_eq!(st, 200, "{v}");
        if v["running"] == false {
            return v;
        }
        assert!(Instant::now() < deadline, "still running: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(tail cursor, text)` of a run's logs from `cursor`.
async fn run_logs(s: &TestServer, sid: &str, rid: &str, cursor: u64) -> (u64, String) {
    let url = s.url(&format!("/v1/isolated/session/{sid}/runs/{rid}/logs?cursor={cursor}"));
    let r = s.client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tail = r.headers()["EXECD-ISOLATED-TAIL-CURSOR"].to_str().unwrap().parse().unwrap();
    (tail, r.text().await.unwrap())
}

#[tokio::test]
async fn i18_background_run_answers_202_at_once_and_runs_in_the_session() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let rid = start_background(&s, &sid, "echo $$; sleep 1").await;
    wait_run(&s, &sid, &rid).await;
    let (_, text) = run_logs(&s, &sid, &rid, 0).await;
    assert!(text.trim().parse::<u32>().unwrap() < 20, "runs in the session's PID namespace: {text}");
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i19_run_status_goes_from_running_to_the_exit_code() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let rid = start_background(&s, &sid, "sleep 1; exit 7").await;
    let (st, v) = get(&s, &format!("{base}/runs/{rid}")).await;
    assert_eq!(st, 200);
    assert_eq!((v["session_id"].as_str(), v["run_id"].as_str()), (Some(sid.as_str()), Some(rid.as_str())));
    assert_eq!(v["running"], true, "{v}");
    assert!(v["started_at"].is_string(), "{v}");
    assert!(v.get("exit_code").is_none() && v.get("finished_at").is_none(), "{v}");
    let v = wait_run(&s, &sid, &rid).await;
    assert_eq!(v["exit_code"], 7, "{v}");
    assert!(v["finished_at"].is_string());
    assert!(v.get("error").is_none());
    let rid = start_background(&s, &sid, "true").await;
    assert_eq!(wait_run(&s, &sid, &rid).await["exit_code"], 0);
    let (st, v) = get(&s, &format!("{base}/runs/no-such-run")).await;
    assert_eq!(st, 404, "{v}");
    assert!(v["code"].is_string());
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i20_logs_cursor_is_a_byte_offset_and_polling_loses_nothing() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let rid =
        start_background(&s, &sid, "for i in $(seq 1 20); do echo line-$i; echo err-$i >&2; sleep 0.05; done").await;
    // Polling with the returned cursor while the run writes concatenates to the whole log.
    let (mut cursor, mut polled) = (0, String::new());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let running = get(&s, &format!("{base}/runs/{rid}")).await.1["running"] == true;
        let (tail, text) = run_logs(&s, &sid, &rid, cursor).await;
        assert_eq!(tail, cursor + text.len() as u64, "the cursor moves by the bytes returned");
        polled.push_str(&text);
        cursor = tail;
        if !running {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (tail, whole) = run_logs(&s, &sid, &rid, 0).await;
    assert_eq!((tail, &whole), (whole.len() as u64, &polled));
    assert_eq!(whole.lines().filter(|l| l.starts_with("line-")).count(), 20);
    assert_eq!(whole.lines().filter(|l| l.starts_with("err-")).count(), 20, "stderr is in the log too");
    // Past the end: empty, the cursor stays; the first request needs no cursor; bad cursor 400.
    let (t, text) = run_logs(&s, &sid, &rid, tail + 100).await;
    assert_eq!((t, text.as_str()), (tail, ""));
    let r = s.client().get(s.url(&format!("{base}/runs/{rid}/logs"))).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), whole);
    let (_, mid) = run_logs(&s, &sid, &rid, 6).await;
    assert_eq!(mid, whole[6..]);
    assert_eq!(get(&s, &format!("{base}/runs/{rid}/logs?cursor=-1")).await.0, 400);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i36_delete_kills_everything_and_leaves_nothing_behind() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let iso = s.state_dir().join("isolated").join(&sid);
    assert!(iso.join("upper0").is_dir());
    // A process that escapes its group, and a background run. Durations no other test uses: the
    // count is of the whole machine's processes, and tests run side by side.
    sh(&s, &sid, "setsid nohup sleep 3036 >/dev/null 2>&1 &").await;
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": "sleep 3037", "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let sleepers = || {
        let out = std::process::Command::new("pgrep").args(["-f", "^sleep 303[67]$"]).output().unwrap();
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

/// Asserts an error answer is `{code, message}` JSON (I3) and returns its code.
async fn error_code(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].is_string(), "{v}");
    v["code"].as_str().expect("code").to_string()
}

#[tokio::test]
async fn i3_errors_are_code_and_message_json() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let c = s.client();
    let zero = "00000000-0000-0000-0000-000000000000";
    let r = c.post(s.url("/v1/isolated/session")).body("{not json").send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "INVALID_REQUEST_BODY");
    let r = c.get(s.url(&format!("/v1/isolated/session/{zero}"))).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "SESSION_NOT_FOUND");
    let r = c.delete(s.url(&format!("/v1/isolated/session/{zero}"))).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "SESSION_NOT_FOUND");
    let r = c.get(s.url(&format!("/v1/isolated/session/{zero}/files/info?path=/x"))).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "SESSION_NOT_FOUND");
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path(), "mode": "ro"}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let r = c.get(s.url(&format!("{base}/runs/no-such-run"))).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "SESSION_NOT_FOUND");
    let r = c.get(s.url(&format!("{base}/files/search"))).send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "MISSING_QUERY");
    let r = c.get(s.url(&format!("{base}/files/info?path={}/missing", ws.path().display()))).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "FILE_NOT_FOUND");
    let r = c
        .post(s.url(&format!("{base}/directories")))
        .json(&json!({format!("{}/d", ws.path().display()): {"mode": 755}}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "FORBIDDEN");
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i4_json_snake_case_rfc3339_no_null_in_echo() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    // Unknown request keys are ignored.
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}, "someFutureKey": 1})).await;
    let (_, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    for k in ["created_at", "last_run_at"] {
        let t = v[k].as_str().unwrap();
        assert!(t.ends_with('Z'), "{k}: {t}");
        chrono::DateTime::parse_from_rfc3339(t).unwrap();
    }
    fn walk(v: &Value, at: &str) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    assert!(!k.chars().any(|c| c.is_ascii_uppercase()), "camelCase key {at}.{k}");
                    assert!(!x.is_null(), "null at {at}.{k}");
                    walk(x, &format!("{at}.{k}"));
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, at)),
            _ => {}
        }
    }
    walk(&v, "");
    assert_eq!(v["env_passthrough"], json!({"mode": "deny"}));
    // A successful background run has no `error` key (not "" and not null).
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": "true", "background": true}))
        .send()
        .await
        .unwrap();
    let rid = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    let path = format!("/v1/isolated/session/{sid}/runs/{rid}");
    assert!(common::wait_until_async(TIMEOUT, || async { get(&s, &path).await.1["running"] == false }).await);
    let (_, st) = get(&s, &path).await;
    assert!(st.get("error").is_none(), "{st}");
    chrono::DateTime::parse_from_rfc3339(st["finished_at"].as_str().unwrap()).unwrap();
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i5_unavailable_every_route_but_capabilities_is_503() {
    let s = TestServer::options().arg("--isolation").arg("off").start();
    let c = s.client();
    let zero = "00000000-0000-0000-0000-000000000000";
    let base = format!("/v1/isolated/session/{zero}");
    let reqs = [
        c.get(s.url("/v1/isolated/sessions")),
        c.post(s.url("/v1/isolated/session")).json(&json!({"workspace": {"path": "/tmp"}})),
        c.get(s.url(&base)),
        c.delete(s.url(&base)),
        c.post(s.url(&format!("{base}/run"))).json(&json!({"code": "true"})),
        c.get(s.url(&format!("{base}/runs/{zero}"))),
        c.get(s.url(&format!("{base}/diff"))),
        c.post(s.url(&format!("{base}/commit"))),
        c.get(s.url(&format!("{base}/files/info?path=/tmp"))),
        c.get(s.url(&format!("{base}/directories/list?path=/tmp"))),
    ];
    for req in reqs {
        let r = req.send().await.unwrap();
        let url = r.url().path().to_string();
        assert!(r.headers().get("retry-after").is_none(), "{url}: permanent 503 has no Retry-After");
        assert_eq!(error_code(r, 503).await, "SERVICE_UNAVAILABLE", "{url}");
    }
    let (st, caps) = get(&s, "/v1/isolated/capabilities").await;
    assert_eq!((st, caps["available"].as_bool()), (200, Some(false)));
}

#[tokio::test]
async fn i6_route_table_statuses_and_unknown_subpath_404() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let c = s.client();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    assert_eq!(get(&s, "/v1/isolated/sessions").await.0, 200);
    assert_eq!(get(&s, "/v1/isolated/capabilities").await.0, 200);
    assert_eq!(get(&s, &base).await.0, 200);
    let r =
        c.post(s.url(&format!("{base}/run"))).json(&json!({"code": "true", "background": true})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = c.post(s.url(&format!("{base}/run"))).json(&json!({"code": "true"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert_eq!(get(&s, &format!("{base}/diff")).await.0, 200);
    assert_eq!(c.post(s.url(&format!("{base}/commit"))).send().await.unwrap().status(), 200);
    let d = format!("{}/dir", ws.path().display());
    let r = c.post(s.url(&format!("{base}/directories"))).json(&json!({ &d: {"mode": 755} })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty(), "200 with an empty body");
    assert_eq!(get(&s, &format!("{base}/directories/list?path={}", ws.path().display())).await.0, 200);
    let r = c.delete(s.url(&format!("{base}/directories"))).query(&[("path", &d)]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, &format!("{base}/no-such-route")).await.0, 404);
    assert_eq!(get(&s, "/v1/isolated/nothing-here").await.0, 404);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i7_create_defaults_and_workspace_prepended() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let second = ws.path().join("second");
    let p = ws.path().display().to_string();
    let sid = create_ok(
        &s,
        json!({"workspace": {"path": p}, "overlays": [{"path": second, "mode": "rw"}], "idle_timeout_seconds": -5}),
    )
    .await;
    let (_, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!(v["profile"], "strict");
    assert_eq!(v["uid_mode"], "setpriv");
    assert_eq!(v["idle_timeout_seconds"], 0, "negative treated as 0");
    assert_eq!(
        v["overlays"],
        json!([{"path": p, "mode": "overlay", "persist": true}, {"path": second.display().to_string(), "mode": "rw"}])
    );
    assert!(v.get("workspace").is_none(), "workspace echo only with one overlay");
    assert!(v.get("share_net").is_none() && v.get("uid").is_none(), "{v}");
    assert_eq!(v["extra_writable"], json!([]));
    assert_eq!(v["binds"], json!([]));
    // The missing overlay path was created on the host (mkdir -p).
    assert!(second.is_dir());
    // Default share_net is the sandbox's network: more than `lo`.
    let ifaces = sh(&s, &sid, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert!(ifaces.len() > 1 || ifaces != ["lo"], "{ifaces:?}");
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i9_create_201_echo_and_shell_ready() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let (st, v) = create(&s, json!({"workspace": {"path": ws.path(), "mode": "rw"}})).await;
    assert_eq!(st, 201);
    let sid = v["session_id"].as_str().unwrap().to_string();
    chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(v["workspace"], json!({"path": ws.path(), "mode": "rw"}));
    assert_eq!(v["status"], "active");
    // The shell is running when 201 is sent: PID 1 of its namespace is bash.
    let pid1 = sh(&s, &sid, "cat /proc/1/comm").await;
    assert_eq!(pid1, ["bash"]);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i13_run_request_validation() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let c = s.client();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let url = s.url(&format!("/v1/isolated/session/{sid}/run"));
    for bad in [
        json!({}),
        json!({"code": ""}),
        json!({"code": "true", "timeout_seconds": -1}),
        json!({"code": "true", "envs": {"1BAD": "x"}}),
        json!({"code": "true", "envs": {"A-B": "x"}}),
        json!({"code": "true", "background": true, "envs": {"": "x"}}),
    ] {
        let r = c.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(error_code(r, 400).await, "INVALID_REQUEST_BODY", "{bad}");
    }
    let r = c.post(&url).body("nope").send().await.unwrap();
    assert_eq!(error_code(r, 400).await, "INVALID_REQUEST_BODY");
    // envs are exported (children see them); timeout 0 = none.
    let (events, out) =
        run(&s, &sid, json!({"code": "sh -c 'echo $E'", "envs": {"E": "x y"}, "timeout_seconds": 0})).await;
    assert_eq!(out, ["x y"], "{events:?}");
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i15_stream_is_bare_json_frames_with_one_terminal_event() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": "echo one; printf 'no-newline'"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let body = r.text().await.unwrap();
    assert!(body.starts_with('{') && body.ends_with("}\n\n"), "{body:?}");
    assert!(!body.contains("data:"));
    let frames: Vec<Value> =
        body.split("\n\n").filter(|f| !f.is_empty()).map(|f| serde_json::from_str(f).unwrap()).collect();
    assert_eq!(frames[0]["type"], "init");
    assert!(frames.iter().all(|f| f["type"].is_string() && f["timestamp"].is_i64()), "{frames:?}");
    let events = without_pings(&frames);
    let terminal: Vec<_> =
        events.iter().filter(|e| e["type"] == "execution_complete" || e["type"] == "error").collect();
    assert_eq!(terminal.len(), 1);
    assert_eq!(events.last().unwrap()["type"], "execution_complete");
    // An unterminated last line is its own event.
    assert_eq!(texts(&events, "stdout"), ["one", "no-newline"]);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i21_files_unknown_session_and_served_during_a_run() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("f.txt"), "f").unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let f = format!("{}/f.txt", ws.path().display());
    let c = s.client();
    let slow = c.post(s.url(&format!("{base}/run"))).json(&json!({"code": "sleep 3; echo done"})).send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let (st, info) = get(&s, &format!("{base}/files/info?path={f}")).await;
    assert!(t0.elapsed() < Duration::from_secs(2), "file routes do not wait for the run");
    assert_eq!(st, 200);
    // FileInfo carries the keys the SDK requires, with the absolute path.
    for k in ["path", "size", "modified_at", "created_at", "owner", "group", "mode"] {
        assert!(info[&f].get(k).is_some(), "{k}: {info}");
    }
    assert_eq!(info[&f]["path"], f.as_str());
    // Relative paths resolve against the primary mount.
    let (st, rel) = get(&s, &format!("{base}/files/info?path=f.txt")).await;
    assert_eq!((st, rel["f.txt"]["size"].as_u64()), (200, Some(1)));
    let r = slow.await.unwrap().unwrap();
    let events = without_pings(&parse_events(&r.text().await.unwrap()));
    assert_eq!(texts(&events, "stdout"), ["done"]);
    assert_eq!(delete(&s, &sid).await, 200);
    assert_eq!(get(&s, &format!("{base}/files/info?path={f}")).await.0, 404);
}

#[tokio::test]
async fn i27_hardening_object_has_six_keys_with_valid_states() {
    let s = TestServer::start();
    let (st, caps) = get(&s, "/v1/isolated/capabilities").await;
    assert_eq!(st, 200);
    let h = &caps["hardening"];
    assert_eq!(h.as_object().unwrap().len(), 6, "{h}");
    assert!(["pid1", "subreaper", "none"].contains(&h["init_mode"].as_str().unwrap()));
    assert!(h["signal_shield"].is_boolean());
    for k in ["cap_drop", "seccomp", "landlock", "ebpf"] {
        let state = h[k]["state"].as_str().unwrap();
        assert!(["active", "disabled", "degraded", "unsupported"].contains(&state), "{k}: {state}");
        if state != "active" {
            assert!(h[k]["message"].is_string(), "{k} needs a message");
        }
    }
    assert_eq!(caps["isolator"], "native");
    assert!(caps["version"].is_string());
}

/// Bit `cap` of the bounding set a session's shell reports.
fn has_cap(capbnd: &str, cap: u32) -> bool {
    u64::from_str_radix(capbnd.trim(), 16).unwrap() & (1 << cap) != 0
}

#[tokio::test]
async fn i29_profiles_tmp_treatment_and_capabilities() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let name = format!("execd-i29-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(Path::new("/tmp").join(&name), "host").unwrap();
    let strict = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let balanced = create_ok(&s, json!({"workspace": {"path": ws.path()}, "profile": "balanced"})).await;
    assert_eq!(sh(&s, &balanced, &format!("cat /tmp/{name}")).await, ["host"], "balanced shares /tmp");
    assert_eq!(sh(&s, &strict, &format!("cat /tmp/{name} 2>/dev/null || echo private")).await, ["private"]);
    let bnd = "grep CapBnd /proc/self/status | cut -f2";
    let nnp = "grep NoNewPrivs /proc/self/status | cut -f2";
    for sid in [&strict, &balanced] {
        let cap = sh(&s, sid, bnd).await;
        assert!(!has_cap(&cap[0], 21), "CAP_SYS_ADMIN dropped: {cap:?}");
        let (events, _) = run(&s, sid, json!({"code": format!("umount {}", ws.path().display())})).await;
        assert_eq!(events.last().unwrap()["type"], "error", "no unmounting the overlay");
    }
    assert_eq!(sh(&s, &strict, nnp).await, ["1"]);
    assert_eq!(sh(&s, &balanced, nnp).await, ["0"]);
    // Default profile is strict; both default to an overlay mount.
    let (_, v) = get(&s, &format!("/v1/isolated/session/{balanced}")).await;
    assert_eq!(v["workspace"]["mode"], "overlay");
    let _ = std::fs::remove_file(Path::new("/tmp").join(&name));
    assert_eq!(delete(&s, &strict).await, 200);
    assert_eq!(delete(&s, &balanced).await, 200);
}

#[tokio::test]
async fn i30_mount_modes_rw_overlay_ro_and_primary() {
    let Some(s) = server().await else { return };
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb, pc) = (a.path().display(), b.path().display(), c.path().display());
    let sid = create_ok(
        &s,
        json!({"overlays": [{"path": a.path(), "mode": "rw"}, {"path": b.path()}, {"path": c.path(), "mode": "ro"}]}),
    )
    .await;
    assert_eq!(sh(&s, &sid, "pwd").await, [pa.to_string()], "the first mount is the primary");
    sh(&s, &sid, &format!("echo rw > {pa}/x; echo ov > {pb}/x")).await;
    assert_eq!(std::fs::read_to_string(a.path().join("x")).unwrap(), "rw\n", "rw writes reach the host");
    assert!(!b.path().join("x").exists(), "overlay writes stay in the upper layer");
    let (events, out) = run(&s, &sid, json!({"code": format!("echo ro > {pc}/x")})).await;
    assert_eq!(events.last().unwrap()["type"], "error");
    assert!(out.join(" ").contains("Read-only"), "{out:?}");
    // Two sessions on one host path: separate uppers.
    let other = create_ok(&s, json!({"workspace": {"path": b.path()}})).await;
    assert_eq!(sh(&s, &other, &format!("ls {pb} | wc -l")).await, ["0"]);
    assert_eq!(delete(&s, &sid).await, 200);
    assert_eq!(delete(&s, &other).await, 200);
}

#[tokio::test]
async fn i31_extra_writable_and_binds_follow_the_allowlist() {
    if !common::is_root() {
        common::prerequisite_missing("isolated sessions need root");
        return;
    }
    let allowed = tempfile::tempdir().unwrap();
    let src = allowed.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink("/etc", allowed.path().join("to-etc")).unwrap();
    let s =
        TestServer::options().arg("--isolation-allowed-writable").arg(&allowed.path().display().to_string()).start();
    let (_, caps) = get(&s, "/v1/isolated/capabilities").await;
    if caps["available"] != true {
        common::prerequisite_missing("isolation unavailable");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let sp = src.display().to_string();
    let sid = create_ok(
        &s,
        json!({"workspace": {"path": ws.path()}, "extra_writable": [sp],
               "binds": [{"source": sp, "dest": dest.path(), "readonly": true}]}),
    )
    .await;
    sh(&s, &sid, &format!("echo w > {sp}/f")).await;
    assert_eq!(std::fs::read_to_string(src.join("f")).unwrap(), "w\n", "extra_writable is the host path");
    assert_eq!(sh(&s, &sid, &format!("cat {}/f", dest.path().display())).await, ["w"]);
    let (events, _) = run(&s, &sid, json!({"code": format!("touch {}/g", dest.path().display())})).await;
    assert_eq!(events.last().unwrap()["type"], "error", "readonly bind refuses writes");
    for bad in [
        json!({"workspace": {"path": ws.path()}, "binds": [{"source": "/etc"}]}),
        json!({"workspace": {"path": ws.path()}, "extra_writable": [allowed.path().join("to-etc")]}),
        json!({"workspace": {"path": ws.path()}, "binds": [{"source": allowed.path().join("missing")}]}),
        json!({"workspace": {"path": ws.path()}, "binds": [{"source": sp, "dest": "/no/such/dest"}]}),
    ] {
        let (st, v) = create(&s, bad.clone()).await;
        assert_eq!((st, v["code"].as_str()), (400, Some("INVALID_REQUEST_BODY")), "{bad}");
    }
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i33_env_passthrough_modes() {
    if !common::is_root() {
        common::prerequisite_missing("isolated sessions need root");
        return;
    }
    let s = TestServer::options().env("FOO_TOKEN", "t").env("MY_SECRET", "m").env("PLAIN_VAR", "p").start();
    let (_, caps) = get(&s, "/v1/isolated/capabilities").await;
    if caps["available"] != true {
        common::prerequisite_missing("isolation unavailable");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let show = "echo ${FOO_TOKEN:-none} ${MY_SECRET:-none} ${PLAIN_VAR:-none}";
    let cases = [
        (json!(null), "none none p"),
        (json!({"mode": "deny", "keys": ["PLAIN_VAR"]}), "t m none"),
        (json!({"mode": "allow", "keys": ["FOO_TOKEN", "EXECD_ACCESS_TOKEN"]}), "t none none"),
        (json!({"keys": ["PLAIN_VAR"]}), "none none p"),
    ];
    for (pass, want) in cases {
        let mut body = json!({"workspace": {"path": ws.path()}});
        if !pass.is_null() {
            body["env_passthrough"] = pass.clone();
        }
        let sid = create_ok(&s, body).await;
        assert_eq!(sh(&s, &sid, show).await, [want], "{pass}");
        assert_eq!(sh(&s, &sid, "echo ${EXECD_ACCESS_TOKEN:-none}").await, ["none"]);
        // Per-run envs win.
        let (_, out) = run(&s, &sid, json!({"code": "echo $FOO_TOKEN", "envs": {"FOO_TOKEN": "run"}})).await;
        assert_eq!(out, ["run"]);
        assert_eq!(delete(&s, &sid).await, 200);
    }
}

#[tokio::test]
async fn i34_uid_gid_switch_applies_to_shell_and_api_files() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}, "uid": 65534, "gid": 65533})).await;
    let (_, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!((v["uid"].as_u64(), v["gid"].as_u64()), (Some(65534), Some(65533)));
    assert_eq!(sh(&s, &sid, "id -u; id -g; id -G").await, ["65534", "65533", "65533"]);
    let d = format!("{}/made", ws.path().display());
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/directories")))
        .json(&json!({ &d: {"mode": 755} }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sh(&s, &sid, &format!("stat -c '%u %g' {d}")).await, ["65534 65533"]);
    // Background runs switch too (their code comes from a memfd execd made before the switch).
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": "id -u", "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let rid = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    let path = format!("/v1/isolated/session/{sid}/runs/{rid}");
    assert!(common::wait_until_async(TIMEOUT, || async { get(&s, &path).await.1["running"] == false }).await);
    let log = s.client().get(s.url(&format!("{path}/logs"))).send().await.unwrap().text().await.unwrap();
    assert_eq!((get(&s, &path).await.1["exit_code"].as_i64(), log.as_str()), (Some(0), "65534\n"));
    // A root session that removes the FIFO directory only loses it until the next run.
    let root = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    sh(&s, &root, "rm -rf /dev/.execd 2>/dev/null; true").await;
    assert_eq!(sh(&s, &root, "echo fine").await, ["fine"]);
    assert_eq!(delete(&s, &root).await, 200);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i37_mount_limit_sixteen_counts_every_mount() {
    if !common::is_root() {
        common::prerequisite_missing("isolated sessions need root");
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path().display().to_string();
    let s = TestServer::options().arg("--isolation-allowed-writable").arg(&p).start();
    if get(&s, "/v1/isolated/capabilities").await.1["available"] != true {
        common::prerequisite_missing("isolation unavailable");
        return;
    }
    let sixteen: Vec<Value> = (0..16).map(|i| json!({"path": format!("{p}/d{i}"), "mode": "rw"})).collect();
    let sid = create_ok(&s, json!({ "overlays": sixteen })).await;
    assert_eq!(sh(&s, &sid, &format!("ls {p} | wc -l")).await, ["16"]);
    assert_eq!(delete(&s, &sid).await, 200);
    // 15 overlays + 1 extra_writable + 1 bind = 17: refused (each alone would be fine).
    let mut fifteen = sixteen.clone();
    fifteen.pop();
    let body =
        json!({"overlays": fifteen, "extra_writable": [format!("{p}/d0")], "binds": [{"source": format!("{p}/d1")}]});
    let (st, v) = create(&s, body).await;
    assert_eq!((st, v["code"].as_str()), (400, Some("INVALID_REQUEST_BODY")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("16"), "{v}");
}

#[tokio::test]
async fn i17_exit_n_fails_the_run_and_keeps_the_session() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    sh(&s, &sid, "export X=1; cd /tmp").await;
    let (events, out) = run(&s, &sid, json!({"code": "echo a; exit 3; echo never"})).await;
    assert_eq!(out, ["a"]);
    let last = events.last().unwrap();
    assert_eq!((last["type"].as_str(), last["error"]["evalue"].as_str()), (Some("error"), Some("3")), "{events:?}");
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("active")));
    // Exported variables and the working directory survive; the shell is still PID 1.
    assert_eq!(sh(&s, &sid, "echo $X; pwd; echo $$").await, ["1", "/tmp", "1"]);
    // Bare `exit` keeps the last status; `set -e` failures end the run, not the session.
    let (events, _) = run(&s, &sid, json!({"code": "false; exit"})).await;
    assert_eq!(events.last().unwrap()["error"]["evalue"], "1");
    let (events, _) = run(&s, &sid, json!({"code": "set -e; false; echo never"})).await;
    assert_eq!(events.last().unwrap()["error"]["evalue"], "1");
    // Exits in subshells are ordinary statuses.
    assert_eq!(sh(&s, &sid, "x=$(exit 5); echo $?; (exit 6); echo $?").await, ["5", "6"]);
    let (events, _) = run(&s, &sid, json!({"code": "exit 0"})).await;
    assert_eq!(events.last().unwrap()["type"], "execution_complete");
    assert_eq!(sh(&s, &sid, "echo still").await, ["still"]);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i17_background_job_output_never_reaches_a_later_run() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    // While run 1 lasts, its job's output is run 1's; after its end, it is dropped.
    let out = sh(&s, &sid, "echo one; (sleep 0.2; while :; do echo LEAK; sleep 0.05; done) & echo $! > /tmp/job").await;
    assert_eq!(out[0], "one");
    assert!(out[1..].iter().all(|l| l == "LEAK"), "{out:?}");
    let out = sh(&s, &sid, "sleep 0.5; echo two").await;
    assert_eq!(out, ["two"], "a job left by run 1 writes nothing into run 2");
    // Its output is dropped, the job itself is not killed.
    assert_eq!(sh(&s, &sid, "kill -0 $(cat /tmp/job) && echo alive; kill $(cat /tmp/job)").await, ["alive"]);
    assert_eq!(sh(&s, &sid, "echo three").await, ["three"]);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i18_background_code_never_in_argv() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let secret = format!("SECRET{}", uuid::Uuid::new_v4().simple());
    let r = s
        .client()
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .json(&json!({"code": format!("S={secret}; read -t 0.1 x; echo \"in=$x\"; sleep 2; echo ${{#S}}"), "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let rid = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    let logs = format!("/v1/isolated/session/{sid}/runs/{rid}/logs");
    let started = common::wait_until_async(TIMEOUT, || async {
        s.client().get(s.url(&logs)).send().await.unwrap().text().await.unwrap().starts_with("in=")
    })
    .await;
    assert!(started);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            assert!(!String::from_utf8_lossy(&cmd).contains(&secret), "code in argv of {:?}", e.path());
        }
    }
    let path = format!("/v1/isolated/session/{sid}/runs/{rid}");
    assert!(common::wait_until_async(TIMEOUT, || async { get(&s, &path).await.1["running"] == false }).await);
    let text = s.client().get(s.url(&logs)).send().await.unwrap().text().await.unwrap();
    assert_eq!(text, format!("in=\n{}\n", secret.len()), "stdin is /dev/null; the code ran whole");
    assert_eq!(get(&s, &path).await.1["exit_code"], 0);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i23_ephemeral_overlay_refuses_api_writes() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let rw = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("lower.txt"), "lower").unwrap();
    let sid =
        create_ok(&s, json!({"overlays": [{"path": ws.path(), "persist": false}, {"path": rw.path(), "mode": "rw"}]}))
            .await;
    let base = format!("/v1/isolated/session/{sid}");
    let c = s.client();
    let w = ws.path().display().to_string();
    let lower = format!("{w}/lower.txt");
    // Reads work; every write route is refused with 403.
    let r = c.get(s.url(&format!("{base}/files/download"))).query(&[("path", &lower)]).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "lower");
    let r = c.delete(s.url(&format!("{base}/files"))).query(&[("path", &lower)]).send().await.unwrap();
    assert_eq!(error_code(r, 403).await, "FORBIDDEN");
    let r = c
        .post(s.url(&format!("{base}/directories")))
        .json(&json!({ format!("{w}/d"): {"mode": 755} }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "FORBIDDEN");
    let r = c
        .post(s.url(&format!("{base}/files/permissions")))
        .json(&json!({ &lower: {"mode": 700} }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "FORBIDDEN");
    let r = c
        .post(s.url(&format!("{base}/files/replace")))
        .json(&json!({ &lower: {"old": "l", "new": "x"} }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "FORBIDDEN");
    // Relative paths resolve against the (ephemeral) primary; a move out of it is refused too.
    let r = c
        .post(s.url(&format!("{base}/files/mv")))
        .json(&json!([{"src": "lower.txt", "dest": format!("{}/moved", rw.path().display())}]))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "FORBIDDEN");
    // A symlink from the rw mount into the ephemeral one does not get around it.
    std::os::unix::fs::symlink(ws.path(), rw.path().join("link")).unwrap();
    let r = c
        .delete(s.url(&format!("{base}/directories")))
        .query(&[("path", format!("{}/link/sub", rw.path().display()))])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "FORBIDDEN");
    // The rw mount next to it still takes writes.
    let r = c
        .post(s.url(&format!("{base}/directories")))
        .json(&json!({ format!("{}/ok", rw.path().display()): {"mode": 755} }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The session's own writes stay private (tmpfs upper): not on the host.
    sh(&s, &sid, &format!("echo x > {w}/own.txt; rm {w}/lower.txt")).await;
    assert!(!ws.path().join("own.txt").exists());
    assert_eq!(std::fs::read_to_string(ws.path().join("lower.txt")).unwrap(), "lower");
    // No background runs, no diff or commit on an ephemeral primary.
    let r =
        c.post(s.url(&format!("{base}/run"))).json(&json!({"code": "true", "background": true})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(get(&s, &format!("{base}/diff")).await.0, 404);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn x62_isolated_runs_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let opts = TestServer::options().arg(&format!("--audit-log={}", audit.display()));
    let Some(s) = server_with(opts).await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    run(&s, &sid, json!({"code": "exit 7"})).await;
    let rid = start_background(&s, &sid, "exit 3").await;
    wait_run(&s, &sid, &rid).await;
    let deadline = Instant::now() + TIMEOUT;
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let runs: Vec<Value> = lines.into_iter().filter(|l| l["kind"] == "execution").collect();
        if runs.len() >= 2 {
            break runs;
        }
        assert!(Instant::now() < deadline, "audit lines: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (l, code, background) in [(&lines[0], 7, false), (&lines[1], 3, true)] {
        assert_eq!(l["operation"], "run_isolated", "{l}");
        assert_eq!(l["route"], "/v1/isolated/session/:sid/run", "{l}");
        assert_eq!(l["id"], sid.as_str(), "{l}");
        assert_eq!(l["exit_code"], code, "{l}");
        assert_eq!(l["exit_reason"], "exited", "{l}");
        assert_eq!(l["background"], background, "{l}");
        assert!(l["uid"].is_u64() && l["gid"].is_u64(), "{l}");
    }
    assert_eq!(delete(&s, &sid).await, 200);
}

/// Host pids of the processes whose command line is exactly `cmdline` (e.g. `sleep 3041`).
fn pids_running(cmdline: &str) -> Vec<i32> {
    let out = std::process::Command::new("pgrep").args(["-f", &format!("^{cmdline}$")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and its ancestors below `stop` (execd), nearest first.
fn chain_below(pid: i32, stop: i32) -> Vec<i32> {
    let mut chain = vec![pid];
    while let Some(p) = parent_of(*chain.last().unwrap()) {
        if p == stop || p <= 1 || chain.len() > 16 {
            return chain;
        }
        chain.push(p);
    }
    panic!("{pid} is not below execd {stop}: {chain:?}")
}

fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

/// The directories of the cgroup leaf named in a `/proc/<pid>/cgroup` text: the lines under
/// execd's `execd-<pid>` parent, each mapped to its hierarchy's mount point.
fn leaf_dirs(cgroup: &str, execd: u32) -> Vec<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let marker = format!("/execd-{execd}/");
    cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            if !path.contains(&marker) {
                return None;
            }
            let mount = mounts.lines().map(|m| m.split(' ').collect::<Vec<_>>()).find(|m| {
                m.len() > 3
                    && if ctrls.is_empty() {
                        m[2] == "cgroup2"
                    } else {
                        m[2] == "cgroup" && ctrls.split(',').all(|c| m[3].split(',').any(|o| o == c))
                    }
            })?;
            Some(Path::new(mount[1]).join(path.trim_start_matches('/')))
        })
        .collect()
}

/// All processes of `chain` are in one cgroup leaf under execd's parent; returns its text.
fn one_leaf(chain: &[i32], execd: u32, what: &str) -> String {
    let cg = cgroup_of(chain[0]);
    assert!(cg.contains(&format!("/execd-{execd}/c")), "{what} ({}) is not in a leaf of execd: {cg}", chain[0]);
    for p in chain {
        assert_eq!(cgroup_of(*p), cg, "{what}: process {p} of {chain:?} is in another cgroup");
    }
    cg
}

#[tokio::test]
async fn i36_session_processes_share_one_cgroup_leaf_and_delete_removes_it() {
    let Some(s) = server().await else { return };
    let (_, caps) = get(&s, "/capabilities").await;
    if caps["features"]["cgroup"] == "none" {
        common::prerequisite_missing("cgroup placement (cgroup mode is none here)");
        return;
    }
    let execd = s.pid();
    let (wa, wb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = create_ok(&s, json!({"workspace": {"path": wa.path()}})).await;
    let b = create_ok(&s, json!({"workspace": {"path": wb.path()}})).await;
    // A foreground run still running (its stream read in a task), a background run in each.
    // Durations no other test uses: pgrep sees the whole machine.
    let (client, url) = (s.client(), s.url(&format!("/v1/isolated/session/{a}/run")));
    let fg = tokio::spawn(async move {
        let r = client.post(url).json(&json!({"code": "sleep 3041"})).send().await.unwrap();
        r.text().await.unwrap_or_default()
    });
    start_background(&s, &a, "sleep 3042").await;
    start_background(&s, &b, "sleep 3043").await;
    let one = |c: &str| {
        let p = pids_running(c);
        (p.len() == 1).then(|| p[0])
    };
    assert!(common::wait_until(TIMEOUT, || ["sleep 3041", "sleep 3042", "sleep 3043"]
        .iter()
        .all(|c| one(c).is_some())));
    // The foreground run's chain: sleep, the session's shell (its PID 1), stage 1.
    let fg_chain = chain_below(one("sleep 3041").unwrap(), execd as i32);
    assert!(fg_chain.len() >= 3, "sleep, shell and stage 1: {fg_chain:?}");
    let leaf_a = one_leaf(&fg_chain, execd, "foreground run and shell");
    // The background run's chain: sleep, its bash, the `enter` helper.
    let bg_chain = chain_below(one("sleep 3042").unwrap(), execd as i32);
    assert_eq!(one_leaf(&bg_chain, execd, "background run"), leaf_a, "the background run is in the session's leaf");
    assert_ne!(cgroup_of(execd as i32), leaf_a, "execd itself is not in the session's leaf");
    let b_chain = chain_below(one("sleep 3043").unwrap(), execd as i32);
    let leaf_b = one_leaf(&b_chain, execd, "other session");
    assert_ne!(leaf_b, leaf_a, "another session has another leaf");
    let (dirs_a, dirs_b) = (leaf_dirs(&leaf_a, execd), leaf_dirs(&leaf_b, execd));
    // Hostile: a root process of the session cannot move itself out of the leaf (the session's
    // /sys is read-only and it has no CAP_SYS_ADMIN to mount a cgroup hierarchy of its own).
    let escape = "for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do \
                  [ -e \"$f\" ] && (echo 0 >\"$f\") 2>/dev/null && echo \"ESCAPED $f\"; done; \
                  mkdir -p /tmp/cg && mount -t cgroup -o pids none /tmp/cg 2>/dev/null && echo MOUNTED; \
                  cat /proc/self/cgroup";
    let out = sh(&s, &b, escape).await.join("\n");
    assert!(!out.contains("ESCAPED") && !out.contains("MOUNTED"), "{out}");
    assert!(out.contains(&format!("/execd-{execd}/c")), "{out}");
    assert!(!dirs_a.is_empty() && dirs_a.iter().all(|d| d.is_dir()), "{dirs_a:?}");

    assert_eq!(delete(&s, &a).await, 200);
    let gone = |cmds: &[&str]| cmds.iter().all(|c| pids_running(c).is_empty());
    assert!(
        common::wait_until(Duration::from_secs(5), || gone(&["sleep 3041", "sleep 3042"])),
        "session a's processes survive delete"
    );
    assert!(
        common::wait_until(Duration::from_secs(5), || dirs_a.iter().all(|d| !d.exists())),
        "session a's leaf left behind: {dirs_a:?}"
    );
    let ended = tokio::time::timeout(TIMEOUT, fg).await.expect("the foreground stream ends with its session").unwrap();
    assert!(ended.contains("\"type\""), "{ended}");
    assert!(!gone(&["sleep 3043"]) && dirs_b.iter().all(|d| d.is_dir()), "session b is untouched");

    assert_eq!(delete(&s, &b).await, 200);
    assert!(common::wait_until(Duration::from_secs(5), || gone(&["sleep 3043"])));
    assert!(common::wait_until(Duration::from_secs(5), || dirs_b.iter().all(|d| !d.exists())), "{dirs_b:?}");
}

// The requests the official SDKs send (ISOLATED.md I38–I45), byte for byte where it matters:
// their headers, `null` fields, missing bodies and the statuses and fields they parse. The SDKs
// themselves run in tests/sdk/test_isolated.py (Python) and tests/sdk/js (JS 0.1.11); these tests
// pin the wire they rely on without the SDK venv.

/// `(status, body)` of `req`, the body as JSON (`Null` when empty or not JSON).
async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (st, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn session_ids(list: &Value) -> Vec<String> {
    list["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn i38_python_sdk_run_once_shape_json_headers_and_a_no_cache_stream() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("keep.txt"), "keep").unwrap();
    let c = s.client();
    let before = session_ids(&get(&s, "/v1/isolated/sessions").await.1);
    // run_once: create (JSON with its content type), run on the streaming client, delete.
    let body = json!({"workspace": {"path": ws.path(), "mode": "rw"}});
    let (st, created) =
        send(c.post(s.url("/v1/isolated/session")).header("content-type", "application/json").body(body.to_string()))
            .await;
    assert!(st == 200 || st == 201, "{st} {created}");
    let sid = created["session_id"].as_str().unwrap();
    let r = c
        .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(json!({"code": "echo hi; cat keep.txt"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = without_pings(&parse_events(&r.text().await.unwrap()));
    assert_eq!(texts(&events, "stdout").join("\n"), "hi\nkeep", "Execution.text: {events:?}");
    assert_eq!(events.last().unwrap()["type"], "execution_complete");
    let st = c.delete(s.url(&format!("/v1/isolated/session/{sid}"))).send().await.unwrap().status().as_u16();
    assert!(st == 200 || st == 204);
    assert_eq!(session_ids(&get(&s, "/v1/isolated/sessions").await.1), before, "run_once leaves no session");
}

#[tokio::test]
async fn i39_create_answers_the_info_fields_and_attach_echoes_them() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path().display().to_string();
    let body = json!({
        "overlays": [{"path": p, "mode": "overlay", "persist": true}],
        "env_passthrough": {"mode": "deny", "keys": ["HOME"]},
        "idle_timeout_seconds": 0,
    });
    let (st, info) = create(&s, body).await;
    assert_eq!(st, 201, "{info}");
    let sid = info["session_id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&sid).unwrap().hyphenated().to_string(), sid);
    assert!(info["created_at"].as_str().is_some(), "{info}");
    // attach(id): GET, 200, the fields IsolatedSessionInfo is built from.
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!(st, 200);
    assert_eq!((v["profile"].as_str(), v["uid_mode"].as_str()), (Some("strict"), Some("setpriv")), "{v}");
    assert_eq!(v["overlays"], json!([{"path": p, "mode": "overlay", "persist": true}]));
    assert_eq!(v["workspace"]["path"], p.as_str(), "the first overlay is the workspace: {v}");
    assert_eq!(v["env_passthrough"], json!({"mode": "deny", "keys": ["HOME"]}));
    assert_eq!(v["idle_timeout_seconds"], 0);
    // A blank id is refused by the SDK itself; on the wire it is no session.
    assert_eq!(get(&s, "/v1/isolated/session/%20%20").await.0, 404);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i40_run_events_in_order_exit_is_an_error_event_and_envs_and_timeout_seconds_apply() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    // stderr comes as stdout, in order, between init and the terminal event (handlers' order).
    let (events, _) = run(&s, &sid, json!({"code": "echo x; echo y >&2"})).await;
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "stdout" => format!("out:{}", e["text"].as_str().unwrap().trim_end()),
            t => t.to_string(),
        })
        .collect();
    assert_eq!(kinds, ["init", "out:x", "out:y", "execution_complete"], "{events:?}");
    assert!(events[0]["text"].as_str().is_some_and(|id| !id.is_empty()), "Execution.id from init");
    // `exit 3`: an error event whose value is the code (Execution.exit_code); the session lives.
    let (events, _) = run(&s, &sid, json!({"code": "export K=v; echo before; exit 3"})).await;
    let last = events.last().unwrap();
    assert_eq!((last["type"].as_str(), last["error"]["evalue"].as_str()), (Some("error"), Some("3")), "{events:?}");
    assert_eq!(sh(&s, &sid, "echo $K").await, ["v"]);
    // IsolatedRunOpts: envs for this run only, timeout_seconds bounds it.
    let (events, out) = run(&s, &sid, json!({"code": "echo $ONLY_HERE", "envs": {"ONLY_HERE": "yes"}})).await;
    assert_eq!(out, ["yes"], "{events:?}");
    assert_eq!(sh(&s, &sid, "echo ${ONLY_HERE:-unset}").await, ["unset"]);
    let t0 = Instant::now();
    let (events, _) = run(&s, &sid, json!({"code": "sleep 30", "timeout_seconds": 1})).await;
    assert_eq!(events.last().unwrap()["type"], "error", "{events:?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "timeout_seconds is seconds");
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("active")));
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i41_background_202_fields_status_and_logs_without_a_cursor() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let (st, started) = send(
        s.client()
            .post(s.url(&format!("/v1/isolated/session/{sid}/run")))
            .json(&json!({"code": "echo $A; echo two", "background": true, "envs": {"A": "1"}})),
    )
    .await;
    assert_eq!(st, 202, "{started}");
    let rid = started["run_id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&rid).unwrap().hyphenated().to_string(), rid);
    assert!(started["started_at"].as_str().is_some() && started["session_id"] == sid.as_str(), "{started}");
    let status = wait_run(&s, &sid, &rid).await;
    assert_eq!(status["exit_code"], 0, "{status}");
    // run_logs(rid) with cursor 0 sends no cursor: the whole log, and the tail cursor.
    let r = s.client().get(s.url(&format!("/v1/isolated/session/{sid}/runs/{rid}/logs"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tail: u64 = r.headers()["EXECD-ISOLATED-TAIL-CURSOR"].to_str().unwrap().parse().unwrap();
    let text = r.text().await.unwrap();
    assert_eq!((text.as_str(), tail), ("1\ntwo\n", 6));
    assert_eq!(run_logs(&s, &sid, &rid, tail).await, (6, String::new()));
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i42_files_calls_as_the_python_filesystem_adapter_sends_them() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().display().to_string();
    let sid = create_ok(&s, json!({"workspace": {"path": &w}})).await;
    let base = format!("/v1/isolated/session/{sid}");
    let c = s.client();
    let ok = |st: u16, v: &Value| assert_eq!(st, 200, "{v}");
    // create_directories: owner and group sent as null.
    let d = format!("{w}/d/e");
    let (st, v) = send(
        c.post(s.url(&format!("{base}/directories"))).json(&json!({ &d: {"mode": 700, "owner": null, "group": null} })),
    )
    .await;
    ok(st, &v);
    // write_files: one multipart request with every pair.
    let boundary = "XI42BOUNDARY";
    let mut form = String::new();
    for (name, data) in [("a.txt", "hello world"), ("c.txt", "second")] {
        let meta = json!({"path": format!("{w}/d/{name}"), "mode": 644});
        form += &format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n\r\n{meta}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n{data}\r\n"
        );
    }
    form += &format!("--{boundary}--\r\n");
    let (st, v) = send(
        c.post(s.url(&format!("{base}/files/upload")))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(form),
    )
    .await;
    ok(st, &v);
    // read_bytes with a Range; a missing file is a status >= 400.
    let a = format!("{w}/d/a.txt");
    let r = c
        .get(s.url(&format!("{base}/files/download")))
        .query(&[("path", &a)])
        .header("range", "bytes=6-")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (206, "world".to_string()));
    let r =
        c.get(s.url(&format!("{base}/files/download"))).query(&[("path", format!("{w}/none"))]).send().await.unwrap();
    assert!(r.status().as_u16() >= 400);
    // replace_contents without `verbose`; move; set_permissions with null owner/group.
    let (st, v) =
        send(c.post(s.url(&format!("{base}/files/replace"))).json(&json!({ &a: {"old": "world", "new": "there"} })))
            .await;
    ok(st, &v);
    let b = format!("{w}/d/b.txt");
    let (st, v) = send(c.post(s.url(&format!("{base}/files/mv"))).json(&json!([{"src": &a, "dest": &b}]))).await;
    ok(st, &v);
    let (st, v) = send(
        c.post(s.url(&format!("{base}/files/permissions")))
            .json(&json!({ &b: {"mode": 600, "owner": null, "group": null} })),
    )
    .await;
    ok(st, &v);
    let (st, info) = get(&s, &format!("{base}/files/info?path={b}")).await;
    ok(st, &info);
    assert_eq!((info[&b]["mode"].as_u64(), info[&b]["size"].as_u64()), (Some(600), Some(11)), "{info}");
    // list_directory with depth; search with a pattern.
    let (st, list) = get(&s, &format!("{base}/directories/list?path={w}/d&depth=1")).await;
    ok(st, &list);
    let mut names: Vec<&str> =
        list.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().rsplit('/').next().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["b.txt", "c.txt", "e"]);
    let (st, found) = get(&s, &format!("{base}/files/search?path={w}&pattern=*.txt")).await;
    ok(st, &found);
    assert_eq!(found.as_array().unwrap().len(), 2, "{found}");
    assert_eq!(sh(&s, &sid, &format!("stat -c %a {d}; cat {b}")).await, ["700", "hello there"]);
    // delete_files / delete_directories: DELETE with `path` repeated.
    let c_txt = format!("{w}/d/c.txt");
    let r = c.delete(s.url(&format!("{base}/files"))).query(&[("path", &b), ("path", &c_txt)]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, &format!("{base}/files/info?path={c_txt}")).await.0, 404);
    let r = c.delete(s.url(&format!("{base}/directories"))).query(&[("path", format!("{w}/d"))]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, &format!("{base}/files/info?path={w}/d")).await.0, 404);
    assert!(!ws.path().join("d").exists(), "overlay: nothing reached the host");
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i43_get_state_list_summary_capabilities_and_delete_then_404() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}, "idle_timeout_seconds": 600})).await;
    let (st, state) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!((st, state["status"].as_str()), (200, Some("active")), "{state}");
    assert!(state["created_at"].is_string() && state["last_run_at"].is_string(), "{state}");
    let left = state["idle_remaining_seconds"].as_u64().unwrap();
    assert!(left > 0 && left <= 600, "{state}");
    let (st, list) = get(&s, "/v1/isolated/sessions").await;
    assert_eq!(st, 200);
    let mine: Vec<&Value> =
        list["sessions"].as_array().unwrap().iter().filter(|x| x["session_id"] == sid.as_str()).collect();
    assert_eq!((mine.len(), mine[0]["status"].as_str()), (1, Some("active")), "{list}");
    let (st, caps) = get(&s, "/v1/isolated/capabilities").await;
    assert_eq!(st, 200);
    assert!(caps["setpriv_available"].is_boolean() && caps["userns_available"].is_boolean(), "{caps}");
    assert_eq!(delete(&s, &sid).await, 200);
    let (st, v) = get(&s, &format!("/v1/isolated/session/{sid}")).await;
    assert_eq!((st, v["code"].as_str()), (404, Some("SESSION_NOT_FOUND")));
}

#[tokio::test]
async fn i44_generated_diff_and_commit_calls_without_a_body() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let sid = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    sh(&s, &sid, &format!("echo n > {}/n.txt", ws.path().display())).await;
    let c = s.client();
    let (st, d) = send(c.get(s.url(&format!("/v1/isolated/session/{sid}/diff")))).await;
    assert_eq!(st, 200, "{d}");
    let kinds: Vec<&str> = d["changes"].as_array().unwrap().iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created"]);
    // POST with no body and no content type, as the generated client sends it.
    let (st, v) = send(c.post(s.url(&format!("/v1/isolated/session/{sid}/commit")))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(std::fs::read_to_string(ws.path().join("n.txt")).unwrap(), "n\n");
    let zero = uuid::Uuid::nil();
    assert_eq!(send(c.get(s.url(&format!("/v1/isolated/session/{zero}/diff")))).await.0, 404);
    assert_eq!(send(c.post(s.url(&format!("/v1/isolated/session/{zero}/commit")))).await.0, 404);
    assert_eq!(delete(&s, &sid).await, 200);
}

#[tokio::test]
async fn i45_js_sdk_json_headers_on_bodiless_requests_and_one_pair_uploads() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().display().to_string();
    let c = s.client();
    // Every JSON route gets both headers, also GET and DELETE without a body.
    let js = |req: reqwest::RequestBuilder| {
        req.header("content-type", "application/json").header("accept", "application/json")
    };
    let (st, caps) = send(js(c.get(s.url("/v1/isolated/capabilities")))).await;
    assert_eq!((st, caps["available"].as_bool()), (200, Some(true)));
    let (st, created) =
        send(js(c.post(s.url("/v1/isolated/session"))).body(json!({"workspace": {"path": &w}}).to_string())).await;
    assert!((200..300).contains(&st), "{created}");
    let sid = created["session_id"].as_str().unwrap().to_string();
    let (st, v) = send(js(c.get(s.url(&format!("/v1/isolated/session/{sid}"))))).await;
    assert_eq!((st, v["session_id"].as_str()), (200, Some(sid.as_str())));
    let (st, list) = send(js(c.get(s.url("/v1/isolated/sessions")))).await;
    assert_eq!((st, session_ids(&list).contains(&sid)), (200, true));
    // run with accept: text/event-stream.
    let r = js(c.post(s.url(&format!("/v1/isolated/session/{sid}/run"))))
        .header("accept", "text/event-stream")
        .body(json!({"code": "echo js"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(texts(&without_pings(&parse_events(&r.text().await.unwrap())), "stdout"), ["js"]);
    // Upload by raw fetch: one pair per request; download by raw fetch.
    let boundary = "XI45BOUNDARY";
    let meta = json!({"path": format!("{w}/up.txt")});
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{meta}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"up.txt\"\r\n\r\nfrom js\r\n--{boundary}--\r\n"
    );
    let r = c
        .post(s.url(&format!("/v1/isolated/session/{sid}/files/upload")))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = c.get(s.url(&format!("/v1/isolated/session/{sid}/files/download?path={w}/up.txt"))).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "from js");
    // DELETE with the JSON headers: a 2xx whose body, if any, parses as JSON.
    let r = js(c.delete(s.url(&format!("/v1/isolated/session/{sid}")))).send().await.unwrap();
    assert!(r.status().is_success());
    let body = r.bytes().await.unwrap();
    assert!(body.is_empty() || serde_json::from_slice::<Value>(&body).is_ok());
}

#[tokio::test]
async fn i28_a_session_can_neither_see_nor_signal_another_sessions_processes() {
    let Some(s) = server().await else { return };
    let ws = tempfile::tempdir().unwrap();
    let a = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let b = create_ok(&s, json!({"workspace": {"path": ws.path()}})).await;
    let marker = format!("{}", 40_000 + std::process::id() % 20_000);
    sh(&s, &a, &format!("sleep {marker} >/dev/null 2>&1 &")).await;
    let host = {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(p) = pids_running(&format!("sleep {marker}")).first() {
                break *p;
            }
            assert!(Instant::now() < deadline, "a's sleep never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // b sees no such process, cannot signal it by its host pid, and kill -9 -1 ends only b's own.
    let out = sh(&s, &b, &format!("ls /proc/{host} >/dev/null 2>&1 && echo seen || echo unseen; pgrep -c -f 'sleep {marker}' || true; kill -9 {host} 2>/dev/null && echo signalled || echo refused")).await;
    assert_eq!(out, ["unseen", "0", "refused"]);
    let (_, _) = run(&s, &b, json!({"code": "kill -9 -1"})).await;
    assert!(common::pid_alive(host), "a's process survived b's kill -9 -1");
    assert_eq!(sh(&s, &a, &format!("pgrep -c -f 'sleep {marker}'")).await, ["1"], "and a still sees it");
    for sid in [&a, &b] {
        assert_eq!(delete(&s, sid).await, 200);
    }
    assert!(common::wait_until(TIMEOUT, || !common::pid_alive(host)), "delete ends a's process");
}

#[tokio::test]
async fn i5_without_cap_sys_admin_capabilities_name_what_is_missing_and_create_is_503() {
    // Root without capabilities, as in a container without CAP_SYS_ADMIN: the kernel refuses the
    // namespaces. Never a half-isolated session: capabilities and create say what is missing.
    if !common::is_root() {
        common::prerequisite_missing("root (to drop its capabilities)");
        return;
    }
    let s = TestServer::options().wrapper(&["setpriv", "--bounding-set=-all", "--inh-caps=-all"]).start();
    let (st, caps) = get(&s, "/v1/isolated/capabilities").await;
    assert_eq!((st, caps["available"].as_bool()), (200, Some(false)), "{caps}");
    let message = caps["message"].as_str().unwrap();
    assert!(message.contains("namespaces") && message.contains("EPERM"), "{caps}");
    let (st, v) = create(&s, json!({"workspace": {"path": "/tmp"}})).await;
    assert_eq!((st, v["code"].as_str()), (503, Some("SERVICE_UNAVAILABLE")), "{v}");
    assert!(v["message"].as_str().unwrap().contains(message), "{v}");
    // Everything else of execd works.
    let r = s.client().post(s.url("/command")).json(&json!({"command": "echo ok"})).send().await.unwrap();
    assert_eq!(texts(&without_pings(&parse_events(&r.text().await.unwrap())), "stdout"), ["ok"]);
}
