//! The `execd` binary: clone3 compat (before any thread), configuration, logging, listen, run.

use std::net::SocketAddr;
use std::process::ExitCode;

use execd::config::{help_text, version_text, Config, Invocation};

fn main() -> ExitCode {
    // Before the tokio runtime exists: the seccomp filter must cover every thread.
    let clone3_active = match execd::clone3::apply_from_env() {
        Ok(active) => active,
        Err(e) => {
            eprintln!("execd: {e}");
            return ExitCode::from(1);
        }
    };
    let config = match Config::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Invocation::Run(c)) => *c,
        Ok(Invocation::Help) => {
            print!("{}", help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("{}", version_text());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("execd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = execd::telemetry::init(&config) {
        eprintln!("execd: cannot open log output: {e}");
        return ExitCode::from(2);
    }
    if clone3_active {
        tracing::warn!(
            "EXECD_CLONE3_COMPAT active: clone3 fails with ENOSYS and no_new_privs is set (sudo will not elevate)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("execd: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let addr = SocketAddr::from((config.bind, config.port));
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "listen failed");
                eprintln!("execd: listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(version = %version_text(), addr = %local, "execd listening");
        match execd::run(config, listener, execd::shutdown::signal()).await {
            Ok(()) => {
                tracing::info!("execd stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "execd failed");
                ExitCode::from(1)
            }
        }
    })
}
