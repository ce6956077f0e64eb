//! Daemon configuration: flags (Go `flag` syntax: `-x` or `--x`, `=v` or a separate argument) over
//! environment variables over defaults, validated once at startup. See `execd --help`.
//!
//! Parsing is a pure function of the argument list and an environment lookup so it can be
//! table-tested; `main.rs` turns a [`ConfigError`] into a one-line message and exit code 2.

use std::path::PathBuf;
use std::time::Duration;

/// Default listen port (upstream execd's).
pub const DEFAULT_PORT: u16 = 44772;
/// Default bound on how long shutdown waits for open streams (`EXECD_API_GRACE_SHUTDOWN`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);
/// Default Jupyter idle poll interval.
pub const DEFAULT_JUPYTER_IDLE_POLL: Duration = Duration::from_millis(100);
/// Finished command records (and journals) older than this are evicted (DECISIONS D12).
pub const DEFAULT_COMMAND_TTL: Duration = Duration::from_secs(24 * 3600);
/// At most this many finished command records are kept (DECISIONS D12).
pub const DEFAULT_COMMAND_MAX: usize = 10_000;
/// Idle bash and PTY sessions are collected after this long without a run or client (D51).
pub const DEFAULT_SESSION_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Default cap on open connections (also at most half the file-descriptor limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default deadline for a request head (and for an idle keep-alive connection).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on file transfers at once.
pub const DEFAULT_MAX_TRANSFERS: usize = 64;
/// Default deadline for a request body read or a socket write that makes no progress.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A file watch with no reader and no request for this long is collected (X40).
pub const DEFAULT_WATCH_TTL: Duration = Duration::from_secs(3600);
/// At most this many file watches at once (X40).
pub const DEFAULT_MAX_WATCHES: usize = 64;
/// Events kept per file watch (X41).
pub const DEFAULT_WATCH_RING_SIZE: usize = 10_000;

/// Resumable (tus) uploads not written to for this long are removed (X33).
pub const DEFAULT_TUS_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Default cap on resumable uploads open at once.
pub const DEFAULT_TUS_MAX_UPLOADS: usize = 1000;

/// Everything execd reads from its flags and environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (IPv4; upstream listens on `0.0.0.0`).
    pub bind: std::net::Ipv4Addr,
    pub port: u16,
    /// Empty string: auth disabled.
    pub access_token: String,
    pub jupyter_host: String,
    pub jupyter_token: String,
    /// Go execd log level: 0-2 fatal, 3 error, 4 warn, 5-6 info, 7+ debug.
    pub log_level: i64,
    /// Upper bound on how long shutdown waits for streams and process groups.
    pub graceful_shutdown_timeout: Duration,
    /// Accepted and validated for compatibility with upstream's flag, otherwise unused: `/code`
    /// does not poll for idle, it reacts to the kernel's messages (see `code::protocol`).
    pub jupyter_idle_poll_interval: Duration,
    /// Where command journals and session state live (private to execd's uid, see
    /// [`crate::state_dir`]).
    pub state_dir: PathBuf,
    /// Where to go instead when `state_dir` is the default and cannot be created (empty when
    /// `--state-dir` was given).
    pub state_dir_fallbacks: Vec<PathBuf>,
    /// `--fresh-state` (X50): wipe the state an earlier execd left instead of loading it.
    pub fresh_state: bool,
    pub command_retention_ttl: Duration,
    pub command_retention_count: usize,
    pub session_idle_ttl: Duration,
    /// At most this many open connections (issue #13 finding 5).
    pub max_connections: usize,
    /// A request head must arrive within this; idle keep-alive connections close after it.
    pub header_timeout: Duration,
    /// A request body read or a response write with no progress for this long fails.
    pub stall_timeout: Duration,
    /// At most this many file transfers (downloads, uploads, long listings) at once.
    pub max_transfers: usize,
    /// `/v1/isolated` enabled (`--isolation on|off`).
    pub isolation: bool,
    pub isolation_max_sessions: usize,
    /// Where isolated sessions may bind host paths (I31).
    pub isolation_allowed_writable: Vec<PathBuf>,
    /// `EXECD_ENVS`: path of a `KEY=VALUE` file re-read for every command and session run.
    pub envs_file: Option<String>,
    /// `EXECD_LOG_FILE`: JSON log lines go here instead of stdout.
    pub log_file: Option<PathBuf>,
    /// Resumable uploads expire this long after their last write (X33).
    pub tus_expiry: Duration,
    /// At most this many resumable uploads at once (X33).
    pub tus_max_uploads: usize,
    /// `--cgroup-root` (X20): `""` auto-detect, `none` off, else a cgroup v2 directory.
    pub cgroup_root: String,
    /// X52: `/ready` fails when the state directory's filesystem has fewer free bytes.
    pub ready_min_free_disk: u64,
    /// X52: `/ready` fails when the state directory's filesystem has fewer free inodes.
    pub ready_min_free_inodes: u64,
    /// `--audit-log` (X62): where audit lines go; `None`: no audit log.
    pub audit_log: Option<PathBuf>,
    /// `--audit-log-max-bytes`: size at which the audit log is rotated once.
    pub audit_log_max_bytes: u64,
    /// File watches (X40, X41): TTL without reader or request, cap, ring size.
    pub watch_ttl: Duration,
    pub max_watches: usize,
    pub watch_ring_size: usize,
}

