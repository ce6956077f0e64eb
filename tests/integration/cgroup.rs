//! A cgroup leaf per command (EXTENSIONS X20–X23), against the real binary: placement, kill of
//! everything (setsid, `set -m`, double fork, fork bomb), leaf removal, structured exit, limits.
//!
//! v1 is covered on the machine's v1 hierarchies (auto-detection); v2 by `--cgroup-root` at the
//! machine's cgroup2 mount (`/sys/fs/cgroup/unified` on a hybrid host, `/sys/fs/cgroup` on a pure
//! v2 one): placement, `cgroup.kill`, CPU usage. Limits on v2 need the memory/pids controllers
//! in that hierarchy, which a hybrid host keeps in v1; those cases run where v2 offers them.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    parse_events, pid_alive, prerequisite_missing, wait_finished, wait_until, EventReader, TestServer, TIMEOUT,
};
use serde_json::{json, Value};

/// Root and a writable v1 `pids` hierarchy (the machine this runs on).
fn v1_ready() -> bool {
    let ok = common::is_root() && Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() && !is_v2("/sys/fs/cgroup");
    if !ok {
        prerequisite_missing("root and a cgroup v1 pids hierarchy at /sys/fs/cgroup/pids");
    }
    ok
}

fn is_v2(p: &str) -> bool {
    Path::new(p).join("cgroup.controllers").exists()
}

/// The machine's cgroup2 directory for a v2 run, if one is writable.
fn v2_root() -> Option<PathBuf> {
    let cands = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];
    cands.iter().map(PathBuf::from).find(|p| is_v2(&p.display().to_string()) && p.join("cgroup.procs").exists())
}

/// execd's per-instance parent directory in the pids hierarchy (v1) or the given v2 root.
fn parent_dir(s: &TestServer, v2: Option<&Path>) -> PathBuf {
    match v2 {
        Some(root) => root.join(format!("execd-{}", s.pid())),
        None => PathBuf::from(format!("/sys/fs/cgroup/pids/execd-{}", s.pid())),
    }
}

/// Whether `leaf` (in the pids hierarchy) is a spare made ahead of time: marked by an empty
/// child cgroup while it waits.
fn is_spare(leaf: &Path) -> bool {
    leaf.join(execd::cgroup::SPARE_MARK).is_dir()
}

/// The command leaves under execd's parent `dir` in the pids hierarchy (spare leaves made ahead
/// of time not counted).
fn leaves(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir() && !is_spare(p)).collect())
        .unwrap_or_default()
}

async fn run(s: &TestServer, body: Value) -> Vec<Value> {
    let resp = s.client().post(s.url("/command")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    parse_events(&resp.text().await.unwrap())
}

/// Pids printed by the command, one per line as `PID <n>`.
fn pids_of(events: &[Value]) -> Vec<i32> {
    events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .filter_map(|e| e["text"].as_str()?.trim().strip_prefix("PID ")?.parse().ok())
        .collect()
}

/// Escape attempts: each prints the pids that must not survive.
const ESCAPES: [(&str, &str); 3] = [
    ("setsid", "setsid sleep 1000 & echo PID $!; "),
    ("set -m", "set -m; sleep 1000 & echo PID $!; "),
    ("double fork", "(nohup sleep 1000 >/dev/null 2>&1 & echo PID $! ) ; "),
];

/// Starts a background command (so its stream ends at once), waits for `n` printed pids.
async fn start_escapes(s: &TestServer, script: &str, n: usize) -> (String, Vec<i32>) {
    let ev = run(s, json!({"command": script, "background": true})).await;
    let id = ev[0]["text"].as_str().unwrap().to_string();
    let deadline = Instant::now() + TIMEOUT;
    let pids = loop {
        let url = s.url(&format!("/command/{id}/logs"));
        let body = s.client().get(url).send().await.unwrap().text().await.unwrap();
        let pids: Vec<i32> = body.lines().filter_map(|l| l.strip_prefix("PID ")?.trim().parse().ok()).collect();
        if pids.len() >= n {
            break pids;
        }
        assert!(Instant::now() < deadline, "pids never printed: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    (id, pids)
}

fn all_gone(pids: &[i32]) -> bool {
    wait_until(Duration::from_secs(1), || pids.iter().all(|p| !pid_alive(*p)))
}

#[tokio::test]
async fn x21_interrupt_kills_setsid_set_m_and_double_fork() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parent = parent_dir(&s, None);
    let script = format!("{} {} {} sleep 1000", ESCAPES[0].1, ESCAPES[1].1, ESCAPES[2].1);
    let (id, pids) = start_escapes(&s, &script, 3).await;
    assert_eq!(leaves(&parent).len(), 1, "one leaf for the running command");
    let t = Instant::now();
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        all_gone(&pids),
        "survivors after interrupt: {:?}",
        pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let st = wait_finished(&s, &id).await;
    assert_eq!(st["exit_reason"], "interrupted", "{st}");
    assert!(
        wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()),
        "leaf not removed: {:?}",
        leaves(&parent)
    );
}

#[tokio::test]
async fn x21_timeout_kills_everything_foreground() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parent = parent_dir(&s, None);
    let script = format!("{} {} {} sleep 1000", ESCAPES[0].1, ESCAPES[1].1, ESCAPES[2].1);
    let t = Instant::now();
    let ev = run(&s, json!({"command": script, "timeout": 1500})).await;
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    let pids = pids_of(&ev);
    assert_eq!(pids.len(), 3, "{ev:?}");
    assert!(all_gone(&pids), "survivors after timeout");
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["exit_reason"], "timeout", "{last}");
    assert_eq!(last["signal"], "SIGKILL");
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "leaf leaked");
}

