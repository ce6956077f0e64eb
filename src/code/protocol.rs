//! The Jupyter messaging protocol (v5.3) as far as execd needs it: the `execute_request` we send
//! over the kernel WebSocket, and [`RunTracker`], the pure state machine that turns the kernel's
//! answers into stream events (reference §6.4, DECISIONS D50).
//!
//! Every inbound message is matched to our request by `parent_header.msg_id`; output of other
//! requests (Jupyter's own `kernel_info` nudges, earlier runs) is dropped. Mapping:
//!
//! | message | events |
//! |---|---|
//! | `stream` | `stdout` / `stderr` with the chunk as sent (trailing `\n` kept); empty chunks dropped |
//! | `execute_result` | `execution_count` (when > 0), then `result` |
//! | `display_data` | `result` (D50; upstream drops it) |
//! | `error` | `status` (`"error"`), then `error` |
//! | `execute_reply` | none; an error reply with an `ename` and no earlier `error` message emits `status` + `error` |
//! | `status` idle | the run is done once `execute_reply` is in too (or [`REPLY_GRACE`] passed) |
//!
//! An `execute_reply` with status `error` but no (or an empty) `ename` gives no event: tslab
//! (TypeScript) fails that way, having already written the error to stderr, and an `error` event
//! with an empty name would break clients that read `error.name` (issue #13). Upstream streams
//! `init`, `stderr`, `execution_complete` there too; it never turns a reply into an event.
//!
//! MIME bundles are copied with `text/plain` renamed to `text` (the Python SDK reads only `text`).
//! The run ends with `execution_complete`, whose `execution_time` is measured at idle.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::event::{EventKind, ExecEvent};

/// After the kernel went idle, how long we wait for `execute_reply` before completing anyway
/// (reference §18.11: upstream waits without bound).
pub const REPLY_GRACE: Duration = Duration::from_secs(2);

/// Protocol version we speak.
pub const PROTOCOL_VERSION: &str = "5.3";

/// The `execute_request` text frame for the kernel WebSocket (legacy JSON framing with a
/// `channel` key, which every Jupyter server accepts when no subprotocol is negotiated).
pub fn execute_request(msg_id: &str, session: &str, code: &str) -> String {
    json!({
        "header": {
            "msg_id": msg_id,
            "username": "execd",
            "session": session,
            "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "msg_type": "execute_request",
            "version": PROTOCOL_VERSION,
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": false,
            "store_history": true,
            "user_expressions": {},
            "allow_stdin": false,
            "stop_on_error": true,
        },
        "buffers": [],
        "channel": "shell",
    })
    .to_string()
}

/// A MIME bundle with `text/plain` renamed to `text`; other keys copied as they are.
pub fn rename_bundle(data: &Map<String, Value>) -> Map<String, Value> {
    data.iter()
        .map(|(k, v)| {
            let key = if k == "text/plain" { "text".to_string() } else { k.clone() };
            (key, v.clone())
        })
        .collect()
}

fn result_event(data: &Map<String, Value>) -> ExecEvent {
    let mut e = ExecEvent::new(EventKind::Result, "");
    e.results = Some(rename_bundle(data));
    e
}

fn error_events(content: &Value) -> [ExecEvent; 2] {
    let s = |k: &str| content.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let traceback = content
        .get("traceback")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|l| l.as_str().map(str::to_string).unwrap_or_else(|| l.to_string())).collect())
        .unwrap_or_default();
    [ExecEvent::new(EventKind::Status, "error"), ExecEvent::error(s("ename"), s("evalue"), traceback)]
}

/// Follows one execution: feed it every inbound message with [`RunTracker::on_message`], ask
/// [`RunTracker::is_done`], and end with [`RunTracker::finish`].
#[derive(Debug)]
pub struct RunTracker {
    msg_id: String,
    started: Instant,
    idle_at: Option<Instant>,
    /// `execution_time` in ms, fixed when the kernel went idle.
    execution_ms: u64,
    reply: Option<Value>,
    saw_error: bool,
    /// `restarting` or `dead` when the kernel went away mid-run.
    kernel_lost: Option<String>,
}

impl RunTracker {
    /// Tracks the request `msg_id`, sent now.
    pub fn new(msg_id: impl Into<String>) -> RunTracker {
        RunTracker {
            msg_id: msg_id.into(),
            started: Instant::now(),
            idle_at: None,
            execution_ms: 0,
            reply: None,
            saw_error: false,
            kernel_lost: None,
        }
    }

