//! execd: the execution daemon inside every sandbox container, wire-compatible with OpenSandbox's
//! execd (see `../shared/docs/execd-reference.md` and `DECISIONS.md`).
//!
//! # Layout
//! - `config`: flags + env → [`config::Config`]; `telemetry`: JSON logs; `clone3`: seccomp compat.
//! - `state`: [`state::AppState`], handles to every manager; `shutdown`: the SIGTERM/SIGINT future.
//! - `api/`: the only HTTP-aware module (router, auth, errors, one file per area).
//! - domain modules (no HTTP): `process` (the leaf: spawn, journal, lines, events, child env),
//!   `command`, `session`, `pty`, `code`, `fs`, `metrics`. The port proxy is HTTP by nature and
//!   lives in `api/proxy.rs`.

pub mod api;
pub mod clone3;
pub mod code;
pub mod command;
pub mod config;
pub mod fs;
pub mod metrics;
pub mod process;
pub mod pty;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::AppState;

/// Extra time, beyond the configured grace period, that shutdown waits for connections to close
/// after process groups were SIGKILLed, before giving up on them.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` resolves, then shuts down as DECISIONS D15 describes:
/// stop accepting, stop every manager (process groups get SIGTERM, then SIGKILL after the grace
/// period), let open streams deliver their terminal events, return.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.graceful_shutdown_timeout;
    let state = AppState::new(config)?;
    let app = api::router(state.clone());
    let token = state.shutdown.clone();
    // Every connection gets a stall watch, armed by file transfers (`fs::transfer`).
    let listener = api::files::WatchedListener::new(listener, state.transfers.clone());
    // TCP_NODELAY: event streams write small frames (init, ping, terminal); with Nagle and a
    // keep-alive client's delayed ACK each one could wait ~40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.get_ref().set_nodelay(true);
    });
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { token.cancelled().await });
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        res = &mut server => return res.map_err(std::io::Error::other)?,
        _ = shutdown => {}
    }
    state.stop().await;
    match tokio::time::timeout(grace + SHUTDOWN_SLACK, server).await {
        Ok(res) => res.map_err(std::io::Error::other)?,
        Err(_) => {
            tracing::warn!("open connections did not finish in time; exiting anyway");
            Ok(())
        }
    }
}
