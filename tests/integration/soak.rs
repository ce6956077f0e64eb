//! Soak (issue 8): a bounded mixed load against one execd, with its resources measured before and
//! after. Commands (foreground, background, interrupted, timed out, abandoned by their client),
//! upload + download round trips and bash sessions run from a fixed number of workers. Pass: fds,
//! threads and children back to the baseline (small constant), no zombie, RSS growth bounded, and
//! the state directory back under its retention bound (small `--command-retention-*` flags).
//!
//! `cargo test --test integration soak::` runs the SHORT mode (CI, well under 2 minutes). `scripts/soak.sh` runs
//! the FULL mode (10 000 commands, 1 000 uploads and downloads, 100 sessions) against the static
//! release binary: environment `SOAK_MODE=full`, `SOAK_BIN=<binary>`, `SOAK_REPORT=<file>`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Retention flags for the soak: small, so that eviction runs many times.
const RETENTION_COUNT: usize = 50;
const RETENTION_TTL: &str = "3s";

#[derive(Clone, Copy, Debug)]
struct Scale {
    commands: usize,
    transfers: usize,
    sessions: usize,
    workers: usize,
}

impl Scale {
    fn from_env() -> (&'static str, Scale) {
        match std::env::var("SOAK_MODE").as_deref() {
            Ok("full") => ("full", Scale { commands: 10_000, transfers: 1_000, sessions: 100, workers: 8 }),
            _ => ("short", Scale { commands: 2_000, transfers: 200, sessions: 20, workers: 6 }),
        }
    }
}

/// One resource snapshot of the execd process.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    fds: usize,
    threads: u64,
    rss_kib: u64,
    children: usize,
    zombies: usize,
    state_files: usize,
    state_bytes: u64,
    journal_files: usize,
}

fn dir_usage(p: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                let (f, b) = dir_usage(&e.path());
                files += f;
                bytes += b;
            } else {
                files += 1;
                bytes += md.len();
            }
        }
    }
    (files, bytes)
}

fn snapshot(pid: u32, state: &Path) -> Snapshot {
    let kids = common::children(pid);
    let (state_files, state_bytes) = dir_usage(state);
    Snapshot {
        fds: common::fd_count(pid),
        threads: common::threads(pid),
        rss_kib: common::rss_kib(pid),
        children: kids.len(),
        zombies: kids.iter().filter(|(_, s)| *s == 'Z').count(),
        state_files,
        state_bytes,
        journal_files: std::fs::read_dir(state.join("commands")).map(|d| d.count()).unwrap_or(0),
    }
}

