//! Finding the cgroup hierarchies execd can write: pure parsers of `/proc/self/mountinfo` and
//! `/proc/self/cgroup` (table-tested with fixture text), applied to the live system by the
//! module's `setup`, which creates execd's parent directories.

use std::path::{Path, PathBuf};

/// The v1 controllers execd uses, by the name the kernel gives them in mount options.
pub const V1_CONTROLLERS: [&str; 6] = ["memory", "pids", "cpu", "cpuacct", "freezer", "blkio"];

/// The v2 controllers execd enables for its leaves (each only if the parent offers it).
pub const V2_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "io"];

/// A `/proc` or cgroupfs text file, read in one `read` when it fits 16 KiB (they report size 0,
/// so `fs::read_to_string` reads them 32 bytes first and doubles: 8 reads for mountinfo at every
/// start, each of which the kernel generates again up to its offset); empty when unreadable.
pub fn read_text(path: impl AsRef<Path>) -> String {
    use std::io::Read;
    let mut buf = Vec::with_capacity(16 << 10);
    match std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut buf)) {
        Ok(_) => String::from_utf8(buf).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// One cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// The cgroup path (inside the hierarchy) that is the mount's root, usually `/`.
    pub root: String,
    /// `None` for cgroup2; for v1 the controllers of the hierarchy (from the super options).
    pub controllers: Option<Vec<String>>,
}

/// Cgroup mounts listed in a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // `id parent maj:min root mount_point opts [optional...] - fstype source super_opts`
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let mount_point = PathBuf::from(unescape(l[4]));
        let root = unescape(l[3]);
        match r[0] {
            "cgroup2" => out.push(CgroupMount { mount_point, root, controllers: None }),
            "cgroup" => {
                let controllers =
                    r[2].split(',').filter(|o| V1_CONTROLLERS.contains(o)).map(str::to_string).collect::<Vec<_>>();
                out.push(CgroupMount { mount_point, root, controllers: Some(controllers) });
            }
            _ => {}
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// execd's own cgroup paths from a `/proc/self/cgroup` text: `(v2 path, [(v1 controllers, path)])`.
pub fn parse_self_cgroup(text: &str) -> (Option<String>, Vec<(Vec<String>, String)>) {
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else {
            v1.push((ctrls.split(',').map(str::to_string).collect(), path.to_string()));
        }
    }
    (v2, v1)
}

/// The directory of cgroup `path` in `mount` (`None` when the path is outside the mount's root,
/// e.g. in a cgroup namespace view that does not reach it).
pub fn dir_of(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        path
    } else {
        let r = path.strip_prefix(mount.root.as_str())?;
        if !(r.is_empty() || r.starts_with('/')) {
            return None;
        }
        r
    };
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() { mount.mount_point.clone() } else { mount.mount_point.join(rel) })
}

/// Whether `path` lies on a cgroup2 filesystem.
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn x20_mountinfo_hybrid() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 7);
        assert_eq!(m[0].controllers.as_deref(), Some(&["cpu".to_string()][..]));
        assert_eq!(m[2].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[4].controllers, Some(vec![]));
        assert_eq!(m[5].controllers, None);
        assert_eq!(m[6].controllers, Some(vec!["cpu".to_string(), "cpuacct".to_string()]));
    }

    #[test]
    fn x20_mountinfo_pure_v2_and_escapes() {
        let m = parse_mountinfo(
            "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n\
             40 23 0:40 /sub /mnt/my\\040cg rw - cgroup2 none rw\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/my cg"));
        assert_eq!(m[1].root, "/sub");
        assert!(parse_mountinfo("garbage\n\n1 2 3 - cgroup\n").is_empty());
    }

    #[test]
    fn x20_self_cgroup() {
        let (v2, v1) = parse_self_cgroup("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice/x\n");
        assert_eq!(v2.as_deref(), Some("/user.slice/x"));
        assert_eq!(v1[0], (vec!["memory".to_string()], "/process_api/abc".to_string()));
        assert_eq!(v1[1].0, vec!["cpu".to_string(), "cpuacct".to_string()]);
    }

    #[test]
    fn x20_dir_of_paths() {
        let m = CgroupMount { mount_point: "/sys/fs/cgroup".into(), root: "/".into(), controllers: None };
        assert_eq!(dir_of(&m, "/"), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(dir_of(&m, "/a/b"), Some(PathBuf::from("/sys/fs/cgroup/a/b")));
        assert_eq!(dir_of(&m, "/a/../b"), None);
        let m = CgroupMount { root: "/ns".into(), ..m };
        assert_eq!(dir_of(&m, "/ns/x"), Some(PathBuf::from("/sys/fs/cgroup/x")));
        assert_eq!(dir_of(&m, "/nsx"), None);
        assert_eq!(dir_of(&m, "/other"), None);
    }
}
