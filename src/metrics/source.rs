//! Reading CPU and memory figures from a `/proc` tree and a cgroup v2 tree (DECISIONS D40).
//!
//! Everything here is a synchronous function of a [`SysRoot`] (the two directories it reads), so
//! tests can point it at fixture trees. cgroup v2 limits win where they exist: `cpu.max` gives the
//! CPU count and `cpu.stat` the usage, `memory.max`/`memory.current` (minus `inactive_file`, as
//! `docker stats` does) the memory. Without a limit (`max`), without cgroup v2 (v1 only, or no
//! cgroup at all) the host figures from `/proc/stat` and `/proc/meminfo` are used.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::MetricsError;

/// Where the figures are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    /// A procfs tree: `stat`, `meminfo`, `self/cgroup` are read.
    pub proc_root: PathBuf,
    /// The cgroup v2 mount (`/sys/fs/cgroup`); a v1 layout or a missing directory means "no cgroup".
    pub cgroup_root: PathBuf,
}

impl SysRoot {
    /// The real system: `/proc` and `/sys/fs/cgroup`.
    pub fn host() -> SysRoot {
        SysRoot { proc_root: PathBuf::from("/proc"), cgroup_root: PathBuf::from("/sys/fs/cgroup") }
    }
}

/// A cumulative CPU counter; two of them make a usage percentage (see [`cpu_used_pct`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuCounter {
    /// Host-wide `/proc/stat` jiffies: busy and total (busy + idle + iowait).
    Host { busy: u64, total: u64 },
    /// A cgroup's `cpu.stat` `usage_usec`, read at `at`, with `capacity` CPUs available to it.
    Cgroup { usage_usec: u64, at: Instant, capacity: f64 },
}

impl CpuCounter {
    /// The counter at boot, when one is known: the host's jiffies start at zero, so the first window
    /// can be "since boot" without waiting. A cgroup's creation time is not known: `None`.
    pub fn baseline(&self) -> Option<CpuCounter> {
        match self {
            CpuCounter::Host { .. } => Some(CpuCounter::Host { busy: 0, total: 0 }),
            CpuCounter::Cgroup { .. } => None,
        }
    }
}

/// One CPU reading: how many CPUs the container may use, and the usage counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuReading {
    /// `ceil(quota / period)` capped at the host's count, or the host's count without a limit.
    pub count: u32,
    pub counter: CpuCounter,
}

/// Memory figures in bytes; `used <= total` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    pub total: u64,
    pub used: u64,
}

/// CPU busy percentage between two readings of the same source, clamped to 0–100. `None` when the
/// sources differ (a limit appeared or went away) or no time passed.
pub fn cpu_used_pct(prev: &CpuCounter, cur: &CpuCounter) -> Option<f64> {
    let pct = match (prev, cur) {
        (CpuCounter::Host { busy: b0, total: t0 }, CpuCounter::Host { busy: b1, total: t1 }) => {
            let total = t1.checked_sub(*t0).filter(|t| *t > 0)?;
            let busy = b1.saturating_sub(*b0);
            busy as f64 * 100.0 / total as f64
        }
        (
            CpuCounter::Cgroup { usage_usec: u0, at: a0, .. },
            CpuCounter::Cgroup { usage_usec: u1, at: a1, capacity },
        ) => {
            let wall_usec = a1.checked_duration_since(*a0)?.as_secs_f64() * 1e6;
            if wall_usec <= 0.0 || *capacity <= 0.0 {
                return None;
            }
            u1.saturating_sub(*u0) as f64 * 100.0 / (wall_usec * capacity)
        }
        _ => return None,
    };
    Some(clamp_pct(pct))
}

