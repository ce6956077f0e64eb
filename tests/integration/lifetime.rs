//! Lifetime and operations (issue #20): the `GET /command` inventory (X53), `GET /ready` (X52)
//! and init mode (X51), against the real binary.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{children, parse_events, pid_alive, wait_until, without_pings, TestServer, TIMEOUT};
use serde_json::{json, Value};

async fn start_bg(s: &TestServer, cmd: &str) -> String {
    let resp =
        s.client().post(s.url("/command")).json(&json!({"command": cmd, "background": true})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ev = parse_events(&resp.text().await.unwrap());
    ev[0]["text"].as_str().unwrap().to_string()
}

async fn get(s: &TestServer, path: &str) -> (u16, Option<String>, Value) {
    let resp = s.client().get(s.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let cache = resp.headers().get("cache-control").map(|v| v.to_str().unwrap().to_string());
    (status, cache, resp.json().await.unwrap())
}

/// Every id of a full walk through the inventory with `filter` (`""`, `running=true`, ...).
async fn walk(s: &TestServer, filter: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/command?limit={limit}");
        if !filter.is_empty() {
            q.push_str(&format!("&{filter}"));
        }
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (st, _, body) = get(s, &q).await;
        assert_eq!(st, 200, "{body}");
        let page = body["commands"].as_array().unwrap();
        assert!(page.len() <= limit);
        out.extend(page.iter().cloned());
        match body["pagination"]["nextCursor"].as_str() {
            Some(c) => {
                assert_eq!(body["pagination"]["hasMore"], true);
                cursor = Some(c.to_string());
            }
            None => return out,
        }
    }
}

async fn wait_all_finished(s: &TestServer, n: usize) {
    let ok = common::wait_until_async(TIMEOUT, || async {
        let (_, _, b) = get(s, "/command?running=false&limit=100").await;
        b["commands"].as_array().unwrap().len() >= n
    })
    .await;
    assert!(ok, "commands did not finish");
}

#[tokio::test]
async fn x53_inventory_pages_filters_and_hides_command_text() {
    let s = TestServer::start();
    let mut finished = Vec::new();
    for i in 0..5 {
        finished.push(start_bg(&s, &format!("echo secret-{i}; exit {i}")).await);
    }
    wait_all_finished(&s, 5).await;
    let running = [start_bg(&s, "sleep 30").await, start_bg(&s, "sleep 30").await];

    let (st, cache, body) = get(&s, "/command").await;
    assert_eq!(st, 200);
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(body["pagination"]["limit"], 50);
    assert_eq!(body["pagination"]["hasMore"], false);
    assert!(body["pagination"].get("nextCursor").is_none(), "{body}");
    let text = body.to_string();
    assert!(!text.contains("secret") && !text.contains("sleep"), "command text or output listed: {text}");

    let all = walk(&s, "", 2).await;
    let ids: Vec<&str> = all.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 7);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 7, "duplicates: {ids:?}");
    // Newest first.
    let started: Vec<&str> = all.iter().map(|c| c["started_at"].as_str().unwrap()).collect();
    let mut sorted = started.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(started, sorted);
    for c in &all {
        assert!(c.get("content").is_none(), "{c}");
        let id = c["id"].as_str().unwrap();
        if running.iter().any(|r| r == id) {
            assert_eq!(c["running"], true);
            assert!(c.get("exit_code").is_none());
        } else {
            let i = finished.iter().position(|f| f == id).expect("known id");
            assert_eq!(c["running"], false);
            assert_eq!(c["exit_code"], i as i64, "{c}");
            assert!(c["finished_at"].is_string());
        }
    }
    let r: HashSet<String> =
        walk(&s, "running=true", 1).await.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(r, running.iter().cloned().collect());
    let f: HashSet<String> =
        walk(&s, "running=false", 3).await.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(f, finished.iter().cloned().collect());
}

