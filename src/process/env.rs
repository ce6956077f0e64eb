//! Child environments, as pure functions: [`child_env`] is execd's own environment minus
//! execd-internal variables (DECISIONS D17, C181), then the `EXECD_ENVS` file (re-read on every
//! call, format of reference §4.5, its values expanded by [`crate::expand`]), then the request's
//! envs; a later layer overrides an earlier one.

use std::collections::BTreeMap;

use crate::expand::{expand_path, expand_with};

/// Variables of execd itself that children never see (secrets and internal markers).
pub const INTERNAL_VARS: &[&str] = &["EXECD_ACCESS_TOKEN", "JUPYTER_TOKEN", "_EXECD_CLONE3_COMPAT_APPLIED"];

/// An environment: name → value, ordered by name (deterministic for tests and `env_clear` spawns).
pub type EnvMap = BTreeMap<String, String>;

/// execd's environment without [`INTERNAL_VARS`]; non-UTF-8 entries are converted lossily.
///
/// Read once: execd's own environment does not change after its start (the one `set_var`, the
/// clone3 re-exec marker, happens before it), and reading, converting and sorting it was ~140 000
/// instructions of each command start, a fifth of execd's share (callgrind; BENCHMARKS.md,
/// "Instructions per command").
pub fn base_env() -> EnvMap {
    base_env_shared().clone()
}

/// [`base_env`] without a copy.
fn base_env_shared() -> &'static EnvMap {
    static BASE: std::sync::OnceLock<EnvMap> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        std::env::vars_os()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
            .filter(|(k, _)| !INTERNAL_VARS.contains(&k.as_str()))
            .collect()
    })
}

/// Parses an `EXECD_ENVS` file: blank and `#` lines skipped, split at the first `=`, lines without
/// `=` skipped, values expanded against `lookup` with undefined names becoming empty (Go's
/// `os.ExpandEnv`), no quote or `export` handling.
pub fn parse_envs_file(content: &str, lookup: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    content
        .lines()
        .filter_map(|raw| {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let Some((k, v)) = line.split_once('=') else {
                tracing::warn!(line = %line, "EXECD_ENVS: line without '=' skipped");
                return None;
            };
            let v = match unquote_env_value(v) {
                Quoted::Single(literal) => literal.to_string(),
                Quoted::Double(unescaped) => expand_with(&unescaped, |name| Some(lookup(name).unwrap_or_default())),
                Quoted::Bare(v) => expand_with(v, |name| Some(lookup(name).unwrap_or_default())),
            };
            Some((k.trim().to_string(), v))
        })
        .collect()
}

/// A value of the `EXECD_ENVS` file, by its quoting.
enum Quoted<'a> {
    /// `'...'`: taken literally, no expansion (the SDKs' `set_env` writes this form).
    Single(&'a str),
    /// `"..."`: `\\ \" \n \r \t` unescaped, then `$VAR` expanded.
    Double(String),
    /// Unquoted: `$VAR` expanded, as upstream 1.0.12.
    Bare(&'a str),
}

/// Recognises the quoted forms that SDK `set_env` (opensandbox 1.1.x) appends to the file:
/// `KEY='value'` when the value has no `'`, else `KEY="escaped value"`. Upstream 1.0.12 had no
/// quote handling, so those quotes ended up in the value; a value that merely starts with a quote
/// (no matching closing one) is still taken as it is.
fn unquote_env_value(v: &str) -> Quoted<'_> {
    let b = v.as_bytes();
    if b.len() >= 2 && b[0] == b'\'' && b[b.len() - 1] == b'\'' {
        return Quoted::Single(&v[1..v.len() - 1]);
    }
    if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' {
        let inner = &v[1..v.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        }
        return Quoted::Double(out);
    }
    Quoted::Bare(v)
}

