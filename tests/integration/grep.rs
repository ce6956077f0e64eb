//! `GET /files/grep` (EXTENSIONS X32) against the real binary, with `rg --json` as the oracle:
//! on a generated tree (nested directories, `.gitignore`, hidden files, a binary file, a big file,
//! unicode, CRLF, invalid UTF-8, a line over the 4 KiB cap) every (path, line, column, text,
//! before, after) execd sends must be what ripgrep reports for the same options. Plus the error
//! answers, `max_matches` truncation, and a client that goes away stopping the walk.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::TestServer;
use serde_json::Value;

const LINE_CAP: usize = 4096;

/// One reported match: (path, line number, column, text, before, after).
type Hit = (String, u64, u64, String, Vec<String>, Vec<String>);

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// The test tree. `needle` appears in every kind of file, in several cases and forms.
fn make_tree(root: &Path) {
    write(root, ".gitignore", b"ignored/\n*.log\n");
    write(root, "README.md", b"# Title\nA needle here.\nno match\nNEEDLE shouting\n");
    write(root, "src/main.rs", b"fn main() {\n    let needle = 1;\n    println!(\"{needle}\");\n}\n");
    write(root, "src/lib.rs", b"//! lib\npub fn f() {}\n// needle in a comment\n// a.b( literal\n");
    write(root, "src/nested/deep/a.txt", b"one\ntwo needle\nthree\nfour needle needle\nfive\nsix\nseven\n");
    write(root, "src/nested/deep/b.txt", "naïve needle ü\nStraße NEEDLE\nÜber needle77\n".as_bytes());
    write(root, "src/nested/crlf.txt", b"first\r\nneedle crlf\r\nlast needle\r\n");
    write(root, "src/nested/nonl.txt", b"x\nneedle without newline at the end");
    write(root, "ignored/x.txt", b"needle in an ignored dir\n");
    write(root, "app.log", b"needle in a log\n");
    write(root, ".hidden/h.txt", b"needle hidden\n");
    write(root, ".dotfile", b"needle dot\n");
    write(root, "latin1.txt", b"caf\xe9 needle\nplain\n");
    let mut bin = b"needle before the NUL\n".to_vec();
    bin.extend_from_slice(&[0, 1, 2, 3]);
    bin.extend_from_slice(b"\nneedle after\n");
    write(root, "bin.dat", &bin);
    let mut long = "x".repeat(LINE_CAP + 100);
    long.push_str(" needle at the end\n");
    write(root, "long.txt", format!("short needle\n{long}after\n").as_bytes());
    // About 4 MiB, a match every 997 lines.
    let mut big = String::with_capacity(4 << 20);
    for i in 0..60_000u32 {
        if i % 997 == 0 {
            big.push_str(&format!("line {i} has a needle{i} in it\n"));
        } else {
            big.push_str(&format!("line {i} is only filler text, nothing to see\n"));
        }
    }
    write(root, "data/big.txt", big.as_bytes());
}

/// The query options of one case, and the same as ripgrep flags.
#[derive(Default, Clone)]
struct Case {
    pattern: &'static str,
    regex: bool,
    ignore_case: bool,
    globs: Vec<&'static str>,
    excludes: Vec<&'static str>,
    hidden: bool,
    no_gitignore: bool,
    context: usize,
    max_filesize: Option<u64>,
}

impl Case {
    fn lit(pattern: &'static str) -> Case {
        Case { pattern, ..Case::default() }
    }

    fn query(&self, root: &Path) -> Vec<(String, String)> {
        let mut q = vec![
            ("path".to_string(), root.display().to_string()),
            ("pattern".to_string(), self.pattern.to_string()),
            ("max_matches".to_string(), "100000".to_string()),
        ];
        let mut set = |k: &str, v: String| q.push((k.to_string(), v));
        if self.regex {
            set("regex", "true".into());
        }
        if self.ignore_case {
            set("ignore_case", "true".into());
        }
        for g in &self.globs {
            set("glob", g.to_string());
        }
        for g in &self.excludes {
            set("exclude", g.to_string());
        }
        if self.hidden {
            set("hidden", "true".into());
        }
        if self.no_gitignore {
            set("gitignore", "false".into());
        }
        if self.context > 0 {
            set("context", self.context.to_string());
        }
        if let Some(m) = self.max_filesize {
            set("max_filesize", m.to_string());
        }
        q
    }