/// Why the configuration was rejected. The message names the flag (or variable) and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {name}: {reason}")]
    InvalidValue { name: String, value: String, reason: String },
    #[error("flag provided but not defined: {0}")]
    UnknownFlag(String),
    #[error("flag needs an argument: {0}")]
    MissingArgument(String),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    Help,
    Version,
}

/// One configurable setting: flag name, env var, help text.
struct Setting {
    flag: &'static str,
    env: Option<&'static str>,
    default: &'static str,
    help: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting { flag: "port", env: Some("EXECD_PORT"), default: "44772", help: "TCP port to listen on" },
    Setting { flag: "bind", env: Some("EXECD_BIND"), default: "0.0.0.0", help: "IPv4 address to listen on" },
    Setting {
        flag: "access-token",
        env: Some("EXECD_ACCESS_TOKEN"),
        default: "",
        help: "require this value in the X-EXECD-ACCESS-TOKEN header on every request (empty: no auth)",
    },
    Setting {
        flag: "jupyter-host",
        env: Some("JUPYTER_HOST"),
        default: "",
        help: "Jupyter server base URL, e.g. http://127.0.0.1:44771 (env value must start with http:// or https://)",
    },
    Setting {
        flag: "access-token-file",
        env: Some("EXECD_ACCESS_TOKEN_FILE"),
        default: "",
        help: "read the access token from this file (trailing newline dropped); keeps it out of argv and the environment",
    },
    Setting { flag: "jupyter-token", env: Some("JUPYTER_TOKEN"), default: "", help: "Jupyter server token" },
    Setting {
        flag: "jupyter-token-file",
        env: Some("JUPYTER_TOKEN_FILE"),
        default: "",
        help: "read the Jupyter token from this file (trailing newline dropped)",
    },
    Setting { flag: "log-level", env: None, default: "6", help: "0-2 fatal, 3 error, 4 warn, 5-6 info, 7+ debug" },
    Setting {
        flag: "graceful-shutdown-timeout",
        env: Some("EXECD_API_GRACE_SHUTDOWN"),
        default: "1s",
        help: "Go duration; how long shutdown waits for open streams after commands got SIGTERM",
    },
    Setting {
        flag: "jupyter-idle-poll-interval",
        env: Some("EXECD_JUPYTER_IDLE_POLL_INTERVAL"),
        default: "100ms",
        help: "Go duration; accepted for compatibility and ignored: /code ends a run on the kernel's messages, it never polls",
    },
    Setting {
        flag: "state-dir",
        env: Some("EXECD_STATE_DIR"),
        default: "/var/lib/execd",
        help: "directory for command journals and session state, private to execd's uid (default for root /var/lib/execd, else /run/execd, else $TMPDIR/execd-0; other uids $XDG_RUNTIME_DIR/execd, else $TMPDIR/execd-<uid>)",
    },
    Setting {
        flag: "fresh-state",
        env: Some("EXECD_FRESH_STATE"),
        default: "false",
        help: "wipe the command records, journals and session state an earlier execd left in the state directory instead of loading them (X50); a bare --fresh-state means true",
    },
    Setting {
        flag: "cgroup-root",
        env: Some("EXECD_CGROUP_ROOT"),
        default: "",
        help: "cgroup v2 directory under which each command gets a cgroup leaf; empty: detect (v2, else v1 hierarchies), none: process groups only",
    },
    Setting {
        flag: "command-retention-ttl",
        env: Some("EXECD_COMMAND_RETENTION_TTL"),
        default: "24h",
        help: "Go duration; finished commands and their logs are evicted after this",
    },
    Setting {
        flag: "command-retention-count",
        env: Some("EXECD_COMMAND_RETENTION_COUNT"),
        default: "10000",
        help: "keep at most this many finished commands (oldest evicted first)",
    },
    Setting {
        flag: "session-idle-ttl",
        env: Some("EXECD_SESSION_IDLE_TTL"),
        default: "24h",
        help: "Go duration; idle bash/PTY sessions are collected after this",
    },
    Setting {
        flag: "max-connections",
        env: Some("EXECD_MAX_CONNECTIONS"),
        default: "1024",
        help: "at most this many open connections (never more than half the open-file limit); at the cap the longest-idle connection is closed",
    },
    Setting {
        flag: "header-timeout",
        env: Some("EXECD_HEADER_TIMEOUT"),
        default: "30s",
        help: "Go duration; a request head must arrive within this, and idle keep-alive connections close after it",
    },
    Setting {
        flag: "max-transfers",
        env: Some("EXECD_MAX_TRANSFERS"),
        default: "64",
        help: "at most this many file transfers (downloads, uploads, long listings) at once; more get 429",
    },
    Setting {
        flag: "isolation",
        env: Some("EXECD_ISOLATION"),
        default: "on",
        help: "on|off; off: /v1/isolated answers 503 isolation unavailable",
    },
    Setting {
        flag: "isolation-max-sessions",
        env: Some("EXECD_ISOLATION_MAX_SESSIONS"),
        default: "64",
        help: "at most this many isolated sessions at once",
    },
    Setting {
        flag: "isolation-allowed-writable",
        env: Some("EXECD_ISOLATION_ALLOWED_WRITABLE"),
        default: "/workspace:/mnt:/media:/data",
        help: "colon-separated directories under which isolated sessions may bind (extra_writable, binds)",
    },
    Setting {
        flag: "tus-expiry",
        env: Some("EXECD_TUS_EXPIRY"),
        default: "24h",
        help: "Go duration; a resumable (tus) upload not written to for this long is removed with its partial file",
    },
    Setting {
        flag: "tus-max-uploads",
        env: Some("EXECD_TUS_MAX_UPLOADS"),
        default: "1000",
        help: "at most this many resumable (tus) uploads open at once; more get 429",
    },
    Setting {
        flag: "stall-timeout",
        env: Some("EXECD_STALL_TIMEOUT"),
        default: "60s",
        help: "Go duration; a request body or a response write that makes no progress for this long fails",
    },
    Setting {
        flag: "ready-min-free-disk",
        env: Some("EXECD_READY_MIN_FREE_DISK"),
        default: "64M",
        help: "GET /ready fails below this much free space in the state directory (bytes or 512K, 64M, 1G)",
    },
    Setting {
        flag: "ready-min-free-inodes",
        env: Some("EXECD_READY_MIN_FREE_INODES"),
        default: "1024",
        help: "GET /ready fails below this many free inodes in the state directory's filesystem",
    },
    Setting {
        flag: "audit-log",
        env: Some("EXECD_AUDIT_LOG"),
        default: "",
        help: "append one JSON line per execution and per file mutation to this file (mode 0600; empty: no audit log)",
    },
    Setting {
        flag: "audit-log-max-bytes",
        env: Some("EXECD_AUDIT_LOG_MAX_BYTES"),
        default: "67108864",
        help: "rotate the audit log to PATH.1 (replacing it) when the next line would take it past this size (at least 1024)",
    },
    Setting {
        flag: "watch-ttl",
        env: Some("EXECD_WATCH_TTL"),
        default: "1h",
        help: "Go duration; a file watch with no reader and no request for this long is deleted",
    },
    Setting {
        flag: "max-watches",
        env: Some("EXECD_MAX_WATCHES"),
        default: "64",
        help: "at most this many file watches at once; more get 429 TOO_MANY_WATCHES",
    },
    Setting {
        flag: "watch-ring-size",
        env: Some("EXECD_WATCH_RING_SIZE"),
        default: "10000",
        help: "events kept per file watch for resuming readers; older ones are reported as one overflow",
    },
];