#[tokio::test]
async fn x21_fork_bomb_under_ulimit_is_killed() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parent = parent_dir(&s, None);
    // Each process forks two more, bounded by `ulimit -u` on a uid of its own.
    let script = "ulimit -u 200; echo PID $$; b() { b & b & wait; }; b";
    let ev = run(&s, json!({"command": script, "background": true, "uid": 4321})).await;
    let id = ev[0]["text"].as_str().unwrap().to_string();
    let count = |l: &Path| std::fs::read_to_string(l.join("cgroup.procs")).map(|s| s.lines().count()).unwrap_or(0);
    // The leaf that holds the bomb: not merely the first unmarked one, since a spare leaf being
    // made is a plain directory for a moment before its mark (CI run 133 took such a one).
    let mut leaf = None;
    assert!(
        wait_until(TIMEOUT, || {
            leaf = leaves(&parent).into_iter().find(|l| count(l) >= 20);
            leaf.is_some()
        }),
        "the bomb never grew"
    );
    let leaf = leaf.unwrap();
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(wait_until(Duration::from_secs(1), || count(&leaf) == 0), "left in the leaf: {}", count(&leaf));
    let uid_procs = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("status"))
                    .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("4321")))
                    .unwrap_or(false)
                    && e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()).is_some_and(pid_alive)
            })
            .count()
    };
    assert!(wait_until(Duration::from_secs(1), || uid_procs() == 0), "bomb processes left: {}", uid_procs());
    wait_finished(&s, &id).await;
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "leaf leaked");
}

#[tokio::test]
async fn x21_foreground_leaves_background_children_running_until_shutdown() {
    if !v1_ready() {
        return;
    }
    let mut s = TestServer::start();
    let parent = parent_dir(&s, None);
    let ev = run(&s, json!({"command": "setsid sleep 1000 >/dev/null 2>&1 & echo PID $!"})).await;
    assert_eq!(ev.last().unwrap()["type"], "execution_complete", "{ev:?}");
    assert_eq!(ev.last().unwrap()["exit_reason"], "exited");
    let pids = pids_of(&ev);
    assert_eq!(pids.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pid_alive(pids[0]), "a `&` child of a foreground command keeps running (upstream)");
    assert_eq!(leaves(&parent).len(), 1, "its leaf stays while it runs");
    s.terminate();
    assert!(all_gone(&pids), "shutdown kills what commands left behind");
    assert!(!parent.exists(), "execd's cgroup parent removed at shutdown");
}

#[tokio::test]
async fn x21_interrupt_of_a_finished_foreground_command_ends_what_it_left_running() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parent = parent_dir(&s, None);
    let ev = run(&s, json!({"command": "setsid sleep 1000 >/dev/null 2>&1 & echo PID $!"})).await;
    assert_eq!(ev.last().unwrap()["type"], "execution_complete", "{ev:?}");
    let id = ev[0]["text"].as_str().unwrap().to_string();
    let pids = pids_of(&ev);
    assert!(pid_alive(pids[0]), "the `&` child outlives its foreground command");
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(all_gone(&pids), "an explicit interrupt of the finished command ends its leftovers");
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "leaf not removed");
    // Nothing left: interrupting it again is the error it always was; its status is unchanged.
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(common::command_status(&s, &id).await["exit_reason"], "exited");
}

