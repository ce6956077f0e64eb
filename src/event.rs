//! [`ExecEvent`]: the stream event model shared by `/command`, `/code` and `/session/{id}/run`,
//! serialised with serde to the exact wire JSON of the reference §3.2: `type` and `timestamp`
//! (Unix ms) always, `text` omitted when empty, `execution_time` omitted when 0, and `error` as
//! `{ename, evalue, traceback:[..]}`.

use serde::Serialize;

/// The `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Init,
    Status,
    Error,
    Stdout,
    Stderr,
    Result,
    ExecutionComplete,
    ExecutionCount,
    Ping,
    /// Bytes written to a command's stdin (X12); only on `/command/{id}/events` and the WebSocket.
    Stdin,
    /// A process of the command waits for input (X13).
    AwaitingInput,
}

impl EventKind {
    /// The wire name (`"execution_complete"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Init => "init",
            EventKind::Status => "status",
            EventKind::Error => "error",
            EventKind::Stdout => "stdout",
            EventKind::Stderr => "stderr",
            EventKind::Result => "result",
            EventKind::ExecutionComplete => "execution_complete",
            EventKind::ExecutionCount => "execution_count",
            EventKind::Ping => "ping",
            EventKind::Stdin => "stdin",
            EventKind::AwaitingInput => "awaiting_input",
        }
    }
}

/// The `error` object of an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

/// One stream event. Build it with the constructors; they stamp `timestamp` with the wall clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub execution_count: u64,
    /// Milliseconds; omitted when 0 (upstream omits the zero value).
    #[serde(skip_serializing_if = "is_zero")]
    pub execution_time: u64,
    /// Unix milliseconds.
    pub timestamp: i64,
    /// MIME bundle of `result` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<serde_json::Map<String, serde_json::Value>>,
    /// Boxed, as `exit`: both are rare, and an event is moved through several queues per output
    /// line (344 bytes inline, 104 boxed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<EventError>>,
    /// X22 keys of a terminal event (`exit_reason`, `signal`, `errno`, `usage`, ...), flattened
    /// into the event object; absent on every other event.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Box<ExitInfo>>,
}

// Kept small: every output line is one event, moved through the reader's queue and the stream.
const _: () = assert!(std::mem::size_of::<ExecEvent>() <= 112);

/// The structured exit of a command (EXTENSIONS X22): extra keys on terminal events and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// `exited`, `signaled`, `timeout`, `interrupted`, `oom_killed`, `spawn_failed`, `lost`.
    pub exit_reason: &'static str,
    /// `SIGSEGV`, ... when the leader was killed by a signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// For `spawn_failed`: the errno, its name and the stage that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::cgroup::Usage>,
    /// `"leader"` when `usage` is the leader's rusage (no cgroup); absent for the leaf's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_scope: Option<&'static str>,
    /// Output bytes dropped because the state directory could not take them (disk full); absent
    /// when nothing was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_lost_bytes: Option<u64>,
}

/// What an [`ExecObserver`] learns when an execution starts: a command, a session run, code in a
/// Jupyter kernel, an isolated session's run (audit log, metrics, tracing: X60–X62).
pub struct ExecStart<'a> {
    /// The metric and audit operation: `run_command`, `run_in_session`, `run_code`, `run_isolated`.
    pub operation: &'static str,
    /// The command id, or the session or context the run belongs to.
    pub id: &'a str,
    /// The shell text, the code, or the argv as a JSON array (as `/command/status` `content`).
    pub command: &'a str,
    pub cwd: Option<&'a std::path::Path>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub background: bool,
}

/// What an [`ExecObserver`] learns when the execution has ended (or failed to start).
pub struct ExecEnd<'a> {
    /// `None` when it never ran, or has no exit code (Jupyter code).
    pub exit_code: Option<i32>,
    /// Whether it succeeded (exit code 0; for code: no error).
    pub success: bool,
    pub exit: &'a ExitInfo,
    pub duration: std::time::Duration,
}

