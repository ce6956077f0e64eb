//! The one process-wide SIGTERM/SIGINT handler (DECISIONS D15). Commands never subscribe to
//! signals themselves.

use tokio::signal::unix::{signal as unix_signal, SignalKind};

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let mut term = match unix_signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            std::future::pending::<()>().await;
            return;
        }
    };
    let mut int = match unix_signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGINT handler");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// After every manager stopped (D15): kills what finished commands left behind in their cgroup
/// leaves (X21) and removes the leaves and execd's cgroup parent. Blocking (bounded, a few seconds).
pub fn kill_leftovers() {
    crate::cgroup::shutdown();
}