#[tokio::test]
async fn x21_without_cgroups_interrupt_and_shutdown_end_what_a_finished_command_left_running() {
    // `--cgroup-root /proc`: no leaf, so the leftovers are found by the command's process group.
    let mut s = TestServer::options().arg("--cgroup-root").arg("/proc").start();
    let mut left = Vec::new();
    for _ in 0..2 {
        let ev = run(&s, json!({"command": "sleep 1000 >/dev/null 2>&1 & echo PID $!"})).await;
        assert_eq!(ev.last().unwrap()["type"], "execution_complete", "{ev:?}");
        let pids = pids_of(&ev);
        assert!(pid_alive(pids[0]), "the `&` child outlives its foreground command");
        left.push((ev[0]["text"].as_str().unwrap().to_string(), pids));
    }
    let (id, pids) = &left[0];
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(all_gone(pids), "interrupt ends the finished command's process group");
    assert!(pid_alive(left[1].1[0]), "another command's leftover is untouched");
    s.terminate();
    assert!(all_gone(&left[1].1), "shutdown ends what finished commands left running");
}

#[tokio::test]
async fn x20_many_commands_leak_no_leaf() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parent = parent_dir(&s, None);
    for i in 0..20 {
        let body = if i % 2 == 0 { json!({"command": "true"}) } else { json!({"command": "exit 3"}) };
        run(&s, body).await;
    }
    let ev = run(&s, json!({"command": "cat /proc/self/cgroup"})).await;
    let text: String = ev.iter().filter(|e| e["type"] == "stdout").map(|e| e["text"].as_str().unwrap()).collect();
    assert!(text.contains(&format!("pids:/execd-{}/c", s.pid())), "command not placed: {text}");
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "leaked: {:?}", leaves(&parent));
}

#[tokio::test]
async fn x20_placement_is_prepared_after_execd_listens_without_a_request() {
    // Off the path to the first answer: execd listens first and prepares its parent ~20 ms
    // later, with no request asking for it; a command then lands in a leaf under it.
    if !v1_ready() {
        return;
    }
    let s = TestServer::options().ping_only().start();
    let parent = parent_dir(&s, None);
    assert!(wait_until(TIMEOUT, || parent.is_dir()), "no parent {} without a request", parent.display());
    // Its log line comes once every hierarchy is done, after the first parent directory.
    assert!(wait_until(TIMEOUT, || s.log().contains("cgroup placement")), "no placement line: {}", s.log());
    let log = s.log();
    let (listening, placed) = (log.find("execd listening"), log.find("cgroup placement"));
    assert!(listening.is_some() && placed.is_some(), "log lines missing: {log}");
    assert!(listening < placed, "the placement was prepared before execd listened: {log}");
    assert!(log.contains(r#""mode":"v1""#), "{log}");
    let ev = run(&s, json!({"command": "cat /proc/self/cgroup"})).await;
    let text: String = ev.iter().filter(|e| e["type"] == "stdout").map(|e| e["text"].as_str().unwrap()).collect();
    assert!(text.contains(&format!("pids:/execd-{}/c", s.pid())), "command not placed: {text}");
}

/// The v1 lines (`N:controllers:/path`) of a `/proc/.../cgroup` text, cgroup2's and named
/// hierarchies' left out.
fn v1_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> =
        text.lines().filter(|l| !l.starts_with("0::") && !l.contains(":name=")).map(str::to_string).collect();
    v.sort();
    v
}

#[tokio::test]
async fn x20_spawning_threads_go_back_home_and_spare_leaves_stay_bounded() {
    // Without limits a command's v1 leaf is entered by execd's spawning thread around the spawn
    // (the child then needs no step between fork and exec), out of leaves made ahead of time.
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let pid = s.pid();
    let parent = parent_dir(&s, None);
    let home = v1_lines(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap());
    let leaf_of = |ev: &[Value]| -> String {
        let text: String = ev.iter().filter(|e| e["type"] == "stdout").map(|e| e["text"].as_str().unwrap()).collect();
        let line = text.lines().find(|l| l.contains(":pids:")).unwrap_or_else(|| panic!("no pids line: {text}"));
        let leaf = line.rsplit('/').next().unwrap().to_string();
        assert!(line.contains(&format!("/execd-{pid}/c")), "not in a command leaf of its own: {text}");
        for l in text.lines().filter(|l| l.contains(":memory:") || l.contains(":freezer:")) {
            assert!(l.ends_with(&format!("/{leaf}")), "hierarchies disagree: {text}");
        }
        leaf
    };
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        assert!(seen.insert(leaf_of(&run(&s, json!({"command": "cat /proc/self/cgroup"})).await)), "a leaf used twice");
    }
    let together = futures_util::future::join_all(
        (0..8).map(|_| run(&s, json!({"command": "cat /proc/self/cgroup; sleep 0.2"}))).collect::<Vec<_>>(),
    )
    .await;
    for ev in &together {
        assert!(seen.insert(leaf_of(ev)), "two commands shared a leaf");
    }
    // Every thread of execd is back in execd's own cgroups.
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("cgroup")) else { continue };
        assert_eq!(v1_lines(&text), home, "thread {:?} of execd stayed in a command's leaf", t.file_name());
    }
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "leaked: {:?}", leaves(&parent));
    let spares = || std::fs::read_dir(&parent).unwrap().flatten().filter(|e| is_spare(&e.path())).count();
    assert!(wait_until(Duration::from_secs(3), || spares() == 2), "spare leaves: {} (want 2)", spares());
}