impl ExecEnd<'_> {
    /// The end of a process that exited with `exit_code` (or never started, `None`).
    pub fn of_process(exit_code: Option<i32>, exit: &ExitInfo, duration: std::time::Duration) -> ExecEnd<'_> {
        ExecEnd { exit_code, success: exit_code == Some(0), exit, duration }
    }
}

/// Called (in the starting request's task) when an execution starts; the returned
/// [`ExecDone`] is called once when it ends.
pub type ExecObserver = std::sync::Arc<dyn Fn(&ExecStart<'_>) -> ExecDone + Send + Sync>;

/// What an [`ExecObserver`] returned for one execution: call it when the execution has ended.
pub type ExecDone = Box<dyn FnOnce(&ExecEnd<'_>) + Send>;

/// Why execd itself ended a command, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Itself,
    Timeout,
    Interrupt,
}

impl ExitInfo {
    /// The exit could not be observed (no reap report).
    pub fn lost() -> ExitInfo {
        ExitInfo::reason("lost")
    }

    /// Only a reason: no signal, errno or usage (Jupyter code, X62's audit of `/code`).
    pub fn reason(exit_reason: &'static str) -> ExitInfo {
        ExitInfo {
            exit_reason,
            signal: None,
            errno: None,
            errno_name: None,
            stage: None,
            usage: None,
            usage_scope: None,
            output_lost_bytes: None,
        }
    }

    /// A start failure before any spawn (executable not found): stage `execve`, ENOENT.
    pub fn not_found() -> ExitInfo {
        ExitInfo {
            exit_reason: "spawn_failed",
            signal: None,
            errno: Some(nix::libc::ENOENT),
            errno_name: Some("ENOENT".into()),
            stage: Some("execve"),
            usage: None,
            usage_scope: None,
            output_lost_bytes: None,
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `ename` of a command that failed (non-zero exit, signal, start failure).
pub const COMMAND_EXEC_ERROR: &str = "CommandExecError";
/// `ename` of a runtime failure after the stream started (DECISIONS D4).
pub const RUNTIME_ERROR: &str = "RUNTIME_ERROR";

impl ExecEvent {
    /// An event of `kind` with `text`, stamped now.
    pub fn new(kind: EventKind, text: impl Into<String>) -> ExecEvent {
        Self::new_at(kind, text, now_ms())
    }
    /// An event of `kind` with `text` and a given Unix-ms timestamp.
    pub fn new_at(kind: EventKind, text: impl Into<String>, timestamp: i64) -> ExecEvent {
        ExecEvent {
            kind,
            text: text.into(),
            execution_count: 0,
            execution_time: 0,
            timestamp,
            results: None,
            error: None,
            exit: None,
        }
    }
    /// `init` with the execution id as text.
    pub fn init(id: &str) -> ExecEvent {
        Self::new(EventKind::Init, id)
    }
    /// `{"type":"ping","text":"pong"}`.
    pub fn ping() -> ExecEvent {
        Self::new(EventKind::Ping, "pong")
    }
    /// A `stdout` line.
    pub fn stdout(text: impl Into<String>) -> ExecEvent {
        Self::new(EventKind::Stdout, text)
    }
    /// A `stderr` line.
    pub fn stderr(text: impl Into<String>) -> ExecEvent {
        Self::new(EventKind::Stderr, text)
    }
    /// `execution_complete` with the run time in ms.
    pub fn complete(execution_time_ms: u64) -> ExecEvent {
        let mut e = Self::new(EventKind::ExecutionComplete, "");
        e.execution_time = execution_time_ms;
        e
    }
    /// An `error` event.
    pub fn error(ename: impl Into<String>, evalue: impl Into<String>, traceback: Vec<String>) -> ExecEvent {
        let mut e = Self::new(EventKind::Error, "");
        e.error = Some(Box::new(EventError { ename: ename.into(), evalue: evalue.into(), traceback }));
        e
    }
    /// DECISIONS D4: a failure after the stream started, as a real `error` event.
    pub fn runtime_error(message: impl Into<String>) -> ExecEvent {
        let m = message.into();
        Self::error(RUNTIME_ERROR, m.clone(), vec![m])
    }
    /// Attaches the X22 keys.
    pub fn with_exit(mut self, exit: ExitInfo) -> ExecEvent {
        self.exit = Some(Box::new(exit));
        self
    }
    /// Sets the timestamp (events replayed from a journal keep the time their bytes were read).
    pub fn at(mut self, timestamp_ms: i64) -> ExecEvent {
        self.timestamp = timestamp_ms;
        self
    }
    /// Whether this event ends a command stream (`execution_complete` or `error`).
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind, EventKind::ExecutionComplete | EventKind::Error)
    }
    /// The compact JSON object (one line: newlines inside strings are escaped).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.text.len() + 96);
        self.write_json(&mut v);
        v
    }

    /// Appends the compact JSON object to `buf`. Events without `results` (every output line,
    /// every command's terminal event) are written by hand, byte-identical to serde_json (see
    /// the tests); the rest by serde. (serde writes an event with `exit` through its `flatten`
    /// map, ~7 000 instructions at opt-level "z" per terminal event, callgrind 2026-12-06.)
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        if self.results.is_none() {
            write_plain_json(buf, self.kind, &self.text, self.execution_count, self.execution_time, self.timestamp);
            if self.error.is_some() || self.exit.is_some() {
                buf.pop(); // the closing brace: the keys below go inside
                if let Some(e) = &self.error {
                    write_error_key(buf, e);
                }
                if let Some(x) = &self.exit {
                    write_exit_keys(buf, x);
                }
                buf.push(b'}');
            }
            return;
        }
        let start = buf.len();
        // Serialising this struct cannot fail: every field is a plain value and map keys are
        // strings; keep the output well-formed anyway.
        if serde_json::to_writer(&mut *buf, self).is_err() {
            buf.truncate(start);
            buf.extend_from_slice(b"{}");
        }
    }
}

