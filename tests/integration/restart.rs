//! Restart survival (EXTENSIONS X50): after `kill -9` and a restart on the same state directory,
//! finished commands answer status, `/logs`, `/events` and the inventory exactly as before, a
//! command that was running is `lost` with its leftover processes reported, bash sessions run
//! with their variables and functions, retention (D12) still holds, torn journals and garbage
//! records do not stop execd from starting, and `--fresh-state` wipes instead.
//! (Half-done tus uploads across a restart: tests/upload.rs `x33_offsets_survive_an_execd_restart`.)

use crate::common;

use std::path::Path;

use common::{TestServer, TIMEOUT};
use serde_json::{json, Value};

/// The same state directory (and port) as `first`, with `extra` flags.
fn restart(first: &TestServer, extra: &[&str]) -> TestServer {
    let mut o = TestServer::options().arg("--state-dir").arg(first.state_dir().to_str().unwrap()).port(first.port);
    for a in extra {
        o = o.arg(a);
    }
    o.start()
}

/// Starts a command and returns its id (a foreground stream is read to its end).
async fn run(s: &TestServer, body: Value) -> String {
    let text = s.client().post(s.url("/command")).json(&body).send().await.unwrap().text().await.unwrap();
    let ev = common::parse_events(&text);
    ev[0]["text"].as_str().unwrap_or_else(|| panic!("no init: {text}")).to_string()
}

async fn get(s: &TestServer, path: &str) -> (u16, Vec<u8>) {
    let resp = s.client().get(s.url(path)).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, tokio::time::timeout(TIMEOUT, resp.bytes()).await.unwrap().unwrap().to_vec())
}