#[tokio::test]
async fn x20_spares_and_empty_leaves_of_a_dead_execd_are_swept_after_start() {
    // A killed execd leaves its parent with marked spares and empty leaves in every hierarchy:
    // the next execd removes them all (a marked spare holds a child cgroup, so it is unmarked
    // first, or neither it nor the parent could be removed).
    if !v1_ready() {
        return;
    }
    // A pid that is free and will not be handed out again soon (pids are given in rising order).
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").unwrap().trim().parse().unwrap();
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let dead = (1000..max)
        .map(|k| (last + max - k) % max)
        .find(|p| *p > 300 && !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let parents = [format!("/sys/fs/cgroup/pids/execd-{dead}"), format!("/sys/fs/cgroup/freezer/execd-{dead}")];
    let made = [
        format!("{}/c4", parents[0]),
        format!("{}/c4/{}", parents[0], execd::cgroup::SPARE_MARK),
        format!("{}/c5", parents[0]),
        format!("{}/c4", parents[1]),
        format!("{}/c5", parents[1]),
    ];
    for p in &parents {
        let _ = std::fs::create_dir(p);
    }
    for d in &made {
        std::fs::create_dir(d).unwrap();
    }
    let s = TestServer::start();
    // Swept by the janitor thread right after the start, off the start path.
    let left = || parents.iter().filter(|p| Path::new(p).exists()).cloned().collect::<Vec<_>>();
    let swept = wait_until(Duration::from_secs(3), || left().is_empty());
    let left = left();
    for d in made.iter().rev().chain(parents.iter()) {
        let _ = std::fs::remove_dir(d);
    }
    assert!(swept, "left by the sweep: {left:?}");
    assert_eq!(run(&s, json!({"command": "true"})).await.last().unwrap()["type"], "execution_complete");
}

#[tokio::test]
async fn x20_x50_leaf_names_an_earlier_execd_left_are_skipped() {
    // An earlier execd with this pid (a restart in a fresh PID namespace) left directories named
    // like the leaves this one makes (spares are made under their final names): it takes the
    // next names, for spares and commands, and still keeps two spares ready.
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join(format!("execd-{}", s.pid())))
        .filter(|p| p.is_dir())
        .collect();
    let taken: Vec<PathBuf> = parents.iter().flat_map(|p| (0..12).map(move |n| p.join(format!("c{n}")))).collect();
    for d in &taken {
        std::fs::create_dir(d).unwrap();
    }
    for _ in 0..3 {
        let ev = run(&s, json!({"command": "cat /proc/self/cgroup"})).await;
        assert_eq!(ev.last().unwrap()["type"], "execution_complete", "{ev:?}");
        let text: String = ev.iter().filter(|e| e["type"] == "stdout").map(|e| e["text"].as_str().unwrap()).collect();
        let line = text.lines().find(|l| l.contains(":pids:")).unwrap_or_else(|| panic!("no pids line: {text}"));
        let n: u32 = line.rsplit("/c").next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        assert!(n >= 12, "a command got a name an earlier execd left: {line}");
    }
    let parent = parent_dir(&s, None);
    let own_spares = || {
        std::fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .filter(|e| is_spare(&e.path()))
            .filter(|e| !taken.contains(&e.path()))
            .count()
    };
    let ok = wait_until(Duration::from_secs(3), || own_spares() == 2);
    for d in &taken {
        let _ = std::fs::remove_dir(d);
    }
    assert!(ok, "spare leaves of its own: {} (want 2)", own_spares());
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "leaked: {:?}", leaves(&parent));
}