/// Appends `s` JSON-escaped exactly as serde_json does (without the quotes).
pub(crate) use json_escape::escape as escape_json_str;

/// The JSON of an event without `results`, `error` or exit keys, as [`ExecEvent::write_json`]
/// writes it; for writers that hold the parts but no event (a line lent by the splitter).
pub fn write_plain_json(
    buf: &mut Vec<u8>,
    kind: EventKind,
    text: &str,
    execution_count: u64,
    execution_time: u64,
    timestamp: i64,
) {
    buf.reserve(text.len() + 80);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_str().as_bytes());
    buf.push(b'"');
    if !text.is_empty() {
        buf.extend_from_slice(b",\"text\":\"");
        escape_json_str(buf, text);
        buf.push(b'"');
    }
    if execution_count != 0 {
        buf.extend_from_slice(b",\"execution_count\":");
        write_u64(buf, execution_count);
    }
    if execution_time != 0 {
        buf.extend_from_slice(b",\"execution_time\":");
        write_u64(buf, execution_time);
    }
    buf.extend_from_slice(b",\"timestamp\":");
    if timestamp < 0 {
        buf.push(b'-');
    }
    write_u64(buf, timestamp.unsigned_abs());
    buf.push(b'}');
}

/// Writes output-line events followed by a separator, byte for byte as [`write_plain_json`]
/// and the separator would, with the parts consecutive lines share built once: the opening per
/// kind is a constant, the `","timestamp":N}` tail with the separator is kept per timestamp.
/// Three appends per line instead of seven: at opt-level "z" each is an out-of-line copy into
/// musl's `memcpy`, which was the largest item of a line stream's profile (BENCHMARKS, Commands).
#[derive(Default)]
pub struct LineWriter {
    /// `","timestamp":N}` and the separator, for `tail_ts`.
    tail: Vec<u8>,
    tail_ts: Option<i64>,
}

