//! Load and resource tests of the command subsystem against the real binary: 1 GiB through a
//! foreground stream with flat memory, a stalled reader does not slow another one, and 1 000
//! commands leave no fds, threads or zombies behind.

use crate::common;

use std::time::{Duration, Instant};

use common::{EventReader, TestServer, TIMEOUT};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const GIB: u64 = 1 << 30;
const LINE_LEN: usize = 4096;

/// A 4 095-character line (plus `\n`) with every printable ASCII character and some JSON escapes.
fn pattern_line() -> String {
    let base: String = (0..LINE_LEN - 1).map(|i| (b' ' + (i % 94) as u8) as char).collect();
    // `yes` prints its argument verbatim; keep quotes out so the shell argument stays simple.
    base.replace('\'', "q")
}

#[tokio::test]
async fn one_gib_foreground_stream_is_byte_exact_and_rss_stays_flat() {
    let s = TestServer::start();
    let line = pattern_line();
    let lines = GIB / LINE_LEN as u64;
    let cmd = format!("yes '{line}' | head -c {GIB}");
    let mut want = Sha256::new();
    for _ in 0..lines {
        want.update(line.as_bytes());
        want.update(b"\n");
    }
    let want = want.finalize();

    let pid = s.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(common::rss_kib(pid));
                std::thread::sleep(Duration::from_millis(25));
            }
            max
        })
    };
    let t = Instant::now();
    let resp = s.client().post(s.url("/command")).json(&json!({ "command": cmd })).send().await.unwrap();
    let mut r = EventReader::new(resp);
    let mut got = Sha256::new();
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut last = Value::Null;
    while let Some(e) = r.next().await {
        match e["type"].as_str().unwrap() {
            "stdout" => {
                // Events keep their line endings (issue #24): joined, they are the output.
                let text = e["text"].as_str().unwrap();
                got.update(text.as_bytes());
                n += 1;
                bytes += text.len() as u64;
            }
            "ping" | "init" => {}
            _ => last = e,
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let max_rss = sampler.join().unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!("1 GiB in {secs:.1}s ({:.0} MiB/s), execd max RSS {} KiB", 1024.0 / secs, max_rss);
    assert_eq!(last["type"], "execution_complete", "{last}");
    assert_eq!((n, bytes), (lines, GIB));
    assert_eq!(got.finalize(), want, "content differs");
    assert!(max_rss > 0 && max_rss < 64 * 1024, "execd RSS reached {max_rss} KiB");
}

#[tokio::test]
async fn a_stalled_reader_does_not_slow_another_reader_or_the_command() {
    let s = TestServer::start();
    // 64 MiB of output: far more than any socket or pipe buffer.
    let cmd = "head -c 67108864 /dev/zero | tr '\\0' 'x' | fold -w 1000";
    let stalled = s.client().post(s.url("/command")).json(&json!({ "command": cmd })).send().await.unwrap();
    let mut stalled = EventReader::new(stalled);
    let id = stalled.next().await.unwrap()["text"].as_str().unwrap().to_string();
    // `stalled` is not read from here on. A second reader follows the same command to its end.
    let resp = s.client().get(s.url(&format!("/command/{id}/events"))).send().await.unwrap();
    let mut resp = resp;
    let mut bytes = 0u64;
    let mut tail = Vec::new();
    let done = tokio::time::timeout(TIMEOUT, async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            bytes += chunk.len() as u64;
            tail.extend_from_slice(&chunk);
            if tail.len() > 4096 {
                tail.drain(..tail.len() - 4096);
            }
        }
    })
    .await;
    assert!(done.is_ok(), "second reader was blocked");
    assert!(String::from_utf8_lossy(&tail).contains("event: execution_complete"));
    assert!(bytes > 64 << 20);
    let st: Value = s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["exit_code"], 0, "the command finished while a reader stalled: {st}");
    // The stalled reader still gets everything, in order, when it resumes.
    let mut lines = 0;
    let mut last = Value::Null;
    while let Some(e) = stalled.next().await {
        if e["type"] == "stdout" {
            lines += 1;
        } else if e["type"] != "ping" {
            last = e;
        }
    }
    assert_eq!(lines, 67108864 / 1000 + 1);
    assert_eq!(last["type"], "execution_complete");
}

async fn run_one(client: &reqwest::Client, base: &str, i: usize) {
    let body = match i % 4 {
        0 => json!({"command": "echo bg", "background": true}),
        1 => json!({"command": "echo out; echo err >&2; exit 3"}),
        _ => json!({"command": "true"}),
    };
    let text = client.post(format!("{base}/command")).json(&body).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("\"type\":\"execution_complete\"") || text.contains("\"type\":\"error\""));
}

#[tokio::test]
async fn a_thousand_commands_leave_no_fds_threads_or_zombies() {
    let s = TestServer::start();
    let pid = s.pid();
    let base = s.base();
    // No client connection is open yet (the readiness probe closes its socket).
    let fds = common::fd_count(pid);
    eprintln!("baseline fds: {:?}", fd_targets(pid));
    {
        let warm = s.client();
        for i in 0..40 {
            run_one(&warm, &base, i).await;
        }
    }
    assert!(common::wait_until_async(TIMEOUT, || async { common::children(pid).is_empty() }).await);
    let threads = common::threads(pid);
    {
        let client = s.client();
        let mut set = tokio::task::JoinSet::new();
        for w in 0..4 {
            let (client, base) = (client.clone(), base.clone());
            set.spawn(async move {
                for i in 0..250 {
                    run_one(&client, &base, w * 250 + i).await;
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
    // Async waits: the dropped client's connections close on this runtime.
    assert!(
        common::wait_until_async(TIMEOUT, || async { common::children(pid).is_empty() }).await,
        "children left: {:?}",
        common::children(pid)
    );
    assert!(
        common::wait_until_async(TIMEOUT, || async { common::fd_count(pid) <= fds }).await,
        "fds {} > {fds}: {:?}",
        common::fd_count(pid),
        fd_targets(pid)
    );
    assert!(
        common::wait_until_async(TIMEOUT, || async { common::threads(pid) <= threads }).await,
        "threads {} > {threads}",
        common::threads(pid)
    );
}

fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}
