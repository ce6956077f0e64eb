//! execd: the execution daemon inside every sandbox container, wire-compatible with OpenSandbox's
//! execd (see `../shared/docs/execd-reference.md` and `DECISIONS.md`).
//!
//! # Layout
//! - `config`: flags + env → [`config::Config`]; `telemetry`: JSON logs; `clone3`: seccomp compat;
//!   `argv`: secret flag values wiped from the process's argv.
//! - `state`: [`state::AppState`], handles to every manager; `shutdown`: the SIGTERM/SIGINT future.
//! - `init`: `execd --init -- ENTRYPOINT…` (X51), init or subreaper in front of the daemon;
//!   `readiness`: the `/ready` checks (X52).
//! - `state_dir`: the private state directory and how files in it are made and opened.
//! - `api/`: the only HTTP-aware module (router, auth, errors, one file per area).
//! - `cgroup`: a cgroup leaf per spawned command (v2, v1 or none), kill-all, usage, limits.
//! - `os`: the OS surface written once for every module: pidfds, `/proc` scans and stat fields,
//!   the account files.
//! - domain modules (no HTTP): `process` (the leaf: spawn, journal, lines, events, child env),
//!   `command`, `session`, `pty`, `code`, `fs`, `metrics`, `watch` (file watches), `isolated` (namespace-isolated
//!   sessions; `isolated::ns` is also a helper mode of the binary). The port proxy is HTTP by nature and
//!   lives in `api/proxy.rs`.

// The crate's documentation is for its maintainers: module docs link the private items they
// describe, and are read with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod alloc;
pub mod api;
pub mod argv;
pub mod capabilities;
pub mod cgroup;
pub mod clone3;
pub mod code;
pub mod command;
pub mod config;
pub mod event;
pub mod expand;
pub mod fs;
pub mod idle;
pub mod init;
pub mod isolated;
pub mod metrics;
pub mod observability;
pub mod os;
pub mod process;
pub mod pty;
pub mod readiness;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod state_dir;
pub mod telemetry;
pub mod watch;

use std::future::Future;
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
    mut config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The port really listened on (`--port 0` lets the kernel choose): the proxy recognises its
    // own port by it.
    config.port = listener.local_addr()?.port();
    let grace = config.graceful_shutdown_timeout;
    // Prepared off the path to the first answer (see `cgroup::configure`).
    cgroup::configure(cgroup::Placement::parse(&config.cgroup_root));
    let state = AppState::new(config)?;
    let app = api::app(state.clone());
    // Said once everything a request needs is in place (the socket was bound before; requests
    // that came meanwhile wait in its backlog).
    tracing::info!(version = %config::version_text(), addr = %listener.local_addr()?, "execd listening");
    let limits = api::server::ServerLimits {
        max_connections: state.config.max_connections,
        header_timeout: state.config.header_timeout,
        stall_timeout: state.config.stall_timeout,
    };
    let server = api::server::serve(listener, app, limits, state.shutdown.clone());
    let mut server = tokio::spawn(server);
    cgroup::init_later();
    tokio::select! {
        res = &mut server => return res.map_err(std::io::Error::other),
        _ = shutdown => {}
    }
    state.stop().await;
    // Left-behind children of finished commands (X21, D15), then the cgroup leaves themselves.
    let _ = tokio::task::spawn_blocking(shutdown::kill_leftovers).await;
    match tokio::time::timeout(grace + SHUTDOWN_SLACK, server).await {
        Ok(res) => res.map_err(std::io::Error::other),
        Err(_) => {
            tracing::warn!("open connections did not finish in time; exiting anyway");
            Ok(())
        }
    }
}
