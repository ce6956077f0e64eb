//! `/proc` readings for the observable gauges of reference §13 that `GET /metrics` does not have:
//! process count, network bytes, active connections. Each reader returns `None` when its file
//! cannot be read; pure parsers are table-tested.

use std::path::Path;

/// Number of numeric entries (processes) in `proc`.
pub fn process_count(proc: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(proc).ok()?;
    Some(entries.filter_map(Result::ok).filter(|e| e.file_name().to_str().is_some_and(is_pid)).count() as u64)
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// Received and sent bytes summed over every interface but `lo`, from `/proc/net/dev` text.
pub fn parse_net_dev(text: &str) -> Option<(u64, u64)> {
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut seen = false;
    for line in text.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else { continue };
        if iface.trim() == "lo" {
            seen = true;
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 9 {
            return None;
        }
        rx = rx.saturating_add(f[0].parse().ok()?);
        tx = tx.saturating_add(f[8].parse().ok()?);
        seen = true;
    }
    seen.then_some((rx, tx))
}

/// Rows of a `/proc/net/{tcp,tcp6,udp,udp6}` text; with `established_only`, only rows in state
/// `01` (TCP_ESTABLISHED).
pub fn count_sockets(text: &str, established_only: bool) -> u64 {
    text.lines()
        .skip(1)
        .filter(|l| {
            let state = l.split_whitespace().nth(3);
            state.is_some() && (!established_only || state == Some("01"))
        })
        .count() as u64
}

/// Network bytes (in, out) of `proc`.
pub fn network_io(proc: &Path) -> Option<(u64, u64)> {
    parse_net_dev(&std::fs::read_to_string(proc.join("net/dev")).ok()?)
}

/// (established TCP connections, UDP sockets) of `proc`, IPv4 and IPv6.
pub fn connections(proc: &Path) -> Option<(u64, u64)> {
    let read = |name: &str| std::fs::read_to_string(proc.join("net").join(name)).ok();
    let tcp4 = read("tcp")?;
    let udp4 = read("udp")?;
    let tcp = count_sockets(&tcp4, true) + read("tcp6").map(|t| count_sockets(&t, true)).unwrap_or(0);
    let udp = count_sockets(&udp4, false) + read("udp6").map(|t| count_sockets(&t, false)).unwrap_or(0);
    Some((tcp, udp))
}

/// The gauges of `/metrics/prometheus` and of the OpenTelemetry observables: `sampler`'s CPU and
/// memory (as `GET /metrics` reports them, cgroup-aware) and the `/proc` readings; each left out
/// when unreadable.
pub async fn snapshot(sampler: &crate::metrics::MetricsSampler) -> super::prom::Snapshot {
    use super::prom::Snapshot;
    const MIB: f64 = 1024.0 * 1024.0;
    let record = sampler.current().await.ok();
    let mut snap = tokio::task::spawn_blocking(|| {
        let proc = std::path::Path::new("/proc");
        let net = network_io(proc);
        let conns = connections(proc);
        Snapshot {
            process_count: process_count(proc),
            network_in_bytes: net.map(|n| n.0),
            network_out_bytes: net.map(|n| n.1),
            tcp_connections: conns.map(|c| c.0),
            udp_connections: conns.map(|c| c.1),
            ..Snapshot::default()
        }
    })
    .await
    .unwrap_or_default();
    if let Some(m) = record {
        snap.cpu_used_pct = Some(m.cpu_used_pct);
        snap.cpu_count = Some(m.cpu_count);
        snap.mem_used_bytes = Some((m.mem_used_mib * MIB).round());
        snap.mem_total_bytes = Some((m.mem_total_mib * MIB).round());
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x61_net_dev_sums_all_but_lo() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  \
eth0: 2000      20    0    0    0     0          0         0     3000      30    0    0    0     0       0          0\n  \
eth1: 5      1    0    0    0     0          0         0     7      1    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(text), Some((2005, 3007)));
        assert_eq!(parse_net_dev("a\nb\n"), None);
    }

    #[test]
    fn x61_socket_rows() {
        let text =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
0: 0100007F:AE3C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   \
1: 0100007F:AE3C 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert_eq!(count_sockets(text, true), 1);
        assert_eq!(count_sockets(text, false), 2);
    }

    #[test]
    fn x61_reads_this_machine() {
        let proc = Path::new("/proc");
        assert!(process_count(proc).unwrap() >= 1);
        assert!(connections(proc).is_some());
    }
}