#[tokio::test]
async fn x53_bad_limit_running_and_cursor_are_invalid_query() {
    let s = TestServer::start();
    for i in 0..3 {
        start_bg(&s, &format!("exit {i}")).await;
    }
    wait_all_finished(&s, 3).await;
    for q in ["limit=0", "limit=101", "limit=ten", "limit=-1", "running=maybe", "cursor=%21%21", "cursor=QUJD"] {
        let (st, cache, body) = get(&s, &format!("/command?{q}")).await;
        assert_eq!(st, 400, "{q}: {body}");
        assert_eq!(body["code"], "INVALID_QUERY", "{q}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{q}");
    }
    let (_, _, body) = get(&s, "/command?limit=1&running=false").await;
    let cursor = body["pagination"]["nextCursor"].as_str().unwrap().to_string();
    // Same filter: fine (the limit may change); another filter: refused, as upstream.
    assert_eq!(get(&s, &format!("/command?limit=5&running=false&cursor={cursor}")).await.0, 200);
    for other in ["", "&running=true"] {
        let (st, _, body) = get(&s, &format!("/command?limit=1{other}&cursor={cursor}")).await;
        assert_eq!((st, body["code"].as_str()), (400, Some("INVALID_QUERY")), "{other}: {body}");
    }
    // A cursor from another execd process is refused too.
    let t = TestServer::start();
    let (st, _, body) = get(&t, &format!("/command?running=false&cursor={cursor}")).await;
    assert_eq!((st, body["code"].as_str()), (400, Some("INVALID_QUERY")), "{body}");
}