impl LineWriter {
    /// Appends the event of one line of `kind` (any kind; the shortcut is for stdout and
    /// stderr with text) and `sep`.
    pub fn line(&mut self, out: &mut Vec<u8>, kind: EventKind, text: &str, timestamp: i64, sep: &[u8]) {
        let open: &[u8] = match kind {
            EventKind::Stdout if !text.is_empty() => b"{\"type\":\"stdout\",\"text\":\"",
            EventKind::Stderr if !text.is_empty() => b"{\"type\":\"stderr\",\"text\":\"",
            _ => {
                write_plain_json(out, kind, text, 0, 0, timestamp);
                out.extend_from_slice(sep);
                return;
            }
        };
        if self.tail_ts != Some(timestamp) || !self.tail.ends_with(sep) {
            self.tail.clear();
            self.tail.extend_from_slice(b"\",\"timestamp\":");
            if timestamp < 0 {
                self.tail.push(b'-');
            }
            write_u64(&mut self.tail, timestamp.unsigned_abs());
            self.tail.push(b'}');
            self.tail.extend_from_slice(sep);
            self.tail_ts = Some(timestamp);
        }
        out.reserve(open.len() + text.len() + self.tail.len());
        out.extend_from_slice(open);
        escape_json_str(out, text);
        out.extend_from_slice(&self.tail);
    }
}

/// Appends `v` in decimal.
pub(crate) fn write_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `s` as a JSON string.
pub(crate) fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    escape_json_str(buf, s);
    buf.push(b'"');
}

/// Appends an object of numbers, leaving out the fields that are `None`, as serde_json writes a
/// struct of numbers whose optional fields skip `None`.
pub(crate) fn write_numbers(buf: &mut Vec<u8>, fields: &[(&str, Option<u64>)]) {
    buf.push(b'{');
    let mut first = true;
    for (key, v) in fields {
        if let Some(v) = v {
            if !first {
                buf.push(b',');
            }
            write_str(buf, key);
            buf.push(b':');
            write_u64(buf, *v);
            first = false;
        }
    }
    buf.push(b'}');
}

/// Appends a [`crate::cgroup::Usage`] object as its `Serialize` writes it.
pub(crate) fn write_usage(buf: &mut Vec<u8>, u: &crate::cgroup::Usage) {
    write_numbers(
        buf,
        &[
            ("cpu_user_ms", Some(u.cpu_user_ms)),
            ("cpu_system_ms", Some(u.cpu_system_ms)),
            ("peak_memory_bytes", u.peak_memory_bytes),
            ("io_read_bytes", u.io_read_bytes),
            ("io_write_bytes", u.io_write_bytes),
            ("pids_peak", u.pids_peak),
        ],
    );
}

/// Appends `,"error":{...}` as serde_json writes the event's `error`.
fn write_error_key(buf: &mut Vec<u8>, e: &EventError) {
    buf.extend_from_slice(b",\"error\":{\"ename\":");
    write_str(buf, &e.ename);
    buf.extend_from_slice(b",\"evalue\":");
    write_str(buf, &e.evalue);
    buf.extend_from_slice(b",\"traceback\":[");
    for (i, line) in e.traceback.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, line);
    }
    buf.extend_from_slice(b"]}");
}

