//! Property tests of execd's input parsers through the crate's public API (issue 8): `Range`
//! headers, path expansion (both expanders), lexical path cleaning, Go durations and the output
//! line splitter. cargo-fuzz needs nightly, which this machine lacks, so proptest stands in; each
//! property's case count is bounded so the whole file runs in a few seconds. Failing inputs are
//! kept by proptest under `proptest-regressions/parsers_prop.txt` (the corpus).

use std::path::{Component, Path};
use std::time::Duration;

use execd::config::parse_go_duration;
use execd::expand::{expand_path, expand_vars};
use execd::fs::path::{clean, expand_with};
use execd::fs::range::{plan, RangePlan};
use execd::process::LineSplitter;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `cases` per property; failures are kept in `proptest-regressions/parsers_prop.txt` (replayed
/// first on every run).
fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/parsers_prop.txt"))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- Range headers (src/fs/range.rs)

/// A `Range` element: well-formed or not, with numbers near the interesting edges.
fn range_element() -> impl Strategy<Value = String> {
    let num = prop_oneof![0u64..300, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()];
    prop_oneof![
        (num.clone(), num.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        num.clone().prop_map(|a| format!("{a}-")),
        num.clone().prop_map(|n| format!("-{n}")),
        Just("99999999999999999999999-".to_string()),
        "[ 0-9a-z+,=-]{0,8}",
    ]
}

fn range_header() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(range_element(), 0..4).prop_map(|v| format!("bytes={}", v.join(","))),
        1 => "\\PC{0,24}",
    ]
}

/// The reference model for one well-formed element (upstream's rules, see range.rs docs).
fn model_element(el: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let (s, e) = el.split_once('-')?;
    if s.is_empty() {
        let n: u64 = e.parse().ok()?;
        return Some((n > 0 && size > 0).then(|| (size - n.min(size), size - 1)));
    }
    let s: u64 = s.parse().ok()?;
    let e: Option<u64> = if e.is_empty() { None } else { Some(e.parse().ok()?) };
    if e.is_some_and(|e| e < s) {
        return None;
    }
    Some((s < size).then(|| (s, e.unwrap_or(size - 1).min(size - 1))))
}

proptest! {
    #![proptest_config(cfg(2000))]

    /// Whatever the header, `plan` does not panic, and a planned range lies inside the file.
    #[test]
    fn range_plan_is_total_and_in_bounds(header in range_header(), size in prop_oneof![0u64..400, any::<u64>()]) {
        match plan(Some(&header), size) {
            Ok(RangePlan::Partial { start, end }) => {
                prop_assert!(start <= end, "{header:?} size {size}: start {start} > end {end}");
                prop_assert!(end < size, "{header:?} size {size}: end {end} past the file");
                prop_assert_eq!(RangePlan::Partial { start, end }.len(size), end - start + 1);
            }
            Ok(RangePlan::Full) => prop_assert!(false, "a Range header never plans the full file: {header:?}"),
            Ok(RangePlan::Unsatisfiable) | Err(_) => {}
        }
    }

    /// Well-formed headers give exactly what the model says: the first satisfiable element.
    #[test]
    fn range_plan_matches_the_model(
        els in proptest::collection::vec(
            prop_oneof![
                (0u64..300, 0u64..300).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
                (0u64..300).prop_map(|a| format!("{a}-")),
                (0u64..300).prop_map(|n| format!("-{n}")),
            ],
            1..4,
        ),
        size in 0u64..300,
    ) {
        let header = format!("bytes={}", els.join(","));
        let want = els
            .iter()
            .map(|e| model_element(e, size).expect("generated elements are well-formed"))
            .find(|r| r.is_some())
            .flatten()
            .map_or(RangePlan::Unsatisfiable, |(start, end)| RangePlan::Partial { start, end });
        prop_assert_eq!(plan(Some(&header), size), Ok(want), "header {}", header);
    }

    /// Whitespace around elements and empty elements do not change the plan.
    #[test]
    fn range_plan_ignores_spaces_and_empty_elements(a in 0u64..200, b in 0u64..200, size in 1u64..300) {
        let (a, b) = (a.min(b), a.max(b));
        let plain = plan(Some(&format!("bytes={a}-{b}")), size);
        prop_assert_eq!(plan(Some(&format!("bytes= {a} - {b} ")), size), plain.clone());
        prop_assert_eq!(plan(Some(&format!("bytes=,{a}-{b},")), size), plain);
    }
}

// ------------------------------------------ path expansion (src/fs/path.rs, src/process/env.rs)