fn clamp_pct(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

fn read(path: &Path) -> Result<String, MetricsError> {
    std::fs::read_to_string(path).map_err(|e| MetricsError::Read { path: path.to_path_buf(), reason: e.to_string() })
}

fn parse_err(path: &Path, reason: impl Into<String>) -> MetricsError {
    MetricsError::Parse { path: path.to_path_buf(), reason: reason.into() }
}

/// `key value` lines (`cpu.stat`, `memory.stat`): the value of `key`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

// ---- host (/proc) ----

/// The host's CPU count: the `cpuN` lines of `/proc/stat`.
fn host_cpu_count(root: &SysRoot) -> Result<u32, MetricsError> {
    let path = root.proc_root.join("stat");
    let n = read(&path)?
        .lines()
        .filter(|l| l.strip_prefix("cpu").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())))
        .count();
    if n == 0 {
        return Err(parse_err(&path, "no cpuN lines"));
    }
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The aggregate `cpu` line of `/proc/stat`: busy and total jiffies.
fn host_cpu_counter(root: &SysRoot) -> Result<CpuCounter, MetricsError> {
    let path = root.proc_root.join("stat");
    let text = read(&path)?;
    let line = text.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| parse_err(&path, "no aggregate cpu line"))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    if fields.len() < 4 {
        return Err(parse_err(&path, "short cpu line"));
    }
    // user nice system idle iowait irq softirq steal (guest time is already inside user and nice).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(CpuCounter::Host { busy: total.saturating_sub(idle), total })
}

/// `/proc/meminfo`: Total, and Used = Total − Free − Buffers − Cached (upstream's formula).
fn host_memory(root: &SysRoot) -> Result<MemoryReading, MetricsError> {
    let path = root.proc_root.join("meminfo");
    let text = read(&path)?;
    let kib = |key: &str| keyed_value(&text, key).map(|v| v.saturating_mul(1024));
    let total = kib("MemTotal:").filter(|t| *t > 0).ok_or_else(|| parse_err(&path, "no MemTotal"))?;
    let free = kib("MemFree:").unwrap_or(0) + kib("Buffers:").unwrap_or(0) + kib("Cached:").unwrap_or(0);
    Ok(MemoryReading { total, used: total.saturating_sub(free) })
}

// ---- cgroup v2 ----

/// The cgroup v2 directories that apply to this process, innermost first, ending at the mount
/// root. Empty when there is no cgroup v2 (v1 only, or nothing mounted).
fn cgroup_chain(root: &SysRoot) -> Vec<PathBuf> {
    let mount = &root.cgroup_root;
    if !mount.join("cgroup.controllers").is_file() {
        return Vec::new();
    }
    // `0::<path>` in /proc/self/cgroup. Inside a cgroup namespace the path is `/` (or, for a
    // process outside the namespace root, `/../..`): then the mount root is our cgroup.
    let rel = std::fs::read_to_string(root.proc_root.join("self/cgroup"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)))
        .unwrap_or_default();
    let rel = rel.trim().trim_start_matches('/');
    let mut leaf = mount.clone();
    if !rel.is_empty() && !rel.split('/').any(|c| c == ".." || c == ".") {
        let candidate = mount.join(rel);
        if candidate.is_dir() {
            leaf = candidate;
        }
    }
    let mut chain = Vec::new();
    let mut dir = leaf.as_path();
    loop {
        chain.push(dir.to_path_buf());
        if dir == mount.as_path() {
            break;
        }
        match dir.parent() {
            Some(p) if p.starts_with(mount) => dir = p,
            _ => break,
        }
    }
    chain
}