    /// The events for one inbound message (a parsed WebSocket text frame). Messages that answer
    /// another request, and unknown types, give none.
    pub fn on_message(&mut self, msg: &Value) -> Vec<ExecEvent> {
        let msg_type =
            msg.pointer("/header/msg_type").or_else(|| msg.get("msg_type")).and_then(Value::as_str).unwrap_or_default();
        let empty = Value::Object(Map::new());
        let content = msg.get("content").unwrap_or(&empty);
        // The Jupyter server announces a kernel restart or death to every connection, with no
        // parent: our execution is lost then.
        if msg_type == "status" {
            if let Some(state @ ("restarting" | "dead")) = content.get("execution_state").and_then(Value::as_str) {
                self.kernel_lost = Some(state.to_string());
                return Vec::new();
            }
        }
        let parent = msg.pointer("/parent_header/msg_id").and_then(Value::as_str);
        if parent != Some(self.msg_id.as_str()) {
            return Vec::new();
        }
        match msg_type {
            "stream" => {
                let text = content.get("text").and_then(Value::as_str).unwrap_or_default();
                if text.is_empty() {
                    return Vec::new();
                }
                match content.get("name").and_then(Value::as_str) {
                    Some("stderr") => vec![ExecEvent::stderr(text)],
                    _ => vec![ExecEvent::stdout(text)],
                }
            }
            "execute_result" => {
                let mut out = Vec::with_capacity(2);
                let n = content.get("execution_count").and_then(Value::as_u64).unwrap_or(0);
                if n > 0 {
                    let mut e = ExecEvent::new(EventKind::ExecutionCount, "");
                    e.execution_count = n;
                    out.push(e);
                }
                if let Some(data) = content.get("data").and_then(Value::as_object) {
                    out.push(result_event(data));
                }
                out
            }
            "display_data" => match content.get("data").and_then(Value::as_object) {
                Some(data) if !data.is_empty() => vec![result_event(data)],
                _ => Vec::new(),
            },
            "error" => {
                self.saw_error = true;
                error_events(content).into()
            }
            "execute_reply" => {
                self.reply = Some(content.clone());
                Vec::new()
            }
            "status" => {
                if self.idle_at.is_none() && content.get("execution_state").and_then(Value::as_str) == Some("idle") {
                    self.idle_at = Some(Instant::now());
                    self.execution_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// `Some("restarting" | "dead")` when the kernel went away during the run.
    pub fn kernel_lost(&self) -> Option<&str> {
        self.kernel_lost.as_deref()
    }

    /// Whether the kernel went idle for our request.
    pub fn is_idle(&self) -> bool {
        self.idle_at.is_some()
    }

    /// Done: idle and the reply is in, or idle for longer than [`REPLY_GRACE`].
    pub fn is_done(&self) -> bool {
        match self.idle_at {
            Some(t) => self.reply.is_some() || t.elapsed() >= REPLY_GRACE,
            None => false,
        }
    }

    /// When, at the latest, the run is done without a reply (None before idle).
    pub fn reply_deadline(&self) -> Option<Instant> {
        self.idle_at.map(|t| t + REPLY_GRACE)
    }

    /// The closing events: an error reported only in `execute_reply` (some kernels send no
    /// `error` message; `aborted` also counts) when the reply names it, then
    /// `execution_complete`. An error reply without an `ename` adds nothing (module docs).
    pub fn finish(&mut self) -> Vec<ExecEvent> {
        let mut out = Vec::with_capacity(3);
        if let Some(reply) = &self.reply {
            let status = reply.get("status").and_then(Value::as_str).unwrap_or_default();
            if !self.saw_error && (status == "error" || status == "aborted") {
                let mut content = reply.clone();
                let named = |c: &Value| c.get("ename").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
                if status == "aborted" && !named(&content) {
                    content["ename"] = Value::from("ExecutionAborted");
                    content["evalue"] = Value::from("the kernel aborted the execution");
                }
                if named(&content) {
                    out.extend(error_events(&content));
                    self.saw_error = true;
                }
            }
        }
        out.push(ExecEvent::complete(self.execution_ms));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(parent: &str, msg_type: &str, content: Value) -> Value {
        json!({"header": {"msg_type": msg_type}, "parent_header": {"msg_id": parent}, "content": content})
    }

    fn kinds(events: &[ExecEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn request_shape() {
        let v: Value = serde_json::from_str(&execute_request("s-1", "s", "2+2")).unwrap();
        assert_eq!(v["channel"], "shell");
        assert_eq!(v["header"]["msg_type"], "execute_request");
        assert_eq!(v["header"]["version"], "5.3");
        assert_eq!(v["content"]["code"], "2+2");
        assert_eq!(v["content"]["allow_stdin"], false);
    }

    #[test]
    fn value_result_and_rename() {
        let mut t = RunTracker::new("m");
        let ev = t.on_message(&msg(
            "m",
            "execute_result",
            json!({"execution_count": 3, "data": {"text/plain": "4", "text/html": "<b>4</b>"}}),
        ));
        assert_eq!(kinds(&ev), ["execution_count", "result"]);
        assert_eq!(ev[0].execution_count, 3);
        let r = ev[1].results.as_ref().unwrap();
        assert_eq!(r["text"], "4");
        assert_eq!(r["text/html"], "<b>4</b>");
        assert!(!r.contains_key("text/plain"));
        assert!(!t.is_done());
        t.on_message(&msg("m", "status", json!({"execution_state": "idle"})));
        assert!(t.is_idle() && !t.is_done());
        t.on_message(&msg("m", "execute_reply", json!({"status": "ok", "execution_count": 3})));
        assert!(t.is_done());
        assert_eq!(kinds(&t.finish()), ["execution_complete"]);
    }

    #[test]
    fn foreign_messages_are_dropped() {
        let mut t = RunTracker::new("m");
        assert!(t.on_message(&msg("other", "stream", json!({"name": "stdout", "text": "x"}))).is_empty());
        t.on_message(&msg("other", "status", json!({"execution_state": "idle"})));
        assert!(!t.is_idle());
        assert!(t.on_message(&json!({"content": {}})).is_empty());
        assert_eq!(t.kernel_lost(), None);
        t.on_message(&json!({"header": {"msg_type": "status"}, "parent_header": {}, "content": {"execution_state": "restarting"}}));
        assert_eq!(t.kernel_lost(), Some("restarting"));
    }

    #[test]
    fn stream_display_and_error() {
        let mut t = RunTracker::new("m");
        let ev = t.on_message(&msg("m", "stream", json!({"name": "stderr", "text": "a\nb\n"})));
        assert_eq!((ev[0].kind, ev[0].text.as_str()), (EventKind::Stderr, "a\nb\n"));
        assert!(t.on_message(&msg("m", "stream", json!({"name": "stdout", "text": ""}))).is_empty());
        let ev = t.on_message(&msg("m", "display_data", json!({"data": {"text/plain": "'x'"}, "metadata": {}})));
        assert_eq!(kinds(&ev), ["result"]);
        let ev = t.on_message(&msg(
            "m",
            "error",
            json!({"ename": "NameError", "evalue": "name 'x' is not defined", "traceback": ["l1", "l2"]}),
        ));
        assert_eq!(kinds(&ev), ["status", "error"]);
        assert_eq!(ev[0].text, "error");
        assert_eq!(ev[1].error.as_ref().unwrap().traceback, ["l1", "l2"]);
        t.on_message(&msg("m", "execute_reply", json!({"status": "error", "ename": "NameError"})));
        t.on_message(&msg("m", "status", json!({"execution_state": "idle"})));
        // The error was already reported: only the completion follows.
        assert_eq!(kinds(&t.finish()), ["execution_complete"]);
    }

    #[test]
    fn error_only_in_reply_is_reported() {
        let mut t = RunTracker::new("m");
        t.on_message(&msg("m", "execute_reply", json!({"status": "error", "ename": "EvalException", "evalue": "x"})));
        t.on_message(&msg("m", "status", json!({"execution_state": "idle"})));
        let ev = t.finish();
        assert_eq!(kinds(&ev), ["status", "error", "execution_complete"]);
        assert_eq!(ev[1].error.as_ref().unwrap().ename, "EvalException");
    }

    #[test]
    fn error_reply_without_ename_adds_no_event() {
        // tslab: stderr, then {"status": "error", "execution_count": n} and nothing else.
        for reply in [json!({"status": "error", "execution_count": 2}), json!({"status": "error", "ename": ""})] {
            let mut t = RunTracker::new("m");
            let ev = t.on_message(&msg("m", "stream", json!({"name": "stderr", "text": "Error: x\n"})));
            assert_eq!(kinds(&ev), ["stderr"]);
            t.on_message(&msg("m", "execute_reply", reply));
            t.on_message(&msg("m", "status", json!({"execution_state": "idle"})));
            assert!(t.is_done());
            assert_eq!(kinds(&t.finish()), ["execution_complete"]);
        }
        // An aborted execution is still reported, with a name of our own.
        let mut t = RunTracker::new("m");
        t.on_message(&msg("m", "execute_reply", json!({"status": "aborted"})));
        let ev = t.finish();
        assert_eq!(kinds(&ev), ["status", "error", "execution_complete"]);
        assert_eq!(ev[1].error.as_ref().unwrap().ename, "ExecutionAborted");
    }
}
