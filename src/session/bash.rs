//! The bash side of a session run: the driver passed to `bash --noprofile --norc -c`, the shell
//! state file format, and the pure helpers (quoting, name checks) behind them.
//!
//! # State handover (DECISIONS D20)
//!
//! Every run is a fresh `bash`. Between runs the shell state lives in a **state file** in the
//! session directory, written by bash itself and read back with `source` by the next run. Nothing
//! of it ever goes through stdout/stderr, so no marker can show up in the output (C78).
//!
//! The driver (one line, so bash parses all of it before any restored alias exists) does:
//!
//! 1. `source` the current state file (`state.<gen>.sh`) with stderr silenced (restoring bash's own
//!    readonly variables fails harmlessly); fd 3 keeps the real stderr so that a failing `cd` into
//!    a directory that vanished is still reported;
//! 2. define `__execd_save`, turn on `expand_aliases`, `cd` to the request's `cwd` override, and
//!    install `{ __execd_save; } >/dev/null 2>&1` as the EXIT trap (covers `exit N` and `set -e`);
//! 3. `source` the command file: `{ __execd_opts; } 2>/dev/null; <command as written>`. The user's
//!    text is parsed by bash only now, after the state was restored, so aliases of earlier runs
//!    expand. The shell options (`set -o` / `shopt`) are applied by `__execd_opts` on that same
//!    line, so `set -x` traces the user's command and never the driver;
//! 4. on a normal end, save explicitly (a user `trap ... EXIT` replaces ours) and `exit` with the
//!    command's status. The status is taken and the save runs inside a group whose output goes to
//!    `/dev/null`, and the save turns off `-x`/`-v`, so a user's `set -x` never traces the driver.
//!
//! `__execd_save` writes the raw next state `save.<gen+1>.sh` (a new file: truncating a non-empty
//! file on ext4 costs milliseconds), in this order, each part safe against the parts that follow
//! it being restored:
//!
//! - the `__execd_opts` function: `shopt -p` and `set +o` (captured first, before the save turns
//!   off `-e`, `-u`, `-x` and `-v` for its own work), and `umask -p`;
//! - `builtin cd -- <pwd> 2>&3` (before the variables, so `OLDPWD` survives);
//! - `declare -p` of every variable. Its output is valid bash for every value (quotes, `$`,
//!   backquotes, newlines), for arrays and for attributes (`-x`, `-i`, `-r`, `-a`, `-A`, `-n`).
//!   Variables absent from the file are absent in the next run: `unset` persists, also for
//!   variables execd itself has (bash starts with an empty environment; the file exports);
//! - `declare -f` (functions);
//! - `alias -p` last: an alias restored earlier could rewrite the restore commands after it;
//! - [`STATE_END`], so execd can tell a complete file from one cut short.
//!
//! The save has no loop (bash loops cost milliseconds here). execd renames the complete raw file
//! to `state.<gen+1>.sh` (restoring it as it is works: the entries dropped below are harmless)
//! and, once the run's terminal event is out, rewrites it in place with [`compact_state`]: the
//! ~90 option lines become four commands, the
//! variables are merged into one `declare` per attribute set, and the entries of bash's own
//! variables ([`SPECIAL_VARS`]: readonly, dynamic or call-stack ones, and the driver's
//! `__execd_*`) are dropped, by a quote-aware scanner of `declare -p` output (should
//! one slip through, restoring it is harmless: readonly ones fail silently, dynamic ones are
//! listed without a value, and bash ignores assignments to its call-stack arrays).
//!
//! execd adopts the new file only when the run ended without being killed by execd (timeout,
//! delete, disconnect, shutdown) and the file is complete; otherwise the session keeps the state
//! from before the run. `exec cmd` replaces bash, so no trap runs: the state then also stays as
//! before that run.
//!
//! Known limits: traps, jobs, the directory stack and `export -f` flags do not persist; if `exit`
//! is called inside a function, that function's `local` variables are saved as globals; names
//! starting with `__execd_` are reserved.

use std::path::Path;

/// Last line of a complete state file.
pub const STATE_END: &str = "#execd-state-end\n";

