//! The one process-wide SIGTERM/SIGINT handler (DECISIONS D15). Commands never subscribe to
//! signals themselves.

use tokio::signal::unix::{signal as unix_signal, Signal, SignalKind};

/// SIGTERM and SIGINT, listened to from `install` on.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers. Called on the runtime before the socket is bound: tokio installs a
    /// handler and then subscribes to it, and a signal that comes between the two is consumed
    /// with no one listening, so execd installed lazily (at the first poll of the shutdown
    /// future, while the server already answered) ignored a SIGTERM sent right after its first
    /// `/ping` about once in 60 starts and ran on until SIGKILL.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals { term: unix_signal(SignalKind::terminate())?, int: unix_signal(SignalKind::interrupt())? })
    }

    /// Resolves on the first SIGTERM or SIGINT since `install`.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    }
}

/// After every manager stopped (D15): kills what finished commands left behind in their cgroup
/// leaves (X21) and removes the leaves and execd's cgroup parent. Blocking (bounded, a few seconds).
pub fn kill_leftovers() {
    crate::cgroup::shutdown();
}
