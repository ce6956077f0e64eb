//! A command record's JSON (X50), written by hand, byte for byte as `serde_json::to_vec` writes
//! the derived `Serialize` of [`Record`] (test `x50_records_are_written_as_serde_json_writes_them`,
//! which keeps the derive as its oracle).
//!
//! Every command writes two records (running, then finished) on its latency path. serde_json's
//! serializer is generic code compiled into execd at the release profile's opt-level "z", where
//! each key and value went through out-of-line `Vec` appends and a byte loop: ~47 000
//! instructions per `POST /command true` (callgrind, 2026-12-06), a sixth of execd's share of
//! the command. The strings here go through the JSON escaper the output events use
//! (`json-escape`, opt-level 3).

use std::io;
use std::path::Path;

use super::persist::{EventRec, ExitRec, Finished, Record, Running, Time};
use crate::event::{write_numbers, write_str, write_u64, write_usage};
use crate::process::journal::Extent;

/// The record as JSON; fails only for a cgroup path that is not UTF-8 (as serde_json does).
pub fn to_vec(rec: &Record) -> io::Result<Vec<u8>> {
    let mut j = Json(Vec::with_capacity(1024));
    j.raw("{\"v\":");
    j.u64(rec.v.into());
    j.raw(",\"id\":");
    j.str(&rec.id);
    j.raw(",\"content\":");
    j.str(&rec.content);
    j.raw(",\"background\":");
    j.bool(rec.background);
    j.raw(",\"started_at\":");
    j.time(rec.started_at);
    j.raw(",\"has_journal\":");
    j.bool(rec.has_journal);
    if let Some(r) = &rec.running {
        j.raw(",\"running\":");
        j.running(r)?;
    }
    if let Some(f) = &rec.finished {
        j.raw(",\"finished\":");
        j.finished(f);
    }
    j.raw("}");
    Ok(j.0)
}

struct Json(Vec<u8>);

impl Json {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn str(&mut self, s: &str) {
        write_str(&mut self.0, s);
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn u64(&mut self, v: u64) {
        write_u64(&mut self.0, v);
    }

    fn i64(&mut self, v: i64) {
        if v < 0 {
            self.0.push(b'-');
        }
        write_u64(&mut self.0, v.unsigned_abs());
    }

    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.i64(v),
            None => self.raw("null"),
        }
    }

    fn bool(&mut self, v: bool) {
        self.raw(if v { "true" } else { "false" });
    }

    fn numbers(&mut self, fields: &[(&str, Option<u64>)]) {
        write_numbers(&mut self.0, fields);
    }

    fn time(&mut self, t: Time) {
        self.numbers(&[("secs", Some(t.secs)), ("nanos", Some(t.nanos.into()))]);
    }

    fn running(&mut self, r: &Running) -> io::Result<()> {
        self.raw("{\"pid\":");
        self.u64(r.pid.into());
        self.raw(",\"pid_start\":");
        match r.pid_start {
            Some(v) => self.u64(v),
            None => self.raw("null"),
        }
        self.raw(",\"boot_id\":");
        self.opt_str(r.boot_id.as_deref());
        if !r.cgroup.is_empty() {
            self.raw(",\"cgroup\":[");
            for (i, p) in r.cgroup.iter().enumerate() {
                if i > 0 {
                    self.raw(",");
                }
                self.str(utf8(p)?);
            }
            self.raw("]");
        }
        self.raw("}");
        Ok(())
    }

    fn finished(&mut self, f: &Finished) {
        self.raw("{\"exit_code\":");
        self.i64(f.exit_code.into());
        self.raw(",\"error\":");
        self.str(&f.error);
        self.raw(",\"finished_at\":");
        self.time(f.finished_at);
        self.raw(",\"exit\":");
        self.exit(&f.exit);
        self.raw(",\"journal\":");
        match &f.journal {
            Some(e) => self.extent(e),
            None => self.raw("null"),
        }
        self.raw(",\"terminal\":");
        match &f.terminal {
            Some(t) => self.event(t),
            None => self.raw("null"),
        }
        self.raw("}");
    }

    fn exit(&mut self, x: &ExitRec) {
        self.raw("{\"exit_reason\":");
        self.str(&x.exit_reason);
        self.raw(",\"signal\":");
        self.opt_str(x.signal.as_deref());
        self.raw(",\"errno\":");
        self.opt_i64(x.errno.map(i64::from));
        self.raw(",\"errno_name\":");
        self.opt_str(x.errno_name.as_deref());
        self.raw(",\"stage\":");
        self.opt_str(x.stage.as_deref());
        self.raw(",\"usage\":");
        match &x.usage {
            Some(u) => write_usage(&mut self.0, u),
            None => self.raw("null"),
        }
        self.raw(",\"usage_scope\":");
        self.opt_str(x.usage_scope.as_deref());
        if let Some(n) = x.output_lost_bytes {
            self.raw(",\"output_lost_bytes\":");
            self.u64(n);
        }
        self.raw("}");
    }

    fn extent(&mut self, e: &Extent) {
        self.numbers(&[("len", Some(e.len)), ("records", Some(e.records)), ("input", Some(e.input))]);
    }

    fn event(&mut self, e: &EventRec) {
        self.raw("{\"kind\":");
        self.str(&e.kind);
        self.raw(",\"text\":");
        self.str(&e.text);
        self.raw(",\"execution_time\":");
        self.u64(e.execution_time);
        self.raw(",\"timestamp\":");
        self.i64(e.timestamp);
        self.raw(",\"error\":");
        match &e.error {
            Some((ename, evalue, traceback)) => {
                self.raw("[");
                self.str(ename);
                self.raw(",");
                self.str(evalue);
                self.raw(",[");
                for (i, line) in traceback.iter().enumerate() {
                    if i > 0 {
                        self.raw(",");
                    }
                    self.str(line);
                }
                self.raw("]]");
            }
            None => self.raw("null"),
        }
        self.raw(",\"exit\":");
        match &e.exit {
            Some(x) => self.exit(x),
            None => self.raw("null"),
        }
        self.raw("}");
    }
}