async fn status(s: &TestServer, id: &str) -> (u16, Value) {
    let (code, body) = get(s, &format!("/command/status/{id}")).await;
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn wait_finished(s: &TestServer, id: &str) {
    let ok = common::wait_until_async(TIMEOUT, || async { status(s, id).await.1["running"] == false }).await;
    assert!(ok, "{id} did not finish");
}

/// `/logs` body and tail cursor.
async fn logs(s: &TestServer, id: &str) -> (u16, Option<String>, Vec<u8>) {
    let resp = s.client().get(s.url(&format!("/command/{id}/logs"))).send().await.unwrap();
    let code = resp.status().as_u16();
    let cur = resp.headers().get("execd-commands-tail-cursor").map(|v| v.to_str().unwrap().to_string());
    (code, cur, resp.bytes().await.unwrap().to_vec())
}

/// The `/events` body without its `init` block (whose timestamp is the request's).
async fn events_after_init(s: &TestServer, id: &str) -> String {
    let (code, body) = get(s, &format!("/command/{id}/events")).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let body = String::from_utf8(body).unwrap();
    let blocks: Vec<&str> = body.split("\n\n").filter(|b| !b.is_empty() && !b.starts_with(':')).collect();
    assert!(blocks[0].contains("\"type\":\"init\""), "{body}");
    blocks[1..].join("\n\n")
}

/// The inventory entry of `id` (finished commands).
async fn listed(s: &TestServer, id: &str) -> Option<Value> {
    let (code, body) = get(s, "/command?running=false&limit=100").await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["commands"].as_array().unwrap().iter().find(|c| c["id"] == id).cloned()
}

async fn session(s: &TestServer) -> String {
    let v: Value = s.client().post(s.url("/session")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    v["session_id"].as_str().unwrap().to_string()
}

/// Runs `command` in session `id`: (HTTP status, stdout lines).
async fn session_run(s: &TestServer, id: &str, command: &str) -> (u16, Vec<String>) {
    let resp = s
        .client()
        .post(s.url(&format!("/session/{id}/run")))
        .json(&json!({ "command": command }))
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let ev = common::parse_events(&resp.text().await.unwrap());
    (code, common::texts(&common::without_pings(&ev), "stdout"))
}

/// SIGKILL to `pid` (a leftover of a killed execd found through its own output).
fn kill_pid(pid: i32) {
    let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
}

/// Waits until the command's output holds `needle` and returns it.
async fn wait_output(s: &TestServer, id: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut out = String::new();
    let mut ok = false;
    while std::time::Instant::now() < deadline {
        out = String::from_utf8_lossy(&logs(s, id).await.2).into_owned();
        if out.contains(needle) {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "{needle:?} never appeared: {out:?}");
    out
}

#[tokio::test]
async fn x50_kill_9_keeps_finished_commands_and_sessions_and_reports_the_running_one_lost() {
    let mut first = TestServer::start();
    let (_, caps) = get(&first, "/capabilities").await;
    let caps: Value = serde_json::from_slice(&caps).unwrap();
    assert_eq!(caps["features"]["restart_survival"], true, "{caps}");
    let finished = [
        run(&first, json!({"command": "echo one; echo two >&2; printf 'no newline'"})).await,
        run(&first, json!({"command": "echo bg-out; echo bg-err >&2; exit 3", "background": true})).await,
        run(&first, json!({"command": "seq 1 2000; kill -SEGV $$"})).await,
    ];
    for id in &finished {
        wait_finished(&first, id).await;
    }
    let lost = run(&first, json!({"command": "echo pid=$$; exec sleep 300", "background": true})).await;
    let out = wait_output(&first, &lost, "pid=").await;
    let pid: i32 = out.trim().strip_prefix("pid=").unwrap().parse().unwrap();
    let (s1, s2) = (session(&first).await, session(&first).await);
    for (sid, v) in [(&s1, "first"), (&s2, "second")] {
        let cmd = format!("export VAR={v}-var; myfunc() {{ echo fn-{v}; }}; plain=p-{v}; cd /tmp");
        assert_eq!(session_run(&first, sid, &cmd).await, (200, vec![]));
    }
    let mut before = Vec::new();
    for id in &finished {
        let st = get(&first, &format!("/command/status/{id}")).await;
        assert_eq!(st.0, 200);
        before.push((st, logs(&first, id).await, events_after_init(&first, id).await, listed(&first, id).await));
    }

    first.kill();
    assert!(common::pid_alive(pid), "the running command died with execd");
    let second = restart(&first, &[]);

    for (id, b) in finished.iter().zip(&before) {
        let st = get(&second, &format!("/command/status/{id}")).await;
        assert_eq!(String::from_utf8_lossy(&st.1), String::from_utf8_lossy(&b.0 .1), "status of {id}");
        assert_eq!(st.0, 200);
        assert_eq!(logs(&second, id).await, b.1, "logs of {id}");
        assert_eq!(events_after_init(&second, id).await, b.2, "events of {id}");
        assert!(b.3.is_some());
        assert_eq!(listed(&second, id).await, b.3, "inventory entry of {id}");
    }
    let (code, st) = status(&second, &lost).await;
    assert_eq!(code, 200);
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["exit_reason"], "lost", "{st}");
    assert_eq!(st["exit_code"], -1, "{st}");
    let error = st["error"].as_str().unwrap();
    assert!(error.contains(&pid.to_string()), "leftover pid {pid} not reported: {error}");
    assert!(common::pid_alive(pid), "a leftover was killed instead of reported");
    kill_pid(pid);
    assert_eq!(logs(&second, &lost).await.2, out.as_bytes());
    let ev = events_after_init(&second, &lost).await;
    assert!(ev.contains("\"exit_reason\":\"lost\"") && ev.contains("\"type\":\"error\""), "{ev}");
    assert_eq!(listed(&second, &lost).await.unwrap()["exit_code"], -1);

    for (sid, v) in [(&s1, "first"), (&s2, "second")] {
        let (code, lines) = session_run(&second, sid, "echo $VAR; myfunc; echo $plain; pwd").await;
        assert_eq!(code, 200);
        assert_eq!(lines, [format!("{v}-var"), format!("fn-{v}"), format!("p-{v}"), "/tmp".into()]);
    }
    // The restored sessions keep working and saving their state.
    assert_eq!(session_run(&second, &s1, "VAR=changed").await.0, 200);
    assert_eq!(session_run(&second, &s1, "echo $VAR").await.1, ["changed"]);
    // New work goes on normally beside the restored one.
    let id = run(&second, json!({"command": "echo fresh"})).await;
    wait_finished(&second, &id).await;
    assert_eq!(logs(&second, &id).await.2, b"fresh\n");
}

#[tokio::test]
async fn x50_fresh_state_wipes_records_journals_and_sessions() {
    let mut first = TestServer::start();
    let id = run(&first, json!({"command": "echo old"})).await;
    wait_finished(&first, &id).await;
    let sid = session(&first).await;
    assert_eq!(session_run(&first, &sid, "X=1").await.0, 200);
    first.kill();
    let second = restart(&first, &["--fresh-state"]);
    assert_eq!(status(&second, &id).await.0, 404);
    assert_eq!(session_run(&second, &sid, "echo $X").await.0, 500, "an old session id is unknown (C81)");
    let state = first.state_dir();
    assert_eq!(std::fs::read_dir(state.join("commands")).unwrap().count(), 0);
    assert!(!state.join("sessions").exists() || std::fs::read_dir(state.join("sessions")).unwrap().count() == 0);
}

/// Appends `bytes` to `path` (what a kill in the middle of a write leaves).
fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

#[tokio::test]
async fn x50_torn_journal_and_garbage_records_do_not_stop_a_restart() {
    let mut first = TestServer::start();
    let id = run(&first, json!({"command": "echo pid=$$; echo line2; exec sleep 300", "background": true})).await;
    let out = wait_output(&first, &id, "line2").await;
    let pid: i32 = out.lines().next().unwrap().strip_prefix("pid=").unwrap().parse().unwrap();
    let sid = session(&first).await;
    assert_eq!(session_run(&first, &sid, "export KEEP=yes").await.0, 200);
    first.kill();
    kill_pid(pid);

    let dir = first.state_dir().join("commands");
    // A kill mid-write: output bytes without their index record, then half a record.
    append(&dir.join(format!("{id}.out")), b"half-written");
    append(&dir.join(format!("{id}.idx")), &[1, 0, 0, 0, 0, 0, 0, 0, 99, 0]);
    // Garbage records, a stray temporary, a journal without a record, junk.
    std::fs::write(dir.join("0123456789abcdef0123456789abcdef.json"), b"{not json").unwrap();
    std::fs::write(dir.join("fedcba9876543210fedcba9876543210.json"), b"").unwrap();
    std::fs::write(dir.join("00000000000000000000000000000000.out"), b"orphan").unwrap();
    std::fs::write(dir.join(format!("{id}.json.tmp")), b"{").unwrap();
    std::fs::write(dir.join("junk"), b"x").unwrap();
    // A session whose newer state file was cut short, and a session directory with nothing usable.
    let sdir = first.state_dir().join("sessions").join(&sid);
    let newest = std::fs::read_dir(&sdir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("state.")?.strip_suffix(".sh")?.parse::<u64>().ok())
        .max()
        .unwrap();
    std::fs::write(sdir.join(format!("state.{}.sh", newest + 1)), b"export KEEP=torn\n").unwrap();
    let broken = first.state_dir().join("sessions/aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("state.0.sh"), b"export X=1\n").unwrap();

    let second = restart(&first, &[]);
    let (code, st) = status(&second, &id).await;
    assert_eq!((code, st["exit_reason"].as_str()), (200, Some("lost")), "{st}");
    assert_eq!(logs(&second, &id).await.2, out.as_bytes(), "torn tail not cut back");
    assert!(events_after_init(&second, &id).await.contains("line2"));
    for bad in
        ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210", "00000000000000000000000000000000"]
    {
        assert_eq!(status(&second, bad).await.0, 404);
    }
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, [format!("{id}.idx"), format!("{id}.json"), format!("{id}.out")]);
    assert_eq!(session_run(&second, &sid, "echo $KEEP").await, (200, vec!["yes".to_string()]));
    assert_eq!(session_run(&second, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "true").await.0, 500);
    assert!(second.log().contains("unusable"), "bad files not logged: {}", second.log());
    // A second restart finds the lost command as it was reported (it is not lost twice).
    let st_before = get(&second, &format!("/command/status/{id}")).await;
    drop(second);
    let third = restart(&first, &[]);
    assert_eq!(get(&third, &format!("/command/status/{id}")).await, st_before);
}

#[tokio::test]
async fn x50_retention_holds_across_a_restart() {
    let mut first = TestServer::options().arg("--command-retention-count=3").start();
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = run(&first, json!({"command": format!("echo {i}")})).await;
        wait_finished(&first, &id).await;
        ids.push(id);
    }
    first.kill();
    let second = restart(&first, &["--command-retention-count=1"]);
    assert_eq!(status(&second, &ids[0]).await.0, 404);
    assert_eq!(status(&second, &ids[1]).await.0, 404);
    assert_eq!(status(&second, &ids[2]).await.0, 200);
    assert_eq!(std::fs::read_dir(first.state_dir().join("commands")).unwrap().count(), 3, "evicted files left");
    drop(second);
    // The TTL counts from the original finish time.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third = restart(&first, &["--command-retention-ttl=1s"]);
    assert_eq!(status(&third, &ids[2]).await.0, 404);
}

#[tokio::test]
async fn x50_graceful_restart_keeps_sessions_and_ends_commands_as_interrupted() {
    let mut first = TestServer::options().arg("--graceful-shutdown-timeout=1s").start();
    let id = run(&first, json!({"command": "sleep 300", "background": true})).await;
    let sid = session(&first).await;
    assert_eq!(session_run(&first, &sid, "f() { echo kept; }").await.0, 200);
    assert!(first.terminate().is_some(), "execd did not stop");
    let second = restart(&first, &[]);
    let (_, st) = status(&second, &id).await;
    assert_eq!(st["exit_reason"], "interrupted", "{st}");
    assert_eq!(session_run(&second, &sid, "f").await.1, ["kept"]);
}

#[tokio::test]
async fn x31_kill_9_mid_import_leaves_no_staging_directory_after_a_restart() {
    let mut first = TestServer::start();
    let dest = tempfile::tempdir().unwrap();
    // A tar whose one file is announced as 2 MiB; only its first MiB is sent, then the body waits.
    let mut tar = Vec::new();
    crate::archive::raw_tar_entry(&mut tar, b"big.bin", b'0', b"", &vec![7u8; 2 << 20]);
    tar.truncate(512 + (1 << 20));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let url = first.url(&format!("/files/archive?path={}", dest.path().display()));
    let upload = tokio::spawn(first.client().post(url).body(body).send());
    tx.send(Ok(tar)).await.unwrap();
    let staging = || {
        std::fs::read_dir(dest.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".execd-archive-"))
            .count()
    };
    assert!(common::wait_until_async(TIMEOUT, || async { staging() == 1 }).await, "the import never staged");

    first.kill();
    drop(tx);
    let _ = upload.await;
    assert_eq!(staging(), 1, "kill -9 left the staging directory (what the restart must clean)");
    let second = restart(&first, &[]);
    let r = second.client().get(second.url("/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(staging(), 0, "swept at start: {:?}", std::fs::read_dir(dest.path()).unwrap().collect::<Vec<_>>());
    assert!(!dest.path().join("big.bin").exists());
}

/// Whether cgroup v1 is here as on this machine (root, a pids hierarchy, /sys/fs/cgroup not
/// cgroup2); else the prerequisite is reported missing.
fn cgroup_v1() -> bool {
    let v1 = common::is_root()
        && Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !v1 {
        common::prerequisite_missing("root and cgroup v1 hierarchies (a pids hierarchy at /sys/fs/cgroup/pids)");
    }
    v1
}

/// The leaf directories of execd `pid` in the machine's v1 hierarchies (`…/execd-<pid>/c<n>`).
fn v1_leaves_of(pid: u32) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let parent = h.path().join(format!("execd-{pid}"));
        for l in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if l.path().is_dir() && !common::is_spare_leaf(pid, &l.file_name().to_string_lossy()) {
                out.push(l.path());
            }
        }
    }
    out
}

