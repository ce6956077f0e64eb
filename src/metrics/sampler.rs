//! [`MetricsSampler`]: a background task that keeps the latest one-second CPU window so that
//! `GET /metrics` answers at once (upstream blocks for a 1 s window on every call).
//!
//! The task starts on the first request and stops after [`IDLE_STOP`] without requests and without
//! watchers; the next request starts it again. It publishes each window on a `watch` channel:
//! `/metrics/watch` streams follow that channel, so every watcher gets one record per window and a
//! watcher that goes away only drops its receiver. Memory is read when a record is assembled.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::source::{self, CpuCounter, SysRoot};
use super::{Metrics, MetricsError};

/// Length of a CPU window once the sampler runs.
pub const TICK: Duration = Duration::from_secs(1);
/// The first window of a cgroup counter, whose value at creation is unknown: short, so the first
/// request does not wait long. (The host's counters start at boot, so their first figure is the
/// average since boot and needs no wait.)
const FIRST_WINDOW: Duration = Duration::from_millis(20);
/// The sampler stops after this long without a request while nobody watches.
pub const IDLE_STOP: Duration = Duration::from_secs(60);
/// Upper bound on how long a request waits for the first window.
const FIRST_SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

const MIB: f64 = 1024.0 * 1024.0;

/// The CPU part of a record, produced once per window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuSample {
    count: u32,
    used_pct: f64,
}

type Published = Option<Result<CpuSample, MetricsError>>;

struct SamplerState {
    running: bool,
    last_demand: Instant,
}

struct Inner {
    root: SysRoot,
    idle_stop: Duration,
    shutdown: CancellationToken,
    tx: watch::Sender<Published>,
    /// Whether the task runs, and when someone last asked. A std mutex: held for a few
    /// instructions, never across an await; the task's stop decision and a request's start
    /// decision are made under it so a request can never attach to a task that is leaving.
    state: Mutex<SamplerState>,
}

/// Handle to the sampler; cheap to clone.
#[derive(Clone)]
pub struct MetricsSampler {
    inner: Arc<Inner>,
}

impl MetricsSampler {
    /// A sampler reading `root`, stopping for good when `shutdown` is cancelled.
    pub fn new(root: SysRoot, shutdown: CancellationToken) -> MetricsSampler {
        Self::with_idle_stop(root, shutdown, IDLE_STOP)
    }

    /// As [`MetricsSampler::new`] with another idle period (tests).
    pub fn with_idle_stop(root: SysRoot, shutdown: CancellationToken, idle_stop: Duration) -> MetricsSampler {
        let (tx, _) = watch::channel(None);
        let state = Mutex::new(SamplerState { running: false, last_demand: Instant::now() });
        MetricsSampler { inner: Arc::new(Inner { root, idle_stop, shutdown, tx, state }) }
    }

    /// Whether the background task currently runs.
    pub fn is_running(&self) -> bool {
        self.inner.lock().running
    }

    /// The current record: the latest CPU window and fresh memory figures. Waits only for the very
    /// first window after the sampler (re)started.
    pub async fn current(&self) -> Result<Metrics, MetricsError> {
        let mut rx = self.ensure_running();
        let cpu = first_sample(&mut rx, &self.inner.shutdown).await?;
        self.inner.assemble(cpu)
    }

    /// One record per CPU window (about one a second) until the stream is dropped or execd shuts
    /// down. A failed collection yields an `Err` item and the stream goes on.
    pub fn watch(&self) -> impl Stream<Item = Result<Metrics, MetricsError>> + Send + 'static {
        let mut rx = self.ensure_running();
        let inner = self.inner.clone();
        async_stream::stream! {
            match first_sample(&mut rx, &inner.shutdown).await {
                Ok(cpu) => yield inner.assemble(cpu),
                Err(MetricsError::ShuttingDown) => return,
                Err(e) => yield Err(e),
            }
            loop {
                // Ends on shutdown even while waiting for the next window.
                let changed = tokio::select! {
                    biased;
                    _ = inner.shutdown.cancelled() => break,
                    r = rx.changed() => r,
                };
                if changed.is_err() {
                    break;
                }
                let published = rx.borrow_and_update().clone();
                match published {
                    Some(Ok(cpu)) => yield inner.assemble(Ok(cpu)),
                    Some(Err(e)) => yield Err(e),
                    None => {}
                }
            }
        }
    }

    /// Records demand and starts the task if it is not running. The receiver is taken before the
    /// decision so the task sees it among its receivers.
    fn ensure_running(&self) -> watch::Receiver<Published> {
        let rx = self.inner.tx.subscribe();
        let mut st = self.inner.lock();
        st.last_demand = Instant::now();
        if !st.running && !self.inner.shutdown.is_cancelled() {
            st.running = true;
            // A window from an earlier run is stale.
            self.inner.tx.send_replace(None);
            tokio::spawn(run(self.inner.clone()));
        }
        rx
    }
}