/// Flags that may be given without a value (Go's boolean flags): `--x` means `--x=true`.
const BOOL_FLAGS: &[&str] = &["fresh-state"];

/// Flags whose values are secrets: `main` overwrites them in the process's argv after parsing so
/// they cannot be read from `/proc/<pid>/cmdline` (issue #13 finding 3).
pub const SECRET_FLAGS: &[&str] = &["access-token", "jupyter-token"];

/// Environment variables read without a flag.
const EXTRA_ENV: &[(&str, &str)] = &[
    ("EXECD_ENVS", "path of a KEY=VALUE file applied to every command and session run (re-read each time)"),
    ("EXECD_LOG_FILE", "write JSON log lines to this file instead of stdout"),
    (
        "EXECD_CLONE3_COMPAT",
        "1/true/yes/on: make clone3 fail with ENOSYS (seccomp); reexec: same, then re-exec; 0/false/off/no/empty: off",
    ),
    ("TMPDIR", "base of the last-resort default state directory (default /tmp)"),
    ("OPENSANDBOX_ID", "sandbox_id label on every /metrics/prometheus sample"),
    ("OPENSANDBOX_EXECD_METRICS_EXTRA_ATTRS", "k=v,k2=v2: more labels on every /metrics/prometheus sample"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://host:4318: export traces and metrics (OTLP/HTTP protobuf, http:// only); unset: off"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "full URL for traces only (…/v1/traces)"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "full URL for metrics only (…/v1/metrics)"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf (default); anything else: a warning and no export (also _TRACES_/_METRICS_)"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "k=v,k2=v2 headers on export requests (also _TRACES_/_METRICS_)"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "ms per export request (default 10000)"),
    ("OTEL_SERVICE_NAME", "service.name (default opensandbox-execd-<version>)"),
    ("OTEL_RESOURCE_ATTRIBUTES", "k=v,k2=v2 resource attributes"),
    ("OTEL_TRACES_SAMPLER", "always_on, always_off, traceidratio, parentbased_* (default parentbased_always_on; arg in OTEL_TRACES_SAMPLER_ARG)"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "ms between metric exports (default 60000)"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "finished spans waiting for export (default 2048); beyond: dropped and counted"),
    ("OTEL_BSP_SCHEDULE_DELAY", "ms between span batches (default 5000; also OTEL_BSP_MAX_EXPORT_BATCH_SIZE)"),
    ("OTEL_TRACES_EXPORTER", "none: no traces (OTEL_METRICS_EXPORTER=none: no metrics; OTEL_SDK_DISABLED=true: neither)"),
];

/// The `--help` text: every flag and environment variable.
pub fn help_text() -> String {
    let mut s = String::from(
        "execd: execution daemon for sandbox containers (OpenSandbox execd compatible)\n\n\
         Usage: execd [flags]\n\nFlags (-x and --x are equivalent; -x=v or -x v; a flag overrides its env var):\n",
    );
    for st in SETTINGS {
        let env = st.env.map(|e| format!(" [env {e}]")).unwrap_or_default();
        s.push_str(&format!("  --{:<28} {} (default {:?}){env}\n", st.flag, st.help, st.default));
    }
    s.push_str("  --help                         print this help\n  --version                      print the version\n\nEnvironment:\n");
    for (k, v) in EXTRA_ENV {
        s.push_str(&format!("  {k:<30} {v}\n"));
    }
    s
}

/// The version line printed by `--version` and logged at startup.
pub fn version_text() -> String {
    format!("execd {} ({} {})", env!("CARGO_PKG_VERSION"), std::env::consts::OS, std::env::consts::ARCH)
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue { name: name.to_string(), value: value.to_string(), reason: reason.into() }
}

/// Parses Go `time.ParseDuration` syntax (`300ms`, `1.5h`, `1m30s`, `-2s`, `0`).
/// Negative durations are returned as `Err` when `allow_negative` is false; callers that accept
/// "<= 0 means default" use [`parse_go_duration_signed`].
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    match parse_go_duration_signed(s)? {
        (false, d) => Ok(d),
        (true, d) if d.is_zero() => Ok(d),
        (true, _) => Err("negative duration".into()),
    }
}

