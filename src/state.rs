//! [`AppState`]: cheap-to-clone handles to every manager plus the configuration, shared by all
//! handlers. Also the shutdown fan-out: [`AppState::stop`] asks each manager to end its work.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Cancelled once when shutdown starts; long-lived streams watch it.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Builds every manager. Creates the state directory.
    pub fn new(config: Config) -> std::io::Result<AppState> {
        std::fs::create_dir_all(&config.state_dir)?;
        let config = Arc::new(config);
        Ok(AppState { config, shutdown: CancellationToken::new() })
    }

    /// Shutdown (DECISIONS D15): every manager stops its processes (SIGTERM, then SIGKILL after the
    /// grace period) so that every open stream reaches its terminal event.
    pub async fn stop(&self) {
        self.shutdown.cancel();
    }
}