/// Reads the `EXECD_ENVS` file named by `path` (itself `~`/`$VAR`-expanded against `base`). A
/// missing or unreadable file gives no entries.
pub fn read_envs_file(path: Option<&str>, base: &EnvMap) -> Vec<(String, String)> {
    let Some(path) = path.filter(|p| !p.is_empty()) else { return Vec::new() };
    let path = expand_path(path, |k| base.get(k).cloned());
    match std::fs::read_to_string(&path) {
        Ok(content) => parse_envs_file(&content, |k| base.get(k).cloned()),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path, error = %e, "EXECD_ENVS unreadable; ignored");
            }
            Vec::new()
        }
    }
}

/// The environment for a command: [`base_env`] + the `EXECD_ENVS` file + `request`.
pub fn child_env<'a>(envs_file: Option<&str>, request: impl IntoIterator<Item = (&'a String, &'a String)>) -> EnvMap {
    child_env_layers(envs_file, request).into_owned()
}

/// [`child_env`], borrowed (no copy) when the file and the request add nothing to [`base_env`].
pub fn child_env_layers<'a>(
    envs_file: Option<&str>,
    request: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> std::borrow::Cow<'static, EnvMap> {
    let base = base_env_shared();
    let file = read_envs_file(envs_file, base);
    let mut request = request.into_iter().peekable();
    if file.is_empty() && request.peek().is_none() {
        return std::borrow::Cow::Borrowed(base);
    }
    let mut env = base.clone();
    env.extend(file);
    env.extend(request.map(|(k, v)| (k.clone(), v.clone())));
    std::borrow::Cow::Owned(env)
}

/// Whether a child whose environment is [`base_env`] can simply inherit execd's: none of
/// [`INTERNAL_VARS`] is in it (the daemon removes them at start, [`scrub_internal_vars`]). Then
/// the spawn copies nothing: building a cleared environment back up was ~140 000 instructions per
/// command in std (BENCHMARKS.md, "Instructions per command").
pub fn inheritable() -> bool {
    static CLEAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CLEAN.get_or_init(|| INTERNAL_VARS.iter().all(|k| std::env::var_os(k).is_none()))
}

/// Removes [`INTERNAL_VARS`] from execd's own environment once the configuration has read them.
/// Only while execd has one thread (the environment is not synchronised with other threads' reads).
pub fn scrub_internal_vars() {
    for k in INTERNAL_VARS {
        std::env::remove_var(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_set_env_quoted_forms_are_unquoted() {
        let file = concat!(
            "A='alpha beta'\n",
            "B=\"it's \\\"x\\\" \\\\ \\n$HOME\"\n",
            "C='$HOME stays'\n",
            "D=$HOME\n",
            "E='unbalanced\n",
            "F=''\n",
        );
        let got = parse_envs_file(file, |k| (k == "HOME").then(|| "/root".to_string()));
        let want: Vec<(String, String)> = [
            ("A", "alpha beta"),
            ("B", "it's \"x\" \\ \n/root"),
            ("C", "$HOME stays"),
            ("D", "/root"),
            ("E", "'unbalanced"),
            ("F", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn envs_file_format() {
        let content = "# comment\n\nX1=from-file\nNOEQ\nP=$A:${UNDEF}:z\n  K=v=w \n";
        let got = parse_envs_file(content, crate::expand::tests::env());
        assert_eq!(
            got,
            vec![
                ("X1".to_string(), "from-file".to_string()),
                ("P".to_string(), "x::z".to_string()),
                ("K".to_string(), "v=w".to_string())
            ]
        );
    }

    #[test]
    fn internal_vars_never_reach_children() {
        let env = child_env(None, std::iter::empty());
        for k in INTERNAL_VARS {
            assert!(!env.contains_key(*k));
        }
    }

    #[test]
    fn layers_override_in_order() {
        let dir = std::env::temp_dir().join(format!("execd-envtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("envs");
        std::fs::write(&f, "L1=file\nL2=file\n").unwrap();
        let req: BTreeMap<String, String> = [("L2".to_string(), "req".to_string())].into();
        let env = child_env(Some(f.to_str().unwrap()), &req);
        assert_eq!(env["L1"], "file");
        assert_eq!(env["L2"], "req");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