/// Like [`parse_go_duration`] but returns `(negative, magnitude)`.
pub fn parse_go_duration_signed(s: &str) -> Result<(bool, Duration), String> {
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok((neg, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err("invalid duration".into());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err("invalid duration".into());
        }
        let value: f64 = num.parse().map_err(|_| "invalid duration".to_string())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit in duration".into()),
            _ => return Err(format!("unknown unit {unit:?} in duration")),
        };
        total += value * nanos_per;
    }
    if !total.is_finite() || total > 9.2e18 {
        return Err("duration out of range".into());
    }
    Ok((neg, Duration::from_nanos(total as u64)))
}

/// A secret given either inline (`--access-token`) or as a file (`--access-token-file`), not both.
/// The file's content loses one trailing newline (`\n` or `\r\n`).
fn secret(inline: Option<(&str, &str)>, file: Option<(&str, &str)>) -> Result<String, ConfigError> {
    match (inline, file) {
        (Some((n, _)), Some((f, fv))) if !fv.is_empty() => {
            Err(invalid(f, fv, format!("give either {n} or the file, not both")))
        }
        (_, Some((f, fv))) if !fv.is_empty() => {
            let text = std::fs::read_to_string(fv).map_err(|e| invalid(f, fv, format!("cannot read: {e}")))?;
            let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            Ok(text.to_string())
        }
        (Some((_, v)), _) => Ok(v.to_string()),
        _ => Ok(String::new()),
    }
}