/// A lost command's processes and the leaf directories of the execd that lost them: killed and
/// removed on drop, so that a failing test leaves nothing on the machine.
struct Leftovers {
    pids: Vec<i32>,
    leaves: Vec<std::path::PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in &self.pids {
            kill_pid(*p);
        }
        common::wait_until(TIMEOUT, || {
            for l in &self.leaves {
                let _ = std::fs::remove_dir(l);
                let _ = std::fs::remove_dir(l.parent().unwrap());
            }
            self.leaves.iter().all(|l| !l.exists())
        });
    }
}

#[tokio::test]
async fn x50_lost_command_reports_the_processes_of_its_cgroup_leaf() {
    if !cgroup_v1() {
        return;
    }
    let mut first = TestServer::start();
    let first_pid = first.pid();
    // The leader, and a child that leaves the process group (setsid): only the leaf still holds it.
    let cmd = "setsid sh -c 'echo sid=$$; exec sleep 300' & echo pid=$$; exec sleep 300";
    let id = run(&first, json!({"command": cmd, "background": true})).await;
    let out = wait_output(&first, &id, "sid=").await;
    let out = if out.contains("pid=") { out } else { wait_output(&first, &id, "pid=").await };
    let num = |key: &str| -> i32 {
        out.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok()).expect(key)
    };
    let (pid, sid) = (num("pid="), num("sid="));
    let leaves = v1_leaves_of(first_pid);
    let mut cleanup = Leftovers { pids: vec![pid, sid], leaves: leaves.clone() };
    let leaf = leaves.iter().find(|l| l.starts_with("/sys/fs/cgroup/pids")).expect("no leaf in the pids hierarchy");
    let procs = std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == sid.to_string()), "the setsid child is not in the leaf {leaf:?}: {procs}");

    first.kill();
    let second = restart(&first, &[]);
    let (code, st) = status(&second, &id).await;
    assert_eq!((code, st["exit_reason"].as_str()), (200, Some("lost")), "{st}");
    let error = st["error"].as_str().unwrap();
    for p in [pid, sid] {
        assert!(error.contains(&p.to_string()), "leftover {p} not reported: {error}");
        assert!(common::pid_alive(p), "leftover {p} was killed instead of reported");
    }
    assert!(error.contains("cgroup leaf"), "{error}");
    // Reported, not killed; the leaf stays while they run.
    assert!(leaf.is_dir(), "the leaf of the lost command was removed while its processes run");
    assert!(second.log().contains("not killed"), "no WARN naming them: {}", second.log());

    // Once they end, the new execd's janitor removes the leaf and the dead execd's parent.
    for p in std::mem::take(&mut cleanup.pids) {
        kill_pid(p);
    }
    let gone = common::wait_until(TIMEOUT, || leaves.iter().all(|l| !l.exists()));
    assert!(gone, "the lost command's leaf was not removed after its processes ended: {leaves:?}");
    let parent = format!("/sys/fs/cgroup/pids/execd-{first_pid}");
    assert!(common::wait_until(TIMEOUT, || !Path::new(&parent).exists()), "the dead execd's parent {parent} is left");
    drop(cleanup);
}