#[tokio::test]
async fn x22_structured_exit_reasons_and_usage() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let ev = run(&s, json!({"command": "exit 3"})).await;
    let last = ev.last().unwrap();
    assert_eq!(last["exit_reason"], "exited", "{last}");
    assert_eq!(last["error"]["evalue"], "3", "upstream fields unchanged");
    assert!(last["usage"]["cpu_user_ms"].is_u64());
    assert!(last.get("usage_scope").is_none(), "leaf usage");

    let ev = run(&s, json!({"command": "kill -SEGV $$"})).await;
    let last = ev.last().unwrap();
    assert_eq!(last["exit_reason"], "signaled", "{last}");
    assert_eq!(last["signal"], "SIGSEGV");

    // CPU-bound: 1 s of busy loop; the leaf's usage matches what the process itself counted
    // (os.times() just before it exits; a loaded machine inflates the interpreter's start, so the
    // process's own figure is the reference, not a fixed range), give or take its teardown and
    // the kernel's tick-sampled user/system split.
    let busy = "python3 -c 'import os, time\ne = time.process_time() + 1.0\nwhile time.process_time() < e: pass\nt = os.times()\nprint(round((t.user + t.system) * 1000))'";
    let ev = run(&s, json!({ "command": busy })).await;
    let own: u64 = ev
        .iter()
        .filter(|e| e["type"] == "stdout")
        .find_map(|e| e["text"].as_str()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no CPU figure printed: {ev:?}"));
    let u = &ev.last().unwrap()["usage"];
    let cpu = u["cpu_user_ms"].as_u64().unwrap() + u["cpu_system_ms"].as_u64().unwrap();
    assert!(own >= 1000, "the busy loop ran {own} ms");
    // Above it by at most a quarter plus 100 ms: the leaf also carries the shell's start and the
    // interpreter's teardown after its own count, which a loaded machine stretches (CI run 24, a
    // test build beside it: 1 313 ms against 1 090). Missing system time (here over half of the
    // total) or a unit slip would still fail.
    assert!(cpu + 30 >= own && cpu <= own + own / 4 + 100, "leaf cpu {cpu} ms, the process counted {own} ms: {u}");

    // Memory-bound: 200 MiB touched.
    let ev =
        run(&s, json!({"command": "python3 -c 'x=bytearray(200*1024*1024); x[::4096]=b\"x\"*len(x[::4096])'"})).await;
    let last = ev.last().unwrap();
    if last["exit_reason"] == "exited" {
        let peak = last["usage"]["peak_memory_bytes"].as_u64().unwrap();
        assert!(((200 << 20)..(400 << 20)).contains(&peak), "peak {peak}");
    }

    // Spawn failure: unknown executable through argv.
    let ev = run(&s, json!({"argv": ["/no/such/binary"]})).await;
    let last = ev.last().unwrap();
    assert_eq!(last["exit_reason"], "spawn_failed", "{last}");
    assert_eq!(last["errno_name"], "ENOENT");
    assert_eq!(last["stage"], "execve");

    // Spawn failure at chdir: a directory the uid cannot enter.
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let ev = run(&s, json!({"command": "true", "cwd": locked, "uid": 4322})).await;
    let last = ev.last().unwrap();
    assert_eq!(last["exit_reason"], "spawn_failed", "{last}");
    assert_eq!(last["stage"], "chdir");
    assert_eq!(last["errno_name"], "EACCES");

    // Background: status carries the keys too.
    let ev = run(&s, json!({"command": "exit 5", "background": true})).await;
    let id = ev[0]["text"].as_str().unwrap();
    let st = wait_finished(&s, id).await;
    assert_eq!(st["exit_code"], 5);
    assert_eq!(st["exit_reason"], "exited", "{st}");
}