/// Where the values of [`SECRET_FLAGS`] sit in `args` (without the program name): `(index of the
/// argument, byte range within it)`. Follows the parser's rules (Go flag syntax, parsing stops at
/// `--` or the first non-flag), so it finds exactly the values [`Config::parse`] used.
pub fn secret_arg_spans(args: &[String]) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" || arg == "-" || !arg.starts_with('-') {
            break;
        }
        let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).unwrap_or(arg);
        let (name, inline) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        let known = SETTINGS.iter().any(|s| s.flag == name);
        if !known {
            break;
        }
        let secret = SECRET_FLAGS.contains(&name);
        if inline {
            if secret {
                let start = arg.len() - (body.len() - name.len() - 1);
                out.push((i, start..arg.len()));
            }
        } else if !BOOL_FLAGS.contains(&name) {
            i += 1;
            if secret && i < args.len() {
                out.push((i, 0..args[i].len()));
            }
        }
        i += 1;
    }
    out
}

/// The raw values of the settings given (flag over environment), each with the name it was given
/// under (`--port` or `EXECD_PORT`, for error messages), and typed reads of them.
struct Values(std::collections::HashMap<&'static str, (String, String)>);

impl Values {
    /// Collects the environment (the flags' defaults) and then the flags, in Go's flag syntax;
    /// `Err(Ok(_))` for `--help`/`--version`.
    fn collect<I, S>(args: I, env: &impl Fn(&str) -> Option<String>) -> Result<Values, Result<Invocation, ConfigError>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut values = std::collections::HashMap::new();
        for st in SETTINGS {
            if let Some((var, v)) = st.env.and_then(|var| Some((var, env(var)?))) {
                values.insert(st.flag, (var.to_string(), v));
            }
        }
        let mut it = args.into_iter().map(Into::into);
        while let Some(arg) = it.next() {
            // Go's flag package stops at "--" or the first non-flag argument and leaves the rest
            // alone; the Docker runtime starts the carrier image as `/execd tail -f /dev/null`.
            if arg == "--" || arg == "-" || !arg.starts_with('-') {
                break;
            }
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                break;
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            match name.as_str() {
                "help" | "h" => return Err(Ok(Invocation::Help)),
                "version" | "v" => return Err(Ok(Invocation::Version)),
                _ => {}
            }
            let Some(st) = SETTINGS.iter().find(|s| s.flag == name) else {
                return Err(Err(ConfigError::UnknownFlag(format!("-{name}"))));
            };
            let value = match inline {
                Some(v) => v,
                None if BOOL_FLAGS.contains(&st.flag) => "true".to_string(),
                None => it.next().ok_or_else(|| Err(ConfigError::MissingArgument(format!("-{name}"))))?,
            };
            values.insert(st.flag, (format!("--{name}"), value));
        }
        Ok(Values(values))
    }

    /// `(name given, value)`.
    fn get(&self, flag: &str) -> Option<(&str, &str)> {
        self.0.get(flag).map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The value parsed as `T`, or `default`; `what` is the error's reason.
    fn parsed<T: std::str::FromStr>(&self, flag: &str, default: T, what: &str) -> Result<T, ConfigError> {
        match self.get(flag) {
            Some((n, v)) => v.parse().map_err(|_| invalid(n, v, what)),
            None => Ok(default),
        }
    }

    fn duration(&self, flag: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(flag) {
            Some((n, v)) => parse_go_duration(v).map_err(|e| invalid(n, v, e)),
            None => Ok(default),
        }
    }

    /// A duration that must not be zero.
    fn positive(&self, flag: &str, default: Duration) -> Result<Duration, ConfigError> {
        let d = self.duration(flag, default)?;
        match self.get(flag) {
            Some((n, v)) if d.is_zero() => Err(invalid(n, v, "must be greater than zero")),
            _ => Ok(d),
        }
    }

    /// A count from 1 to 2^24.
    fn count(&self, flag: &str, default: usize) -> Result<usize, ConfigError> {
        match self.get(flag) {
            Some((n, v)) => match v.parse::<usize>() {
                Ok(c) if (1..=1 << 24).contains(&c) => Ok(c),
                _ => Err(invalid(n, v, "expected a positive integer")),
            },
            None => Ok(default),
        }
    }

    /// A yes/no setting: `on` and `off` list the accepted words (compared case-insensitively).
    fn switch(&self, flag: &str, default: bool, on: &[&str], off: &[&str], what: &str) -> Result<bool, ConfigError> {
        let Some((n, v)) = self.get(flag) else { return Ok(default) };
        let lower = v.to_ascii_lowercase();
        if on.contains(&lower.as_str()) {
            Ok(true)
        } else if off.contains(&lower.as_str()) {
            Ok(false)
        } else {
            Err(invalid(n, v, what))
        }
    }

    fn jupyter_host(&self) -> Result<String, ConfigError> {
        let Some((n, v)) = self.get("jupyter-host") else { return Ok(String::new()) };
        // Upstream validates only the env value (a flag value is taken as is).
        if n == "JUPYTER_HOST" && !v.is_empty() && !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(invalid(n, v, "must start with http:// or https://"));
        }
        Ok(v.trim_end_matches('/').to_string())
    }

    /// Accepted for compatibility; a negative or zero value means the default.
    fn jupyter_idle_poll_interval(&self) -> Result<Duration, ConfigError> {
        Ok(match self.get("jupyter-idle-poll-interval") {
            Some((n, v)) => match parse_go_duration_signed(v).map_err(|e| invalid(n, v, e))? {
                (false, d) if !d.is_zero() => d,
                _ => DEFAULT_JUPYTER_IDLE_POLL,
            },
            None => DEFAULT_JUPYTER_IDLE_POLL,
        })
    }

    /// The state directory and, when none was given, the fallbacks after the first candidate.
    fn state_dir(&self, env: &impl Fn(&str) -> Option<String>) -> Result<(PathBuf, Vec<PathBuf>), ConfigError> {
        match self.get("state-dir") {
            Some((n, v)) if v.is_empty() => Err(invalid(n, v, "must not be empty")),
            Some((_, v)) => Ok((PathBuf::from(v), Vec::new())),
            None => {
                let mut c = crate::state_dir::default_candidates(crate::state_dir::euid(), env);
                let first = c.remove(0);
                Ok((first, c))
            }
        }
    }

    fn audit_log_max_bytes(&self) -> Result<u64, ConfigError> {
        match self.get("audit-log-max-bytes") {
            Some((n, v)) => match v.parse::<u64>() {
                Ok(b) if b >= crate::observability::audit::MIN_MAX_BYTES => Ok(b),
                _ => Err(invalid(n, v, "expected a number of bytes, at least 1024")),
            },
            None => Ok(crate::observability::audit::DEFAULT_MAX_BYTES),
        }
    }

    fn ready_min_free_disk(&self) -> Result<u64, ConfigError> {
        match self.get("ready-min-free-disk") {
            Some((n, v)) => {
                crate::cgroup::parse_memory(v).map_err(|_| invalid(n, v, "expected bytes or a size like 64M"))
            }
            None => Ok(64 << 20),
        }
    }

    /// A path setting; empty means unset.
    fn path(&self, flag: &str) -> Option<PathBuf> {
        self.get(flag).map(|(_, v)| v).filter(|v| !v.is_empty()).map(PathBuf::from)
    }
}