#[tokio::test]
async fn x50_a_leaf_name_an_earlier_execd_left_is_not_reused() {
    // An earlier execd with this execd's pid (a restart in a fresh PID namespace) left a leaf that
    // still holds a lost command's processes: the new execd must neither enter it nor fail.
    if !cgroup_v1() {
        return;
    }
    let s = TestServer::start();
    let old = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/execd-{}/c0", s.pid()));
    std::fs::create_dir(&old).unwrap();
    let _cleanup = Leftovers { pids: Vec::new(), leaves: vec![old.clone()] };
    // The pids limit needs a leaf of its own: without one the request fails.
    let id = run(&s, json!({"command": "echo pid=$$; cat /proc/self/cgroup", "limits": {"pids": 50}})).await;
    wait_finished(&s, &id).await;
    let out = String::from_utf8(logs(&s, &id).await.2).unwrap();
    assert!(out.starts_with("pid="), "the command did not run: {out}");
    let pids_line = out.lines().find(|l| l.contains(":pids:")).unwrap_or_else(|| panic!("no pids cgroup: {out}"));
    assert!(pids_line.ends_with(&format!("/execd-{}/c1", s.pid())), "not in the next leaf: {pids_line}");
    assert_eq!(std::fs::read_to_string(old.join("cgroup.procs")).unwrap(), "", "the old leaf was entered");
    drop(s);
}
