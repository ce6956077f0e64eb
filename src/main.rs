//! The `execd` binary: clone3 compat (before any thread), configuration, logging, listen, run.

use std::net::SocketAddr;
use std::process::ExitCode;

use execd::config::{help_text, version_text, Config, Invocation};

fn main() -> ExitCode {
    // execd re-executed as an isolated session's namespace helper (never a daemon).
    if let Some(code) = execd::isolated::ns::helper_main() {
        return ExitCode::from(code);
    }
    // Before the tokio runtime exists: the seccomp filter must cover every thread.
    let clone3_active = match execd::clone3::apply_from_env() {
        Ok(active) => active,
        Err(e) => {
            eprintln!("execd: {e}");
            return ExitCode::from(1);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--init -- ENTRYPOINT…` (X51) is split off before the daemon's flags are parsed.
    let split = match execd::init::split_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("execd: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match Config::parse(split.daemon.iter().cloned(), |k| std::env::var(k).ok()) {
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
    // Tokens given as flags: gone from /proc/<pid>/cmdline before any thread or child exists.
    let spans: Vec<_> =
        execd::config::secret_arg_spans(&split.daemon).into_iter().map(|(i, r)| (split.index[i], r)).collect();
    let hidden = execd::argv::overwrite(&args, &spans);
    // Before anything is written there: a state directory someone else controls is refused.
    let mut candidates = vec![config.state_dir.clone()];
    candidates.extend(config.state_dir_fallbacks.iter().cloned());
    match execd::state_dir::prepare_first(&candidates) {
        Ok(dir) => config.state_dir = dir,
        Err(e) => {
            eprintln!("execd: {e}");
            return ExitCode::from(2);
        }
    }
    // Init mode: this process becomes init (or a subreaper) and forks the daemon, which goes on
    // below. Before the logger and the runtime: no thread may exist at the fork.
    if let Some(entrypoint) = &split.entrypoint {
        let opts = execd::init::InitOpts { daemon_stop: config.graceful_shutdown_timeout + execd::init::STOP_SLACK };
        if let execd::init::Start::Exit(code) = execd::init::start(entrypoint, opts) {
            return ExitCode::from(code);
        }
    }
    if let Err(e) = execd::telemetry::init(&config) {
        eprintln!("execd: cannot open log output: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = hidden {
        tracing::warn!(error = %e, "could not hide token flags from /proc/self/cmdline; prefer --access-token-file or EXECD_ACCESS_TOKEN");
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