/// Variables bash manages itself (dynamic, readonly, or describing the running shell): not taken
/// from execd's environment into a new session, and dropped from saved states.
pub const SPECIAL_VARS: &[&str] = &[
    "BASH",
    "BASHOPTS",
    "BASHPID",
    "BASH_ALIASES",
    "BASH_ARGC",
    "BASH_ARGV",
    "BASH_ARGV0",
    "BASH_CMDS",
    "BASH_COMMAND",
    "BASH_EXECUTION_STRING",
    "BASH_LINENO",
    "BASH_REMATCH",
    "BASH_SOURCE",
    "BASH_SUBSHELL",
    "BASH_VERSINFO",
    "BASH_VERSION",
    "COMP_WORDBREAKS",
    "DIRSTACK",
    "EPOCHREALTIME",
    "EPOCHSECONDS",
    "EUID",
    "FUNCNAME",
    "GROUPS",
    "HISTCMD",
    "LINENO",
    "PIPESTATUS",
    "PPID",
    "PWD",
    "RANDOM",
    "SECONDS",
    "SHELLOPTS",
    "SHLVL",
    "SRANDOM",
    "UID",
    "_",
];

/// Whether `name` is a shell variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_var_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Whether an environment variable goes into a new session: a valid name, not special, not the
/// driver's own.
pub fn is_session_var(name: &str) -> bool {
    is_var_name(name) && !SPECIAL_VARS.contains(&name) && !name.starts_with("__execd_")
}

/// `s` as one bash word in single quotes (`'` becomes `'\''`). Any byte sequence survives.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// [`quote`] for a path (lossy for non-UTF-8 bytes, which execd never creates itself).
fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// The state file of a new session: `expand_aliases` on, the starting directory (if any) and the
/// environment as exported variables.
pub fn initial_state<'a>(cwd: Option<&Path>, env: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut s = String::from("__execd_opts() { builtin unset -f __execd_opts; builtin shopt -s expand_aliases; }\n");
    if let Some(cwd) = cwd {
        s.push_str(&format!("builtin cd -- {} 2>&3\n", quote_path(cwd)));
    }
    // One `declare` for all: one builtin call restores much faster than one per variable.
    let vars: Vec<String> =
        env.into_iter().filter(|(k, _)| is_session_var(k)).map(|(k, v)| format!("{k}={}", quote(v))).collect();
    if !vars.is_empty() {
        s.push_str(&format!("declare -x {}\n", vars.join(" ")));
    }
    s.push_str(STATE_END);
    s
}

/// Whether `content` ends with [`STATE_END`] (a save that ran to its end).
pub fn is_complete(tail: &[u8]) -> bool {
    tail.ends_with(STATE_END.as_bytes())
}

/// The command file: the options restore, then the user's text on the same first line (so
/// `$LINENO` counts the user's lines), with a final newline.
pub fn command_file(command: &str) -> String {
    let mut s = String::with_capacity(command.len() + 40);
    s.push_str("{ __execd_opts; } 2>/dev/null; ");
    s.push_str(command);
    if !command.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// The `-c` argument of `bash --noprofile --norc`: restore `state`, run `cmd`, save to `next`.
/// `cwd` is the request's directory override (it persists: the save records the final `$PWD`).
pub fn driver(state: &Path, cmd: &Path, next: &Path, cwd: Option<&Path>) -> String {
    let save = format!(
        "__execd_save() {{ [[ -z ${{__execd_saved-}} ]] || builtin return 0; __execd_saved=1; {{ \
         builtin printf '%s\\n' '__execd_opts() {{' 'builtin unset -f __execd_opts'; \
         builtin shopt -p; builtin set +o; builtin umask -p; builtin printf '%s\\n' '}}'; \
         builtin set +euvx; [[ -z ${{PWD-}} ]] || builtin printf 'builtin cd -- %q 2>&3\\n' \"$PWD\"; \
         builtin declare -p; builtin declare -f; builtin alias -p; builtin printf '%s\\n' {end}; \
         }} >| \"$__execd_out\"; }}",
        end = quote(STATE_END.trim_end()),
    );
    let cd = cwd.map(|d| format!("builtin cd -- {}; ", quote_path(d))).unwrap_or_default();
    format!(
        "builtin source -- {state} 3>&2 2>/dev/null; builtin unset -v BASH_EXECUTION_STRING; __execd_out={next}; __execd_saved=; {save}; builtin shopt -s expand_aliases; \
         {cd}builtin trap '{{ __execd_save; }} >/dev/null 2>&1' EXIT; builtin source -- {cmd}; \
         {{ __execd_rc=$?; __execd_save; }} >/dev/null 2>&1; builtin exit \"$__execd_rc\"",
        state = quote_path(state),
        next = quote_path(next),
        cmd = quote_path(cmd),
    )
}

/// Rewrites the option block that bash's save wrote one command per line (`shopt -p`, `set +o`:
/// about 90 lines, most of a run's restore time) into four commands on one line, and copies the
/// rest of the state file unchanged. Lines it does not recognise are kept as they are.
pub fn compact_state(raw: &mut impl std::io::BufRead, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut line = String::new();
    raw.read_line(&mut line)?;
    if line != "__execd_opts() {\n" {
        out.write_all(line.as_bytes())?;
        std::io::copy(raw, out)?;
        return Ok(());
    }
    let (mut on, mut off, mut set, mut other) = (String::new(), String::new(), String::new(), String::new());
    loop {
        line.clear();
        if raw.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end_matches('\n');
        if l == "}" {
            break;
        }
        let mut words = l.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("shopt"), Some("-s"), Some(name), None) => on.push_str(&format!(" {name}")),
            (Some("shopt"), Some("-u"), Some(name), None) => off.push_str(&format!(" {name}")),
            (Some("set"), Some(flag @ ("-o" | "+o")), Some(name), None) => set.push_str(&format!(" {flag} {name}")),
            (Some("builtin"), Some("unset"), Some("-f"), Some("__execd_opts")) => {}
            _ => other.push_str(&format!(" {l};")),
        }
    }
    let mut head = String::from("__execd_opts() { builtin unset -f __execd_opts;");
    if !on.is_empty() {
        head.push_str(&format!(" builtin shopt -s{on};"));
    }
    if !off.is_empty() {
        head.push_str(&format!(" builtin shopt -u{off};"));
    }
    // After shopt: `set -o errexit` must not stop the rest; `umask` and the like come last.
    if !set.is_empty() {
        head.push_str(&format!(" builtin set{set};"));
    }
    head.push_str(&other);
    head.push_str(" }\n");
    out.write_all(head.as_bytes())?;
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest)?;
    out.write_all(&compact_vars(&rest))
}

