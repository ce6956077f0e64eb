//! [`AppState`]: cheap-to-clone handles to every manager plus the configuration, shared by all
//! handlers. Also the shutdown fan-out: [`AppState::stop`] asks each manager to end its work.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Everything a handler reaches, behind one `Arc`: axum clones the state into every method of
/// every route (and each `from_fn_with_state` layer into every one of its services) at start,
/// and several times per request for `State` extractors; one counter instead of one per manager
/// (BENCHMARKS.md, "One layer instead of seven").
#[derive(Clone)]
pub struct AppState(Arc<Managers>);

impl std::ops::Deref for AppState {
    type Target = Managers;

    fn deref(&self) -> &Managers {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Managers {
    pub config: Arc<Config>,
    /// Cancelled once when shutdown starts; long-lived streams watch it.
    pub shutdown: CancellationToken,
    /// Background CPU sampler behind `/metrics` (started on demand, stops on `shutdown`).
    pub metrics: crate::metrics::MetricsSampler,
    /// `/command` and stateless `/code`: running and finished commands with their journals.
    pub commands: crate::command::CommandManager,
    /// `/session`: bash sessions and their shell state.
    pub sessions: crate::session::SessionManager,
    /// `/pty`: interactive shells over WebSocket.
    pub pty: crate::pty::PtyManager,
    /// `/code` with a Jupyter language and `/code/context(s)`: Jupyter contexts and runs.
    pub code: crate::code::CodeManager,
    /// File transfer limits and the scratch space for temporary files (`fs::transfer`).
    pub transfers: crate::fs::transfer::Transfers,
    /// `/files/tus`: resumable uploads (X33), their records in `<state_dir>/tus`.
    pub tus: crate::fs::tus::TusStore,
    /// `/v1/isolated`: namespace-isolated bash sessions.
    pub isolated: crate::isolated::IsolatedManager,
    /// `/ready` (X52): the readiness checks.
    pub readiness: crate::readiness::Readiness,
    /// Metrics for `/metrics/prometheus` and the audit log (X61, X62).
    pub observability: crate::observability::Observability,
    /// `/files/watches`: file watches with a cursor (X40–X42).
    pub watches: crate::watch::WatchManager,
}

impl AppState {
    /// Builds every manager. Creates the state directory (refusing one that is not private to
    /// execd's uid, [`crate::state_dir::prepare`]).
    pub fn new(config: Config) -> std::io::Result<AppState> {
        crate::state_dir::prepare(&config.state_dir).map_err(std::io::Error::other)?;
        let commands = crate::command::CommandManager::new(crate::command::CommandOpts {
            journal_dir: config.state_dir.join("commands"),
            fresh_state: config.fresh_state,
            envs_file: config.envs_file.clone(),
            retention_ttl: config.command_retention_ttl,
            retention_count: config.command_retention_count,
            interrupt_grace: std::time::Duration::from_secs(3),
            max_line: crate::process::DEFAULT_MAX_LINE,
        })
        .map_err(|e| in_state_dir(&config.state_dir, "commands", e))?;
        let sessions = crate::session::SessionManager::new(crate::session::SessionOpts {
            state_dir: config.state_dir.clone(),
            idle_ttl: config.session_idle_ttl,
            envs_file: config.envs_file.clone(),
            shutdown_grace: config.graceful_shutdown_timeout,
            fresh_state: config.fresh_state,
        });
        let pty = crate::pty::PtyManager::new(crate::pty::PtyOpts { idle_ttl: config.session_idle_ttl });
        let code =
            crate::code::CodeManager::new(crate::code::CodeOpts::new(&config.jupyter_host, &config.jupyter_token));
        // Sweeps the upload spool and the journaled temporary names of an earlier run.
        let transfers = crate::fs::transfer::Transfers::new(
            &config.state_dir,
            crate::fs::transfer::TransferLimits {
                max_concurrent: config.max_transfers,
                stall_timeout: config.stall_timeout,
            },
        )
        .map_err(|e| in_state_dir(&config.state_dir, "uploads", e))?;
        let tus = crate::fs::tus::TusStore::new(crate::fs::tus::TusOpts {
            dir: config.state_dir.join("tus"),
            expiry: config.tus_expiry,
            max_uploads: config.tus_max_uploads,
        })
        .map_err(|e| in_state_dir(&config.state_dir, "tus", e))?;
        let isolated = crate::isolated::IsolatedManager::new(crate::isolated::IsolatedOpts {
            state_dir: config.state_dir.clone(),
            enabled: config.isolation,
            max_sessions: config.isolation_max_sessions,
            allowed_writable: config.isolation_allowed_writable.clone(),
        });
        let readiness = crate::readiness::Readiness::new(crate::readiness::ReadinessOpts {
            state_dir: config.state_dir.clone(),
            min_free_bytes: config.ready_min_free_disk,
            min_free_inodes: config.ready_min_free_inodes,
            jupyter_host: config.jupyter_host.clone(),
            jupyter_token: config.jupyter_token.clone(),
        });
        let observability =
            crate::observability::Observability::new(config.audit_log.as_deref(), config.audit_log_max_bytes, |k| {
                std::env::var(k).ok()
            })
            .map_err(std::io::Error::other)?;
        commands.set_observer(observability.exec_observer());
        sessions.set_observer(observability.exec_observer());
        code.set_observer(observability.exec_observer());
        isolated.set_observer(observability.exec_observer());
        let _ = crate::capabilities::AUDIT_LOG.set(observability.audit_enabled());
        let watches = crate::watch::WatchManager::new(crate::watch::WatchOpts {
            ttl: config.watch_ttl,
            max_watches: config.max_watches,
            ring_events: config.watch_ring_size,
        });
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let metrics = crate::metrics::MetricsSampler::new(crate::metrics::SysRoot::host(), shutdown.clone());
        start_otel(&observability, &metrics);
        Ok(AppState(Arc::new(Managers {
            config,
            shutdown,
            metrics,
            commands,
            sessions,
            pty,
            code,
            transfers,
            tus,
            isolated,
            readiness,
            observability,
            watches,
        })))
    }

    /// Shutdown (DECISIONS D15): every manager stops its processes (SIGTERM, then SIGKILL after the
    /// grace period) so that every open stream reaches its terminal event.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.watches.stop();
        // Concurrently: each waits up to the grace period for its processes.
        tokio::join!(
            self.commands.stop(self.config.graceful_shutdown_timeout),
            self.sessions.stop(),
            self.isolated.stop()
        );
        self.pty.stop().await;
        self.code.stop();
        // Spans of the last requests and executions (X60); a hung collector costs 2 s at most.
        self.observability.stop_otel(std::time::Duration::from_secs(2)).await;
    }
}

/// Starts OTLP export when the `OTEL_*` variables ask for it (X60); a configuration execd cannot
/// serve is a warning and no export, as upstream treats an init failure.
fn start_otel(observability: &crate::observability::Observability, sampler: &crate::metrics::MetricsSampler) {
    let runtime = tokio::runtime::Handle::current();
    let (rt, sampler) = (runtime.clone(), sampler.clone());
    let gauges: crate::observability::otel::GaugeSource = Box::new(move || {
        // Inside the runtime: the timer needs its context.
        rt.block_on(async {
            let read = crate::observability::system::snapshot(&sampler);
            tokio::time::timeout(std::time::Duration::from_secs(2), read).await.unwrap_or_default()
        })
    });
    let started = match observability.start_otel(&|k| std::env::var(k).ok(), runtime, gauges) {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "OpenTelemetry export not started");
            false
        }
    };
    let _ = crate::capabilities::OTEL.set(started);
}

/// `e` from setting up `part` of the state directory `dir`, saying where (execd's start fails
/// with it: a full disk otherwise reads as a bare "No space left on device").
fn in_state_dir(dir: &std::path::Path, part: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("state directory {} ({part}): {e}", dir.display()))
}
