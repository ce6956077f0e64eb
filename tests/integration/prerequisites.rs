//! The skip helper of `tests/integration/common` (issue #13, "skips that pass"): a test whose prerequisite is
//! missing (root, busybox, a Jupyter venv, a tmpfs mount) calls `common::prerequisite_missing`,
//! which fails the test when `CI` is `true`/`1` and prints `SKIPPED: ...` otherwise. These tests
//! prove both halves, once with the decision passed in and once through the real environment
//! variable in a child process (this test binary run again), so the process environment of this
//! test process is never changed.

use crate::common;

use std::process::Command;

/// Set in the child process only: makes [`child_calls_prerequisite_missing`] do its work.
const CHILD_MARK: &str = "EXECD_PREREQ_CHILD";

#[test]
#[should_panic(expected = "prerequisite missing in CI")]
fn hx_prerequisite_missing_panics_in_ci() {
    common::prerequisite_missing_in(true, "needs root");
}

#[test]
fn hx_prerequisite_missing_only_reports_outside_ci() {
    common::prerequisite_missing_in(false, "needs root");
}

#[test]
fn hx_ci_variable_values() {
    for v in ["true", "TRUE", "True", "1"] {
        assert!(common::ci_value_means_ci(Some(v)), "{v}");
    }
    for v in [None, Some(""), Some("0"), Some("false"), Some("no"), Some("yes")] {
        assert!(!common::ci_value_means_ci(v), "{v:?}");
    }
}

/// Runs only as the child of [`hx_prerequisite_missing_fails_the_test_when_ci_is_set`].
#[test]
#[ignore = "run by hx_prerequisite_missing_fails_the_test_when_ci_is_set in a child process"]
fn child_calls_prerequisite_missing() {
    if std::env::var_os(CHILD_MARK).is_none() {
        return;
    }
    common::prerequisite_missing("a prerequisite this child never has");
}

/// The real `CI` variable decides: the same test fails with `CI=true` and `CI=1`, and passes
/// (printing `SKIPPED:`) without it or with `CI=false`.
#[test]
fn hx_prerequisite_missing_fails_the_test_when_ci_is_set() {
    let exe = std::env::current_exe().unwrap();
    let run = |ci: Option<&str>| {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "prerequisites::child_calls_prerequisite_missing",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MARK, "1");
        match ci {
            Some(v) => cmd.env("CI", v),
            None => cmd.env_remove("CI"),
        };
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    for ci in [Some("true"), Some("1")] {
        let (ok, text) = run(ci);
        assert!(!ok, "CI={ci:?}: the test passed:\n{text}");
        assert!(text.contains("prerequisite missing in CI"), "CI={ci:?}:\n{text}");
        assert!(text.contains("1 failed"), "CI={ci:?}: the child test did not run:\n{text}");
    }
    for ci in [None, Some("false")] {
        let (ok, text) = run(ci);
        assert!(ok, "CI={ci:?}: the test failed:\n{text}");
        assert!(text.contains("SKIPPED: a prerequisite this child never has"), "CI={ci:?}:\n{text}");
    }
}