/// The rest of a state file with its `declare -p` part compacted: the entries of [`SPECIAL_VARS`]
/// and `__execd_*` dropped (restoring them is harmless but costs ~10 µs each), and the others
/// merged into one `declare` per attribute set (one builtin call for many variables restores more
/// than twice as fast). Entries are found with a quote-aware scanner; at anything it does not
/// understand it keeps the remainder unchanged.
pub fn compact_vars(rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rest.len());
    let mut pos = 0;
    let mut seen_declare = false;
    // Kept entries by their `declare -<flags> ` prefix, in first-seen order.
    let mut groups: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    while pos < rest.len() {
        let here = &rest[pos..];
        if here.starts_with(b"declare -") {
            seen_declare = true;
            let Some((len, name, body)) = declare_entry(here) else { break };
            let name = std::str::from_utf8(name).unwrap_or("");
            if !(SPECIAL_VARS.contains(&name) || name.starts_with("__execd_")) {
                let (prefix, value) = (&here[..body], &here[body..len - 1]);
                match groups.iter_mut().find(|(p, _)| *p == prefix) {
                    Some((_, values)) => values.push(value),
                    None => groups.push((prefix, vec![value])),
                }
            }
            pos += len;
        } else if seen_declare {
            break;
        } else {
            // Lines before the variables (the `cd`).
            let len = here.iter().position(|&b| b == b'\n').map_or(here.len(), |i| i + 1);
            out.extend_from_slice(&here[..len]);
            pos += len;
        }
    }
    for (prefix, values) in groups {
        out.extend_from_slice(prefix);
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(v);
        }
        out.push(b'\n');
    }
    out.extend_from_slice(&rest[pos..]);
    out
}

/// Length (through its newline), name and start of `NAME[=VALUE]` of the
/// `declare -<flags> NAME[=VALUE]` entry at the start of `s`, as `declare -p` prints it; `None` if
/// it does not look like one.
fn declare_entry(s: &[u8]) -> Option<(usize, &[u8], usize)> {
    let mut i = b"declare -".len();
    while *s.get(i)? != b' ' {
        if s[i] == b'\n' {
            return None;
        }
        i += 1;
    }
    i += 1;
    let start = i;
    while s.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
        i += 1;
    }
    let name = &s[start..i];
    if name.is_empty() {
        return None;
    }
    match *s.get(i)? {
        b'\n' => return Some((i + 1, name, start)),
        b'=' => i += 1,
        _ => return None,
    }
    if *s.get(i)? == b'(' {
        // Array: quoted parts and escapes until the closing parenthesis.
        i += 1;
        loop {
            match *s.get(i)? {
                b')' => {
                    i += 1;
                    break;
                }
                _ => i = scan_part(s, i)?,
            }
        }
    } else {
        while *s.get(i)? != b'\n' {
            i = scan_part(s, i)?;
        }
    }
    (*s.get(i)? == b'\n').then_some((i + 1, name, start))
}