/// Appends the X22 keys of `x`, each after a comma, as serde_json writes them flattened into
/// the event (the `None` ones left out).
fn write_exit_keys(buf: &mut Vec<u8>, x: &ExitInfo) {
    let text = |buf: &mut Vec<u8>, key: &[u8], v: Option<&str>| {
        if let Some(v) = v {
            buf.extend_from_slice(key);
            write_str(buf, v);
        }
    };
    text(buf, b",\"exit_reason\":", Some(x.exit_reason));
    text(buf, b",\"signal\":", x.signal.as_deref());
    if let Some(errno) = x.errno {
        buf.extend_from_slice(b",\"errno\":");
        if errno < 0 {
            buf.push(b'-');
        }
        write_u64(buf, errno.unsigned_abs().into());
    }
    text(buf, b",\"errno_name\":", x.errno_name.as_deref());
    text(buf, b",\"stage\":", x.stage);
    if let Some(u) = &x.usage {
        buf.extend_from_slice(b",\"usage\":");
        write_usage(buf, u);
    }
    text(buf, b",\"usage_scope\":", x.usage_scope);
    if let Some(n) = x.output_lost_bytes {
        buf.extend_from_slice(b",\"output_lost_bytes\":");
        write_u64(buf, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(e: &ExecEvent) -> serde_json::Value {
        serde_json::from_slice(&e.to_json()).unwrap()
    }

    #[test]
    fn wire_shapes() {
        let cases = vec![
            (ExecEvent::init("abc").at(5), json!({"type":"init","text":"abc","timestamp":5})),
            (ExecEvent::ping().at(5), json!({"type":"ping","text":"pong","timestamp":5})),
            (ExecEvent::stdout("").at(5), json!({"type":"stdout","timestamp":5})),
            (ExecEvent::complete(0).at(5), json!({"type":"execution_complete","timestamp":5})),
            (ExecEvent::complete(12).at(5), json!({"type":"execution_complete","execution_time":12,"timestamp":5})),
            (
                ExecEvent::error("CommandExecError", "3", vec!["exit status 3".into()]).at(5),
                json!({"type":"error","timestamp":5,"error":{"ename":"CommandExecError","evalue":"3","traceback":["exit status 3"]}}),
            ),
        ];
        for (ev, want) in cases {
            assert_eq!(wire(&ev), want);
        }
    }

    fn serde_bytes(e: &ExecEvent) -> Vec<u8> {
        serde_json::to_vec(e).unwrap()
    }

    /// Every character that needs escaping, and some that do not, at every position of a short
    /// and a longer text, escaped as serde_json does.
    #[test]
    fn escape_equals_serde_at_every_position() {
        let specials: Vec<char> = (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', '\u{7f}', 'é', '\u{2028}', ' ', '!', '#', '[', ']'])
            .collect();
        for c in specials {
            for pos in 0..20 {
                for len in [pos + 1, pos + 3, 24] {
                    let mut text: String = "a".repeat(len);
                    text.replace_range(pos..pos + 1, &c.to_string());
                    let mut ours = Vec::new();
                    escape_json_str(&mut ours, &text);
                    let theirs = serde_json::to_string(&text).unwrap();
                    assert_eq!(
                        String::from_utf8(ours).unwrap(),
                        theirs[1..theirs.len() - 1],
                        "{c:?} at {pos} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn hand_written_json_equals_serde() {
        let mut texts: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote \" backslash \\ slash /".into(),
            "\n\r\t\u{8}\u{c}".into(),
            "\u{2028}\u{2029} line separators".into(),
            "\u{7f} del, é, € and 🦀".into(),
            String::from_utf8_lossy(b"bad \xff\xfe utf8 \xe2\x82").into_owned(),
        ];
        texts.push((0u8..0x80).map(char::from).collect());
        texts.push((0u32..0x800).filter_map(char::from_u32).collect());
        let kinds = [
            EventKind::Init,
            EventKind::Status,
            EventKind::Stdout,
            EventKind::Stderr,
            EventKind::ExecutionComplete,
            EventKind::ExecutionCount,
            EventKind::Ping,
            EventKind::Result,
        ];
        for text in &texts {
            for kind in kinds {
                for (count, time, ts) in
                    [(0, 0, 0), (1, 12, 1_764_000_000_123), (u64::MAX, u64::MAX, i64::MIN), (7, 0, -5)]
                {
                    let mut e = ExecEvent::new_at(kind, text.clone(), ts);
                    e.execution_count = count;
                    e.execution_time = time;
                    assert_eq!(e.to_json(), serde_bytes(&e), "{e:?}");
                    let mut buf = b"prefix".to_vec();
                    e.write_json(&mut buf);
                    assert_eq!(&buf[6..], &serde_bytes(&e)[..]);
                }
            }
        }
        let e = ExecEvent::error("E", "v\"", vec!["a\u{1}".into()]).at(3);
        assert_eq!(e.to_json(), serde_bytes(&e));
    }

    /// Terminal events (X22 keys flattened in, with or without `error`) written by hand are
    /// serde_json's, every optional key present and absent, negative numbers, odd strings.
    #[test]
    fn hand_written_terminal_json_equals_serde() {
        let full = crate::cgroup::Usage {
            cpu_user_ms: 3,
            cpu_system_ms: u64::MAX,
            peak_memory_bytes: Some(0),
            io_read_bytes: Some(2),
            io_write_bytes: Some(9),
            pids_peak: Some(1),
        };
        let odd = "q\"\\\n\u{1}é🦀\u{2028}";
        let mut exits = vec![ExitInfo::lost(), ExitInfo::reason("exited"), ExitInfo::not_found()];
        for errno in [None, Some(-7), Some(2), Some(i32::MIN)] {
            for usage in [None, Some(full), Some(crate::cgroup::Usage { peak_memory_bytes: None, ..full })] {
                exits.push(ExitInfo {
                    exit_reason: "spawn_failed",
                    signal: errno.map(|_| odd.to_string()),
                    errno,
                    errno_name: Some(odd.into()),
                    stage: errno.map(|_| "chdir"),
                    usage,
                    usage_scope: usage.map(|_| "leader"),
                    output_lost_bytes: errno.map(|e| e.unsigned_abs().into()),
                });
            }
        }
        for exit in exits {
            let events = [
                ExecEvent::complete(0).at(5).with_exit(exit.clone()),
                ExecEvent::complete(12).at(-5).with_exit(exit.clone()),
                ExecEvent::error("CommandExecError", "1", vec![]).at(7).with_exit(exit.clone()),
                ExecEvent::error(odd, odd, vec![odd.into(), String::new()]).at(i64::MIN).with_exit(exit.clone()),
            ];
            for e in events {
                assert_eq!(String::from_utf8(e.to_json()).unwrap(), String::from_utf8(serde_bytes(&e)).unwrap());
            }
        }
    }

    #[test]
    fn line_writer_writes_what_write_plain_json_does() {
        let mut w = LineWriter::default();
        let mut got = Vec::new();
        let mut want = Vec::new();
        let cases: [(EventKind, &str, i64, &[u8]); 7] = [
            (EventKind::Stdout, "a\"b\\c\u{1}\n", 1_733_000_000_123, b"\n\n"),
            (EventKind::Stdout, "same time", 1_733_000_000_123, b"\n\n"),
            (EventKind::Stderr, "caf\u{e9}", 1_733_000_000_124, b"\n\n"),
            (EventKind::Stderr, "other separator", 1_733_000_000_124, b"|"),
            (EventKind::Stdout, "", 5, b"|"),
            (EventKind::AwaitingInput, "", 5, b"|"),
            (EventKind::Stdout, "negative", -3, b"|"),
        ];
        for (kind, text, ts, sep) in cases {
            w.line(&mut got, kind, text, ts, sep);
            write_plain_json(&mut want, kind, text, 0, 0, ts);
            want.extend_from_slice(sep);
        }
        assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
    }

    proptest::proptest! {
        #[test]
        fn hand_written_json_equals_serde_for_any_text(text in ".*", raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64), ts in proptest::num::i64::ANY) {
            let e = ExecEvent::new_at(EventKind::Stdout, text, ts);
            proptest::prop_assert_eq!(e.to_json(), serde_bytes(&e));
            let e = ExecEvent::new_at(EventKind::Stderr, String::from_utf8_lossy(&raw).into_owned(), ts);
            proptest::prop_assert_eq!(e.to_json(), serde_bytes(&e));
        }
    }

    #[test]
    fn json_is_one_line() {
        let ev = ExecEvent::stdout("a\nb\r\u{2028}");
        assert!(!ev.to_json().contains(&b'\n'));
        assert!(ExecEvent::complete(1).is_terminal() && !ExecEvent::ping().is_terminal());
        assert!((now_ms() - ExecEvent::ping().timestamp).abs() < 1000);
    }
}
