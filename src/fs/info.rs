//! [`FileInfo`] (§7.1): what every filesystem route reports about a path, taken from lstat.
//! Owner and group names come from `/etc/passwd` and `/etc/group` read directly (no NSS; the
//! binary is static), with the numeric id as a string when there is no entry (DECISIONS D16).
//! Also the wire form of permission modes: octal digits written as a decimal integer.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::{path, FsError};
use crate::os::accounts;

/// One file as the API reports it. Every key is required by the Python SDK. Serialised as
/// [`FileInfoRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute, cleaned path.
    pub path: String,
    /// `file`, `directory`, `symlink` or `other` (from lstat).
    pub kind: &'static str,
    pub size: u64,
    /// mtime, RFC 3339 in UTC.
    pub modified_at: Timestamp,
    /// ctime (inode change time, as upstream), RFC 3339 in UTC.
    pub created_at: Timestamp,
    pub owner: Name,
    pub group: Name,
    /// Permission bits as octal digits in a decimal integer (0o644 → 644).
    pub mode: u32,
}

/// The wire form of a [`FileInfo`], borrowed: a FileInfo serialises through it, and the search
/// writes it straight from an lstat (no path `String`, no shared name's reference count touched
/// per entry).
#[derive(Debug, Serialize)]
pub struct FileInfoRef<'a> {
    pub path: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub modified_at: Timestamp,
    pub created_at: Timestamp,
    pub owner: &'a str,
    pub group: &'a str,
    pub mode: u32,
}

impl Serialize for FileInfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        FileInfoRef {
            path: &self.path,
            kind: self.kind,
            size: self.size,
            modified_at: self.modified_at,
            created_at: self.created_at,
            owner: self.owner.as_str(),
            group: self.group.as_str(),
            mode: self.mode,
        }
        .serialize(s)
    }
}

/// A user or group name (or a numeric id as text). Cheap to clone: walks report the same few
/// names for thousands of entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A point in time serialised as RFC 3339 in UTC with 0, 3, 6 or 9 fraction digits. Formatted
/// on a stack buffer (no allocation): walks format two per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    pub fn new(secs: i64, nanos: i64) -> Timestamp {
        Timestamp { secs, nanos: nanos.clamp(0, 999_999_999) as u32 }
    }

    /// Writes the RFC 3339 text into `buf`; returns its length. Years outside 0..=9999 are
    /// left to chrono (`None`).
    fn format(&self, buf: &mut [u8; 32]) -> Option<usize> {
        self.format_secs(buf).then(|| self.format_fraction(buf))
    }

    /// `YYYY-MM-DDTHH:MM:SS` into `buf[..19]`; false for years outside 0..=9999.
    fn format_secs(&self, buf: &mut [u8; 32]) -> bool {
        let days = self.secs.div_euclid(86_400);
        let sod = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return false;
        }
        let two = |b: &mut [u8], v: i64| {
            b[0] = b'0' + (v / 10) as u8;
            b[1] = b'0' + (v % 10) as u8;
        };
        two(&mut buf[0..2], y / 100);
        two(&mut buf[2..4], y % 100);
        buf[4] = b'-';
        two(&mut buf[5..7], m);
        buf[7] = b'-';
        two(&mut buf[8..10], d);
        buf[10] = b'T';
        two(&mut buf[11..13], sod / 3600);
        buf[13] = b':';
        two(&mut buf[14..16], sod / 60 % 60);
        buf[16] = b':';
        two(&mut buf[17..19], sod % 60);
        true
    }

    /// The fraction (0, 3, 6 or 9 digits, as Go prints it) and `Z` from `buf[19]` on; returns
    /// the whole text's length.
    fn format_fraction(&self, buf: &mut [u8; 32]) -> usize {
        let mut len = 19;
        let (digits, mut frac) = match self.nanos {
            0 => (0, 0),
            n if n % 1_000_000 == 0 => (3, n / 1_000_000),
            n if n % 1_000 == 0 => (6, n / 1_000),
            n => (9, n),
        };
        if digits > 0 {
            buf[len] = b'.';
            for i in (0..digits).rev() {
                buf[len + 1 + i] = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            len += 1 + digits;
        }
        buf[len] = b'Z';
        len + 1
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 32];
        match self.format(&mut buf) {
            Some(n) => f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default()),
            None => f.write_str(&rfc3339(self.secs, i64::from(self.nanos))),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        match self.format(&mut buf) {
            Some(n) => s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default()),
            None => s.serialize_str(&rfc3339(self.secs, i64::from(self.nanos))),
        }
    }
}

