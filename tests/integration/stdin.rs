//! Talking to running commands (EXTENSIONS X10–X16, issue #16) against the real binary over real
//! sockets: stdin as a string or an open pipe, `POST /command/{id}/stdin` (order, EOF, timeouts,
//! no interleaving, flat memory), input in the record, signals to the whole command, and the
//! bounded output view.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    parse_events, pid_alive, prerequisite_missing, texts, wait_finished, without_pings, EventReader, TestServer,
    TIMEOUT,
};
use serde_json::{json, Value};

async fn post_json(s: &TestServer, path: &str, body: Value) -> reqwest::Response {
    s.client().post(s.url(path)).json(&body).send().await.unwrap()
}

/// Starts a foreground command and returns its id and the live event reader (after `init`).
async fn start(s: &TestServer, body: Value) -> (String, EventReader) {
    let resp = post_json(s, "/command", body).await;
    assert_eq!(resp.status(), 200);
    let mut r = EventReader::new(resp);
    let init = r.next_non_ping().await.expect("init");
    assert_eq!(init["type"], "init", "{init}");
    (init["text"].as_str().unwrap().to_string(), r)
}

/// Runs to the end and returns every event but pings.
async fn run(s: &TestServer, body: Value) -> Vec<Value> {
    let resp = post_json(s, "/command", body).await;
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(TIMEOUT, resp.text()).await.expect("stream ended").unwrap();
    without_pings(&parse_events(&text))
}