    fn rg_args(&self, root: &Path) -> Vec<String> {
        let mut a: Vec<String> =
            ["--json", "--no-require-git", "--no-ignore-global", "--no-config"].iter().map(|s| s.to_string()).collect();
        if !self.regex {
            a.push("-F".into());
        }
        if self.ignore_case {
            a.push("-i".into());
        }
        for g in &self.globs {
            a.push(format!("--glob={g}"));
        }
        for g in &self.excludes {
            a.push(format!("--glob=!{g}"));
        }
        if self.hidden {
            a.push("--hidden".into());
        }
        if self.no_gitignore {
            a.push("--no-ignore".into());
        }
        if self.context > 0 {
            a.push(format!("--context={}", self.context));
        }
        if let Some(m) = self.max_filesize {
            a.push(format!("--max-filesize={m}"));
        }
        a.push("--regexp".into());
        a.push(self.pattern.to_string());
        a.push(root.display().to_string());
        a
    }
}

/// A line as execd sends it: terminator dropped, cut at the cap on a character boundary.
fn as_sent(bytes: &[u8]) -> (String, bool) {
    let bytes = match bytes.strip_suffix(b"\n") {
        Some(b) => b.strip_suffix(b"\r").unwrap_or(b),
        None => bytes,
    };
    if bytes.len() <= LINE_CAP {
        return (String::from_utf8_lossy(bytes).into_owned(), false);
    }
    let mut cut = LINE_CAP;
    while bytes[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    (String::from_utf8_lossy(&bytes[..cut]).into_owned(), true)
}

/// `{"text": ...}` or `{"bytes": base64}` of rg's JSON.
fn rg_data(v: &Value) -> Vec<u8> {
    if let Some(t) = v["text"].as_str() {
        t.as_bytes().to_vec()
    } else {
        base64::engine::general_purpose::STANDARD.decode(v["bytes"].as_str().unwrap()).unwrap()
    }
}

/// What ripgrep reports, in execd's shape.
fn rg_hits(case: &Case, root: &Path) -> (BTreeSet<Hit>, BTreeSet<String>) {
    let out = Command::new("rg").args(case.rg_args(root)).env_remove("RIPGREP_CONFIG_PATH").output().unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "rg failed: {}", String::from_utf8_lossy(&out.stderr));
    // Every line rg printed (match or context) per file, then windows around each match.
    let mut lines: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut matches: Vec<(String, u64, u64, String)> = Vec::new();
    let mut cut = BTreeSet::new();
    for l in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(l).unwrap();
        let kind = v["type"].as_str().unwrap();
        if kind != "match" && kind != "context" {
            continue;
        }
        let d = &v["data"];
        let path = String::from_utf8_lossy(&rg_data(&d["path"])).into_owned();
        let ln = d["line_number"].as_u64().unwrap();
        let (text, truncated) = as_sent(&rg_data(&d["lines"]));
        lines.insert((path.clone(), ln), text.clone());
        if kind == "match" {
            let column = d["submatches"][0]["start"].as_u64().unwrap() + 1;
            if truncated {
                cut.insert(format!("{path}:{ln}"));
            }
            matches.push((path, ln, column, text));
        }
    }
    let n = case.context as u64;
    let hits = matches
        .into_iter()
        .map(|(path, ln, column, text)| {
            let before = (ln.saturating_sub(n).max(1)..ln).map(|k| lines[&(path.clone(), k)].clone()).collect();
            let after = (ln + 1..=ln + n).map_while(|k| lines.get(&(path.clone(), k)).cloned()).collect();
            (path, ln, column, text, before, after)
        })
        .collect();
    (hits, cut)
}

struct Answer {
    hits: Vec<Hit>,
    cut: BTreeSet<String>,
    end: Value,
}

async fn grep(server: &TestServer, query: &[(String, String)]) -> reqwest::Response {
    server.client().get(server.url("/files/grep")).query(query).send().await.unwrap()
}

/// Runs a grep that must succeed and parses its NDJSON.
async fn execd_hits(server: &TestServer, query: &[(String, String)]) -> Answer {
    let resp = grep(server, query).await;
    assert_eq!(resp.status(), 200, "{query:?}");
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let body = resp.text().await.unwrap();
    assert!(body.ends_with('\n'), "{body}");
    let mut hits = Vec::new();
    let mut cut = BTreeSet::new();
    let mut end = None;
    for line in body.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(end.is_none(), "a line after the end line: {line}");
        match v["type"].as_str().unwrap() {
            "match" => {
                let strings = |k: &str| -> Vec<String> {
                    v[k].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
                };
                let path = v["path"].as_str().unwrap().to_string();
                let ln = v["line_number"].as_u64().unwrap();
                if v.get("truncated_line").is_some() {
                    assert_eq!(v["truncated_line"], true, "{line}");
                    cut.insert(format!("{path}:{ln}"));
                }
                let text = v["text"].as_str().unwrap().to_string();
                hits.push((path, ln, v["column"].as_u64().unwrap(), text, strings("before"), strings("after")));
            }
            "end" => end = Some(v),
            other => panic!("unknown line type {other}: {line}"),
        }
    }
    let end = end.expect("an end line");
    assert_eq!(end["matches"].as_u64().unwrap() as usize, hits.len(), "{end}");
    Answer { hits, cut, end }
}

