//! Logging: JSON lines (tracing) to stdout or `EXECD_LOG_FILE`, and the scrubber that keeps
//! secrets in command text out of the log (§1.4).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex_automata::meta::Regex;
use tracing_subscriber::filter::Targets;

use crate::config::Config;

mod lines;

use lines::{JsonLines, Output};

/// Maps upstream's numeric `--log-level` to a tracing filter directive.
pub fn level_directive(level: i64) -> &'static str {
    match level {
        i64::MIN..=3 => "error",
        4 => "warn",
        5 | 6 => "info",
        _ => "debug",
    }
}

/// The filter: `RUST_LOG` when it is set and parses as `level` or `target=level,…` (no span or
/// field filters), else `--log-level`.
fn filter(rust_log: Option<&str>, log_level: i64) -> Targets {
    rust_log
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| level_directive(log_level).parse().expect("a plain level parses"))
}

/// Installs the global subscriber. `RUST_LOG` overrides `--log-level` when set.
pub fn init(config: &Config) -> std::io::Result<()> {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), config.log_level);
    let output = match &config.log_file {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // A new log file is private: command lines may carry what the scrubber misses.
            let file =
                std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().create(true).append(true), 0o600)
                    .open(path)?;
            Output::File(std::sync::Mutex::new(file))
        }
        None => Output::Stdout,
    };
    tracing::subscriber::set_global_default(JsonLines::new(filter, output)).map_err(std::io::Error::other)
}

/// Credential shapes in command text: a pattern whose group 1 is kept, and what replaces the rest
/// of its match.
const SECRET_SHAPES: [(&str, &str); 3] = [
    // scheme://user:password@host
    (r"(?i)([a-z][a-z0-9+.-]*://)[^\s/@:]+:[^\s/@]*@", "***@"),
    // --password=x, --token x, --secret=x, --api-key=x
    (r"(?i)(--?(?:password|passwd|pass|token|secret|api[-_]?key|access[-_]?key)(?:=|\s+))\S+", "***"),
    // FOO_TOKEN=x, AWS_SECRET_ACCESS_KEY=x, DB_PASSWORD=x
    (r"(?i)\b([A-Z0-9_]*(?:TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)[A-Z0-9_]*=)\S+", "***"),
];

/// [`SECRET_SHAPES`] compiled on the first logged command, with ASCII classes (`\s`, `\b`, case)
/// and no literal prefilter: as `regex::Regex`es (Unicode classes, prefilters over every case
/// variant of the keywords) they took ~4 ms to build under musl's allocator, most of the first
/// command's latency (BENCHMARKS.md, "The first command"); ~0.3 ms now, and a command's text is
/// still matched in ~0.1–0.2 µs per pattern. ASCII classes scrub at least as much: a run of
/// non-ASCII-whitespace bytes is a secret's value, and a non-ASCII letter is a word boundary.
static SECRET_PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    SECRET_SHAPES
        .iter()
        .map(|(pattern, rest)| {
            let re = Regex::builder()
                // Nor a full or one-pass DFA: matching is the lazy DFA's either way, and a
                // match's groups (rare) are the PikeVM's.
                .configure(Regex::config().auto_prefilter(false).dfa(false).onepass(false))
                .syntax(regex_automata::util::syntax::Config::new().unicode(false).utf8(false))
                .build(pattern)
                .expect("valid regex");
            (re, *rest)
        })
        .collect()
});

/// At most this many bytes of a command's text go into a log line (issue #13 finding 8).
pub const LOG_COMMAND_MAX: usize = 1024;

/// The part of a command's text that is logged: at most [`LOG_COMMAND_MAX`] bytes (cut at a
/// character boundary, marked `…` when cut), secrets scrubbed. Log its full length beside it.
pub fn command_excerpt(text: &str) -> String {
    if text.len() <= LOG_COMMAND_MAX {
        return scrub_secrets(text).into_owned();
    }
    let mut end = LOG_COMMAND_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = scrub_secrets(&text[..end]).into_owned();
    out.push('…');
    out
}

/// Replaces credentials in `text` with `***` before it is logged.
pub fn scrub_secrets(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for (re, rest) in SECRET_PATTERNS.iter() {
        if re.is_match(out.as_bytes()) {
            out = Cow::Owned(replace_all(re, &out, rest));
        }
    }
    out
}

/// `text` with each match of `re` replaced by its group 1 and `rest`. A match begins at an ASCII
/// byte and ends at one or where a run of non-whitespace bytes ends, so at character boundaries:
/// the result is UTF-8 (checked, not assumed).
fn replace_all(re: &Regex, text: &str, rest: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut last = 0;
    for caps in re.captures_iter(bytes) {
        let (Some(m), Some(kept)) = (caps.get_match(), caps.get_group(1)) else { continue };
        out.extend_from_slice(&bytes[last..m.start()]);
        out.extend_from_slice(&bytes[kept.range()]);
        out.extend_from_slice(rest.as_bytes());
        last = m.end();
    }
    out.extend_from_slice(&bytes[last..]);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_common_secret_shapes() {
        let cases = [
            ("git clone https://bob:hunter2@example.com/r.git", "git clone https://***@example.com/r.git"),
            ("mysql --password=hunter2 -u x", "mysql --password=*** -u x"),
            ("GITHUB_TOKEN=abc123 make", "GITHUB_TOKEN=*** make"),
            ("curl --token abc", "curl --token ***"),
            ("echo hello", "echo hello"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub_secrets(input), want, "{input}");
        }
    }

    #[test]
    fn scrubs_every_match_around_non_ascii_text_and_keeps_it_utf8() {
        let cases = [
            ("café TOKEN=é€x ü", "café TOKEN=*** ü"),
            ("a=1 GITHUB_TOKEN=x b=2 NPM_TOKEN=y", "a=1 GITHUB_TOKEN=*** b=2 NPM_TOKEN=***"),
            ("--Password=Ünïcode\u{a0}tail next", "--Password=*** next"),
            ("https://ü:p@h and ftp://u:ß@h", "https://***@h and ftp://***@h"),
            ("no secret — just “quotes”", "no secret — just “quotes”"),
            ("--token\tabc --secret=def", "--token\t*** --secret=***"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub_secrets(input), want, "{input}");
        }
    }

    #[test]
    fn h8_command_excerpt_is_bounded_and_scrubbed() {
        assert_eq!(command_excerpt("echo hi"), "echo hi");
        let long = format!("DB_PASSWORD=s3cret {}", "é".repeat(4000));
        let e = command_excerpt(&long);
        assert!(e.len() <= LOG_COMMAND_MAX + '…'.len_utf8(), "{}", e.len());
        assert!(e.starts_with("DB_PASSWORD=*** ") && e.ends_with('…'), "{e}");
    }

    #[test]
    fn levels() {
        assert_eq!(level_directive(0), "error");
        assert_eq!(level_directive(4), "warn");
        assert_eq!(level_directive(6), "info");
        assert_eq!(level_directive(9), "debug");
    }

    #[test]
    fn rust_log_overrides_the_level_when_it_parses() {
        use tracing::Level;
        let f = filter(None, 4);
        assert!(f.would_enable("execd", &Level::WARN) && !f.would_enable("execd", &Level::INFO));
        let f = filter(Some("execd=debug,hyper=warn"), 4);
        assert!(f.would_enable("execd::api", &Level::DEBUG));
        assert!(!f.would_enable("hyper::proto", &Level::INFO));
        let f = filter(Some("=nonsense=="), 6);
        assert!(f.would_enable("execd", &Level::INFO) && !f.would_enable("execd", &Level::DEBUG));
    }
}
