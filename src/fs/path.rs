//! Path expansion and resolution for every filesystem route (§2.9, DECISIONS D31): `$NAME` and
//! `${NAME}` from execd's environment (an undefined name stays literal text), a leading `~` or
//! `~/` becomes `$HOME`, and relative paths resolve against execd's working directory.
//!
//! Routes take paths through the `*_checked` functions, which refuse an empty path (as given, or
//! once expanded): it would silently mean execd's own working directory (issue #13 finding 9;
//! refused with 400 like `/` in DECISIONS D32).

use std::path::{Component, Path, PathBuf};

use super::FsError;

/// Expands `s` with execd's own environment (see [`expand_with`]); for a request run as another
/// identity, with that identity's home and from `/` instead ([`super::identity::expand`]).
pub fn expand(s: &str) -> String {
    if let Some(e) = super::identity::expand_current(s) {
        return e;
    }
    expand_with(s, |name| std::env::var(name).ok())
}

/// Expands `$NAME`, `${NAME}` (NAME = `[A-Za-z_][A-Za-z0-9_]*`) through `lookup`, then a leading
/// `~` (alone or followed by `/`) to `lookup("HOME")`. Anything undefined or not of that form is
/// kept literally: `a$1.txt`, `$`, `${x`, `$NOPE/x` stay as written. The one expander lives in
/// [`crate::expand`], shared with command, session and PTY working directories.
pub fn expand_with(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    crate::expand::expand_path(s, lookup)
}

/// Expands `s` and makes it absolute and lexically clean (Go's `filepath.Abs`). An empty string
/// is execd's working directory.
pub fn resolve(s: &str) -> PathBuf {
    absolute(Path::new(&expand(s)))
}

/// Expands `s` without making it absolute (routes where upstream leaves the path relative).
pub fn expanded(s: &str) -> PathBuf {
    PathBuf::from(expand(s))
}

/// Expands `s`, refusing an empty result (400).
pub fn non_empty(s: &str) -> Result<String, FsError> {
    let expanded = expand(s);
    if expanded.is_empty() {
        return Err(FsError::Invalid(format!("empty path {s:?}: refusing to act on execd's working directory")));
    }
    Ok(expanded)
}

/// [`resolve`], refusing an empty path.
pub fn resolve_checked(s: &str) -> Result<PathBuf, FsError> {
    Ok(absolute(Path::new(&non_empty(s)?)))
}

/// [`expanded`], refusing an empty path.
pub fn expanded_checked(s: &str) -> Result<PathBuf, FsError> {
    Ok(PathBuf::from(non_empty(s)?))
}

/// Checks every path of a request before any of them is acted on, so that a refused path does not
/// leave the earlier items applied.
pub fn check_all<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), FsError> {
    paths.into_iter().try_for_each(|p| non_empty(p).map(drop))
}

/// `p` joined onto the working directory if relative, then cleaned.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        clean(p)
    } else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        clean(&cwd.join(p))
    }
}

/// Lexical cleaning of an absolute path: drops `.` and empty parts, resolves `..` (never above
/// `/`). Relative input is cleaned the same way, keeping leading `..`.
pub fn clean(p: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// Whether `p` names the root directory once made absolute and cleaned (DECISIONS D32).
pub fn is_root(p: &Path) -> bool {
    absolute(p) == Path::new("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".into()),
            "A" => Some("aa".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_table() {
        let cases = [
            ("", ""),
            ("/plain/path", "/plain/path"),
            ("~", "/home/u"),
            ("~/x", "/home/u/x"),
            ("~x", "~x"),
            ("/a/~/b", "/a/~/b"),
            ("$HOME/x", "/home/u/x"),
            ("${HOME}/x", "/home/u/x"),
            ("$A$A", "aaaa"),
            ("${A}b", "aab"),
            ("$Ab", "$Ab"),
            ("$NOPE/x", "$NOPE/x"),
            ("${NOPE}/x", "${NOPE}/x"),
            ("a$1.txt", "a$1.txt"),
            ("a$$b", "a$$b"),
            ("cost$", "cost$"),
            ("${A", "${A"),
            ("${}", "${}"),
            ("${1x}", "${1x}"),
            ("x$EMPTY/y", "x/y"),
            ("测试/$A", "测试/aa"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_with(input, env), want, "input {input:?}");
        }
    }

    #[test]
    fn tilde_without_home_stays() {
        assert_eq!(expand_with("~/x", |_| None), "~/x");
    }

    #[test]
    fn clean_table() {
        let cases = [
            ("/", "/"),
            ("/a/b/../c", "/a/c"),
            ("/a/./b//c/", "/a/b/c"),
            ("/..", "/"),
            ("/a/../..", "/"),
            ("/tmp/..", "/"),
            ("a/../..", ".."),
        ];
        for (input, want) in cases {
            assert_eq!(clean(Path::new(input)), PathBuf::from(want), "input {input:?}");
        }
    }

    #[test]
    fn empty_paths_are_refused_as_given_and_once_expanded() {
        assert!(matches!(non_empty(""), Err(FsError::Invalid(m)) if m.contains("empty path")));
        std::env::set_var("EXECD_PATH_TEST_EMPTY", "");
        assert!(resolve_checked("$EXECD_PATH_TEST_EMPTY").is_err());
        assert!(expanded_checked("${EXECD_PATH_TEST_EMPTY}").is_err());
        assert!(check_all(["/a", "", "/b"]).is_err());
        assert_eq!(resolve_checked("/a/../b").unwrap(), PathBuf::from("/b"));
        assert_eq!(expanded_checked("x").unwrap(), PathBuf::from("x"));
        assert!(check_all(["/a", " ", "."]).is_ok());
    }

    #[test]
    fn root_detection() {
        assert!(is_root(Path::new("/")));
        assert!(is_root(Path::new("/tmp/../")));
        assert!(is_root(Path::new("//")));
        assert!(!is_root(Path::new("/tmp")));
    }
}