/// execd under soak: `SOAK_BIN` or the test build, on a free loopback port.
struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    state: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
        let bin = std::env::var_os("SOAK_BIN").map(PathBuf::from).unwrap_or_else(common::execd_bin);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let log = dir.path().join("execd.log");
        let port = common::free_port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--log-level", "3"])
            .arg("--state-dir")
            .arg(&state)
            .args(["--command-retention-count", &RETENTION_COUNT.to_string(), "--command-retention-ttl", RETENTION_TTL])
            .env_remove("EXECD_ACCESS_TOKEN")
            .env_remove("EXECD_ENVS")
            .env_remove("JUPYTER_HOST")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let d = Daemon { child, port, _dir: dir, state, log };
        assert!(common::wait_until(common::TIMEOUT, || common::blocking_ping(port, None)), "execd not ready");
        d
    }

    fn url(&self, p: &str) -> String {
        format!("http://127.0.0.1:{}{p}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        if !common::wait_until(common::TIMEOUT, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    foreground: usize,
    background: usize,
    interrupted: usize,
    timed_out: usize,
    abandoned: usize,
    uploads: usize,
    downloads: usize,
    sessions: usize,
    session_runs: usize,
    max_journal_files: usize,
}

async fn events(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    common::parse_events(&resp.text().await.unwrap())
}

fn last_type(ev: &[Value]) -> String {
    ev.iter()
        .rev()
        .find(|e| e["type"] != "ping")
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// One command of kind `i % 20`: 12 foreground, 3 background, 2 interrupted, 2 timed out,
/// 1 abandoned by its client.
async fn one_command(c: &reqwest::Client, d: &Daemon, i: usize, t: &Mutex<Tally>) {
    let post = |body: Value| c.post(d.url("/command")).json(&body).send();
    match i % 20 {
        0..=11 => {
            let ev = events(post(json!({"command": format!("echo out-{i}; echo err-{i} >&2")})).await.unwrap()).await;
            assert_eq!(common::texts(&ev, "stdout"), [format!("out-{i}")], "{ev:?}");
            assert_eq!(last_type(&ev), "execution_complete");
            t.lock().unwrap().foreground += 1;
        }
        12..=14 => {
            let ev = events(post(json!({"command": format!("echo bg-{i}"), "background": true})).await.unwrap()).await;
            assert_eq!(last_type(&ev), "execution_complete", "{ev:?}");
            let id = ev[0]["text"].as_str().unwrap().to_string();
            // Poll status until finished (it may already be evicted by count under load: 404).
            let deadline = Instant::now() + common::TIMEOUT;
            loop {
                let resp = c.get(d.url(&format!("/command/status/{id}"))).send().await.unwrap();
                if resp.status() == 404 {
                    break;
                }
                let st: Value = resp.json().await.unwrap();
                if st["running"] == false {
                    assert_eq!(st["exit_code"], 0, "{st}");
                    break;
                }
                assert!(Instant::now() < deadline, "background {id} never finished");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            t.lock().unwrap().background += 1;
        }
        15 | 16 => {
            let resp = post(json!({"command": "sleep 30"})).await.unwrap();
            let mut r = common::EventReader::new(resp);
            let init = r.next().await.unwrap();
            let id = init["text"].as_str().unwrap().to_string();
            let del = c.delete(d.url(&format!("/command?id={id}"))).send().await.unwrap();
            assert_eq!(del.status(), 200);
            let rest = r.rest().await;
            assert_eq!(last_type(&rest), "error", "{rest:?}");
            t.lock().unwrap().interrupted += 1;
        }
        17 | 18 => {
            let ev = events(post(json!({"command": "sleep 30", "timeout": 100})).await.unwrap()).await;
            assert_eq!(last_type(&ev), "error", "{ev:?}");
            t.lock().unwrap().timed_out += 1;
        }
        _ => {
            let resp = post(json!({"command": "seq 1 2000"})).await.unwrap();
            let mut r = common::EventReader::new(resp);
            let _ = r.next().await;
            drop(r);
            t.lock().unwrap().abandoned += 1;
        }
    }
}

/// Upload a 64 KiB file (multipart, built by hand), download it, compare, delete it.
async fn one_transfer(c: &reqwest::Client, d: &Daemon, dir: &Path, i: usize, t: &Mutex<Tally>) {
    let path = dir.join(format!("f{i}.bin"));
    let content: Vec<u8> = (0..64 * 1024).map(|k| ((k * 31 + i * 7) % 251) as u8).collect();
    let boundary = format!("soak{i}boundary");
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"\r\n\
         Content-Type: application/json\r\n\r\n{}\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n",
        json!({"path": path.display().to_string()})
    )
    .into_bytes();
    body.extend_from_slice(&content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = c
        .post(d.url("/files/upload"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    t.lock().unwrap().uploads += 1;
    let resp = c.get(d.url(&format!("/files/download?path={}", path.display()))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == content, "download {i} differs");
    t.lock().unwrap().downloads += 1;
    let resp = c.delete(d.url(&format!("/files?path={}", path.display()))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Create a session, run three commands that depend on each other, delete it.
async fn one_session(c: &reqwest::Client, d: &Daemon, i: usize, t: &Mutex<Tally>) {
    let created: Value = c.post(d.url("/session")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let sid = created["session_id"].as_str().unwrap().to_string();
    let run = |cmd: String| c.post(d.url(&format!("/session/{sid}/run"))).json(&json!({ "command": cmd })).send();
    events(run(format!("export SOAK_V={i}")).await.unwrap()).await;
    events(run("cd /tmp".to_string()).await.unwrap()).await;
    let ev = events(run("echo $SOAK_V $PWD".to_string()).await.unwrap()).await;
    assert_eq!(common::texts(&ev, "stdout"), [format!("{i} /tmp")]);
    let resp = c.delete(d.url(&format!("/session/{sid}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut g = t.lock().unwrap();
    g.sessions += 1;
    g.session_runs += 3;
}

/// The whole load: `workers` tasks take jobs from one counter (commands, then transfers, then
/// sessions interleaved) until all are done.
async fn drive(d: Arc<Daemon>, scale: Scale, upload_dir: PathBuf) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let total = scale.commands + scale.transfers + scale.sessions;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..scale.workers {
        let (d, tally, next, dir) = (d.clone(), tally.clone(), next.clone(), upload_dir.clone());
        tasks.spawn(async move {
            let c = reqwest::Client::new();
            loop {
                let j = next.fetch_add(1, Ordering::SeqCst);
                if j >= total {
                    break;
                }
                // Interleave the three kinds evenly over the whole run.
                if j % (total / scale.transfers.max(1)).max(1) == 0 && tally.lock().unwrap().uploads < scale.transfers {
                    one_transfer(&c, &d, &dir, j, &tally).await;
                } else if j % (total / scale.sessions.max(1)).max(1) == 1
                    && tally.lock().unwrap().sessions < scale.sessions
                {
                    one_session(&c, &d, j, &tally).await;
                } else {
                    one_command(&c, &d, j, &tally).await;
                }
                if j % 50 == 0 {
                    let n = std::fs::read_dir(d.state.join("commands")).map(|r| r.count()).unwrap_or(0);
                    let mut g = tally.lock().unwrap();
                    g.max_journal_files = g.max_journal_files.max(n);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a soak worker failed");
    }
    // Top up transfers and sessions the interleaving did not reach.
    let c = reqwest::Client::new();
    let mut j = total;
    loop {
        let (u, s) = {
            let g = tally.lock().unwrap();
            (g.uploads, g.sessions)
        };
        if u >= scale.transfers && s >= scale.sessions {
            break;
        }
        if u < scale.transfers {
            one_transfer(&c, &d, &upload_dir, j, &tally).await;
        }
        if s < scale.sessions {
            one_session(&c, &d, j, &tally).await;
        }
        j += 1;
    }
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

fn fmt_row(name: &str, before: u64, end_of_load: u64, after: u64) -> String {
    format!("| {name} | {before} | {end_of_load} | {after} | {:+} |\n", after as i64 - before as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_short_mixed_load_leaks_nothing() {
    let (mode, scale) = Scale::from_env();
    let d = Arc::new(Daemon::start());
    let pid = d.child.id();
    let upload_dir = tempfile::tempdir().unwrap();

    // Warm-up: one of each kind, so lazily created pools and buffers are in the baseline.
    let warm = Scale { commands: 40, transfers: 2, sessions: 2, workers: 4 };
    drive(d.clone(), warm, upload_dir.path().to_path_buf()).await;
    assert!(common::wait_until(common::TIMEOUT, || common::children(pid).is_empty()), "warm-up left children");
    // Baseline once retention has emptied the journals (TTL + a sweep period) and the blocking
    // pool's idle threads are gone.
    let drained = common::wait_until(Duration::from_secs(30), || snapshot(pid, &d.state).journal_files == 0);
    assert!(drained, "warm-up journals were never evicted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = snapshot(pid, &d.state);

    let started = Instant::now();
    let tally = drive(d.clone(), scale, upload_dir.path().to_path_buf()).await;
    let load_time = started.elapsed();
    let at_end = snapshot(pid, &d.state);

    // Settle: every process reaped, fds closed, blocking-pool threads idle out (tokio: 10 s).
    let settle = |cond: &dyn Fn(&Snapshot) -> bool| {
        common::wait_until(Duration::from_secs(30), || cond(&snapshot(pid, &d.state)))
    };
    let no_children = settle(&|s| s.children == 0);
    let fds_back = settle(&|s| s.fds <= before.fds + 4);
    // Idle blocking-pool threads exit after 10 s: give them the chance, then bound the rest.
    let _ = settle(&|s| s.threads <= before.threads);
    let threads_back = settle(&|s| s.threads <= before.threads + 4);
    // Retention: the TTL sweeper empties the journal directory.
    let journals_gone = settle(&|s| s.journal_files == 0);
    let after = snapshot(pid, &d.state);

    let mut report = format!(
        "soak mode {mode}: {} commands ({} foreground, {} background, {} interrupted, {} timed out, {} abandoned), \
         {} uploads + {} downloads, {} sessions ({} runs), {} workers, load time {:.1} s\n\n\
         | resource | before | end of load | after settling | delta |\n|---|---|---|---|---|\n",
        tally.foreground + tally.background + tally.interrupted + tally.timed_out + tally.abandoned,
        tally.foreground,
        tally.background,
        tally.interrupted,
        tally.timed_out,
        tally.abandoned,
        tally.uploads,
        tally.downloads,
        tally.sessions,
        tally.session_runs,
        scale.workers,
        load_time.as_secs_f64(),
    );
    report += &fmt_row("open fds", before.fds as u64, at_end.fds as u64, after.fds as u64);
    report += &fmt_row("threads", before.threads, at_end.threads, after.threads);
    report += &fmt_row("RSS KiB", before.rss_kib, at_end.rss_kib, after.rss_kib);
    report += &fmt_row("child processes", before.children as u64, at_end.children as u64, after.children as u64);
    report += &fmt_row("zombies", before.zombies as u64, at_end.zombies as u64, after.zombies as u64);
    report +=
        &fmt_row("state dir files", before.state_files as u64, at_end.state_files as u64, after.state_files as u64);
    report += &fmt_row("state dir bytes", before.state_bytes, at_end.state_bytes, after.state_bytes);
    report += &format!("\nexecd peak RSS (VmHWM) over the whole run: {} KiB\n", common::hwm_kib(pid));
    report += &format!(
        "\njournal files: at most {} sampled during the load, {} right after it (bound 3 x {RETENTION_COUNT} \
         finished + 4 x running), {} after the {RETENTION_TTL} TTL; upload dir entries left: {}\n",
        tally.max_journal_files,
        at_end.journal_files,
        after.journal_files,
        std::fs::read_dir(upload_dir.path()).unwrap().count()
    );
    println!("{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(path, &report).unwrap();
    }

    assert!(no_children, "children left: {:?}", common::children(pid));
    assert_eq!(after.zombies, 0);
    assert!(fds_back, "fds {} -> {}", before.fds, after.fds);
    assert!(threads_back, "threads {} -> {}", before.threads, after.threads);
    assert!(after.rss_kib <= before.rss_kib + 64 * 1024, "RSS {} -> {} KiB", before.rss_kib, after.rss_kib);
    // Count bound: finished journals <= retention count (2 files and a record each, X50) plus the
    // running ones, which can also hold a record's temporary file while it is replaced (the
    // running record by the finished one: written aside, then renamed over).
    let bound = 3 * RETENTION_COUNT + 4 * scale.workers;
    assert!(
        at_end.journal_files <= bound,
        "{} journal files right after the load (bound {bound})",
        at_end.journal_files
    );
    assert!(tally.max_journal_files <= bound, "{} journal files during the load", tally.max_journal_files);
    assert!(journals_gone, "journals not evicted after the TTL: {}", after.journal_files);
    assert!(
        after.state_files <= before.state_files + 2,
        "state dir {} -> {} files",
        before.state_files,
        after.state_files
    );
    assert_eq!(std::fs::read_dir(upload_dir.path()).unwrap().count(), 0, "uploads left files");
    assert!(
        common::blocking_ping(d.port, None),
        "execd stopped serving; log:\n{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
}
