//! The log subscriber: one JSON line per event, in the shape tracing-subscriber's JSON formatter
//! wrote (`{"timestamp":"…Z","level":"INFO","fields":{"message":…,…}}`), built by hand into one
//! reused buffer and written with one `write`. tracing-subscriber's formatter took ~18 000
//! instructions a line through serde and its span registry, and a command logs three lines
//! (BENCHMARKS.md, "Log lines without a formatter"). execd opens no spans; span callsites are
//! disabled here, so none is ever created.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::{Datelike, Timelike};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};

/// Where the lines go.
pub enum Output {
    Stdout,
    /// `EXECD_LOG_FILE`, opened for appending.
    File(Mutex<File>),
}

impl Output {
    fn write_line(&self, line: &[u8]) {
        // As tracing-subscriber did: a log line that cannot be written is dropped.
        let _ = match self {
            Output::Stdout => std::io::stdout().lock().write_all(line),
            Output::File(file) => file.lock().unwrap_or_else(|e| e.into_inner()).write_all(line),
        };
    }
}

/// Events that pass `filter` as JSON lines to `output`.
pub struct JsonLines {
    filter: Targets,
    max_level: LevelFilter,
    output: Output,
    /// The time a line is stamped with (fixed in the tests).
    clock: fn() -> SystemTime,
}

impl JsonLines {
    pub fn new(filter: Targets, output: Output) -> JsonLines {
        let max_level =
            filter.iter().map(|(_, level)| level).chain([filter.default_level().unwrap_or(LevelFilter::OFF)]).max();
        JsonLines { filter, max_level: max_level.unwrap_or(LevelFilter::OFF), output, clock: SystemTime::now }
    }

    /// The line for `event` at `now`, appended to `buf` (with its newline).
    fn render(buf: &mut Vec<u8>, now: SystemTime, event: &Event<'_>) {
        buf.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(buf, now);
        buf.extend_from_slice(b"\",\"level\":\"");
        buf.extend_from_slice(event.metadata().level().as_str().as_bytes());
        buf.extend_from_slice(b"\",\"fields\":{");
        event.record(&mut Fields { buf: &mut *buf, first: true });
        buf.extend_from_slice(b"}}\n");
    }
}

/// A line longer than this (a long error chain, say) does not keep its buffer.
const KEPT_CAPACITY: usize = 16 * 1024;

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Subscriber for JsonLines {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // The filter never changes, so each callsite's answer is cached for good.
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && self.filter.would_enable(metadata.target(), metadata.level())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max_level)
    }

    fn event(&self, event: &Event<'_>) {
        let now = (self.clock)();
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                JsonLines::render(&mut buf, now, event);
                self.output.write_line(&buf);
                if buf.capacity() > KEPT_CAPACITY {
                    *buf = Vec::new();
                }
            }
            // An event logged while a line is written on this thread (a writer that logs).
            Err(_) => {
                let mut buf = Vec::new();
                JsonLines::render(&mut buf, now, event);
                self.output.write_line(&buf);
            }
        });
    }

    // Spans are never enabled (above), so none reaches these.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber wrote it: `2026-12-05T07:52:35.849476Z`.
fn timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let t = chrono::DateTime::<chrono::Utc>::from(now);
    let mut year = itoa::Buffer::new();
    buf.extend_from_slice(year.format(t.year()).as_bytes());
    for (sep, value) in [(b'-', t.month()), (b'-', t.day()), (b'T', t.hour()), (b':', t.minute()), (b':', t.second())] {
        buf.extend_from_slice(&[sep, b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]);
    }
    let micros = t.nanosecond() / 1000 % 1_000_000;
    buf.push(b'.');
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        buf.push(b'0' + (micros / div % 10) as u8);
    }
    buf.push(b'Z');
}

/// An event's fields as the members of a JSON object.
struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        let name = field.name();
        json_escape::escape(self.buf, name.strip_prefix("r#").unwrap_or(name));
        self.buf.extend_from_slice(b"\":");
    }

    fn raw(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.buf.extend_from_slice(value.as_bytes());
    }
}

/// Escapes what is formatted into it, piece by piece.
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        json_escape::escape(self.0, s);
        Ok(())
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.buf.push(b'"');
        json_escape::escape(self.buf, value);
        self.buf.push(b'"');
    }

    /// `%value`, `?value` and the message: their text as a JSON string.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.buf.push(b'"');
        let _ = write!(Escaping(self.buf), "{value:?}");
        self.buf.push(b'"');
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, if value { "true" } else { "false" });
    }

    /// As serde_json writes an `f64` (`null` for NaN and infinities).
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.buf, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `f` logs at every level, stamped 2025-12-05T07:52:35.849476Z.
    fn lines(f: impl FnOnce()) -> String {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut sub = JsonLines::new("trace".parse().unwrap(), Output::File(Mutex::new(file.reopen().unwrap())));
        sub.clock = || SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_764_921_155_849_476);
        tracing::subscriber::with_default(sub, f);
        std::fs::read_to_string(file.path()).unwrap()
    }

    #[test]
    fn a_line_is_the_shape_tracing_subscriber_wrote() {
        let id = "fd39802d";
        let text = lines(
            || tracing::info!(id = %id, pid = 1575u32, background = false, ms = 0.058037, delta = -3i64, "command started"),
        );
        assert_eq!(
            text,
            "{\"timestamp\":\"2025-12-05T07:52:35.849476Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"command started\",\
             \"id\":\"fd39802d\",\"pid\":1575,\"background\":false,\"ms\":0.058037,\"delta\":-3}}\n"
        );
    }

    #[test]
    fn every_value_is_valid_json_whatever_it_holds() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let text = lines(
            || tracing::warn!(text = nasty, shown = %nasty, debugged = ?nasty, r#type = "t", nan = f64::NAN, big = u128::MAX, "{nasty}"),
        );
        assert!(text.ends_with("}}\n") && text.matches('\n').count() == 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON line");
        assert_eq!(v["level"], "WARN");
        let f = &v["fields"];
        assert_eq!(f["message"], nasty);
        assert_eq!(f["text"], nasty);
        assert_eq!(f["shown"], nasty);
        assert_eq!(f["debugged"], format!("{nasty:?}"));
        assert_eq!(f["type"], "t");
        assert!(f["nan"].is_null());
        assert!(text.contains(&format!("\"big\":{}}}", u128::MAX)), "{text}");
    }

    #[test]
    fn only_events_the_filter_lets_through_reach_the_output() {
        let sub = JsonLines::new("error".parse().unwrap(), Output::Stdout);
        assert_eq!(sub.max_level_hint(), Some(LevelFilter::ERROR));
        let file = tempfile::NamedTempFile::new().unwrap();
        let filter = "warn,lines_test=debug".parse().unwrap();
        let sub = JsonLines::new(filter, Output::File(Mutex::new(file.reopen().unwrap())));
        assert_eq!(sub.max_level_hint(), Some(LevelFilter::DEBUG));
        tracing::subscriber::with_default(sub, || {
            tracing::debug!(target: "lines_test", n = 1, "kept");
            tracing::info!(target: "other", n = 2, "dropped");
            let span = tracing::info_span!(target: "lines_test", "a span");
            let _inside = span.enter();
            tracing::warn!(target: "other", n = 3, "kept");
        });
        let text = std::fs::read_to_string(file.path()).unwrap();
        let ns: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fields"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [1, 3], "{text}");
    }
}
