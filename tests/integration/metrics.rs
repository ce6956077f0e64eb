//! Metrics: `GET /metrics` and `GET /metrics/watch` against the real binary (C140, C141, D40).

use crate::common;

use std::time::{Duration, Instant};

use common::{EventReader, TestServer, TIMEOUT};
use serde_json::Value;

/// Asserts C140's ranges on one record.
fn assert_valid_record(v: &Value) {
    let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {v}"));
    assert!(num("cpu_count") > 0.0, "{v}");
    let pct = num("cpu_used_pct");
    assert!((0.0..=100.0).contains(&pct), "{v}");
    let total = num("mem_total_mib");
    assert!(total > 0.0, "{v}");
    let used = num("mem_used_mib");
    assert!((0.0..=total).contains(&used), "{v}");
    let ts = v["timestamp"].as_i64().unwrap_or_else(|| panic!("timestamp is not an integer: {v}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now - ts).abs() < 60_000, "timestamp {ts} vs now {now}");
    assert_eq!(v.as_object().unwrap().len(), 5, "exactly the five keys: {v}");
}

async fn get_metrics(server: &TestServer, client: &reqwest::Client) -> Value {
    let resp = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json; charset=utf-8");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn c140_metrics_has_numeric_figures_in_range() {
    let server = TestServer::start();
    let client = server.client();
    let first = get_metrics(&server, &client).await;
    assert_valid_record(&first);
    // Later calls (served from the running sampler) are valid too.
    for _ in 0..3 {
        assert_valid_record(&get_metrics(&server, &client).await);
    }
}

#[tokio::test]
async fn c141_watch_streams_records_and_ends_when_client_closes() {
    let server = TestServer::start();
    assert_eq!(server.client().get(server.url("/ping")).send().await.unwrap().status(), 200);
    let fds_before = common::fd_count(server.pid());
    let resp = server.client().get(server.url("/metrics/watch")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = EventReader::new(resp);
    // Each record ends with an empty line (EventReader splits on "\n\n" and rejects anything else).
    let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("a record within 5 s");
    assert_valid_record(&first.expect("stream open"));
    let second = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("a second record");
    assert_valid_record(&second.expect("stream open"));
    drop(events);
    // The server ends the stream: the connection's descriptor is released.
    let pid = server.pid();
    assert!(common::wait_until(TIMEOUT, || common::fd_count(pid) <= fds_before), "watch connection still open");
    // The server keeps serving after the client went away.
    assert_valid_record(&get_metrics(&server, &server.client()).await);
}

#[tokio::test]
async fn metrics_answers_at_once_on_first_and_later_calls() {
    let server = TestServer::start();
    let client = server.client();
    // Warm the connection with /ping so the measurement is the handler, not the TCP handshake.
    assert_eq!(client.get(server.url("/ping")).send().await.unwrap().status(), 200);
    let t = Instant::now();
    assert_valid_record(&get_metrics(&server, &client).await);
    let first = t.elapsed();
    let mut later = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        get_metrics(&server, &client).await;
        later.push(t.elapsed());
    }
    later.sort();
    // Upstream blocks about 1 s per call; we answer from the sampler.
    assert!(first < Duration::from_millis(100), "first call took {first:?}");
    assert!(later[later.len() / 2] < Duration::from_millis(100), "later calls took {later:?}");
}

#[tokio::test]
async fn watch_ten_watchers_each_get_records_and_one_leaving_disturbs_none() {
    let server = TestServer::start();
    let client = server.client();
    let mut readers = Vec::new();
    for _ in 0..10 {
        let resp = client.get(server.url("/metrics/watch")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        readers.push(EventReader::new(resp));
    }
    for r in readers.iter_mut() {
        let e = tokio::time::timeout(TIMEOUT, r.next()).await.expect("record").expect("open");
        assert_valid_record(&e);
    }
    drop(readers.remove(0));
    // Every remaining watcher keeps receiving fresh records.
    for r in readers.iter_mut() {
        for _ in 0..2 {
            let e = tokio::time::timeout(TIMEOUT, r.next()).await.expect("record").expect("open");
            assert_valid_record(&e);
        }
    }
}

#[tokio::test]
async fn watch_records_arrive_about_once_a_second() {
    let server = TestServer::start();
    let resp = server.client().get(server.url("/metrics/watch")).send().await.unwrap();
    let mut events = EventReader::new(resp);
    let mut stamps = Vec::new();
    for _ in 0..4 {
        let e = tokio::time::timeout(TIMEOUT, events.next()).await.unwrap().unwrap();
        stamps.push(e["timestamp"].as_i64().unwrap());
    }
    let span = stamps[3] - stamps[1];
    // Two intervals after the first (possibly shorter) window: about 2 s, generously bounded.
    assert!((1000..=4000).contains(&span), "stamps {stamps:?}");
}

#[tokio::test]
async fn watch_ends_on_daemon_shutdown() {
    let mut server = TestServer::start();
    let resp = server.client().get(server.url("/metrics/watch")).send().await.unwrap();
    let mut events = EventReader::new(resp);
    assert!(tokio::time::timeout(TIMEOUT, events.next()).await.unwrap().is_some());
    let pid = server.pid();
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    // The stream ends (cleanly) and the daemon exits.
    let rest = tokio::time::timeout(TIMEOUT, events.rest()).await.expect("stream ended");
    assert!(rest.len() <= 3, "{rest:?}");
    let status = server.terminate().expect("execd exited");
    assert!(status.success(), "{status:?}");
}