/// The tightest `cpu.max` in the chain: (directory, quota / period in CPUs).
fn cpu_limit(chain: &[PathBuf]) -> Option<(PathBuf, f64)> {
    chain
        .iter()
        .filter_map(|dir| {
            let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
            let mut it = text.split_whitespace();
            let quota: f64 = it.next()?.parse().ok()?; // "max" does not parse: no limit
            let period: f64 = it.next().and_then(|p| p.parse().ok()).unwrap_or(100_000.0);
            (quota > 0.0 && period > 0.0).then(|| (dir.clone(), quota / period))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The tightest `memory.max` in the chain: (directory, bytes).
fn memory_limit(chain: &[PathBuf]) -> Option<(PathBuf, u64)> {
    chain
        .iter()
        .filter_map(|dir| {
            let max: u64 = std::fs::read_to_string(dir.join("memory.max")).ok()?.trim().parse().ok()?;
            Some((dir.clone(), max))
        })
        .min_by_key(|(_, max)| *max)
}

/// `cpuset.cpus.effective` of the innermost cgroup that has one: how many CPUs we may run on.
fn cpuset_count(chain: &[PathBuf]) -> Option<u32> {
    chain.iter().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("cpuset.cpus.effective")).ok()?;
        count_cpu_list(text.trim())
    })
}

/// Counts a CPU list such as `0-3,5,7-8`; `None` when empty or malformed.
fn count_cpu_list(list: &str) -> Option<u32> {
    let mut n: u32 = 0;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let a = part.trim().parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.saturating_add(b.checked_sub(a)? + 1);
    }
    (n > 0).then_some(n)
}

/// Reads the CPU count and usage counter: the cgroup's when `cpu.max` limits it, else the host's.
pub fn read_cpu(root: &SysRoot) -> Result<CpuReading, MetricsError> {
    let chain = cgroup_chain(root);
    let mut host = host_cpu_count(root)?;
    if let Some(n) = cpuset_count(&chain) {
        host = host.min(n);
    }
    if let Some((dir, cpus)) = cpu_limit(&chain) {
        let path = dir.join("cpu.stat");
        let usage_usec = keyed_value(&read(&path)?, "usage_usec").ok_or_else(|| parse_err(&path, "no usage_usec"))?;
        let capacity = cpus.min(f64::from(host));
        // Rounded up (1.5 CPUs → 2), at least 1, at most the host's count.
        let count = (capacity.ceil() as u32).clamp(1, host);
        return Ok(CpuReading { count, counter: CpuCounter::Cgroup { usage_usec, at: Instant::now(), capacity } });
    }
    Ok(CpuReading { count: host, counter: host_cpu_counter(root)? })
}