/// Waits (bounded) for the first published window.
async fn first_sample(
    rx: &mut watch::Receiver<Published>,
    shutdown: &CancellationToken,
) -> Result<Result<CpuSample, MetricsError>, MetricsError> {
    // `biased`: an available sample wins over a shutdown that is already under way.
    tokio::select! {
        biased;
        r = tokio::time::timeout(FIRST_SAMPLE_TIMEOUT, rx.wait_for(Option::is_some)) => match r {
            Ok(Ok(v)) => Ok(v.clone().unwrap_or(Err(MetricsError::ShuttingDown))),
            Ok(Err(_)) => Err(MetricsError::ShuttingDown),
            Err(_) => Err(MetricsError::Timeout(FIRST_SAMPLE_TIMEOUT)),
        },
        _ = shutdown.cancelled() => Err(MetricsError::ShuttingDown),
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, SamplerState> {
        // Poisoning cannot leave the two plain fields inconsistent; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record from a CPU sample plus memory read now.
    fn assemble(&self, cpu: Result<CpuSample, MetricsError>) -> Result<Metrics, MetricsError> {
        let timestamp = chrono::Utc::now().timestamp_millis();
        let cpu = cpu?;
        let mem = source::read_memory(&self.root)?;
        let total = (mem.total as f64 / MIB).max(f64::MIN_POSITIVE);
        Ok(Metrics {
            cpu_count: f64::from(cpu.count.max(1)),
            cpu_used_pct: cpu.used_pct.clamp(0.0, 100.0),
            mem_total_mib: total,
            mem_used_mib: (mem.used as f64 / MIB).clamp(0.0, total),
            timestamp,
        })
    }

    /// Whether the task should stop now; if so it is marked stopped under the same lock.
    fn stop_if_idle(&self) -> bool {
        let mut st = self.lock();
        let idle = self.tx.receiver_count() == 0 && st.last_demand.elapsed() >= self.idle_stop;
        if idle || self.shutdown.is_cancelled() {
            st.running = false;
            // Nobody may read this window later as if it were current.
            self.tx.send_replace(None);
            return true;
        }
        false
    }
}

/// The sampler task: one CPU reading per tick, a window published per reading.
async fn run(inner: Arc<Inner>) {
    let mut prev: Option<CpuCounter> = None;
    let mut next = Instant::now();
    loop {
        // Waits for the next reading, or ends at shutdown.
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = inner.shutdown.cancelled() => {}
        }
        if inner.stop_if_idle() {
            return;
        }
        let delay = match source::read_cpu(&inner.root) {
            Ok(reading) => {
                let since = prev.and_then(|p| source::cpu_used_pct(&p, &reading.counter));
                let pct = since.or_else(|| {
                    let base = reading.counter.baseline()?;
                    source::cpu_used_pct(&base, &reading.counter)
                });
                prev = Some(reading.counter);
                match pct {
                    Some(used_pct) => {
                        inner.tx.send_replace(Some(Ok(CpuSample { count: reading.count, used_pct })));
                        TICK
                    }
                    // No earlier reading of this source yet: take a short first window.
                    None => FIRST_WINDOW,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: CPU reading failed");
                inner.tx.send_replace(Some(Err(e)));
                TICK
            }
        };
        next = Instant::now() + delay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn cgroup_tree(usage: u64) -> (tempfile::TempDir, SysRoot) {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("proc/stat", "cpu  1 0 1 8 0 0 0 0 0 0\ncpu0 1 0 1 8 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\n");
        w("proc/meminfo", "MemTotal: 1048576 kB\nMemFree: 524288 kB\nBuffers: 0 kB\nCached: 0 kB\n");
        w("proc/self/cgroup", "0::/\n");
        w("cgroup/cgroup.controllers", "cpu memory\n");
        w("cgroup/cpu.max", "100000 100000\n");
        w("cgroup/cpu.stat", &format!("usage_usec {usage}\n"));
        w("cgroup/memory.max", "max\n");
        let root = SysRoot { proc_root: dir.path().join("proc"), cgroup_root: dir.path().join("cgroup") };
        (dir, root)
    }

    #[tokio::test]
    async fn first_call_is_quick_and_valid_then_sampler_stops_when_idle() {
        let (_dir, root) = cgroup_tree(1000);
        let s = MetricsSampler::with_idle_stop(root, CancellationToken::new(), Duration::from_millis(100));
        assert!(!s.is_running());
        let t = Instant::now();
        let m = s.current().await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
        assert_eq!(m.cpu_count, 1.0);
        // The counter did not move: 0 % busy.
        assert_eq!(m.cpu_used_pct, 0.0);
        assert_eq!(m.mem_total_mib, 1024.0);
        assert_eq!(m.mem_used_mib, 512.0);
        assert!(s.is_running());
        // Nobody asks: the task stops after a tick, and a later request starts it again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.is_running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!s.is_running());
        assert!(s.current().await.is_ok());
        assert!(s.is_running());
    }

    #[tokio::test]
    async fn watchers_keep_it_running_and_end_on_shutdown() {
        let (_dir, root) = cgroup_tree(0);
        let token = CancellationToken::new();
        let s = MetricsSampler::with_idle_stop(root, token.clone(), Duration::ZERO);
        let mut w = Box::pin(s.watch());
        assert!(w.next().await.unwrap().is_ok());
        assert!(w.next().await.unwrap().is_ok(), "a second record after a tick");
        assert!(s.is_running(), "a watcher keeps the sampler alive");
        token.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), w.next()).await.unwrap();
        assert!(end.is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.is_running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!s.is_running());
        assert!(matches!(s.current().await, Err(MetricsError::ShuttingDown)));
    }

    #[tokio::test]
    async fn read_errors_are_reported_not_hung() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot { proc_root: dir.path().join("none"), cgroup_root: dir.path().join("none") };
        let s = MetricsSampler::new(root, CancellationToken::new());
        assert!(matches!(s.current().await, Err(MetricsError::Read { .. })));
    }
}