/// Text rich in `$`, `{`, `}`, `~`, `/` and names, where the expanders' edge cases live.
fn expandable() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("$".to_string()),
            Just("${".to_string()),
            Just("}".to_string()),
            Just("~".to_string()),
            Just("/".to_string()),
            Just("HOME".to_string()),
            Just("A".to_string()),
            Just("_x1".to_string()),
            Just("1".to_string()),
            Just("é".to_string()),
            "[a-z0-9._-]{1,3}",
        ],
        0..10,
    )
    .prop_map(|v| v.concat())
}

fn lookup(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/u".into()),
        "A" => Some("aa".into()),
        "_x1" => Some(String::new()),
        _ => None,
    }
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// With nothing defined, both expanders return their input unchanged.
    #[test]
    fn expansion_with_empty_environment_is_identity(s in expandable()) {
        prop_assert_eq!(expand_with(&s, |_| None), s.clone());
        prop_assert_eq!(expand_vars(&s, |_| None), s.clone());
        prop_assert_eq!(expand_path(&s, |_| None), s);
    }

    /// Text without `$` and without a leading `~` is never changed.
    #[test]
    fn expansion_leaves_plain_text_alone(s in "[^$~][^$]{0,20}|") {
        prop_assert_eq!(expand_with(&s, lookup), s.clone());
        prop_assert_eq!(expand_path(&s, lookup), s);
    }

    /// The filesystem routes (`fs::path`) and command cwd (`process::env`) implement the same rule
    /// (DECISIONS D31): for any input they must agree.
    #[test]
    fn fs_and_command_expanders_agree(s in expandable()) {
        prop_assert_eq!(expand_with(&s, lookup), expand_path(&s, lookup), "input {:?}", s);
    }

    /// Expanding a defined name gives its value; `${NAME}` and `$NAME` agree when a `/` follows.
    #[test]
    fn defined_names_expand(prefix in "[a-z/]{0,5}", suffix in "[a-z/]{0,5}") {
        let want = format!("{prefix}aa/{suffix}");
        prop_assert_eq!(expand_with(&format!("{prefix}$A/{suffix}"), lookup), want.clone());
        prop_assert_eq!(expand_with(&format!("{prefix}${{A}}/{suffix}"), lookup), want);
    }
}

// ------------------------------------------------------------ lexical cleaning (src/fs/path.rs)

fn path_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just(".."), Just("."), Just(""), Just("a"), Just("b"), Just("é")], 0..8)
        .prop_flat_map(|parts| (Just(parts), any::<bool>()))
        .prop_map(|(parts, abs)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// `clean` is idempotent; an absolute result has no `.` or `..` component (never escapes `/`).
    #[test]
    fn clean_is_idempotent_and_absolute_paths_stay_under_root(s in path_text()) {
        let once = clean(Path::new(&s));
        prop_assert_eq!(clean(&once), once.clone(), "input {:?}", s);
        if s.starts_with('/') {
            prop_assert!(once.is_absolute());
            prop_assert!(
                once.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
                "{s:?} cleaned to {once:?}"
            );
        } else {
            // Relative: `..` only as a prefix.
            let comps: Vec<_> = once.components().collect();
            let first_normal = comps.iter().position(|c| matches!(c, Component::Normal(_))).unwrap_or(comps.len());
            prop_assert!(comps[first_normal..].iter().all(|c| matches!(c, Component::Normal(_))), "{s:?} -> {once:?}");
        }
    }
}

// ------------------------------------------------------------- Go durations (src/config.rs)

proptest! {
    #![proptest_config(cfg(1000))]

    /// A duration written in Go's unit syntax parses back to its value (to the nanosecond for
    /// whole units).
    #[test]
    fn go_duration_round_trips(h in 0u64..1000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000, us in 0u64..1000, ns in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms{us}us{ns}ns");
        let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_nanos(ms * 1_000_000 + us * 1000 + ns);
        let got = parse_go_duration(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        // The parser accumulates in f64: allow a rounding error far below a microsecond.
        let diff = got.abs_diff(want);
        prop_assert!(diff <= Duration::from_nanos(1000), "{text}: got {got:?} want {want:?}");
    }

    /// Arbitrary text never panics; negative non-zero durations are refused.
    #[test]
    fn go_duration_never_panics(text in "[-+0-9.hmsuµn ]{0,16}|\\PC{0,16}") {
        if let Ok(d) = parse_go_duration(&text) {
            prop_assert!(!text.starts_with('-') || d.is_zero(), "{text:?} gave {d:?}");
        }
    }
}

// -------------------------------------------------------- line splitting (src/process/lines.rs)

/// Output-like bytes: text, `\r`, `\n`, multi-byte UTF-8 and invalid bytes.
fn output_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::collection::vec(b'a'..=b'z', 1..12),
            2 => Just(b"\n".to_vec()),
            1 => Just(b"\r".to_vec()),
            1 => Just(b"\r\n".to_vec()),
            1 => Just("é€😀".as_bytes().to_vec()),
            1 => proptest::collection::vec(0x80u8..=0xff, 1..3),
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

/// Splits `data` into pieces at the given cut points and runs it through a splitter.
fn split_at(data: &[u8], cuts: &[usize], max: usize) -> Vec<String> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts.into_iter().chain([data.len()]) {
        s.push(&data[from..c], |l| out.push(l));
        from = c;
    }
    s.finish(|l| out.push(l));
    out
}

