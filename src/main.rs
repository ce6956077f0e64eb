//! The `execd` binary: clone3 compat (before any thread), configuration, logging, listen, run.

use std::net::SocketAddr;
use std::process::ExitCode;

use execd::config::{help_text, version_text, Config, Invocation};

#[global_allocator]
static ALLOC: execd::alloc::BlockCache = execd::alloc::BlockCache;

fn main() -> ExitCode {
    // execd re-executed as an isolated session's namespace helper (never a daemon).
    if let Some(code) = execd::isolated::ns::helper_main() {
        return ExitCode::from(code);
    }
    // Before the tokio runtime exists: the seccomp filter must cover every thread.
    let clone3_active = match execd::clone3::apply_from_env() {
        Ok(active) => active,
        Err(e) => return fail(1, e),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Start { config, entrypoint, hidden } = match configure(&args) {
        Ok(start) => start,
        Err(code) => return code,
    };
    // Init mode: this process becomes init (or a subreaper) and forks the daemon, which goes on
    // below. Before the logger and the runtime: no thread may exist at the fork.
    if let Some(entrypoint) = &entrypoint {
        let opts = execd::init::InitOpts { daemon_stop: config.graceful_shutdown_timeout + execd::init::STOP_SLACK };
        if let execd::init::Start::Exit(code) = execd::init::start(entrypoint, opts) {
            return ExitCode::from(code);
        }
    }
    // The daemon's children inherit its environment as it is from here on (no copy per spawn).
    execd::process::env::scrub_internal_vars();
    if let Err(e) = execd::telemetry::init(&config) {
        return fail(2, format_args!("cannot open log output: {e}"));
    }
    if let Err(e) = hidden {
        tracing::warn!(error = %e, "could not hide token flags from /proc/self/cmdline; prefer --access-token-file or EXECD_ACCESS_TOKEN");
    }
    if clone3_active {
        tracing::warn!(
            "EXECD_CLONE3_COMPAT active: clone3 fails with ENOSYS and no_new_privs is set (sudo will not elevate)"
        );
    }
    serve(config)
}

/// `execd: <message>` on stderr and the exit code.
fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("execd: {message}");
    ExitCode::from(code)
}

/// What the daemon starts from.
struct Start {
    config: Config,
    /// `--init -- ENTRYPOINT…` (X51).
    entrypoint: Option<Vec<String>>,
    /// Whether token flags could be hidden from `/proc/self/cmdline`.
    hidden: std::io::Result<usize>,
}

/// Parses the arguments, hides token flags and prepares the state directory; `Err` is the exit
/// code (also for `--help` and `--version`, printed here).
fn configure(args: &[String]) -> Result<Start, ExitCode> {
    // `--init -- ENTRYPOINT…` (X51) is split off before the daemon's flags are parsed.
    let split = execd::init::split_args(args).map_err(|e| fail(2, e))?;
    let mut config = match Config::parse(split.daemon.iter().cloned(), |k| std::env::var(k).ok()) {
        Ok(Invocation::Run(c)) => *c,
        Ok(Invocation::Help) => {
            print!("{}", help_text());
            return Err(ExitCode::SUCCESS);
        }
        Ok(Invocation::Version) => {
            println!("{}", version_text());
            return Err(ExitCode::SUCCESS);
        }
        Err(e) => return Err(fail(2, e)),
    };
    // Tokens given as flags: gone from /proc/<pid>/cmdline before any thread or child exists.
    let spans: Vec<_> =
        execd::config::secret_arg_spans(&split.daemon).into_iter().map(|(i, r)| (split.index[i], r)).collect();
    let hidden = execd::argv::overwrite(args, &spans);
    // Before anything is written there: a state directory someone else controls is refused.
    let mut candidates = vec![config.state_dir.clone()];
    candidates.extend(config.state_dir_fallbacks.iter().cloned());
    config.state_dir = execd::state_dir::prepare_first(&candidates).map_err(|e| fail(2, e))?;
    Ok(Start { config, entrypoint: split.entrypoint, hidden })
}

/// Runs the daemon on a new multi-threaded runtime until it stops.
fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(1, format_args!("cannot start runtime: {e}")),
    };
    runtime.block_on(async move {
        // Before the socket is bound: once a client can see execd answer, SIGTERM stops it.
        let signals = match execd::shutdown::Signals::install() {
            Ok(s) => s,
            Err(e) => return fail(1, format_args!("cannot install the SIGTERM and SIGINT handlers: {e}")),
        };
        let addr = SocketAddr::from((config.bind, config.port));
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "listen failed");
                return fail(1, format_args!("listen on {addr}: {e}"));
            }
        };
        match execd::run(config, listener, signals.recv()).await {
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
