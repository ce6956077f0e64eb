//! Process scans over `/proc`: the pids there and the fields of `/proc/<pid>/stat`.

use std::str::FromStr;

/// The pids in `/proc` (its numeric entries), in directory order. Empty without `/proc`.
pub fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit()))?.parse().ok())
}

/// One reading of `/proc/<pid>/stat`. Fields are numbered as in proc(5): 1 is the pid, 2 the
/// command name (which may hold spaces and parentheses, so fields are counted after its last
/// `)`), 3 the state.
#[derive(Debug, Clone)]
pub struct Stat {
    text: String,
    /// Where field 3 starts in `text`.
    rest: usize,
}

impl Stat {
    /// Reads `/proc/<pid>/stat`; `None` when the process is gone or the file is malformed.
    pub fn read(pid: i32) -> Option<Stat> {
        Stat::parse(super::read_small(std::path::Path::new(&format!("/proc/{pid}/stat")))?)
    }

    /// Reads this process's `/proc/self/stat`.
    pub fn read_self() -> Option<Stat> {
        Stat::parse(super::read_small(std::path::Path::new("/proc/self/stat"))?)
    }

    /// Parses the text of a stat file.
    pub fn parse(text: String) -> Option<Stat> {
        let rest = text.rfind(')')? + 1;
        Some(Stat { text, rest })
    }

    /// Field `n` (3 or more) as text.
    pub fn field(&self, n: usize) -> Option<&str> {
        self.text[self.rest..].split_whitespace().nth(n.checked_sub(3)?)
    }

    /// Field `n` (3 or more) parsed.
    pub fn num<T: FromStr>(&self, n: usize) -> Option<T> {
        self.field(n)?.parse().ok()
    }

    /// The state letter (`R`, `S`, `Z`, …).
    pub fn state(&self) -> &str {
        self.field(3).unwrap_or("")
    }

    /// Exited and not yet reaped (`Z`), or dead (`X`).
    pub fn is_zombie(&self) -> bool {
        matches!(self.state(), "Z" | "X")
    }

    /// The process group id (field 5).
    pub fn pgrp(&self) -> Option<i32> {
        self.num(5)
    }

    /// The session id (field 6).
    pub fn session(&self) -> Option<i32> {
        self.num(6)
    }

    /// The controlling terminal's device number (field 7; 0 for none).
    pub fn tty_nr(&self) -> u32 {
        self.num::<i32>(7).map(|n| n as u32).unwrap_or(0)
    }

    /// The start time in clock ticks after boot (field 22).
    pub fn start_time(&self) -> Option<u64> {
        self.num(22)
    }
}

/// The live (not zombie) processes whose process group (or, with `session`, session) is `id`,
/// with their process group: `(pid, pgid)`.
pub fn members_of(id: i32, session: bool) -> Vec<(i32, i32)> {
    pids()
        .filter_map(|pid| {
            let st = Stat::read(pid)?;
            let pgrp = st.pgrp()?;
            let ours = pgrp == id || (session && st.session() == Some(id));
            (ours && !st.is_zombie()).then_some((pid, pgrp))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_last_parenthesis_of_the_name() {
        let st = Stat::parse("42 (a) b) (c) S 1 40 41 34816 0 0 0 0 0 0 0 0 0 20 0 1 0 0 987 0".into()).unwrap();
        assert_eq!(st.state(), "S");
        assert_eq!(st.num::<i32>(4), Some(1));
        assert_eq!(st.pgrp(), Some(40));
        assert_eq!(st.session(), Some(41));
        assert_eq!(st.tty_nr(), 34816);
        assert_eq!(st.start_time(), Some(987));
        assert_eq!(st.field(2), None);
        assert!(!st.is_zombie());
        assert!(Stat::parse("no parenthesis".into()).is_none());
    }

    #[test]
    fn this_process_is_found_in_its_own_group() {
        let me = std::process::id() as i32;
        assert!(pids().any(|p| p == me));
        let st = Stat::read(me).unwrap();
        let pgrp = st.pgrp().unwrap();
        assert_eq!(Stat::read_self().unwrap().pgrp(), Some(pgrp));
        assert!(members_of(pgrp, false).contains(&(me, pgrp)));
    }
}