proptest! {
    #![proptest_config(cfg(1500))]

    /// Chunk boundaries (how the pipe happened to deliver the bytes) never change the events, as
    /// long as lines fit the cap, except that a `\r\n` pair cut between two pushes becomes two
    /// events (`"…\r"`, `"\n"`: the `\r` is not held back); the joined text never changes.
    #[test]
    fn line_events_do_not_depend_on_chunk_boundaries(data in output_bytes(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let whole = split_at(&data, &[], 1 << 20);
        let got = split_at(&data, &cuts, 1 << 20);
        prop_assert_eq!(got.concat(), whole.concat());
        let pair_cut = cuts.iter().map(|c| c % (data.len() + 1)).any(|c| c > 0 && data[c - 1] == b'\r' && data.get(c) == Some(&b'\n'));
        if !pair_cut {
            prop_assert_eq!(got, whole);
        }
    }

    /// No event's line is longer than the cap (in bytes), whatever the chunking; its terminator
    /// (`\n`, `\r\n` or `\r`) comes on top; events are never empty (an empty line is "\n").
    #[test]
    fn no_line_event_exceeds_the_cap(data in output_bytes(), cuts in proptest::collection::vec(any::<usize>(), 0..8), max in 4usize..24) {
        for ev in split_at(&data, &cuts, max) {
            prop_assert!(!ev.is_empty());
            let line = ev.strip_suffix("\r\n").or_else(|| ev.strip_suffix('\n')).or_else(|| ev.strip_suffix('\r')).unwrap_or(&ev);
            prop_assert!(!line.contains(['\r', '\n']), "event {ev:?} holds a terminator inside");
            // Lossy replacement can turn one invalid byte into 3 bytes of U+FFFD; the cap is on
            // the raw bytes, so compare the raw length through a re-encoding-free measure.
            let raw_len = line.chars().map(|c| if c == '\u{fffd}' { 1 } else { c.len_utf8() }).sum::<usize>();
            prop_assert!(raw_len <= max, "event {ev:?} ({raw_len} bytes) over cap {max}");
        }
    }

    /// For valid UTF-8 (with `\n`, `\r\n` and `\r`): the events joined give back the input
    /// exactly, with or without cutting long lines, whatever the chunking; each event but the
    /// last ends in a terminator unless it is a piece of a line cut at the cap.
    #[test]
    fn valid_text_concatenates_back(
        lines in proptest::collection::vec("[a-zé€ ]{0,30}", 0..12),
        ends in proptest::collection::vec(prop_oneof![Just("\n"), Just("\r\n"), Just("\r")], 12),
        trailing in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        max in prop_oneof![Just(1usize << 20), 4usize..16],
    ) {
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            text.push_str(l);
            if i + 1 < lines.len() || trailing {
                text.push_str(ends[i]);
            }
        }
        let events = split_at(text.as_bytes(), &cuts, max);
        prop_assert_eq!(events.concat(), text.clone());
        if max == 1 << 20 {
            for ev in events.iter().rev().skip(1) {
                prop_assert!(ev.ends_with(['\n', '\r']), "unterminated inner event {:?} of {:?}", ev, text);
            }
        }
    }

    /// Invalid UTF-8 is replaced, never dropped or passed through: every event is valid UTF-8
    /// by type, and the number of U+FFFD is at least one per maximal invalid run.
    #[test]
    fn invalid_bytes_become_replacement_characters(bad in proptest::collection::vec(0x80u8..=0xbf, 1..5), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let mut data = b"ok".to_vec();
        data.extend_from_slice(&bad);
        data.extend_from_slice(b"ok\n");
        let events = split_at(&data, &cuts, 1 << 20);
        prop_assert_eq!(events.len(), 1);
        prop_assert!(events[0].starts_with("ok") && events[0].ends_with("ok\n"));
        prop_assert_eq!(events[0].matches('\u{fffd}').count(), bad.len());
    }
}