/// The same search through execd and ripgrep: the same matches, in line order within a file.
async fn same_as_rg(server: &TestServer, root: &Path, case: &Case) -> Answer {
    let (want, want_cut) = rg_hits(case, root);
    let got = execd_hits(server, &case.query(root)).await;
    let got_set: BTreeSet<Hit> = got.hits.iter().cloned().collect();
    assert_eq!(got_set.len(), got.hits.len(), "a match sent twice");
    let missing: Vec<_> = want.difference(&got_set).collect();
    let extra: Vec<_> = got_set.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "pattern {:?}: execd and rg differ\nmissing: {missing:#?}\nextra: {extra:#?}",
        case.pattern
    );
    assert_eq!(got.cut, want_cut);
    // A file's matches come together, in line order.
    let mut seen = BTreeSet::new();
    let mut last: Option<(&str, u64)> = None;
    for h in &got.hits {
        match last {
            Some((p, ln)) if p == h.0 => assert!(h.1 > ln, "{h:?} after line {ln}"),
            _ => assert!(seen.insert(h.0.clone()), "{} matches are not together", h.0),
        }
        last = Some((&h.0, h.1));
    }
    assert_eq!(got.end["truncated"], false, "{}", got.end);
    got
}

fn rg_present() -> bool {
    Command::new("rg").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn x32_results_equal_rg_json() {
    if !rg_present() {
        common::prerequisite_missing("rg (ripgrep) for the grep oracle");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    make_tree(&root);
    let server = TestServer::start();

    let plain = same_as_rg(&server, &root, &Case::lit("needle")).await;
    // The tree's edges are really exercised (not vacuously equal).
    let paths: BTreeSet<&str> = plain.hits.iter().map(|h| h.0.as_str()).collect();
    let has = |suffix: &str| paths.iter().any(|p| p.ends_with(suffix));
    assert!(has("/src/nested/deep/a.txt") && has("/data/big.txt") && has("/latin1.txt") && has("/crlf.txt"));
    assert!(!has("/ignored/x.txt") && !has("/app.log"), "gitignored files searched");
    assert!(!has("/.hidden/h.txt") && !has("/.dotfile"), "hidden files searched");
    assert!(!has("/bin.dat"), "binary file searched");
    assert_eq!(plain.cut.len(), 1, "the long line is cut");
    assert!(plain.hits.iter().all(|h| h.0.starts_with(root.to_str().unwrap())), "paths are absolute");
    assert!(plain.end["files_searched"].as_u64().unwrap() >= paths.len() as u64, "{}", plain.end);

    // Literal: regex metacharacters are plain text.
    let lit = same_as_rg(&server, &root, &Case::lit("a.b(")).await;
    assert_eq!(lit.hits.len(), 1);
    let cases = [
        Case { regex: true, ..Case::lit(r"ne+dle\d+") },
        Case { regex: true, ..Case::lit(r"^\s*let \w+ =") },
        Case { ignore_case: true, ..Case::lit("needle") },
        Case { ignore_case: true, ..Case::lit("ÜBER") },
        Case { ignore_case: true, regex: true, ..Case::lit("stra(ß|ss)e") },
        Case { globs: vec!["*.rs"], ..Case::lit("needle") },
        Case { globs: vec!["*.txt", "*.md"], excludes: vec!["nested"], ..Case::lit("needle") },
        Case { excludes: vec!["*.txt"], ..Case::lit("needle") },
        Case { hidden: true, ..Case::lit("needle") },
        Case { no_gitignore: true, ..Case::lit("needle") },
        Case { no_gitignore: true, hidden: true, ..Case::lit("needle") },
        Case { context: 2, ..Case::lit("needle") },
        Case { context: 1, regex: true, ..Case::lit(r"needle|^line 1\d is") },
        Case { max_filesize: Some(1024), ..Case::lit("needle") },
    ];
    for case in &cases {
        let got = same_as_rg(&server, &root, case).await;
        assert!(!got.hits.is_empty(), "pattern {:?} found nothing", case.pattern);
    }
    // Context windows really carry lines (not two empty lists that agree).
    let ctx = same_as_rg(&server, &root, &cases[11]).await;
    assert!(ctx.hits.iter().any(|h| h.4.len() == 2 && h.5.len() == 2), "no full context window");
}

#[tokio::test]
async fn x32_max_matches_truncates_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    make_tree(&root);
    let server = TestServer::start();
    let base = Case::lit("needle").query(&root);
    let all = execd_hits(&server, &base).await;
    let total = all.hits.len();
    assert!(total > 10, "{total}");
    assert_eq!(all.end["truncated"], false);
    let all_set: BTreeSet<Hit> = all.hits.into_iter().collect();

    let with_max = |n: usize| {
        let mut q: Vec<_> = base.iter().filter(|(k, _)| k != "max_matches").cloned().collect();
        q.push(("max_matches".into(), n.to_string()));
        q
    };
    for n in [1, 3, total - 1] {
        let got = execd_hits(&server, &with_max(n)).await;
        assert_eq!(got.hits.len(), n, "{}", got.end);
        assert_eq!(got.end["matches"], n as u64);
        assert_eq!(got.end["truncated"], true, "{}", got.end);
        assert!(got.hits.iter().all(|h| all_set.contains(h)), "a truncated answer holds a match not in the full one");
    }
    // Exactly as many as there are: nothing was left out.
    let got = execd_hits(&server, &with_max(total)).await;
    assert_eq!((got.hits.len(), &got.end["truncated"]), (total, &Value::Bool(false)), "{}", got.end);
    // The default is 1000: the big file alone has 61 matches, so a denser tree is needed.
    let dense = dir.path().join("dense");
    write(&dense, "many.txt", "needle\n".repeat(1500).as_bytes());
    let q = vec![("path".to_string(), dense.display().to_string()), ("pattern".to_string(), "needle".to_string())];
    let got = execd_hits(&server, &q).await;
    assert_eq!((got.hits.len(), &got.end["truncated"]), (1000, &Value::Bool(true)), "{}", got.end);
}

#[tokio::test]
async fn x32_bad_input_is_400_and_missing_path_404() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    make_tree(&root);
    let server = TestServer::start();
    let p = root.display().to_string();
    let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();

    let expect = |status: u16, code: &'static str, needle: &'static str| {
        move |resp_status: u16, body: Value| {
            assert_eq!(resp_status, status, "{body}");
            assert_eq!(body["code"], code, "{body}");
            let msg = body["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    };
    type Check = Box<dyn Fn(u16, Value)>;
    let cases: Vec<(Vec<(String, String)>, Check)> = vec![
        // The regex parser's own message comes through.
        (
            q(&[("path", &p), ("pattern", "(unclosed"), ("regex", "true")]),
            Box::new(expect(400, "INVALID_REQUEST_BODY", "unclosed group")),
        ),
        (
            q(&[("path", &p), ("pattern", "a{2,1}"), ("regex", "true")]),
            Box::new(expect(400, "INVALID_REQUEST_BODY", "invalid regex")),
        ),
        (
            q(&[("path", &p), ("pattern", "x"), ("glob", "a[")]),
            Box::new(expect(400, "INVALID_REQUEST_BODY", "invalid glob")),
        ),
        (
            q(&[("path", &p), ("pattern", "x"), ("regex", "yes")]),
            Box::new(expect(400, "INVALID_REQUEST_BODY", "regex")),
        ),
        (
            q(&[("path", &p), ("pattern", "x"), ("context", "101")]),
            Box::new(expect(400, "INVALID_REQUEST_BODY", "context")),
        ),
        (
            q(&[("path", &p), ("pattern", "x"), ("context", "-1")]),
            Box::new(expect(400, "INVALID_REQUEST_BODY", "context")),
        ),
        (
            q(&[("path", &p), ("pattern", "x"), ("max_matches", "0")]),
            Box::new(expect(400, "INVALID_REQUEST_BODY", "max_matches")),
        ),
        (q(&[("path", &p)]), Box::new(expect(400, "MISSING_QUERY", "pattern"))),
        (q(&[("pattern", "x")]), Box::new(expect(400, "MISSING_QUERY", "path"))),
        (q(&[("path", ""), ("pattern", "x")]), Box::new(expect(400, "INVALID_REQUEST_BODY", "empty path"))),
        (
            q(&[("path", &format!("{p}/no/such/dir")), ("pattern", "x")]),
            Box::new(expect(404, "FILE_NOT_FOUND", "no/such/dir")),
        ),
    ];
    for (query, check) in cases {
        let resp = grep(&server, &query).await;
        let status = resp.status().as_u16();
        check(status, resp.json().await.unwrap());
    }
    // With `regex` false the same text is a literal: fine.
    let got = execd_hits(&server, &q(&[("path", &p), ("pattern", "(unclosed")])).await;
    assert!(got.hits.is_empty());
    // One file as the root is searched alone.
    let file = root.join("src/nested/deep/a.txt").display().to_string();
    let got = execd_hits(&server, &q(&[("path", &file), ("pattern", "needle")])).await;
    assert_eq!(got.hits.iter().map(|h| h.1).collect::<Vec<_>>(), vec![2, 4]);
    assert_eq!(got.hits[1].2, 6, "column of the first match, 1-based");
    assert_eq!(got.end["files_searched"], 1);
}

/// Waits for the walk's "grep finished" log line and returns it.
fn finished_line(server: &TestServer, nth: usize) -> Option<String> {
    server.log().lines().filter(|l| l.contains("grep finished")).nth(nth).map(str::to_string)
}

#[tokio::test]
async fn x32_client_gone_stops_the_walk_and_the_walk_holds_a_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("many");
    // 40 files × 5 000 matching lines: some 30 MB of NDJSON, far more than the buffers hold.
    let body = "a needle on every line\n".repeat(5000);
    for i in 0..40 {
        write(&root, &format!("d{}/f{i}.txt", i % 4), body.as_bytes());
    }
    let server = TestServer::options().arg("--max-transfers=1").start();
    let q = vec![
        ("path".to_string(), root.display().to_string()),
        ("pattern".to_string(), "needle".to_string()),
        ("max_matches".to_string(), "10000000".to_string()),
    ];
    let client = server.client();
    let mut resp = client.get(server.url("/files/grep")).query(&q).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The first matches arrive while the walk is still going (it cannot end: nobody reads).
    let first = tokio::time::timeout(common::TIMEOUT, resp.chunk()).await.unwrap().unwrap().unwrap();
    assert!(first.starts_with(b"{\"type\":\"match\""), "{:?}", String::from_utf8_lossy(&first[..80.min(first.len())]));
    assert!(finished_line(&server, 0).is_none(), "the walk ended before the reader read");
    // The walk holds the only transfer slot.
    let second = grep(&server, &q).await;
    assert_eq!(second.status(), 429);

    drop(resp);
    drop(client);
    // Async wait: the client's connection task must run to close the socket.
    let stopped = common::wait_until_async(common::TIMEOUT, || async { finished_line(&server, 0).is_some() }).await;
    assert!(stopped, "walk did not stop");
    let line = finished_line(&server, 0).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["fields"]["cancelled"], true, "{line}");
    let matches = v["fields"]["matches"].as_u64().unwrap_or_else(|| panic!("no match count in {line}"));
    assert!(matches < 200_000, "the walk went on for nobody: {line}");
    // The slot is free again: a small search goes through.
    let small = vec![
        ("path".to_string(), root.join("d0/f0.txt").display().to_string()),
        ("pattern".to_string(), "needle".to_string()),
        ("max_matches".to_string(), "2".to_string()),
    ];
    let got = execd_hits(&server, &small).await;
    assert_eq!(got.hits.len(), 2);
}

#[tokio::test]
async fn x32_capability_is_reported() {
    let server = TestServer::start();
    let caps: Value = server.client().get(server.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["grep"], true, "{caps}");
}

#[tokio::test]
async fn x32_identity_grep_reads_only_what_the_uid_may() {
    if !common::is_root() {
        common::prerequisite_missing("root (to act as other uids)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("tree");
    write(&root, "open/a.txt", b"needle open\n");
    write(&root, "closed/b.txt", b"needle closed\n");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("open"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let server = TestServer::start();
    let q = [("path", root.display().to_string()), ("pattern", "needle".to_string())];
    let resp = server.client().get(server.url("/v1/filesystem/65534/65534/files/grep")).query(&q).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(body.contains("needle open") && !body.contains("needle closed"), "{body}");
    assert!(body.contains(r#""errors":1"#), "the closed directory is reported: {body}");
    // execd itself reads both.
    let q: Vec<(String, String)> = q.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    assert_eq!(execd_hits(&server, &q).await.hits.len(), 2);
}