#[tokio::test]
async fn x53_pagination_stable_under_concurrent_starts_and_evictions() {
    let s = TestServer::options().arg("--command-retention-count").arg("12").start();
    for i in 0..12 {
        start_bg(&s, &format!("exit {}", i % 3)).await;
    }
    wait_all_finished(&s, 12).await;
    let before: HashSet<String> =
        walk(&s, "", 100).await.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(before.len(), 12);

    // Walk 3 at a time while new commands start (each evicting the oldest finished one).
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut started = Vec::new();
    loop {
        let q = match &cursor {
            Some(c) => format!("/command?limit=3&cursor={c}"),
            None => "/command?limit=3".to_string(),
        };
        let (st, _, body) = get(&s, &q).await;
        assert_eq!(st, 200, "{body}");
        for c in body["commands"].as_array().unwrap() {
            seen.push((c["started_at"].as_str().unwrap().to_string(), c["id"].as_str().unwrap().to_string()));
        }
        started.push(start_bg(&s, "true").await);
        started.push(start_bg(&s, "true").await);
        match body["pagination"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "an item came twice: {seen:?}");
    for w in seen.windows(2) {
        assert!(w[0] > w[1], "order broken: {w:?}");
    }
    // Nothing started during the walk shows up in it (it sorts before the cursor), and every
    // command that existed before and was not evicted meanwhile was listed.
    assert!(started.iter().all(|id| !ids.contains(&id)));
    wait_all_finished(&s, 12).await;
    let after: HashSet<String> =
        walk(&s, "", 100).await.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    for id in before.intersection(&after) {
        assert!(ids.contains(&id), "{id} was retained throughout but not listed");
    }
}

#[tokio::test]
async fn x52_ready_reports_checks_and_answers_fast() {
    let s = TestServer::start();
    for _ in 0..5 {
        let t = Instant::now();
        let (st, cache, body) = get(&s, "/ready").await;
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        assert_eq!(st, 200, "{body}");
        assert_eq!(cache.as_deref(), Some("no-store"));
        assert_eq!(body["ready"], true);
        let names: Vec<&str> = body["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["state_dir", "disk", "inodes", "pids"]);
        assert!(body["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true && c["detail"].is_string()));
    }
    // No probe file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(s.state_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ready-probe"))
        .collect();
    assert!(leftovers.is_empty());
    let (_, _, caps) = get(&s, "/capabilities").await;
    assert_eq!(
        (caps["features"]["ready"].clone(), caps["features"]["command_inventory"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(caps["features"]["init"], false);
}

fn failing(body: &Value) -> Vec<String> {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn x52_ready_503_when_disk_floor_unmet_or_jupyter_down() {
    let s = TestServer::options().arg("--ready-min-free-disk").arg("18446744073709551615").start();
    let (st, _, body) = get(&s, "/ready").await;
    assert_eq!((st, body["ready"].clone()), (503, json!(false)), "{body}");
    assert_eq!(failing(&body), ["disk"]);

    let port = common::free_port();
    let s = TestServer::options().arg("--jupyter-host").arg(&format!("http://127.0.0.1:{port}")).start();
    let t = Instant::now();
    let (st, _, body) = get(&s, "/ready").await;
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert_eq!(st, 503, "{body}");
    assert_eq!(failing(&body), ["jupyter"]);
}

fn sh(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(cmd).status().map(|s| s.success()).unwrap_or(false)
}

/// A small tmpfs at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        sh(&format!("mount -t tmpfs -o size={size},mode=0700 execd-ready-test {} 2>/dev/null", dir.display()))
            .then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sh(&format!("umount -l {} 2>/dev/null", self.0.display()));
    }
}

#[tokio::test]
async fn x52_ready_503_when_state_dir_read_only_or_disk_full() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("fs");
    let Some(_fs) = Tmpfs::mount(&mnt, "8m") else {
        common::prerequisite_missing("mounting a tmpfs (root)");
        return;
    };
    let state = mnt.join("state");
    let s = TestServer::options()
        .arg("--state-dir")
        .arg(state.to_str().unwrap())
        .arg("--ready-min-free-disk")
        .arg("1M")
        .start();
    let (st, _, body) = get(&s, "/ready").await;
    assert_eq!(st, 200, "{body}");

    // Full: a file takes all but a few KiB.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}/fill", mnt.display()), "bs=64k", "count=1000"])
        .stderr(Stdio::null())
        .status();
    let (st, _, body) = get(&s, "/ready").await;
    assert_eq!(st, 503, "{body}");
    assert!(failing(&body).contains(&"disk".to_string()), "{body}");
    std::fs::remove_file(mnt.join("fill")).unwrap();
    assert_eq!(get(&s, "/ready").await.0, 200);

    // Read-only.
    assert!(sh(&format!("mount -o remount,ro {}", mnt.display())));
    let (st, _, body) = get(&s, "/ready").await;
    assert!(sh(&format!("mount -o remount,rw {}", mnt.display())));
    assert_eq!(st, 503, "{body}");
    assert_eq!(failing(&body), ["state_dir"], "{body}");
    assert_eq!(get(&s, "/ready").await.0, 200);
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// Zombies among `pid`'s children.
fn zombies(pid: u32) -> Vec<u32> {
    children(pid).into_iter().filter(|(_, st)| *st == 'Z').map(|(p, _)| p).collect()
}

async fn caps_init(s: &TestServer) -> Value {
    get(s, "/capabilities").await.2["features"]["init"].clone()
}

#[tokio::test]
async fn x51_init_subreaper_forwards_signals_reaps_orphans_and_exits_with_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!(
        "trap 'echo usr1 >> {d}/got' USR1; trap 'echo winch >> {d}/got' WINCH; \
         trap 'echo term >> {d}/got; sleep 0.3; exit 42' TERM; \
         while [ ! -f {d}/go ]; do sleep 0.02; done; sh -c 'sleep 1 &'; \
         while :; do sleep 0.02; done"
    );
    let mut s = TestServer::options().arg("--init").arg("--").arg("sh").arg("-c").arg(&script).start();
    let init = s.pid();
    assert_eq!(caps_init(&s).await, true);
    // The daemon and the entrypoint are init's children.
    assert!(children(init).len() >= 2, "{:?}", children(init));

    // An orphan of the entrypoint is reparented to init (the subreaper) and reaped there.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let mut orphan = 0;
    assert!(
        wait_until(TIMEOUT, || {
            orphan = children(init).into_iter().map(|(p, _)| p).find(|p| comm(*p) == "sleep").unwrap_or(0);
            orphan != 0
        }),
        "the orphan never came to init: {:?}",
        children(init)
    );
    assert!(wait_until(TIMEOUT, || !Path::new(&format!("/proc/{orphan}")).exists()), "orphan {orphan} not reaped");
    assert!(zombies(init).is_empty());

    // Forwarded signals.
    for sig in ["USR1", "WINCH"] {
        assert!(sh(&format!("kill -{sig} {init}")));
    }
    let got = dir.path().join("got");
    assert!(
        wait_until(TIMEOUT, || std::fs::read_to_string(&got).is_ok_and(|g| g.contains("usr1") && g.contains("winch")))
    );
    // SIGTERM: the entrypoint shuts down on its own time, execd exits with its status.
    let status = s.terminate().expect("execd exited");
    assert_eq!(status.code(), Some(42), "{}", s.log());
    assert!(std::fs::read_to_string(&got).unwrap().contains("term"));
}

#[tokio::test]
async fn x51_entrypoint_killed_by_signal_gives_128_plus_n_and_daemon_stops() {
    // `sleep` has no handler of its own: it dies of the forwarded SIGTERM only if init unblocked it.
    let mut s = TestServer::options().arg("--init").arg("--").arg("sleep").arg("1000").start();
    let daemon = children(s.pid()).into_iter().map(|(p, _)| p).find(|p| comm(*p) == "execd").expect("daemon");
    let status = s.terminate().expect("execd exited");
    assert_eq!(status.code(), Some(128 + 15), "{}", s.log());
    assert!(!pid_alive(daemon as i32), "the daemon outlived init");

    let out = Command::new(common::execd_bin()).arg("--init").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("entrypoint"));
}

#[tokio::test]
async fn x51_commands_keep_exact_exit_codes_among_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The entrypoint makes orphans all the time while the commands run.
    let script = format!("while [ ! -f {d}/stop ]; do sh -c 'true & sleep 0.01 &'; sleep 0.005; done; exit 0");
    let mut s = TestServer::options().arg("--init").arg("--").arg("sh").arg("-c").arg(&script).start();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let client = s.client();
        let url = s.url("/command");
        let code = i % 7 + 1;
        tasks.push(tokio::spawn(async move {
            let cmd = format!("sh -c 'sleep 0.05 &'; (true &); sleep 0.0{}; exit {code}", i % 5);
            let resp = client.post(url).json(&json!({ "command": cmd })).send().await.unwrap();
            let ev = without_pings(&parse_events(&resp.text().await.unwrap()));
            (code, ev.last().unwrap()["error"]["evalue"].as_str().unwrap_or("none").to_string())
        }));
    }
    for t in tasks {
        let (code, got) = t.await.unwrap();
        assert_eq!(got, code.to_string());
    }
    std::fs::write(dir.path().join("stop"), "").unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut s_status = None;
    while Instant::now() < deadline {
        if let Some(Ok(Some(st))) = s.child.as_mut().map(|c| c.try_wait()) {
            s_status = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    s.child = None;
    assert_eq!(s_status.and_then(|st| st.code()), Some(0));
}

#[tokio::test]
async fn x51_pid1_in_a_pid_namespace() {
    let unshare_ok = Command::new("unshare")
        .args(["-fp", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !unshare_ok {
        common::prerequisite_missing("unshare -fp --mount-proc (root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = common::free_port();
    let script = format!(
        "while [ ! -f {d}/go ]; do sleep 0.02; done; sh -c 'sleep 0.5 &'; \
         while [ ! -f {d}/stop ]; do sleep 0.02; done; exit 3"
    );
    let mut child = Command::new("unshare")
        .args(["-fp", "--mount-proc"])
        .arg(common::execd_bin())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--state-dir"])
        .arg(dir.path().join("state"))
        .args(["--init", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(TIMEOUT, || common::blocking_ping(port, None)), "execd did not come up");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let caps: Value = client.get(format!("{base}/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["init"], true);
    let run = |cmd: &str| {
        let client = client.clone();
        let body = json!({ "command": cmd });
        let url = format!("{base}/command");
        async move {
            without_pings(&parse_events(&client.post(url).json(&body).send().await.unwrap().text().await.unwrap()))
        }
    };
    let ev = run("cat /proc/1/comm").await;
    assert_eq!(common::texts(&ev, "stdout").concat().trim(), "execd");
    // The entrypoint's orphan is reparented to PID 1 and reaped there: no zombie is left.
    let ps = || {
        let run = &run;
        async move {
            let ev = run("ps -e -o ppid=,stat=,comm=").await;
            common::raw_texts(&ev, "stdout").concat()
        }
    };
    std::fs::write(dir.path().join("go"), "").unwrap();
    let orphan_at_pid1 = |out: &str| {
        out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 3 && f[0] == "1" && f[2] == "sleep"
        })
    };
    assert!(common::wait_until_async(TIMEOUT, || async { orphan_at_pid1(&ps().await) }).await, "{}", ps().await);
    let ok = common::wait_until_async(TIMEOUT, || async {
        let out = ps().await;
        !orphan_at_pid1(&out) && !out.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|st| st.starts_with('Z')))
    })
    .await;
    assert!(ok, "orphan not reaped: {}", ps().await);
    std::fs::write(dir.path().join("stop"), "").unwrap();
    let mut status = None;
    assert!(wait_until(TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(3));
}

#[tokio::test]
async fn x51_bootstrap_with_execd_init_runs_execd_as_init() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = common::free_port();
    let execd = format!(
        "{} --port {port} --bind 127.0.0.1 --state-dir {}",
        common::execd_bin().display(),
        dir.path().join("state").display()
    );
    let bootstrap = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bootstrap.sh");
    let mut child = Command::new("sh")
        .arg(&bootstrap)
        .arg("-c")
        .arg(format!("while [ ! -f {d}/stop ]; do sleep 0.02; done; exit 9"))
        .env("EXECD", &execd)
        .env("EXECD_INIT", "1")
        .env("EXECD_ENVS", dir.path().join("envs"))
        .env_remove("EXECD_ACCESS_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(TIMEOUT, || common::blocking_ping(port, None)), "execd did not come up");
    // bootstrap exec'd into execd, which runs as init (subreaper here).
    assert_eq!(comm(child.id()), "execd");
    let caps: Value =
        reqwest::get(format!("http://127.0.0.1:{port}/capabilities")).await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["init"], true);
    std::fs::write(dir.path().join("stop"), "").unwrap();
    let mut status = None;
    assert!(wait_until(TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(9));
}

/// Voluntary context switches of every thread of `pid` that lives through both samples, over
/// `window`: how often the process woke up.
fn wakeups(pid: u32, window: Duration) -> (u64, Vec<String>) {
    let sample = || -> std::collections::HashMap<String, (String, u64)> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|t| {
                let status = std::fs::read_to_string(t.path().join("status")).ok()?;
                let n = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?.trim().parse().ok()?;
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?.trim().to_string();
                Some((t.file_name().to_string_lossy().into_owned(), (comm, n)))
            })
            .collect()
    };
    let before = sample();
    std::thread::sleep(window);
    let after = sample();
    let mut total = 0;
    let mut who = Vec::new();
    for (tid, (comm, n)) in &after {
        if let Some((_, m)) = before.get(tid) {
            total += n - m;
            if n > m {
                who.push(format!("{comm}: {}", n - m));
            }
        }
    }
    (total, who)
}

/// An idle execd sleeps: no periodic wake-ups when there is nothing to do (execd sits idle in
/// every sandbox most of the time). After a command (whose cgroup leaf the janitor removes), its
/// threads wake at most a couple of times in 3 s; the janitor and the isolated-session collector
/// used to poll twice a second each.
#[test]
fn idle_execd_does_not_wake_up() {
    let s = TestServer::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A fresh client, dropped after: no idle keep-alive connection (with its deadlines) left.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let resp = client.post(s.url("/command")).json(&json!({"command": "true"})).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let events = parse_events(&resp.text().await.unwrap());
        assert!(events.iter().any(|e| e["type"] == "execution_complete"), "{events:?}");
    });
    drop(rt);
    // The finished command's leaf, if any, is removed by the janitor within a round or two; then
    // a 3 s window must be quiet (windows are measured until one is, for at most 15 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (n, who) = wakeups(s.pid(), Duration::from_secs(3));
        if n <= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} wake-ups in the last 3 s of idling: {who:?}");
    }
}