/// Users and groups from `/etc/passwd` and `/etc/group`, read once per request.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    users: HashMap<u32, Name>,
    groups: HashMap<u32, Name>,
    user_ids: HashMap<String, u32>,
    group_ids: HashMap<String, u32>,
}

impl Accounts {
    /// Reads the system's account files (missing files mean no names).
    pub fn load() -> Accounts {
        Accounts::parse(&accounts::read_passwd(), &accounts::read_group())
    }

    /// Parses passwd and group file contents (`name:x:id:...`); the first entry for an id or
    /// name wins, malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let mut a = Accounts::default();
        for u in accounts::users(passwd) {
            a.users.entry(u.uid).or_insert_with(|| Name(u.name.into()));
            a.user_ids.entry(u.name.to_string()).or_insert(u.uid);
        }
        for g in accounts::groups(group) {
            a.groups.entry(g.gid).or_insert_with(|| Name(g.name.into()));
            a.group_ids.entry(g.name.to_string()).or_insert(g.gid);
        }
        a
    }

    /// The user name of `uid`, or the number as a string.
    pub fn user_name(&self, uid: u32) -> Name {
        self.users.get(&uid).cloned().unwrap_or_else(|| Name(uid.to_string().into()))
    }

    /// The group name of `gid`, or the number as a string.
    pub fn group_name(&self, gid: u32) -> Name {
        self.groups.get(&gid).cloned().unwrap_or_else(|| Name(gid.to_string().into()))
    }

    /// The uid of a user name, or of a numeric string.
    pub fn uid(&self, name: &str) -> Option<u32> {
        self.user_ids.get(name).copied().or_else(|| name.parse().ok())
    }

    /// The gid of a group name, or of a numeric string.
    pub fn gid(&self, name: &str) -> Option<u32> {
        self.group_ids.get(name).copied().or_else(|| name.parse().ok())
    }
}

/// The wire form of a mode: the permission bits written in octal, read as decimal (0o755 → 755,
/// 0o4755 → 755).
pub fn mode_to_wire(mode: u32) -> u32 {
    let bits = mode & 0o777;
    (bits >> 6) * 100 + ((bits >> 3) & 7) * 10 + (bits & 7)
}

/// Reads a wire mode (decimal digits meant as octal: 755 → 0o755). Digits 8 and 9, negative
/// values and values above 7777 are rejected.
pub fn mode_from_wire(value: i64) -> Result<u32, FsError> {
    let bad = || FsError::Failed(format!("invalid file mode {value}: not an octal number"));
    if !(0..=7777).contains(&value) {
        return Err(bad());
    }
    u32::from_str_radix(&value.to_string(), 8).map_err(|_| bad())
}

/// RFC 3339 in UTC with the precision the timestamp has (0, 3, 6 or 9 fraction digits).
pub fn rfc3339(secs: i64, nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The type name of an lstat result.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "file"
    } else {
        // FIFOs, sockets and devices.
        "other"
    }
}

/// Builds the FileInfo of `path` from its (lstat) metadata.
pub fn from_metadata(path: &Path, meta: &Metadata, accounts: &Accounts) -> FileInfo {
    from_metadata_owned(path.to_string_lossy().into_owned(), meta, accounts)
}

/// [`from_metadata`] for a path string the caller already owns (saves a copy per entry).
pub fn from_metadata_owned(path: String, meta: &Metadata, accounts: &Accounts) -> FileInfo {
    FileInfo {
        path,
        kind: kind_of(meta),
        size: meta.size(),
        modified_at: Timestamp::new(meta.mtime(), meta.mtime_nsec()),
        created_at: Timestamp::new(meta.ctime(), meta.ctime_nsec()),
        owner: accounts.user_name(meta.uid()),
        group: accounts.group_name(meta.gid()),
        mode: mode_to_wire(meta.mode()),
    }
}

/// The wire form of `path` from a raw lstat (the search stats relative to an open directory,
/// which std's `Metadata` cannot come from), with its owner and group names.
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
pub fn from_stat<'a>(path: &'a str, st: &rustix::fs::Stat, owner: &'a str, group: &'a str) -> FileInfoRef<'a> {
    use rustix::fs::FileType;
    let mode = st.st_mode as u32;
    FileInfoRef {
        path,
        kind: match FileType::from_raw_mode(mode) {
            FileType::Symlink => "symlink",
            FileType::Directory => "directory",
            FileType::RegularFile => "file",
            _ => "other",
        },
        size: st.st_size as u64,
        modified_at: Timestamp::new(st.st_mtime as i64, st.st_mtime_nsec as i64),
        created_at: Timestamp::new(st.st_ctime as i64, st.st_ctime_nsec as i64),
        owner,
        group,
        mode: mode_to_wire(mode),
    }
}