impl Config {
    /// Parses `args` (without the program name) over the environment given by `env`.
    pub fn parse<I, S>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let v = match Values::collect(args, &env) {
            Ok(v) => v,
            Err(done) => return done,
        };
        let (state_dir, state_dir_fallbacks) = v.state_dir(&env)?;
        let writable = match v.get("isolation-allowed-writable") {
            None => crate::isolated::spec::DEFAULT_ALLOWED_WRITABLE.iter().map(PathBuf::from).collect(),
            Some((_, w)) => w.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect(),
        };
        Ok(Invocation::Run(Box::new(Config {
            port: v.parsed("port", DEFAULT_PORT, "expected a port number 0-65535")?,
            bind: v.parsed("bind", std::net::Ipv4Addr::UNSPECIFIED, "expected an IPv4 address")?,
            jupyter_host: v.jupyter_host()?,
            log_level: v.parsed("log-level", 6, "expected an integer")?,
            graceful_shutdown_timeout: v.duration("graceful-shutdown-timeout", DEFAULT_GRACE)?,
            jupyter_idle_poll_interval: v.jupyter_idle_poll_interval()?,
            command_retention_ttl: v.duration("command-retention-ttl", DEFAULT_COMMAND_TTL)?,
            session_idle_ttl: v.duration("session-idle-ttl", DEFAULT_SESSION_IDLE_TTL)?,
            header_timeout: v.positive("header-timeout", DEFAULT_HEADER_TIMEOUT)?,
            stall_timeout: v.positive("stall-timeout", DEFAULT_STALL_TIMEOUT)?,
            max_connections: v.count("max-connections", DEFAULT_MAX_CONNECTIONS)?,
            max_transfers: v.count("max-transfers", DEFAULT_MAX_TRANSFERS)?,
            tus_expiry: v.positive("tus-expiry", DEFAULT_TUS_EXPIRY)?,
            tus_max_uploads: v.count("tus-max-uploads", DEFAULT_TUS_MAX_UPLOADS)?,
            command_retention_count: v.parsed(
                "command-retention-count",
                DEFAULT_COMMAND_MAX,
                "expected a non-negative integer",
            )?,
            state_dir,
            state_dir_fallbacks,
            isolation: v.switch(
                "isolation",
                true,
                &["on", "1", "true", "yes"],
                &["off", "0", "false", "no"],
                "expected on or off",
            )?,
            isolation_max_sessions: v.count("isolation-max-sessions", 64)?,
            watch_ttl: v.positive("watch-ttl", DEFAULT_WATCH_TTL)?,
            max_watches: v.count("max-watches", DEFAULT_MAX_WATCHES)?,
            watch_ring_size: v.count("watch-ring-size", DEFAULT_WATCH_RING_SIZE)?,
            isolation_allowed_writable: writable,
            ready_min_free_disk: v.ready_min_free_disk()?,
            ready_min_free_inodes: v.parsed("ready-min-free-inodes", 1024, "expected a non-negative integer")?,
            audit_log: v.path("audit-log"),
            audit_log_max_bytes: v.audit_log_max_bytes()?,
            fresh_state: v.switch(
                "fresh-state",
                false,
                &["1", "true", "yes", "on"],
                &["", "0", "false", "no", "off"],
                "expected true or false",
            )?,
            access_token: secret(v.get("access-token"), v.get("access-token-file"))?,
            jupyter_token: secret(v.get("jupyter-token"), v.get("jupyter-token-file"))?,
            envs_file: env("EXECD_ENVS").filter(|e| !e.is_empty()),
            log_file: env("EXECD_LOG_FILE").filter(|e| !e.is_empty()).map(PathBuf::from),
            cgroup_root: v.get("cgroup-root").map(|(_, r)| r.to_string()).unwrap_or_default(),
        })))
    }

    /// A configuration with defaults and no environment, for tests.
    pub fn for_tests(state_dir: PathBuf) -> Config {
        match Config::parse(["--state-dir".to_string(), state_dir.display().to_string()], |_| None) {
            Ok(Invocation::Run(c)) => *c,
            _ => unreachable!("defaults always parse"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        match Config::parse(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })? {
            Invocation::Run(c) => Ok(*c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn x50_fresh_state_is_a_boolean_flag() {
        assert!(!run(&[], &[]).unwrap().fresh_state);
        assert!(run(&["--fresh-state", "--port", "1"], &[]).unwrap().fresh_state);
        assert_eq!(run(&["--fresh-state", "--port", "1"], &[]).unwrap().port, 1);
        assert!(!run(&["--fresh-state=false"], &[]).unwrap().fresh_state);
        assert!(run(&[], &[("EXECD_FRESH_STATE", "1")]).unwrap().fresh_state);
        assert!(!run(&["-fresh-state=0"], &[("EXECD_FRESH_STATE", "1")]).unwrap().fresh_state);
        assert!(run(&["--fresh-state=maybe"], &[]).is_err());
    }

    #[test]
    fn go_durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("500ms", Some(500_000_000)),
            ("1s", Some(1_000_000_000)),
            ("1m30s", Some(90_000_000_000)),
            ("1.5h", Some(5_400_000_000_000)),
            ("0", Some(0)),
            ("2us", Some(2_000)),
            ("3µs", Some(3_000)),
            ("7ns", Some(7)),
            ("", None),
            ("1", None),
            ("abc", None),
            ("1x", None),
            ("-1s", None),
            (".s", None),
        ];
        for (input, want) in cases {
            let got = parse_go_duration(input).ok().map(|d| d.as_nanos() as u64);
            assert_eq!(got, *want, "{input}");
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.port, 44772);
        assert_eq!(c.graceful_shutdown_timeout, Duration::from_secs(1));
        let mut want = crate::state_dir::default_candidates(crate::state_dir::euid(), |_| None);
        assert_eq!(c.state_dir, want.remove(0));
        assert_eq!(c.state_dir_fallbacks, want);
        assert!(c.access_token.is_empty());
        assert_eq!((c.watch_ttl, c.max_watches, c.watch_ring_size), (Duration::from_secs(3600), 64, 10_000));
        let c = run(&["--watch-ttl=2s", "--max-watches=3", "--watch-ring-size=50"], &[]).unwrap();
        assert_eq!((c.watch_ttl, c.max_watches, c.watch_ring_size), (Duration::from_secs(2), 3, 50));
        assert!(run(&["--watch-ttl=0"], &[]).is_err());
    }

    #[test]
    fn flag_forms_and_override() {
        for args in [&["--port=7"][..], &["-port", "7"], &["-port=7"], &["--port", "7"]] {
            assert_eq!(run(args, &[]).unwrap().port, 7, "{args:?}");
        }
        let c = run(&["--access-token=u"], &[("EXECD_ACCESS_TOKEN", "t")]).unwrap();
        assert_eq!(c.access_token, "u");
        let c = run(&[], &[("EXECD_ACCESS_TOKEN", "t")]).unwrap();
        assert_eq!(c.access_token, "t");
    }

    #[test]
    fn invalid_values_name_the_flag() {
        let e = run(&["--port=abc"], &[]).unwrap_err();
        assert!(e.to_string().contains("--port") && e.to_string().contains("abc"), "{e}");
        let e = run(&[], &[("EXECD_API_GRACE_SHUTDOWN", "soon")]).unwrap_err();
        assert!(e.to_string().contains("EXECD_API_GRACE_SHUTDOWN"), "{e}");
        let e = run(&[], &[("JUPYTER_HOST", "foo")]).unwrap_err();
        assert!(e.to_string().contains("JUPYTER_HOST"), "{e}");
        assert!(run(&["--jupyter-host=foo"], &[]).is_ok());
        assert!(matches!(run(&["--nope"], &[]), Err(ConfigError::UnknownFlag(_))));
        assert!(matches!(run(&["--port"], &[]), Err(ConfigError::MissingArgument(_))));
    }

    #[test]
    fn parsing_stops_at_the_first_non_flag_like_go() {
        let c = run(&["--port=9", "tail", "-f", "/dev/null"], &[]).unwrap();
        assert_eq!(c.port, 9);
        assert_eq!(run(&["--", "--port=9"], &[]).unwrap().port, DEFAULT_PORT);
    }

    #[test]
    fn secret_spans_cover_exactly_the_token_values() {
        let args: Vec<String> =
            ["--port=1", "--access-token=s3cret", "-jupyter-token", "jt", "--bind", "x", "tail", "--access-token=no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let spans = secret_arg_spans(&args);
        let values: Vec<&str> = spans.iter().map(|(i, r)| &args[*i][r.clone()]).collect();
        assert_eq!(values, ["s3cret", "jt"]);
        assert!(secret_arg_spans(&["--access-token".to_string()]).is_empty());
    }

    #[test]
    fn token_files_are_read_and_conflicts_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "from-file\n").unwrap();
        let path = f.display().to_string();
        let c = run(&[&format!("--access-token-file={path}")], &[]).unwrap();
        assert_eq!(c.access_token, "from-file");
        let c = run(&[], &[("JUPYTER_TOKEN_FILE", &path)]).unwrap();
        assert_eq!(c.jupyter_token, "from-file");
        let e = run(&["--access-token=x", &format!("--access-token-file={path}")], &[]).unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = run(&["--access-token-file=/nonexistent/tok"], &[]).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn idle_poll_non_positive_falls_back() {
        let c = run(&["--jupyter-idle-poll-interval=-5s"], &[]).unwrap();
        assert_eq!(c.jupyter_idle_poll_interval, DEFAULT_JUPYTER_IDLE_POLL);
        let c = run(&["--jupyter-idle-poll-interval=0"], &[]).unwrap();
        assert_eq!(c.jupyter_idle_poll_interval, DEFAULT_JUPYTER_IDLE_POLL);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any input: the parser returns, never panics, and never yields more than Go's range.
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,24}") {
            let _ = parse_go_duration_signed(&s);
        }

        /// Well-formed `<n>h<n>m<n>s<n>ms` strings parse to the sum of their parts.
        #[test]
        fn duration_components_add_up(h in 0u64..100, m in 0u64..100, s in 0u64..100, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            prop_assert_eq!(parse_go_duration(&text).unwrap(), want);
        }

        /// The flag parser never panics on arbitrary argument lists.
        #[test]
        fn flag_parser_never_panics(args in proptest::collection::vec("\\PC{0,12}", 0..6)) {
            let _ = Config::parse(args, |_| None);
        }
    }
}
