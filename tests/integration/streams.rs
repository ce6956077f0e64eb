//! The framing every streaming extension shares (EXTENSIONS X3): standard SSE (`id:`, `event:`,
//! one-line JSON `data:`) and a `: ping` comment at least every 15 s on a quiet stream, on both
//! SSE routes of our own: `/command/{id}/events` and `/files/watches/{id}/events`.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestServer, TIMEOUT};
use serde_json::{json, Value};

/// X3's longest quiet gap, plus slack for a loaded machine.
const PING_DEADLINE: Duration = Duration::from_secs(15 + 5);

/// Reads `resp` until one complete `: ping` comment block has arrived after the first `events`
/// event blocks, or `deadline`. Returns the event blocks (each checked to be an `id:`, one
/// `event:` and one `data:` line of JSON) and how long the stream was quiet before the ping.
async fn events_then_ping(mut resp: reqwest::Response, events: usize, deadline: Duration) -> (Vec<Value>, Duration) {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let end = Instant::now() + deadline;
    let mut buf = String::new();
    let mut blocks = Vec::new();
    let mut quiet_since = None;
    loop {
        while let Some(at) = buf.find("\n\n") {
            let block: String = buf.drain(..at + 2).collect();
            let block = block.trim_end_matches('\n');
            if block.starts_with(':') {
                assert_eq!(block, ": ping", "the keep-alive comment");
                if let Some(t) = quiet_since.filter(|_| blocks.len() >= events) {
                    return (blocks, Instant::now().duration_since(t));
                }
                continue;
            }
            // `id:` (absent only where there is no resume point: the `init` of a replay), then
            // `event:` and one `data:` line of JSON.
            let mut lines: Vec<&str> = block.lines().collect();
            let id: Option<u64> = match lines[0].strip_prefix("id: ") {
                Some(id) => {
                    lines.remove(0);
                    Some(id.parse().expect(block))
                }
                None => None,
            };
            assert_eq!(lines.len(), 2, "one event and one data line: {block:?}");
            let event = lines[0].strip_prefix("event: ").expect(block);
            assert!(id.is_some() || event == "init", "only init may come without an id: {block:?}");
            let data: Value = serde_json::from_str(lines[1].strip_prefix("data: ").expect(block)).expect(block);
            blocks.push(json!({"id": id, "event": event, "data": data}));
            if blocks.len() >= events {
                quiet_since = Some(Instant::now());
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no `: ping` within {deadline:?}; events so far: {blocks:?}"))
            .unwrap()
            .expect("the stream ended");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn x3_command_events_are_standard_sse_with_a_ping_on_a_quiet_stream() {
    let s = TestServer::start();
    let resp = s
        .client()
        .post(s.url("/command"))
        .json(&json!({"command": "echo one; sleep 60", "background": true}))
        .send()
        .await
        .unwrap();
    let id = common::parse_events(&resp.text().await.unwrap())[0]["text"].as_str().unwrap().to_string();
    let resp = s.client().get(s.url(&format!("/command/{id}/events"))).send().await.unwrap();
    // init and stdout; then the command is quiet and only the keep-alive may come.
    let (blocks, quiet) = events_then_ping(resp, 2, PING_DEADLINE).await;
    let kinds: Vec<&str> = blocks.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[..2], ["init", "stdout"], "{blocks:?}");
    assert_eq!(blocks[1]["data"]["text"], "one\n");
    for b in &blocks {
        assert_eq!(b["event"], b["data"]["type"], "event: names the data's type");
    }
    let ids: Vec<u64> =
        blocks[1..].iter().map(|b| b["id"].as_u64().expect("every event after init has an id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase (resume points): {ids:?}");
    assert!(quiet <= PING_DEADLINE, "{quiet:?}");
    let r = s.client().delete(s.url(&format!("/command?id={id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    common::wait_finished(&s, &id).await;
}

#[tokio::test]
async fn x3_watch_events_are_standard_sse_with_a_ping_on_a_quiet_stream() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let resp = s.client().post(s.url("/files/watches")).json(&json!({"path": dir.path()})).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let resp = s.client().get(s.url(&format!("/files/watches/{id}/events"))).send().await.unwrap();
    let file = dir.path().join("a.txt");
    std::fs::write(&file, "x").unwrap();
    let (blocks, _) = events_then_ping(resp, 1, TIMEOUT + PING_DEADLINE).await;
    assert_eq!(blocks[0]["event"], "create", "{blocks:?}");
    assert_eq!(blocks[0]["data"]["path"], file.to_str().unwrap());
    let r = s.client().delete(s.url(&format!("/files/watches/{id}"))).send().await.unwrap();
    assert!(r.status().is_success());
}
