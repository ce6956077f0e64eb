//! Benchmark client for execd's `/command` (see `scripts/bench/commands.sh`).
//!
//! Subcommands (all print one JSON object per line):
//! - `floor-spawn N`: spawn `bash -c true` with piped stdout/stderr, read both to EOF, wait; N times.
//! - `latency ADDR N`: N sequential `POST /command {"command":"true"}` on one keep-alive connection,
//!   timed until the terminal event has arrived.
//! - `ping ADDR N`: N sequential `GET /ping` on one keep-alive connection: the HTTP round trip of
//!   this client with no work behind it, for reading the `latency` figures.
//! - `floor-pipe CMD`: `bash -c CMD` with stdout piped, read to EOF (the `cat`-like floor).
//! - `stream ADDR CMD MODE`: one foreground command; MODE `lines` counts `text + "\n"` per stdout
//!   event, `raw` counts `text`; reports bytes and MiB/s.
//! - `concurrent ADDR N CMD`: N connections at once, each one command; bytes, p50/p99 to terminal.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(serde::Deserialize)]
struct Ev<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Result of one streamed command.
#[derive(Default)]
struct Outcome {
    bytes: u64,
    events: u64,
    terminal: String,
}

/// Sends `POST /command` and consumes the chunked event stream; `lines` adds a stripped `\n`.
fn run_command(conn: &mut BufReader<TcpStream>, body: &str, lines: bool) -> Outcome {
    let req = format!(
        "POST /command HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    let mut chunked = false;
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if l.starts_with("HTTP/1.1") {
            assert!(l.contains(" 200"), "status {l}");
        }
        if l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    assert!(chunked, "expected a chunked stream");
    let mut out = Outcome::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut scan = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
        if size == 0 {
            line.clear();
            conn.read_line(&mut line).unwrap();
            break;
        }
        let start = buf.len();
        buf.resize(start + size, 0);
        conn.read_exact(&mut buf[start..]).unwrap();
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf).unwrap();
        // Split complete events (`{json}\n\n`).
        let mut consumed = 0;
        let mut i = scan.max(consumed);
        while i + 1 < buf.len() {
            if buf[i] == b'\n' && buf[i + 1] == b'\n' {
                let ev: Ev = serde_json::from_slice(&buf[consumed..i]).unwrap();
                out.events += 1;
                match ev.kind.as_ref() {
                    "stdout" | "stderr" => {
                        // Upstream 1.0.12 strips the line's `\n`; newer execd keeps it in the text.
                        let text = ev.text.unwrap_or_default();
                        out.bytes += text.len() as u64 + u64::from(lines && !text.ends_with('\n'));
                    }
                    "execution_complete" | "error" => out.terminal = ev.kind.into_owned(),
                    _ => {}
                }
                consumed = i + 2;
                i = consumed;
            } else {
                i += 1;
            }
        }
        buf.drain(..consumed);
        scan = buf.len().saturating_sub(1);
    }
    out
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    BufReader::with_capacity(256 * 1024, s)
}

fn body_for(cmd: &str) -> String {
    serde_json::json!({ "command": cmd }).to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args[0].as_str() {
        "floor-spawn" => {
            let n: usize = args[1].parse().unwrap();
            let mut t = Vec::with_capacity(n);
            for _ in 0..n {
                let s = Instant::now();
                let mut c = Command::new("bash")
                    .args(["-c", "true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut sink = Vec::new();
                c.stdout.take().unwrap().read_to_end(&mut sink).unwrap();
                c.stderr.take().unwrap().read_to_end(&mut sink).unwrap();
                c.wait().unwrap();
                t.push(s.elapsed().as_secs_f64() * 1e3);
            }
            println!("{{\"median_ms\":{:.3},\"p99_ms\":{:.3}}}", pct(&mut t, 0.5), pct(&mut t, 0.99));
        }
        "latency" => {
            let n: usize = args[2].parse().unwrap();
            let mut conn = connect(&args[1]);
            let body = body_for("true");
            let mut t = Vec::with_capacity(n);
            for _ in 0..n {
                let s = Instant::now();
                let o = run_command(&mut conn, &body, false);
                assert_eq!(o.terminal, "execution_complete");
                t.push(s.elapsed().as_secs_f64() * 1e3);
            }
            println!("{{\"median_ms\":{:.3},\"p99_ms\":{:.3}}}", pct(&mut t, 0.5), pct(&mut t, 0.99));
        }
        "ping" => {
            let n: usize = args[2].parse().unwrap();
            let mut conn = connect(&args[1]);
            let mut t = Vec::with_capacity(n);
            let mut line = String::new();
            for _ in 0..n {
                let s = Instant::now();
                conn.get_mut().write_all(b"GET /ping HTTP/1.1\r\nHost: bench\r\n\r\n").unwrap();
                let mut len = 0;
                loop {
                    line.clear();
                    conn.read_line(&mut line).unwrap();
                    let l = line.trim_end().to_ascii_lowercase();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; len];
                conn.read_exact(&mut body).unwrap();
                t.push(s.elapsed().as_secs_f64() * 1e3);
            }
            println!("{{\"median_ms\":{:.3},\"p99_ms\":{:.3}}}", pct(&mut t, 0.5), pct(&mut t, 0.99));
        }
        "floor-pipe" => {
            let s = Instant::now();
            let mut c = Command::new("bash")
                .args(["-c", &args[1]])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = c.stdout.take().unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut bytes = 0u64;
            loop {
                let n = out.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                bytes += n as u64;
            }
            c.wait().unwrap();
            let secs = s.elapsed().as_secs_f64();
            println!("{{\"bytes\":{bytes},\"secs\":{secs:.3},\"mib_s\":{:.1}}}", bytes as f64 / secs / 1048576.0);
        }
        "stream" => {
            let mut conn = connect(&args[1]);
            let s = Instant::now();
            let o = run_command(&mut conn, &body_for(&args[2]), args[3] == "lines");
            let secs = s.elapsed().as_secs_f64();
            println!(
                "{{\"bytes\":{},\"events\":{},\"terminal\":\"{}\",\"secs\":{secs:.3},\"mib_s\":{:.1}}}",
                o.bytes,
                o.events,
                o.terminal,
                o.bytes as f64 / secs / 1048576.0
            );
        }
        "concurrent" => {
            let n: usize = args[2].parse().unwrap();
            let addr = args[1].clone();
            let body = body_for(&args[3]);
            let start = Instant::now();
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let (addr, body) = (addr.clone(), body.clone());
                    std::thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn(move || {
                            let mut conn = connect(&addr);
                            let s = Instant::now();
                            let o = run_command(&mut conn, &body, true);
                            (o.bytes, o.terminal, s.elapsed().as_secs_f64())
                        })
                        .unwrap()
                })
                .collect();
            let mut times = Vec::new();
            let mut bytes = 0u64;
            let mut ok = 0;
            for h in handles {
                let (b, term, t) = h.join().unwrap();
                bytes += b;
                ok += usize::from(term == "execution_complete");
                times.push(t);
            }
            let wall = start.elapsed().as_secs_f64();
            println!(
                "{{\"commands\":{n},\"complete\":{ok},\"bytes\":{bytes},\"wall_s\":{wall:.2},\"p50_s\":{:.2},\"p99_s\":{:.2}}}",
                pct(&mut times, 0.5),
                pct(&mut times, 0.99)
            );
        }
        other => panic!("unknown subcommand {other}"),
    }
}