/// lstat of an absolute path as a FileInfo.
pub fn lstat_info(abs: &Path, accounts: &Accounts) -> Result<FileInfo, FsError> {
    let meta = std::fs::symlink_metadata(abs).map_err(|e| FsError::io("lstat", abs, e))?;
    Ok(from_metadata(abs, &meta, accounts))
}

/// `GET /files/info`: each path (as given) with its FileInfo, in order; the first failure stops.
/// An empty path is refused (400) before anything is looked at.
pub fn info_many(paths: &[String]) -> Result<Vec<(String, FileInfo)>, FsError> {
    path::check_all(paths.iter().map(String::as_str))?;
    let accounts = Accounts::load();
    paths.iter().map(|p| Ok((p.clone(), lstat_info(&path::resolve_checked(p)?, &accounts)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_conversion_table() {
        for (mode, wire) in [(0o755, 755), (0o644, 644), (0o4755, 755), (0, 0), (0o7, 7), (0o100600, 600)] {
            assert_eq!(mode_to_wire(mode), wire, "{mode:o}");
        }
        for (wire, mode) in [(755, 0o755), (644, 0o644), (0, 0), (7, 0o7), (4755, 0o4755)] {
            assert_eq!(mode_from_wire(wire).unwrap(), mode, "{wire}");
        }
        for bad in [789, -1, 8, 19, 77777] {
            assert!(mode_from_wire(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accounts_parse_and_fallback() {
        let a = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\n# c\nnobody:x:65534:65534::/:/x\nbroken\nroot2:x:0:0::/:/x\n",
            "root:x:0:\nnogroup:x:65534:\n",
        );
        assert_eq!(a.user_name(0).as_str(), "root");
        assert_eq!(a.user_name(65534).as_str(), "nobody");
        assert_eq!(a.user_name(1234).as_str(), "1234");
        assert_eq!(a.group_name(65534).as_str(), "nogroup");
        assert_eq!(a.group_name(7).as_str(), "7");
        assert_eq!(a.uid("nobody"), Some(65534));
        assert_eq!(a.uid("1000"), Some(1000));
        assert_eq!(a.uid("ghost"), None);
        assert_eq!(a.gid("nogroup"), Some(65534));
    }

    #[test]
    fn rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000, 123_000_000), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(1_700_000_000, 123_456_789), "2023-11-14T22:13:20.123456789Z");
    }

    #[test]
    fn from_stat_and_from_metadata_agree() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let fifo = dir.path().join("p");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
        let accounts = Accounts::load();
        for path in [file, dir.path().join("l"), fifo, dir.path().to_path_buf()] {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let st = rustix::fs::statat(rustix::fs::CWD, &path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
            let (owner, group) = (accounts.user_name(st.st_uid), accounts.group_name(st.st_gid));
            let fast = from_stat(path.to_str().unwrap(), &st, owner.as_str(), group.as_str());
            let info = from_metadata(&path, &meta, &accounts);
            assert_eq!(serde_json::to_string(&fast).unwrap(), serde_json::to_string(&info).unwrap(), "{path:?}");
        }
    }

    #[test]
    fn fast_timestamp_matches_chrono() {
        let secs = [
            0,
            1,
            59,
            86_399,
            86_400,
            951_782_400, // 2000-02-29
            951_868_799,
            1_700_000_000,
            4_102_444_800, // 2100-01-01
            253_402_300_799,
            -1,
            -86_401,
            -62_167_219_200, // 0000-01-01
        ];
        for s in secs {
            for n in [0, 1, 999, 1_000, 120_000, 5_000_000, 123_456_789, 999_999_999] {
                let t = Timestamp::new(s, n);
                assert_eq!(t.to_string(), rfc3339(s, n), "{s}.{n}");
                assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", rfc3339(s, n)));
            }
        }
        // Many pseudo-random instants over years 0..=9999, every fraction precision.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let s = (x >> 11) as i64 % 315_537_897_600 - 62_167_219_200;
            let n = [0, (x % 1000) as i64 * 1_000_000, (x % 1_000_000) as i64 * 1_000, (x % 1_000_000_000) as i64]
                [(x >> 60) as usize % 4];
            let t = Timestamp::new(s, n);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", rfc3339(s, n)), "{s}.{n}");
        }
        // Outside four-digit years chrono takes over.
        assert_eq!(Timestamp::new(253_402_300_800, 0).to_string(), rfc3339(253_402_300_800, 0));
    }
}