#[tokio::test]
async fn x22_leader_usage_without_cgroup() {
    let s = TestServer::options().arg("--cgroup-root").arg("none").start();
    let ev = run(&s, json!({"command": "true"})).await;
    let last = ev.last().unwrap();
    assert_eq!(last["exit_reason"], "exited", "{last}");
    assert_eq!(last["usage_scope"], "leader");
}

#[tokio::test]
async fn x23_memory_limit_ends_as_oom_killed() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let ev = run(&s, json!({"command": "python3 -c 'x=bytearray(10**9)'", "limits": {"memory": "64M"}})).await;
    let last = ev.last().unwrap();
    assert_eq!(last["exit_reason"], "oom_killed", "{last}");
    // execd and other commands live on.
    let ev = run(&s, json!({"command": "echo alive"})).await;
    assert_eq!(ev.last().unwrap()["type"], "execution_complete");
}

#[tokio::test]
async fn x23_pids_limit_fails_forks_only() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    // Python reports the failed fork at once (bash would retry it for half a minute).
    let script = "python3 -c '\nimport os, signal\nkids = []\nfor i in range(60):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        signal.pause()\n    kids.append(pid)\nprint(\"started\", len(kids), flush=True)\nfor k in kids:\n    os.kill(k, 9)\n'";
    let ev = run(&s, json!({"command": script, "limits": {"pids": 20}})).await;
    let out: String = ev.iter().filter(|e| e["type"] == "stdout").map(|e| e["text"].as_str().unwrap()).collect();
    let n: usize = out.trim().strip_prefix("started ").and_then(|n| n.trim().parse().ok()).unwrap_or(999);
    assert!(n < 20, "{out:?}");
    let ev = run(&s, json!({"command": "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22; do true & done; wait; echo ok"})).await;
    assert_eq!(ev.last().unwrap()["type"], "execution_complete", "another command is unharmed: {ev:?}");
}

#[tokio::test]
async fn x23_cpu_limit_holds_a_busy_loop_to_half_a_core() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let t = Instant::now();
    let ev = run(&s, json!({"command": "timeout 2 sh -c 'while :; do :; done'; true", "limits": {"cpu": 0.5}})).await;
    let wall = t.elapsed().as_millis() as u64;
    let u = &ev.last().unwrap()["usage"];
    let cpu = u["cpu_user_ms"].as_u64().unwrap() + u["cpu_system_ms"].as_u64().unwrap();
    assert!(cpu * 100 <= wall * 65 && cpu * 100 >= wall * 30, "cpu {cpu} ms in {wall} ms wall");
}