/// Skips one lexical part at `i`: a `"..."`, `'...'` or `$'...'` string, a backslash escape, or
/// one plain byte. Returns the index after it.
fn scan_part(s: &[u8], i: usize) -> Option<usize> {
    let (quote, mut j, escapes) = match (s[i], s.get(i + 1)) {
        (b'"', _) => (b'"', i + 1, true),
        (b'\'', _) => (b'\'', i + 1, false),
        (b'$', Some(b'\'')) => (b'\'', i + 2, true),
        (b'\\', _) => return (i + 2 <= s.len()).then_some(i + 2),
        _ => return Some(i + 1),
    };
    loop {
        let b = *s.get(j)?;
        if escapes && b == b'\\' {
            j += 2;
        } else if b == quote {
            return Some(j + 1);
        } else {
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["A", "_", "a_1", "PATH", "_x9"] {
            assert!(is_var_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é", "a b"] {
            assert!(!is_var_name(bad), "{bad}");
        }
        assert!(is_session_var("HOME"));
        assert!(!is_session_var("SHLVL") && !is_session_var("__execd_rc") && !is_session_var("BASH_VERSINFO"));
    }

    #[test]
    fn quoting_round_trips_through_bash() {
        let value = "a'b\"c$d`e\\f\ng !*";
        let out =
            std::process::Command::new("bash").arg("-c").arg(format!("printf %s {}", quote(value))).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
    }

    #[test]
    fn initial_state_skips_bad_and_special_names() {
        let env: Vec<(String, String)> = vec![
            ("HOME".into(), "/root".into()),
            ("SHLVL".into(), "3".into()),
            ("BAD-NAME".into(), "x".into()),
            ("Q".into(), "it's".into()),
        ];
        let s = initial_state(Some(Path::new("/tmp")), env.iter().map(|(a, b)| (a, b)));
        assert!(s.contains("declare -x HOME='/root' Q='it'\\''s'\n"), "{s}");
        assert!(!s.contains("SHLVL") && !s.contains("BAD-NAME"));
        assert!(s.contains("builtin cd -- '/tmp' 2>&3\n"));
        assert!(is_complete(s.as_bytes()));
        assert!(!is_complete(b"declare -- X=1\n"));
    }

    #[test]
    fn command_file_keeps_user_text() {
        assert_eq!(command_file("echo hi"), "{ __execd_opts; } 2>/dev/null; echo hi\n");
        assert_eq!(command_file("a\n"), "{ __execd_opts; } 2>/dev/null; a\n");
    }

    #[test]
    fn option_block_is_compacted_and_the_rest_copied() {
        let raw = "__execd_opts() {\nbuiltin unset -f __execd_opts\nshopt -u autocd\nshopt -s extglob\n\
                   shopt -u login_shell\nset +o allexport\nset -o pipefail\numask 0022\n}\n\
                   builtin cd -- /tmp 2>&3\ndeclare -- X=\"1\"\n#execd-state-end\n";
        let mut out = Vec::new();
        compact_state(&mut raw.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "__execd_opts() { builtin unset -f __execd_opts; builtin shopt -s extglob; \
             builtin shopt -u autocd login_shell; builtin set +o allexport -o pipefail; umask 0022; }\n\
             builtin cd -- /tmp 2>&3\ndeclare -- X=\"1\"\n#execd-state-end\n"
        );
        let other = "declare -- X=1\n";
        let mut out = Vec::new();
        compact_state(&mut other.as_bytes(), &mut out).unwrap();
        assert_eq!(out, other.as_bytes());
    }

    #[test]
    fn special_variables_are_dropped_and_the_rest_merged_per_attribute_set() {
        let rest = concat!(
            "builtin cd -- /tmp 2>&3\n",
            "declare -- BASH=\"/bin/bash\"\n",
            "declare -a BASH_SOURCE=([0]=\"x\" [1]=\")\\\"\")\n",
            "declare -- X=\"multi\ndeclare -- RANDOM=\\\"1\\\"\nline\"\n",
            "declare -i RANDOM\n",
            "declare -A m=([\"a b\"]=\"v\" [k]=$'q\\'z' )\n",
            "declare -- __execd_rc=\"0\"\n",
            "declare -x Y=$'a\\nb'\n",
            "declare -- Z=\"z\"\n",
            "f () \n{ \n    declare -- RANDOM=1\n}\n",
        );
        let want = concat!(
            "builtin cd -- /tmp 2>&3\n",
            "declare -- X=\"multi\ndeclare -- RANDOM=\\\"1\\\"\nline\" Z=\"z\"\n",
            "declare -A m=([\"a b\"]=\"v\" [k]=$'q\\'z' )\n",
            "declare -x Y=$'a\\nb'\n",
            "f () \n{ \n    declare -- RANDOM=1\n}\n",
        );
        assert_eq!(String::from_utf8(compact_vars(rest.as_bytes())).unwrap(), want);
        // Something unexpected: the rest is kept as it is.
        let odd = "declare -- RANDOM\ndeclare -- X=\"unterminated\n";
        assert_eq!(String::from_utf8(compact_vars(odd.as_bytes())).unwrap(), "declare -- X=\"unterminated\n");
    }

    #[test]
    fn declare_p_output_of_real_bash_survives_the_scanner() {
        let script = r#"X=$'a\nb"c$d`e\\f'; Y='plain "q"'; arr=(1 "two words" $'x\ny' ')'); declare -A m=([k]=v ["a b"]=c [')']='(' ); declare -i n=3; readonly R=1; declare -p"#;
        let out = std::process::Command::new("bash").arg("--norc").arg("-c").arg(script).output().unwrap();
        let dump = out.stdout;
        let kept = compact_vars(&dump);
        let text = String::from_utf8_lossy(&kept);
        for name in ["X", "Y", "arr", "m", "n", "R"] {
            assert!(text.contains(&format!(" {name}=")), "{name} lost: {text}");
        }
        for name in ["BASH_VERSINFO", "EUID", "RANDOM", "BASHOPTS", "SHELLOPTS"] {
            assert!(!text.contains(&format!(" {name}")), "{name} kept: {text}");
        }
        // What is kept restores to the same values.
        let check = format!("{text}\ndeclare -p X Y arr m n R");
        let again = std::process::Command::new("bash").arg("--norc").arg("-c").arg(&check).output().unwrap();
        let orig = std::process::Command::new("bash")
            .arg("--norc")
            .arg("-c")
            .arg(script.replace("declare -p", "declare -p X Y arr m n R"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&again.stdout), String::from_utf8_lossy(&orig.stdout));
    }
}

/// The raw save bash writes is the session's state from its run's end until it is compacted
/// (`state.<gen>.sh` in both forms, X50): a run restored from either sees the same variables,
/// functions, aliases, options, umask and directory.
#[cfg(test)]
mod handover_tests {
    use super::*;

    fn run(dir: &Path, state: &Path, command: &str, next: &Path) -> String {
        let cmd = dir.join("cmd.sh");
        std::fs::write(&cmd, command_file(command)).unwrap();
        std::fs::write(next, "").unwrap();
        let out = std::process::Command::new("bash")
            .args(["--noprofile", "--norc", "-c", &driver(state, &cmd, next, None)])
            .env_clear()
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn x50_raw_and_compacted_states_restore_the_same_shell() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let empty = dir.join("state.0.sh");
        std::fs::write(&empty, STATE_END).unwrap();
        let raw = dir.join("raw.sh");
        let setup = "X=$'a\\nb'; export Y=2; declare -a arr=(1 'two words'); f() { echo \"f $1\"; }; \
                     alias ll='echo ll'; shopt -s extglob; set -o pipefail; umask 027; cd /tmp";
        run(dir, &empty, setup, &raw);
        assert!(is_complete(std::fs::read(&raw).unwrap().as_slice()), "the save is not complete");
        let compacted = dir.join("compacted.sh");
        compact_state(
            &mut std::io::BufReader::new(std::fs::File::open(&raw).unwrap()),
            &mut std::fs::File::create(&compacted).unwrap(),
        )
        .unwrap();
        let probe = "declare -p X Y arr; f x; ll; shopt -p extglob; set -o | grep pipefail; umask; pwd";
        let from_raw = run(dir, &raw, probe, &dir.join("n1.sh"));
        let from_compacted = run(dir, &compacted, probe, &dir.join("n2.sh"));
        assert!(from_raw.contains("declare -x Y=\"2\"") && from_raw.contains("f x\nll\n"), "{from_raw}");
        assert!(from_raw.contains("shopt -s extglob") && from_raw.contains("0027\n/tmp\n"), "{from_raw}");
        assert_eq!(from_raw, from_compacted);
    }
}