/// Reads total and used memory: the cgroup's when `memory.max` limits it, else the host's.
pub fn read_memory(root: &SysRoot) -> Result<MemoryReading, MetricsError> {
    let host = host_memory(root)?;
    let chain = cgroup_chain(root);
    let Some((dir, max)) = memory_limit(&chain) else { return Ok(host) };
    let path = dir.join("memory.current");
    let current: u64 = read(&path)?.trim().parse().map_err(|_| parse_err(&path, "not a number"))?;
    let inactive = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|t| keyed_value(&t, "inactive_file"))
        .unwrap_or(0);
    let total = max.min(host.total).max(1);
    Ok(MemoryReading { total, used: current.saturating_sub(inactive).min(total) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GIB: u64 = 1 << 30;

    /// A fixture tree: `proc/` with stat, meminfo, self/cgroup, and `cgroup/` as given.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new(cpus: usize, self_cgroup: &str) -> Tree {
            let dir = tempfile::tempdir().unwrap();
            let t = Tree { dir };
            let mut stat = String::from("cpu  100 0 100 700 100 0 0 0 0 0\n");
            for i in 0..cpus {
                stat.push_str(&format!("cpu{i} 25 0 25 175 25 0 0 0 0 0\n"));
            }
            stat.push_str("intr 1 2 3\nctxt 10\n");
            t.write("proc/stat", &stat);
            // 8 GiB total, 2 GiB free, 1 GiB buffers, 1 GiB cached: 4 GiB used.
            t.write(
                "proc/meminfo",
                "MemTotal:        8388608 kB\nMemFree:         2097152 kB\nMemAvailable:    4194304 kB\n\
                 Buffers:         1048576 kB\nCached:          1048576 kB\nSwapCached:            0 kB\n",
            );
            t.write("proc/self/cgroup", self_cgroup);
            std::fs::create_dir_all(t.dir.path().join("cgroup")).unwrap();
            t
        }
        fn write(&self, rel: &str, text: &str) {
            let p = self.dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        fn root(&self) -> SysRoot {
            SysRoot { proc_root: self.dir.path().join("proc"), cgroup_root: self.dir.path().join("cgroup") }
        }
        /// A cgroup v2 mount whose root has the usual root files.
        fn v2(self) -> Tree {
            self.write("cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
            self.write("cgroup/cpu.stat", "usage_usec 999999999\nuser_usec 1\nsystem_usec 1\n");
            self
        }
        fn v2_group(&self, rel: &str, cpu_max: &str, mem_max: &str, usage_usec: u64, current: u64, inactive: u64) {
            self.write(&format!("cgroup/{rel}/cpu.max"), cpu_max);
            self.write(&format!("cgroup/{rel}/memory.max"), mem_max);
            self.write(&format!("cgroup/{rel}/cpu.stat"), &format!("usage_usec {usage_usec}\nuser_usec 0\n"));
            self.write(&format!("cgroup/{rel}/memory.current"), &format!("{current}\n"));
            self.write(&format!("cgroup/{rel}/memory.stat"), &format!("anon 5\nfile 7\ninactive_file {inactive}\n"));
        }
    }

    #[test]
    fn no_cgroup_at_all_uses_host_figures() {
        let t = Tree::new(4, "0::/\n");
        std::fs::remove_dir_all(t.dir.path().join("cgroup")).unwrap();
        let cpu = read_cpu(&t.root()).unwrap();
        assert_eq!(cpu.count, 4);
        assert_eq!(cpu.counter, CpuCounter::Host { busy: 200, total: 1000 });
        let mem = read_memory(&t.root()).unwrap();
        assert_eq!(mem, MemoryReading { total: 8 * GIB, used: 4 * GIB });
    }

    #[test]
    fn cgroup_v1_only_uses_host_figures() {
        let t = Tree::new(2, "4:memory:/docker/abc\n1:cpu:/docker/abc\n");
        t.write("cgroup/memory/docker/abc/memory.limit_in_bytes", "1073741824\n");
        t.write("cgroup/cpu/docker/abc/cpu.cfs_quota_us", "50000\n");
        let cpu = read_cpu(&t.root()).unwrap();
        assert_eq!(cpu.count, 2);
        assert!(matches!(cpu.counter, CpuCounter::Host { .. }));
        assert_eq!(read_memory(&t.root()).unwrap(), MemoryReading { total: 8 * GIB, used: 4 * GIB });
    }

    #[test]
    fn cgroup_v2_unlimited_uses_host_figures() {
        let t = Tree::new(8, "0::/docker/abc\n").v2();
        t.v2_group("docker/abc", "max 100000\n", "max\n", 5, GIB, 0);
        let cpu = read_cpu(&t.root()).unwrap();
        assert_eq!(cpu.count, 8);
        assert!(matches!(cpu.counter, CpuCounter::Host { .. }));
        assert_eq!(read_memory(&t.root()).unwrap().total, 8 * GIB);
    }

    #[test]
    fn cgroup_v2_limited_uses_quota_and_memory_max() {
        let t = Tree::new(8, "0::/docker/abc\n").v2();
        // 1.5 CPUs, 2 GiB, 1.5 GiB charged of which 0.5 GiB inactive file cache.
        t.v2_group("docker/abc", "150000 100000\n", &format!("{}\n", 2 * GIB), 1_000, 3 * GIB / 2, GIB / 2);
        let cpu = read_cpu(&t.root()).unwrap();
        assert_eq!(cpu.count, 2, "1.5 CPUs round up");
        match cpu.counter {
            CpuCounter::Cgroup { usage_usec, capacity, .. } => {
                assert_eq!(usage_usec, 1_000);
                assert!((capacity - 1.5).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_memory(&t.root()).unwrap(), MemoryReading { total: 2 * GIB, used: GIB });
    }

    #[test]
    fn cgroup_v2_namespaced_root_and_parent_limits() {
        // Inside a cgroup namespace /proc/self/cgroup says `0::/` and the mount root is our cgroup.
        let t = Tree::new(4, "0::/\n");
        t.write("cgroup/cgroup.controllers", "cpu memory\n");
        t.v2_group("", "200000 100000\n", &format!("{GIB}\n"), 10, GIB / 4, 0);
        let cpu = read_cpu(&t.root()).unwrap();
        assert_eq!(cpu.count, 2);
        assert_eq!(read_memory(&t.root()).unwrap(), MemoryReading { total: GIB, used: GIB / 4 });

        // A limit on a parent applies to the child we run in.
        let t = Tree::new(4, "0::/pod/ctr\n").v2();
        t.v2_group("pod", "100000 100000\n", &format!("{GIB}\n"), 10, GIB / 2, 0);
        t.v2_group("pod/ctr", "max 100000\n", "max\n", 5, GIB / 8, 0);
        assert_eq!(read_cpu(&t.root()).unwrap().count, 1);
        assert_eq!(read_memory(&t.root()).unwrap(), MemoryReading { total: GIB, used: GIB / 2 });
    }

    #[test]
    fn figures_are_clamped_to_valid_ranges() {
        // A quota above the host's CPUs, a limit above host memory, usage above the limit.
        let t = Tree::new(2, "0::/c\n").v2();
        t.v2_group("c", "1000000 100000\n", &format!("{}\n", 64 * GIB), 0, 100 * GIB, 0);
        t.write("cgroup/c/cpuset.cpus.effective", "0-1\n");
        assert_eq!(read_cpu(&t.root()).unwrap().count, 2);
        let mem = read_memory(&t.root()).unwrap();
        assert_eq!(mem.total, 8 * GIB);
        assert_eq!(mem.used, 8 * GIB);
        // Busy time going backwards (counter reset) and absurd ratios clamp to 0..=100.
        let at = Instant::now();
        let later = at + Duration::from_secs(1);
        let a = CpuCounter::Cgroup { usage_usec: 0, at, capacity: 1.0 };
        let b = CpuCounter::Cgroup { usage_usec: 50_000_000, at: later, capacity: 1.0 };
        assert_eq!(cpu_used_pct(&a, &b), Some(100.0));
        assert_eq!(
            cpu_used_pct(&b, &CpuCounter::Cgroup { usage_usec: 0, at: later + Duration::from_secs(1), capacity: 1.0 }),
            Some(0.0)
        );
        assert_eq!(cpu_used_pct(&a, &CpuCounter::Host { busy: 1, total: 2 }), None);
    }

    #[test]
    fn cpu_percentages() {
        let h0 = CpuCounter::Host { busy: 100, total: 1000 };
        let h1 = CpuCounter::Host { busy: 150, total: 1200 };
        assert_eq!(cpu_used_pct(&h0, &h1), Some(25.0));
        assert_eq!(cpu_used_pct(&h0, &h0), None, "no time passed");
        assert_eq!(cpu_used_pct(&h0.baseline().unwrap(), &h0), Some(10.0));
        let at = Instant::now();
        let c0 = CpuCounter::Cgroup { usage_usec: 0, at, capacity: 2.0 };
        let c1 = CpuCounter::Cgroup { usage_usec: 500_000, at: at + Duration::from_secs(1), capacity: 2.0 };
        assert!((cpu_used_pct(&c0, &c1).unwrap() - 25.0).abs() < 1e-9);
        assert!(c0.baseline().is_none());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
    }

    #[test]
    fn real_system_gives_valid_figures() {
        let cpu = read_cpu(&SysRoot::host()).unwrap();
        assert!(cpu.count >= 1);
        let mem = read_memory(&SysRoot::host()).unwrap();
        assert!(mem.total > 0 && mem.used <= mem.total);
    }
}