#[tokio::test]
async fn x23_limits_unavailable_without_cgroups() {
    let s = TestServer::options().arg("--cgroup-root").arg("/proc").start();
    let resp = s
        .client()
        .post(s.url("/command"))
        .json(&json!({"command": "true", "limits": {"memory": "64M"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "LIMITS_UNAVAILABLE", "{body}");
    // Everything else works as before.
    let ev = run(&s, json!({"command": "echo hi"})).await;
    assert_eq!(ev.last().unwrap()["type"], "execution_complete");
    let resp = s
        .client()
        .post(s.url("/command"))
        .json(&json!({"command": "true", "limits": {"memory": "12"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn x21_v2_root_interrupt_kills_everything() {
    let Some(root) = v2_root().filter(|_| common::is_root()) else {
        prerequisite_missing("root and a cgroup v2 mount");
        return;
    };
    let s = TestServer::options().arg("--cgroup-root").arg(&root.display().to_string()).start();
    let parent = parent_dir(&s, Some(&root));
    let script = format!("{} {} {} sleep 1000", ESCAPES[0].1, ESCAPES[1].1, ESCAPES[2].1);
    let (id, pids) = start_escapes(&s, &script, 3).await;
    assert_eq!(leaves(&parent).len(), 1, "placed in a v2 leaf");
    let resp = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(all_gone(&pids), "survivors after interrupt on v2");
    let st = wait_finished(&s, &id).await;
    assert_eq!(st["exit_reason"], "interrupted");
    assert!(st["usage"]["cpu_user_ms"].is_u64(), "{st}");
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "v2 leaf leaked");
    // Timeout on v2 too.
    let ev = run(&s, json!({"command": "setsid sleep 1000 & echo PID $!; sleep 1000", "timeout": 500})).await;
    let pids = pids_of(&ev);
    assert_eq!(ev.last().unwrap()["exit_reason"], "timeout");
    assert!(all_gone(&pids));
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "v2 leaf leaked");
}

#[tokio::test]
async fn x21_session_run_is_placed_and_killed() {
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parent = parent_dir(&s, None);
    let resp = s.client().post(s.url("/session")).json(&json!({})).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    let sid = body["session_id"].as_str().unwrap().to_string();
    let resp = s
        .client()
        .post(s.url(&format!("/session/{sid}/run")))
        .json(&json!({"command": "setsid sleep 1000 >/dev/null 2>&1 & echo PID $!; sleep 1000", "timeout": 800}))
        .send()
        .await
        .unwrap();
    let mut r = EventReader::new(resp);
    let ev = r.rest().await;
    let pids = pids_of(&ev);
    assert_eq!(pids.len(), 1, "{ev:?}");
    assert_eq!(ev.last().unwrap()["exit_reason"], "timeout", "X22 keys on the session run's terminal event: {ev:?}");
    assert!(all_gone(&pids), "a setsid child of a timed-out session run survived");
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "session leaf leaked");
}

#[tokio::test]
async fn x20_x21_pty_shell_is_placed_and_delete_kills_setsid_children() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    if !v1_ready() {
        return;
    }
    let s = TestServer::start();
    let parent = parent_dir(&s, None);
    let cmd = "setsid sleep 1000 >/dev/null 2>&1 & echo PID $!; exec sleep 1000";
    let resp = s.client().post(s.url("/pty")).json(&json!({ "command": cmd })).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_string();
    // The shell starts when a client attaches; its output carries the escapee's pid.
    let url = format!("ws://127.0.0.1:{}/pty/{id}/ws", s.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
    let mut out = Vec::new();
    let pid = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0x01) => out.extend_from_slice(&b[1..]),
                Some(Ok(_)) => {}
                other => panic!("connection ended before the pid: {other:?}"),
            }
            let text = String::from_utf8_lossy(&out);
            if let Some(pid) = text.lines().find_map(|l| l.trim().strip_prefix("PID ")?.parse::<i32>().ok()) {
                break pid;
            }
        }
    })
    .await
    .expect("the pid never arrived");
    assert!(pid_alive(pid));
    assert_eq!(leaves(&parent).len(), 1, "the shell has no leaf of its own");
    let resp = s.client().delete(s.url(&format!("/pty/{id}"))).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert!(all_gone(&[pid]), "a setsid child of a deleted PTY session survived");
    assert!(wait_until(Duration::from_secs(3), || leaves(&parent).is_empty()), "pty leaf leaked");
}

/// Creates a bash session with `body` and returns its id.
async fn new_session(s: &TestServer, body: Value) -> String {
    let resp = s.client().post(s.url("/session")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_string()
}

/// Runs `body` in session `sid` and returns its events.
async fn session_run(s: &TestServer, sid: &str, body: Value) -> Vec<Value> {
    let resp = s.client().post(s.url(&format!("/session/{sid}/run"))).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    parse_events(&resp.text().await.unwrap())
}

/// A run that prints the `pids.max` of its own v1 leaf.
const PRINT_PIDS_MAX: &str =
    "cat \"/sys/fs/cgroup/pids$(awk -F: '$2 == \"pids\" { print $3 }' /proc/self/cgroup)/pids.max\"";

fn stdout_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["text"].as_str().unwrap())
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[tokio::test]
async fn x23_session_limits_cap_every_run_and_a_run_sets_its_own() {
    if !v1_ready() {
        return;
    }
    let mut first = TestServer::start();
    let sid = new_session(&first, json!({"limits": {"pids": 20}})).await;
    let ev = session_run(&first, &sid, json!({"command": PRINT_PIDS_MAX})).await;
    assert_eq!(stdout_of(&ev), "20", "the session's limit: {ev:?}");
    let ev = session_run(&first, &sid, json!({"command": PRINT_PIDS_MAX, "limits": {"pids": 30}})).await;
    assert_eq!(stdout_of(&ev), "30", "the run's own limit wins: {ev:?}");
    // A run's memory limit adds to the session's pids limit; over it the run is oom_killed and
    // the session lives on.
    let ev =
        session_run(&first, &sid, json!({"command": "python3 -c 'x=bytearray(10**9)'", "limits": {"memory": "64M"}}))
            .await;
    assert_eq!(ev.last().unwrap()["exit_reason"], "oom_killed", "{ev:?}");
    let ev = session_run(&first, &sid, json!({"command": "echo alive"})).await;
    assert_eq!(stdout_of(&ev), "alive", "{ev:?}");
    // A restart keeps the session capped.
    first.kill();
    let second = TestServer::options().arg("--state-dir").arg(first.state_dir().to_str().unwrap()).start();
    let ev = session_run(&second, &sid, json!({"command": PRINT_PIDS_MAX})).await;
    assert_eq!(stdout_of(&ev), "20", "after a restart: {ev:?}");
    // A session without limits gets none.
    let plain = new_session(&second, json!({})).await;
    let ev = session_run(&second, &plain, json!({"command": PRINT_PIDS_MAX})).await;
    assert_eq!(stdout_of(&ev), "max", "{ev:?}");
}