fn utf8(p: &Path) -> io::Result<&str> {
    p.to_str().ok_or_else(|| io::Error::other("path contains invalid UTF-8 characters"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Usage;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn exit(usage: Option<Usage>, lost: Option<u64>, s: &str) -> ExitRec {
        ExitRec {
            exit_reason: "signaled".into(),
            signal: Some(format!("SIG{s}")),
            errno: Some(-2),
            errno_name: Some(s.into()),
            stage: Some("chdir".into()),
            usage,
            usage_scope: Some("leader".into()),
            output_lost_bytes: lost,
        }
    }

    fn records(s: &str) -> Vec<Record> {
        let base = |running, finished| Record {
            v: 1,
            id: format!("id{s}"),
            content: s.to_string(),
            background: !s.is_empty(),
            started_at: Time { secs: 1_796_521_995, nanos: 355_792_417 },
            has_journal: true,
            running,
            finished,
        };
        let full = Usage {
            cpu_user_ms: 3,
            cpu_system_ms: u64::MAX,
            peak_memory_bytes: Some(1),
            io_read_bytes: Some(2),
            io_write_bytes: Some(0),
            pids_peak: Some(9),
        };
        let finished = |exit_rec: ExitRec, journal, terminal| Finished {
            exit_code: -1,
            error: s.to_string(),
            finished_at: Time { secs: 0, nanos: 999_999_999 },
            exit: exit_rec,
            journal,
            terminal,
        };
        let event = |error, exit_rec| EventRec {
            kind: "error".into(),
            text: s.to_string(),
            execution_time: 12,
            timestamp: -5,
            error,
            exit: exit_rec,
        };
        vec![
            base(None, None),
            base(Some(Running { pid: 7, pid_start: None, boot_id: None, cgroup: vec![] }), None),
            base(
                Some(Running {
                    pid: u32::MAX,
                    pid_start: Some(123),
                    boot_id: Some(s.into()),
                    cgroup: vec![PathBuf::from(format!("/sys/fs/cgroup/{s}")), PathBuf::from("/b")],
                }),
                None,
            ),
            base(None, Some(finished(ExitRec::from_info(&crate::event::ExitInfo::lost()), None, None))),
            base(
                None,
                Some(finished(
                    exit(Some(full), Some(77), s),
                    Some(Extent { len: 10, records: 2, input: 3 }),
                    Some(event(
                        Some((s.into(), "v".into(), vec![s.into(), String::new()])),
                        Some(exit(Some(Usage { peak_memory_bytes: None, ..full }), None, s)),
                    )),
                )),
            ),
            base(
                None,
                Some(finished(exit(None, None, s), None, Some(event(Some(("e".into(), s.into(), vec![])), None)))),
            ),
        ]
    }

    /// X50: the hand-written record is serde_json's, byte for byte, for every shape of record and
    /// strings with quotes, backslashes, controls, non-ASCII and U+2028/2029.
    #[test]
    fn x50_records_are_written_as_serde_json_writes_them() {
        for s in ["", "true", "a\"b\\c\n\t\u{1}\u{1f}\u{7f}é€😀\u{2028}\u{2029}</script>"] {
            for rec in records(s) {
                assert_eq!(
                    String::from_utf8(to_vec(&rec).unwrap()).unwrap(),
                    String::from_utf8(serde_json::to_vec(&rec).unwrap()).unwrap()
                );
            }
        }
        let mut rec = records("x").remove(2);
        let not_utf8: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(vec![0xff]);
        rec.running.as_mut().unwrap().cgroup.push(PathBuf::from(not_utf8));
        assert!(to_vec(&rec).is_err(), "a path that is not UTF-8 is refused, as serde_json refuses it");
        assert!(serde_json::to_vec(&rec).is_err());
    }

    proptest! {
        #[test]
        fn x50_records_are_written_as_serde_json_writes_them_for_any_string(s in any::<String>()) {
            for rec in records(&s) {
                prop_assert_eq!(to_vec(&rec).unwrap(), serde_json::to_vec(&rec).unwrap());
            }
        }
    }
}