/// `POST /command/{id}/stdin` with `query`; returns status and JSON body.
async fn write_stdin(s: &TestServer, id: &str, query: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = s.client().post(s.url(&format!("/command/{id}/stdin{query}"))).body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The next stdout event's text (pings and other events skipped).
async fn next_stdout(r: &mut EventReader) -> String {
    let fut = async {
        loop {
            let e = r.next_non_ping().await.expect("stream ended before stdout");
            if e["type"] == "stdout" {
                return e["text"].as_str().unwrap().to_string();
            }
            assert_ne!(e["type"], "error", "{e}");
        }
    };
    tokio::time::timeout(TIMEOUT, fut).await.expect("stdout in time")
}

async fn logs(s: &TestServer, id: &str) -> Vec<u8> {
    let resp = s.client().get(s.url(&format!("/command/{id}/logs"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

/// Every event of `/command/{id}/events` (the command must be finished).
async fn resumable(s: &TestServer, id: &str) -> Vec<(String, String)> {
    let resp = s.client().get(s.url(&format!("/command/{id}/events"))).send().await.unwrap();
    let body = tokio::time::timeout(TIMEOUT, resp.text()).await.unwrap().unwrap();
    body.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            (v["type"].as_str().unwrap().to_string(), v["text"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test]
async fn x10_stdin_defaults_to_dev_null_and_true_is_a_pipe() {
    let s = TestServer::start();
    for body in
        [json!({"command": "readlink /proc/self/fd/0"}), json!({"command": "readlink /proc/self/fd/0", "stdin": false})]
    {
        assert_eq!(texts(&run(&s, body).await, "stdout"), ["/dev/null"]);
    }
    let ev = run(&s, json!({"command": "readlink /proc/self/fd/0", "stdin": true})).await;
    assert!(texts(&ev, "stdout")[0].starts_with("pipe:["), "{ev:?}");
    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["stdin"], true);
    // A wrong type is a 400 before anything runs.
    assert_eq!(post_json(&s, "/command", json!({"command": "true", "stdin": 5})).await.status(), 400);
}

#[tokio::test]
async fn x10_stdin_string_is_fed_then_eof_and_never_in_argv_or_logs() {
    let s = TestServer::start();
    let ev = run(&s, json!({"command": "cat; echo done", "stdin": "first\nsecond"})).await;
    assert_eq!(texts(&ev, "stdout"), ["first", "seconddone"]);
    // The secret must not appear in any process's argv or in execd's log while it runs.
    let secret = format!("TOPSECRET-{}", std::process::id());
    let resp = post_json(
        &s,
        "/command",
        json!({"command": "read -r x; sleep 1; echo got:$x", "stdin": format!("{secret}\n"), "background": true}),
    )
    .await;
    let id = parse_events(&resp.text().await.unwrap())[0]["text"].as_str().unwrap().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            assert!(!String::from_utf8_lossy(&cmdline).contains(&secret), "secret in {:?}", e.path());
        }
    }
    wait_finished(&s, &id).await;
    assert_eq!(String::from_utf8(logs(&s, &id).await).unwrap(), format!("got:{secret}\n"));
    assert!(!s.log().contains(&secret), "secret in execd's log");
}

#[tokio::test]
async fn x11_bash_read_python_input_and_eof_through_the_pipe() {
    let s = TestServer::start();
    let (id, mut r) = start(&s, json!({"command": "read -r a; echo A:$a; read -r b; echo B:$b", "stdin": true})).await;
    assert_eq!(write_stdin(&s, &id, "", "one\n").await, (200, json!({"written": 4, "eof": false})));
    assert_eq!(next_stdout(&mut r).await, "A:one\n");
    assert_eq!(write_stdin(&s, &id, "?eof=true", "two\n").await, (200, json!({"written": 4, "eof": true})));
    assert_eq!(next_stdout(&mut r).await, "B:two\n");
    let (code, body) = write_stdin(&s, &id, "", "late").await;
    assert_eq!((code, body["code"].as_str()), (409, Some("STDIN_CLOSED")));
    assert_eq!(write_stdin(&s, "nope", "", "x").await.0, 404);

    let (id, mut r) = start(&s, json!({"command": "python3 -c 'print(input()[::-1])'", "stdin": true})).await;
    assert_eq!(write_stdin(&s, &id, "", "abc\n").await.0, 200);
    assert_eq!(next_stdout(&mut r).await, "cba\n");

    // `eof=true` with an empty body just closes: `cat` ends.
    let (id, mut r) = start(&s, json!({"command": "cat; echo end", "stdin": true})).await;
    assert_eq!(write_stdin(&s, &id, "", "x").await.0, 200);
    assert_eq!(write_stdin(&s, &id, "?eof=true", "").await, (200, json!({"written": 0, "eof": true})));
    assert_eq!(next_stdout(&mut r).await, "xend\n");
    // A command without stdin, and a finished one, have none to write.
    let ev = run(&s, json!({"command": "true"})).await;
    let done = ev[0]["text"].as_str().unwrap();
    assert_eq!(write_stdin(&s, done, "", "x").await.1["code"], "STDIN_CLOSED");
    assert_eq!(write_stdin(&s, &id, "?eof=maybe", "").await.0, 400);
}

#[tokio::test]
async fn x11_reader_that_never_reads_times_out_with_written() {
    let s = TestServer::start();
    let (id, _r) = start(&s, json!({"command": "exec sleep 30", "stdin": true})).await;
    let body = vec![b'z'; 4 << 20];
    let t = Instant::now();
    let (code, v) = write_stdin(&s, &id, "?timeout_ms=300", body).await;
    assert_eq!((code, v["code"].as_str()), (408, Some("REQUEST_TIMEOUT")), "{v}");
    let written = v["written"].as_u64().unwrap();
    assert!(written > 0 && written < 4 << 20, "{written}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // The pipe is still open: an empty write returns at once.
    assert_eq!(write_stdin(&s, &id, "?timeout_ms=300", "").await.0, 200);
    assert_eq!(post_json(&s, &format!("/command/{id}/signal"), json!({"signal": "KILL"})).await.status(), 200);
    wait_finished(&s, &id).await;
}

#[tokio::test]
async fn x11_concurrent_bodies_never_interleave() {
    let s = TestServer::start();
    let (id, _r) = start(&s, json!({"command": "cat", "stdin": true})).await;
    const EACH: usize = 256 * 1024; // several pipe buffers: interleaving would show
    let letters = b"abcdefgh";
    let mut tasks = Vec::new();
    for &l in letters {
        let client = s.client();
        let url = s.url(&format!("/command/{id}/stdin"));
        tasks.push(tokio::spawn(async move {
            // Sent in small pieces with pauses, so that bodies arrive in parallel.
            let pieces = (0..EACH / 8192).map(move |_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![l; 8192])));
            let stream = futures_util::StreamExt::then(futures_util::stream::iter(pieces), |p| async move {
                tokio::task::yield_now().await;
                p
            });
            let resp = client.post(url).body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["written"], EACH as u64);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(write_stdin(&s, &id, "?eof=true", "").await.0, 200);
    wait_finished(&s, &id).await;
    let out = logs(&s, &id).await;
    assert_eq!(out.len(), EACH * letters.len());
    // Exactly one run of each letter, each EACH long.
    let mut runs = Vec::new();
    for c in out.chunk_by(|a, b| a == b) {
        runs.push((c[0], c.len()));
    }
    assert_eq!(runs.len(), letters.len(), "bodies interleaved: {} runs", runs.len());
    assert!(runs.iter().all(|&(_, n)| n == EACH));
}

#[tokio::test]
async fn x11_gib_body_streams_through_cat_in_flat_memory() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    let (id, _r) = start(&s, json!({"command": format!("cat > {}", file.display()), "stdin": true})).await;
    const MIB: usize = 1 << 20;
    const TOTAL: usize = 1024; // MiB
    let before = common::hwm_kib(s.pid());
    let piece = bytes::Bytes::from(vec![b'q'; MIB]);
    let stream = futures_util::stream::iter((0..TOTAL).map(move |_| Ok::<_, std::io::Error>(piece.clone())));
    let resp = s
        .client()
        .post(s.url(&format!("/command/{id}/stdin?eof=true&timeout_ms=120000")))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"written": TOTAL * MIB, "eof": true}));
    wait_finished(&s, &id).await;
    assert_eq!(std::fs::metadata(&file).unwrap().len(), (TOTAL * MIB) as u64);
    let grown = common::hwm_kib(s.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "execd's peak RSS grew by {grown} KiB for a 1 GiB body");
}

#[tokio::test]
async fn x12_input_is_on_events_only() {
    let s = TestServer::start();
    let (id, mut r) = start(&s, json!({"command": "cat", "stdin": true})).await;
    assert_eq!(write_stdin(&s, &id, "", "hello\n").await.0, 200);
    assert_eq!(next_stdout(&mut r).await, "hello\n");
    assert_eq!(write_stdin(&s, &id, "?eof=true", "bye\n").await.0, 200);
    // The upstream stream: output only.
    let rest = r.rest().await;
    assert!(rest.iter().all(|e| e["type"] != "stdin"), "{rest:?}");
    assert_eq!(texts(&rest, "stdout"), ["bye"]);
    wait_finished(&s, &id).await;
    // `/events`: input before the output that answers it.
    let ev: Vec<(String, String)> =
        resumable(&s, &id).await.into_iter().filter(|(t, _)| t == "stdin" || t == "stdout").collect();
    let want = [("stdin", "hello\n"), ("stdout", "hello\n"), ("stdin", "bye\n"), ("stdout", "bye\n")];
    assert_eq!(ev, want.map(|(a, b)| (a.to_string(), b.to_string())));
    // `/logs`: output only.
    assert_eq!(logs(&s, &id).await, b"hello\nbye\n");
}

#[tokio::test]
async fn x14_signal_by_name_short_name_or_number() {
    let s = TestServer::start();
    for (i, sig) in [json!("SIGINT"), json!("int"), json!(2)].into_iter().enumerate() {
        let (id, _r) = start(&s, json!({"command": "exec sleep 30"})).await;
        let resp = post_json(&s, &format!("/command/{id}/signal"), json!({ "signal": sig })).await;
        assert_eq!(resp.status(), 200, "case {i}");
        let st = wait_finished(&s, &id).await;
        assert_eq!((st["exit_reason"].as_str(), st["signal"].as_str()), (Some("signaled"), Some("SIGINT")), "{st}");
        assert_eq!(st["error"], "signal: interrupt");
        // Finished: 409.
        assert_eq!(post_json(&s, &format!("/command/{id}/signal"), json!({"signal": "INT"})).await.status(), 409);
    }
    let (id, _r) = start(&s, json!({"command": "exec sleep 30"})).await;
    for bad in [json!("SIGNOPE"), json!(0), json!(99), json!(null)] {
        assert_eq!(post_json(&s, &format!("/command/{id}/signal"), json!({ "signal": bad })).await.status(), 400);
    }
    assert_eq!(post_json(&s, "/command/nope/signal", json!({"signal": "INT"})).await.status(), 404);
    assert_eq!(post_json(&s, &format!("/command/{id}/signal"), json!({"signal": 9})).await.status(), 200);
    wait_finished(&s, &id).await;
}

fn cgroup_v1_ready() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    root && Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists()
}

#[tokio::test]
async fn x14_signal_reaches_a_setsid_child_through_the_cgroup() {
    if !cgroup_v1_ready() {
        prerequisite_missing("root and a cgroup v1 pids hierarchy at /sys/fs/cgroup/pids");
        return;
    }
    let s = TestServer::start();
    let (id, mut r) = start(&s, json!({"command": "setsid sleep 300 & echo PID $!; wait"})).await;
    let line = next_stdout(&mut r).await;
    let pid: i32 = line.trim().strip_prefix("PID ").unwrap().parse().unwrap();
    assert!(pid_alive(pid));
    let resp = post_json(&s, &format!("/command/{id}/signal"), json!({"signal": "SIGTERM"})).await;
    assert_eq!(resp.status(), 200);
    assert!(common::wait_until(TIMEOUT, || !pid_alive(pid)), "the setsid child survived the signal");
    wait_finished(&s, &id).await;
}

#[tokio::test]
async fn x16_bounded_output_view_cuts_at_characters() {
    use sha2::Digest;
    let s = TestServer::start();
    // 5000 × "é" (2 bytes each), then "END".
    let ev = run(&s, json!({"command": "printf 'é%.0s' $(seq 1 5000); printf END"})).await;
    let id = ev[0]["text"].as_str().unwrap();
    let view = |q: &str| {
        let url = s.url(&format!("/command/{id}/output{q}"));
        let c = s.client();
        async move {
            let resp = c.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let output = format!("{}END", "é".repeat(5000));
    let (code, v) = view("?head=5&tail=4").await;
    assert_eq!(code, 200);
    assert_eq!(v["head"], "éé");
    // The last 4 bytes start inside an "é": that half is dropped.
    assert_eq!(v["tail"], "END");
    assert_eq!(v["total_bytes"], 10003);
    assert_eq!(v["truncated"], true);
    let want: String = sha2::Sha256::digest(output.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["sha256"], want);
    // Covering everything: head and tail together are the output, no byte twice.
    let (_, v) = view("?head=7&tail=20000").await;
    assert_eq!(v["truncated"], false);
    assert_eq!(format!("{}{}", v["head"].as_str().unwrap(), v["tail"].as_str().unwrap()), output);
    assert_eq!(v["head"], "ééé");
    // Defaults, bounds, unknown id.
    let (_, v) = view("").await;
    assert_eq!(v["head"].as_str().unwrap().len(), 4096);
    assert_eq!(view("?head=99999999").await.0, 400);
    let resp = s.client().get(s.url("/command/nope/output")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// The next event that is not a ping or a stdout/stderr event of `skip` text.
async fn next_event(r: &mut EventReader) -> Value {
    tokio::time::timeout(TIMEOUT, r.next_non_ping()).await.expect("event in time").expect("stream ended")
}

#[tokio::test]
async fn x13_awaiting_input_fires_for_bash_read_python_input_and_cat() {
    let s = TestServer::start();
    for cmd in ["read -r x; echo got:$x", "python3 -c 'print(\"got:\" + input())'", "cat | sed s/^/got:/"] {
        let (id, mut r) = start(&s, json!({"command": cmd, "stdin": true, "awaiting_input_ms": 100})).await;
        let e = next_event(&mut r).await;
        assert_eq!(e["type"], "awaiting_input", "{cmd}: {e}");
        assert!(e["timestamp"].as_i64().unwrap() > 0);
        assert_eq!(write_stdin(&s, &id, "?eof=true", "a\n").await.0, 200);
        assert_eq!(next_stdout(&mut r).await, "got:a\n", "{cmd}");
    }
}

#[tokio::test]
async fn x13_awaiting_input_once_per_wait_and_for_python_repl() {
    let s = TestServer::start();
    let (id, mut r) =
        start(&s, json!({"command": "while read -r l; do echo got:$l; done", "stdin": true, "awaiting_input_ms": 100}))
            .await;
    for word in ["a", "b"] {
        assert_eq!(next_event(&mut r).await["type"], "awaiting_input");
        assert_eq!(write_stdin(&s, &id, "", format!("{word}\n")).await.0, 200);
        // Exactly one marker per wait: the answer comes next, not a second marker.
        let e = next_event(&mut r).await;
        assert_eq!((e["type"].as_str(), e["text"].as_str()), (Some("stdout"), Some(&*format!("got:{word}\n"))));
    }
    assert_eq!(write_stdin(&s, &id, "?eof=true", "").await.0, 200);
    let rest = r.rest().await;
    assert!(rest.iter().all(|e| e["type"] != "awaiting_input"), "{rest:?}");

    // `python3 -i` at its prompt (written to stderr without a newline: shown before the marker).
    let (id, mut r) = start(&s, json!({"command": "python3 -i -q", "stdin": true, "awaiting_input_ms": 100})).await;
    let mut seen = Vec::new();
    loop {
        let e = next_event(&mut r).await;
        if e["type"] == "awaiting_input" {
            break;
        }
        seen.push(e);
    }
    assert!(seen.iter().any(|e| e["type"] == "stderr" && e["text"] == ">>> "), "{seen:?}");
    assert_eq!(write_stdin(&s, &id, "", "print(6*7)\n").await.0, 200);
    assert_eq!(next_stdout(&mut r).await, "42\n");
    loop {
        let e = next_event(&mut r).await;
        if e["type"] == "awaiting_input" {
            break;
        }
        assert_ne!(e["type"], "execution_complete");
    }
    assert_eq!(write_stdin(&s, &id, "?eof=true", "").await.0, 200);
}

#[tokio::test]
async fn x13_no_awaiting_input_for_sleep_socket_or_file_reads() {
    let s = TestServer::start();
    let cmd = "sleep 0.6; \
        timeout 0.6 python3 -c 'import socket,os; a,b=socket.socketpair(); os.read(a.fileno(), 1)'; \
        timeout 0.6 tail -f /dev/null; \
        echo end";
    let (_id, mut r) = start(&s, json!({"command": cmd, "stdin": true, "awaiting_input_ms": 100})).await;
    let mut events = Vec::new();
    loop {
        let e = next_event(&mut r).await;
        let end = e["type"] == "stdout";
        events.push(e);
        if end {
            break;
        }
    }
    assert!(events.iter().all(|e| e["type"] != "awaiting_input"), "{events:?}");
    // Without `stdin: true` no command ever gets the event.
    let ev = run(&s, json!({"command": "read -r x; echo n:$x", "awaiting_input_ms": 50})).await;
    assert!(ev.iter().all(|e| e["type"] != "awaiting_input"));
}

/// `POST /session`; the new session's id.
async fn new_session(s: &TestServer) -> String {
    let v: Value = post_json(s, "/session", json!({})).await.json().await.unwrap();
    v["session_id"].as_str().expect("session_id").to_string()
}

/// Runs `body` in session `sid` to the end: the joined stdout and the terminal event's type.
async fn session_run(s: &TestServer, sid: &str, body: Value) -> (String, String) {
    let resp = post_json(s, &format!("/session/{sid}/run"), body).await;
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(TIMEOUT, resp.text()).await.expect("run ended in time").unwrap();
    let ev = without_pings(&parse_events(&text));
    let terminal = ev.last().expect("events")["type"].as_str().unwrap().to_string();
    (common::raw_texts(&ev, "stdout").concat(), terminal)
}

#[tokio::test]
async fn x10_session_run_stdin_string_reaches_read_and_cat() {
    let s = TestServer::start();
    let sid = new_session(&s).await;
    let run = |body| session_run(&s, &sid, body);
    assert_eq!(
        run(json!({"command": "read a; echo got:$a", "stdin": "hello\n"})).await,
        ("got:hello\n".into(), "execution_complete".into())
    );
    let big = "x".repeat(1 << 20);
    assert_eq!(run(json!({"command": "cat | wc -c", "stdin": big})).await.0.trim(), "1048576");
    // Exactly the bytes, then EOF (no newline added).
    assert_eq!(
        run(json!({"command": "od -An -c", "stdin": "a\tb"})).await.0.split_whitespace().collect::<Vec<_>>(),
        ["a", "\\t", "b"]
    );
    // Absent or false: /dev/null, as before.
    for body in
        [json!({"command": "readlink /proc/self/fd/0"}), json!({"command": "readlink /proc/self/fd/0", "stdin": false})]
    {
        assert_eq!(run(body).await.0, "/dev/null\n");
    }
    // An open pipe is for commands only; a wrong type is a 400 too.
    for stdin in [json!(true), json!(5)] {
        let resp = post_json(&s, &format!("/session/{sid}/run"), json!({"command": "true", "stdin": stdin})).await;
        assert_eq!(resp.status(), 400, "{stdin}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains("stdin"), "{v}");
    }
    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["session_stdin"], json!(["string"]));
}

#[tokio::test]
async fn x10_session_stdin_run_keeps_state_and_ignored_input_never_hangs() {
    let s = TestServer::start();
    let sid = new_session(&s).await;
    let run = |body| session_run(&s, &sid, body);
    run(json!({"command": "export X=1"})).await;
    let (_, end) = run(json!({"command": "read -r Y; cd /tmp", "stdin": "from stdin\n"})).await;
    assert_eq!(end, "execution_complete");
    assert_eq!(run(json!({"command": "echo \"$X|$Y|$PWD\""})).await.0, "1|from stdin|/tmp\n");
    // 8 MiB nobody reads: bash exits, the writer meets a closed pipe.
    let big = "y".repeat(8 << 20);
    let t = Instant::now();
    assert_eq!(
        run(json!({"command": "echo done", "stdin": big.clone()})).await,
        ("done\n".into(), "execution_complete".into())
    );
    // Something left behind holds the pipe without reading: the run still ends with bash, the
    // writer stops with it (the left-behind reader then sees EOF after what fit in the pipe), and
    // the session takes the next run at once.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cmd = format!("(sleep 1; wc -c >{d}/n.tmp; mv {d}/n.tmp {d}/n) <&0 >/dev/null 2>&1 &");
    assert_eq!(run(json!({"command": cmd, "stdin": big})).await.1, "execution_complete");
    assert_eq!(run(json!({"command": "echo next"})).await.0, "next\n");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let n = dir.path().join("n");
    assert!(common::wait_until(TIMEOUT, || n.exists()), "the left-behind reader never saw EOF");
    let got: u64 = std::fs::read_to_string(&n).unwrap().trim().parse().unwrap();
    assert!(got < 8 << 20, "the writer went on after the run: {got}");
}

#[tokio::test]
async fn x10_session_stdin_never_in_cmdline_files_or_log() {
    let s = TestServer::start();
    let sid = new_session(&s).await;
    let secret = format!("SESSIONSECRET-{}", std::process::id());
    let resp = post_json(
        &s,
        &format!("/session/{sid}/run"),
        json!({"command": "read -r a; echo ready; sleep 30", "stdin": format!("{secret}\n")}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut r = EventReader::new(resp);
    assert_eq!(r.next_non_ping().await.unwrap()["type"], "init");
    assert_eq!(next_stdout(&mut r).await, "ready\n");
    // The run blocks in `sleep` now, having read the secret.
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            assert!(!String::from_utf8_lossy(&cmdline).contains(&secret), "secret in {:?}", e.path());
        }
    }
    let mut stack = vec![s.state_dir().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(data) = std::fs::read(&p) {
                assert!(!String::from_utf8_lossy(&data).contains(&secret), "secret in {p:?}");
            }
        }
    }
    let resp = s.client().delete(s.url(&format!("/session/{sid}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rest = tokio::time::timeout(TIMEOUT, r.rest()).await.expect("stream ends after delete");
    assert_eq!(rest.last().unwrap()["type"], "error", "{rest:?}");
    assert!(!s.log().contains(&secret), "secret in execd's log");
}

#[tokio::test]
async fn x13_awaiting_input_always_follows_the_prompt() {
    let s = TestServer::start();
    const TURNS: usize = 30;
    let code = format!("for i in range({TURNS}):\n    x = input(f'p{{i}}> ')\n    print(f'a{{i}}:' + x)\n");
    // Quiet time 0: the watcher asks as soon as it sees the read, the hardest case for the order.
    let (id, mut r) =
        start(&s, json!({"command": format!("python3 -u -c \"{code}\""), "stdin": true, "awaiting_input_ms": 0})).await;
    let mut stdout = String::new();
    for turn in 0..TURNS {
        loop {
            let e = next_event(&mut r).await;
            match e["type"].as_str().unwrap() {
                "stdout" => stdout.push_str(e["text"].as_str().unwrap()),
                "awaiting_input" => break,
                other => panic!("unexpected {other}: {e}; stdout {stdout:?}"),
            }
        }
        assert!(stdout.ends_with(&format!("p{turn}> ")), "turn {turn}: awaiting_input before the prompt: {stdout:?}");
        assert_eq!(write_stdin(&s, &id, "", format!("t{turn}\n")).await.0, 200);
    }
    let rest = tokio::time::timeout(TIMEOUT, r.rest()).await.expect("stream ends");
    assert_eq!(rest.last().unwrap()["type"], "execution_complete", "{rest:?}");
    // The record has the same order: each marker right after its prompt.
    let events = resumable(&s, &id).await;
    let mut out = String::new();
    let mut turn = 0;
    for (kind, text) in &events {
        match kind.as_str() {
            "stdout" => out.push_str(text),
            "awaiting_input" => {
                assert!(out.ends_with(&format!("p{turn}> ")), "replay turn {turn}: {out:?}");
                turn += 1;
            }
            _ => {}
        }
    }
    assert_eq!(turn, TURNS, "{events:?}");
    assert!(out.ends_with(&format!("p{}> a{}:t{}\n", TURNS - 1, TURNS - 1, TURNS - 1)), "{out:?}");
}