#[tokio::test]
async fn x23_session_limits_unavailable_without_cgroups() {
    let s = TestServer::options().arg("--cgroup-root").arg("/proc").start();
    let post = |path: String, body: Value| {
        let s = &s;
        async move {
            let resp = s.client().post(s.url(&path)).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = post("/session".into(), json!({"limits": {"memory": "64M"}})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("LIMITS_UNAVAILABLE")), "{body}");
    let (status, body) = post("/session".into(), json!({"limits": {"cpu": 0}})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_REQUEST_BODY")), "{body}");
    let (status, body) = post("/session".into(), json!({"limits": {"pids": "many"}})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("limits"), "the error names the field: {body}");
    let sid = new_session(&s, json!({})).await;
    let (status, body) = post(format!("/session/{sid}/run"), json!({"command": "true", "limits": {"pids": 5}})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("LIMITS_UNAVAILABLE")), "{body}");
    // The session is not held by the refused run.
    let ev = session_run(&s, &sid, json!({"command": "echo hi"})).await;
    assert_eq!(stdout_of(&ev), "hi", "{ev:?}");
}

/// `(user + system ms, max RSS bytes)` that GNU time printed (`-f 'GNUTIME %e %U %S %M'`) among
/// the command's output.
fn gnu_time(events: &[Value]) -> (u64, u64) {
    let line = events
        .iter()
        .filter(|e| e["type"] == "stdout" || e["type"] == "stderr")
        .find_map(|e| e["text"].as_str()?.trim().strip_prefix("GNUTIME ").map(str::to_string))
        .unwrap_or_else(|| panic!("GNU time printed nothing: {events:?}"));
    let f: Vec<f64> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (((f[1] + f[2]) * 1000.0).round() as u64, f[3] as u64 * 1024)
}

#[tokio::test]
async fn x22_usage_is_within_ten_percent_of_gnu_time() {
    if !v1_ready() {
        return;
    }
    if !Path::new("/usr/bin/time").exists() {
        prerequisite_missing("GNU time at /usr/bin/time (Debian package time)");
        return;
    }
    let s = TestServer::start();
    let time = "/usr/bin/time -f 'GNUTIME %e %U %S %M'";
    // CPU-bound: a second of busy loop.
    let busy =
        format!("{time} python3 -c 'import time\ne = time.process_time() + 1.0\nwhile time.process_time() < e: pass'");
    let ev = run(&s, json!({ "command": busy })).await;
    let (gnu_cpu, _) = gnu_time(&ev);
    let u = &ev.last().unwrap()["usage"];
    let cpu = u["cpu_user_ms"].as_u64().unwrap() + u["cpu_system_ms"].as_u64().unwrap();
    assert!(gnu_cpu >= 1000, "{gnu_cpu}");
    assert!(cpu.abs_diff(gnu_cpu) * 10 <= gnu_cpu, "leaf {cpu} ms of CPU, GNU time {gnu_cpu} ms: {u}");
    // Memory-bound: 200 MiB touched.
    let touch = format!("{time} python3 -c 'x = bytearray(200 << 20); x[::4096] = b\"x\" * len(x[::4096])'");
    let ev = run(&s, json!({ "command": touch })).await;
    let (_, gnu_rss) = gnu_time(&ev);
    let last = ev.last().unwrap();
    assert_eq!(last["exit_reason"], "exited", "{last}");
    let peak = last["usage"]["peak_memory_bytes"].as_u64().unwrap();
    assert!(gnu_rss >= 200 << 20, "{gnu_rss}");
    assert!(peak.abs_diff(gnu_rss) * 10 <= gnu_rss, "leaf peak {peak} bytes, GNU time's max RSS {gnu_rss}: {last}");
}
