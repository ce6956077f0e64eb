//! `$VAR`, `${VAR}` and a leading `~` in paths and values (reference §2.9, DECISIONS D31): an
//! undefined variable, and a `$` not followed by a name, stay literal text. Pure functions with the
//! variables looked up by the caller: commands, sessions, PTYs and code interpreting expand a
//! working directory against the child's environment, the file routes against execd's or an
//! identity's, the `EXECD_ENVS` file its values.

/// Expands `$NAME` and `${NAME}` (NAME = `[A-Za-z_][A-Za-z0-9_]*`) with `lookup`; an undefined name
/// and any other `$` form stay literal (DECISIONS D31).
pub fn expand_vars(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    expand_with(s, lookup)
}

/// [`expand_vars`], then a leading `~`, `~/` or `~\` becomes `HOME` (from `lookup`).
pub fn expand_path(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let expanded = expand_with(s, &lookup);
    if expanded == "~" || expanded.starts_with("~/") || expanded.starts_with("~\\") {
        if let Some(home) = lookup("HOME").filter(|h| !h.is_empty()) {
            return format!("{home}{}", &expanded[1..]);
        }
    }
    expanded
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

pub(crate) fn expand_with(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut lit = 0; // start of the pending literal run
    while i < b.len() {
        if b[i] != b'$' || i + 1 >= b.len() {
            i += 1;
            continue;
        }
        let (name_start, name_end, next) = if b[i + 1] == b'{' {
            let start = i + 2;
            match s[start..].find('}') {
                Some(len) => (start, start + len, start + len + 1),
                None => {
                    i += 1;
                    continue;
                }
            }
        } else {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && is_name_char(b[end]) {
                end += 1;
            }
            (start, end, end)
        };
        let name = &s[name_start..name_end];
        let valid = !name.is_empty() && is_name_start(name.as_bytes()[0]) && name.bytes().all(is_name_char);
        match valid.then(|| lookup(name)).flatten() {
            Some(value) => {
                out.push_str(&s[lit..i]);
                out.push_str(&value);
                lit = next;
                i = next;
            }
            None => i += 1,
        }
    }
    out.push_str(&s[lit..]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small environment for expansion tables (also the env-file tests').
    pub(crate) fn env() -> impl Fn(&str) -> Option<String> {
        |k: &str| match k {
            "HOME" => Some("/root".into()),
            "A" => Some("x".into()),
            "B_1" => Some("y".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_table() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("$A", "x"),
            ("${A}", "x"),
            ("/p/$A/q", "/p/x/q"),
            ("$A$B_1", "xy"),
            ("${A}b", "xb"),
            ("$Ab", "$Ab"),
            ("$UNDEF/x", "$UNDEF/x"),
            ("${UNDEF}", "${UNDEF}"),
            ("a$1.txt", "a$1.txt"),
            ("$$", "$$"),
            ("$", "$"),
            ("${A", "${A"),
            ("x$EMPTY.y", "x.y"),
            ("~", "/root"),
            ("~/d", "/root/d"),
            ("~user", "~user"),
            ("a/~", "a/~"),
            ("$HOME/x", "/root/x"),
            ("é$A", "éx"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_path(input, env()), want, "{input}");
        }
    }
}
