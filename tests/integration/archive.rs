//! `/files/archive` against the real binary (EXTENSIONS X30, X31): exports read by GNU `tar`,
//! `zstd` and `unzip`; archives made by GNU `tar` and `zip` imported and compared with `diff -r`
//! and `lstat` (modes, mtimes, symlinks); hostile archives (built here by hand) refused with
//! nothing left; truncated archives and a full disk.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;
use serde_json::Value;

fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

fn tools_present(tools: &[&str]) -> bool {
    for t in tools {
        if !have(t) {
            common::prerequisite_missing(&format!("{t} (scripts/install-test-deps.sh installs it)"));
            return false;
        }
    }
    true
}

fn run(cmd: &str) -> std::process::Output {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn set_mtime(p: &Path, secs: i64) {
    run(&format!("touch -h -d @{secs} '{}'", p.display()));
}

/// A tree with nested directories, modes, a long name, an empty file, an empty directory, a
/// symlink (dangling, and one to a directory), a hard link and a FIFO (never archived).
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("README.md"), "hello\n").unwrap();
    std::fs::write(root.join("src/main.rs"), "fn main() {}\n".repeat(1000)).unwrap();
    std::fs::write(root.join("src/deep/er/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("src/deep/er/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join("src/private"), "secret").unwrap();
    std::fs::set_permissions(root.join("src/private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    let long = format!("{}.txt", "n".repeat(150));
    std::fs::write(root.join("src/deep").join(long), "long name").unwrap();
    let bin: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(root.join("data.bin"), bin).unwrap();
    symlink("src/main.rs", root.join("link-to-main")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    symlink("src", root.join("srclink")).unwrap();
    std::fs::hard_link(root.join("README.md"), root.join("README.hard")).unwrap();
    run(&format!("mkfifo '{}'", root.join("a-fifo").display()));
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o705)).unwrap();
    // Fixed mtimes, set last (children first), so that they survive.
    for (i, p) in [
        "README.md",
        "src/main.rs",
        "src/deep/er/run.sh",
        "src/private",
        "empty.txt",
        "data.bin",
        "link-to-main",
        "dangling",
        "srclink",
        "src/deep/er",
        "src/deep",
        "src",
        "empty",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64 * 1000);
    }
}

/// Every entry under `root` (not following symlinks): relative path → (kind, mode, mtime s,
/// link target or size).
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, i64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = m.file_type();
            let (kind, extra) = if ft.is_dir() {
                stack.push(p.clone());
                ('d', String::new())
            } else if ft.is_symlink() {
                ('l', std::fs::read_link(&p).unwrap().to_string_lossy().into_owned())
            } else if ft.is_file() {
                ('f', m.len().to_string())
            } else {
                ('o', String::new())
            };
            // A symlink's own mode is always 0777 on Linux; its mtime is compared too.
            out.insert(rel, (kind, m.mode() & 0o7777, m.mtime(), extra));
        }
    }
    out
}

/// The tree without what an archive never carries (the FIFO).
fn archivable(root: &Path) -> BTreeMap<String, (char, u32, i64, String)> {
    let mut s = snapshot(root);
    s.remove("a-fifo");
    s
}

fn diff_r(a: &Path, b: &Path) {
    // The FIFO is never archived.
    run(&format!("diff -r --no-dereference -x a-fifo '{}' '{}'", a.display(), b.display()));
}

async fn get_archive(srv: &TestServer, dir: &Path, query: &str) -> reqwest::Response {
    srv.client()
        .get(srv.url(&format!("/files/archive?path={}&{query}", q(&dir.to_string_lossy()))))
        .send()
        .await
        .unwrap()
}

async fn post_archive(srv: &TestServer, dir: &Path, query: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = srv
        .client()
        .post(srv.url(&format!("/files/archive?path={}&{query}", q(&dir.to_string_lossy()))))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
}

/// `len` bytes (a multiple of 8) of xorshift noise from `seed`: incompressible, reproducible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => return vec!["<missing>".into()],
    };
    v.sort();
    v
}

const FORMATS: [&str; 4] = ["tar", "tar.gz", "tar.zst", "zip"];

#[tokio::test]
async fn x30_export_is_read_by_gnu_tar_zstd_and_unzip() {
    if !tools_present(&["tar", "zstd", "unzip", "diff"]) {
        return;
    }
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    make_tree(&src);
    for format in FORMATS {
        let resp = get_archive(&srv, &src, &format!("format={format}")).await;
        assert_eq!(resp.status(), 200, "{format}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        let cd = resp.headers()["content-disposition"].to_str().unwrap().to_string();
        assert!(cd.contains(&format!("tree.{format}")), "{cd}");
        let bytes = resp.bytes().await.unwrap();
        let file = work.path().join(format!("out.{format}"));
        std::fs::write(&file, &bytes).unwrap();
        let out = work.path().join(format!("x-{format}"));
        std::fs::create_dir(&out).unwrap();
        let (f, o) = (file.display(), out.display());
        match format {
            "tar" => {
                assert_eq!(ct, "application/x-tar");
                let listing = String::from_utf8(run(&format!("tar -tvf '{f}'")).stdout).unwrap();
                assert!(listing.contains("link-to-main -> src/main.rs"), "{listing}");
                assert!(listing.contains("README.md link to README.hard"), "{listing}");
                assert!(!listing.contains("a-fifo"), "{listing}");
                run(&format!("tar -xpf '{f}' -C '{o}'"));
            }
            "tar.gz" => {
                run(&format!("tar -xzpf '{f}' -C '{o}'"));
            }
            "tar.zst" => {
                run(&format!("zstd -q -d -c '{f}' | tar -xpf - -C '{o}'"));
            }
            _ => {
                run(&format!("unzip -t -q '{f}'"));
                run(&format!("unzip -q '{f}' -d '{o}'"));
            }
        }
        diff_r(&src, &out);
        let (want, got) = (archivable(&src), snapshot(&out));
        assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "{format}");
        for (k, w) in &want {
            let g = &got[k];
            assert_eq!((w.0, &w.3), (g.0, &g.3), "{format} {k}");
            if w.0 != 'l' {
                assert_eq!(w.1, g.1, "{format} mode of {k}");
            }
            // unzip does not restore symlink mtimes; directories' are checked for every format.
            if !(format == "zip" && w.0 == 'l') {
                assert_eq!(w.2, g.2, "{format} mtime of {k}");
            }
        }
        assert_eq!(std::fs::read_link(out.join("srclink")).unwrap(), PathBuf::from("src"));
    }
}

#[tokio::test]
async fn x30_excludes_and_gitignore() {
    if !tools_present(&["tar"]) {
        return;
    }
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("proj");
    for d in ["node_modules/x", "build", "src", "logs"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in ["node_modules/x/i.js", "build/out.o", "src/a.rs", "src/b.log", "logs/c.log", "keep.txt"] {
        std::fs::write(src.join(f), f).unwrap();
    }
    std::fs::write(src.join(".gitignore"), "build/\n").unwrap();
    let list = |bytes: &[u8]| {
        let f = work.path().join("l.tar");
        std::fs::write(&f, bytes).unwrap();
        let mut v: Vec<String> = String::from_utf8(run(&format!("tar -tf '{}'", f.display())).stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim_end_matches('/').to_string())
            .collect();
        v.sort();
        v
    };
    let all = get_archive(&srv, &src, "").await.bytes().await.unwrap();
    assert!(list(&all).contains(&"build/out.o".to_string()));
    let some = get_archive(&srv, &src, "exclude=node_modules&exclude=*.log&gitignore=true").await;
    assert_eq!(some.status(), 200);
    assert_eq!(list(&some.bytes().await.unwrap()), [".gitignore", "keep.txt", "logs", "src", "src/a.rs"]);
    let bad = get_archive(&srv, &src, "exclude=a%7Bb").await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn x30_bad_requests_answer_json_before_any_byte() {
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let missing = get_archive(&srv, &work.path().join("nope"), "").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "FILE_NOT_FOUND");
    std::fs::write(work.path().join("f"), "x").unwrap();
    let file = get_archive(&srv, &work.path().join("f"), "").await;
    assert_eq!(file.status(), 400);
    let fmt = get_archive(&srv, work.path(), "format=rar").await;
    assert_eq!(fmt.status(), 400);
    let resp = srv.client().get(srv.url("/files/archive")).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "MISSING_QUERY");
    let (status, body) = post_archive(&srv, work.path(), "owner=bogus", vec![]).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_REQUEST_BODY")));
    let caps: Value = srv.client().get(srv.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["archive"], serde_json::json!(["tar", "tar.gz", "tar.zst", "zip"]));
}

/// A file that shrinks while it is being sent makes the body fail: the client never sees a
/// clean end-of-archive.
#[tokio::test]
async fn x30_error_mid_stream_cuts_the_body() {
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("t");
    std::fs::create_dir(&src).unwrap();
    let big = src.join("big");
    // Incompressible, and far more than the channel and the socket buffers hold.
    let size = 48usize << 20;
    let noise = noise(size, 0x9E37_79B9_7F4A_7C15);
    // tar.gz and tar.zst compress on a thread of their own: the cut must still reach the client.
    for format in ["tar", "zip", "tar.gz", "tar.zst"] {
        std::fs::write(&big, &noise).unwrap();
        let mut resp = get_archive(&srv, &src, &format!("format={format}")).await;
        assert_eq!(resp.status(), 200);
        let first = resp.chunk().await.unwrap_or_else(|e| panic!("{format}: {e:?}")).unwrap();
        assert!(!first.is_empty());
        std::fs::File::options().write(true).open(&big).unwrap().set_len(1).unwrap();
        let mut total = first.len();
        let failed = loop {
            match resp.chunk().await {
                Ok(Some(c)) => total += c.len(),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        assert!(failed, "{format}: the body ended cleanly after {total} bytes");
        assert!(total < size);
    }
}

#[tokio::test]
async fn x31_gnu_tar_and_zip_archives_round_trip() {
    if !tools_present(&["tar", "zstd", "zip", "diff"]) {
        return;
    }
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    make_tree(&src);
    std::fs::remove_file(src.join("a-fifo")).unwrap();
    let want = snapshot(&src);
    let s = src.display();
    let makers = [
        ("tar", "tar -C '{s}' -cf '{a}' ."),
        ("tar.gz", "tar -C '{s}' -czf '{a}' ."),
        ("tar.zst", "tar -C '{s}' --zstd -cf '{a}' ."),
        ("tar", "tar -C '{s}' --format=posix -cf '{a}' ."),
        ("zip", "cd '{s}' && zip -q -r -y '{a}' ."),
    ];
    for (i, (format, cmd)) in makers.iter().enumerate() {
        let a = work.path().join(format!("in{i}.{format}"));
        run(&cmd.replace("{s}", &s.to_string()).replace("{a}", &a.display().to_string()));
        let dest = work.path().join(format!("dest{i}/sub"));
        let (status, body) = post_archive(&srv, &dest, &format!("format={format}"), std::fs::read(&a).unwrap()).await;
        assert_eq!(status, 200, "{cmd}: {body}");
        diff_r(&src, &dest);
        let got = snapshot(&dest);
        assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "{cmd}");
        for (k, w) in &want {
            let g = &got[k];
            assert_eq!((w.0, &w.3), (g.0, &g.3), "{cmd} {k}");
            if w.0 != 'l' {
                assert_eq!(w.1, g.1, "{cmd}: mode of {k}");
            }
            assert_eq!(w.2, g.2, "{cmd}: mtime of {k}");
        }
        // 8 regular files (a hard link counted as a file), 3 symlinks; 4 directories.
        assert_eq!(body["files"], 8 + 3, "{cmd}: {body}");
        assert_eq!(body["dirs"], 4, "{cmd}: {body}");
        if *format != "zip" {
            let (a, b) = (
                std::fs::metadata(dest.join("README.md")).unwrap(),
                std::fs::metadata(dest.join("README.hard")).unwrap(),
            );
            assert_eq!(a.ino(), b.ino(), "{cmd}: hard link kept");
        }
        assert_eq!(names(dest.parent().unwrap()), ["sub"], "no staging directory left");
        let journal = srv.state_dir().join("uploads/journal");
        assert_eq!(
            std::fs::read_dir(&journal).unwrap().count(),
            0,
            "the staging directory's journal entry went with it"
        );
    }
}

#[tokio::test]
async fn x31_own_export_round_trips_into_an_existing_tree() {
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    make_tree(&src);
    std::fs::remove_file(src.join("a-fifo")).unwrap();
    for format in FORMATS {
        let dest = work.path().join(format!("d-{format}"));
        std::fs::create_dir_all(dest.join("src")).unwrap();
        std::fs::write(dest.join("src/untouched.txt"), "mine").unwrap();
        std::fs::write(dest.join("README.md"), "old content").unwrap();
        let bytes = get_archive(&srv, &src, &format!("format={format}")).await.bytes().await.unwrap().to_vec();
        let (status, body) = post_archive(&srv, &dest, &format!("format={format}"), bytes).await;
        assert_eq!(status, 200, "{format}: {body}");
        assert_eq!(std::fs::read_to_string(dest.join("README.md")).unwrap(), "hello\n");
        assert_eq!(std::fs::read_to_string(dest.join("src/untouched.txt")).unwrap(), "mine");
        // The merge changed src's mtime; the archive's value is applied after it.
        let want_mtime = std::fs::metadata(src.join("src")).unwrap().mtime();
        assert_eq!(std::fs::metadata(dest.join("src")).unwrap().mtime(), want_mtime, "{format}");
        std::fs::remove_file(dest.join("src/untouched.txt")).unwrap();
        let (w, g) = (archivable(&src), snapshot(&dest));
        assert_eq!(w.keys().collect::<Vec<_>>(), g.keys().collect::<Vec<_>>(), "{format}");
        diff_r(&src, &dest);
    }
}

/// A tar header written by hand, so that any name, link name and type can be used.
pub(crate) fn raw_tar_entry(out: &mut Vec<u8>, name: &[u8], kind: u8, link: &[u8], data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"14000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn end_tar(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        z.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

#[tokio::test]
async fn x31_hostile_archives_are_refused_and_leave_nothing() {
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("existing.txt"), "keep").unwrap();
    let o = outside.display().to_string();
    let tars: Vec<(&str, Vec<u8>)> = vec![
        ("absolute", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, format!("{o}/abs.txt").as_bytes(), b'0', b"", b"pwned");
            t
        }),
        ("dotdot", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"sub/../../outside/dd.txt", b'0', b"", b"pwned");
            t
        }),
        ("symlink pair", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"escape", b'2', o.as_bytes(), b"");
            raw_tar_entry(&mut t, b"escape/slip.txt", b'0', b"", b"pwned");
            t
        }),
        ("symlink pair, nested", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"a/escape", b'2', b"../../outside", b"");
            raw_tar_entry(&mut t, b"a/escape/deeper/slip.txt", b'0', b"", b"pwned");
            t
        }),
        ("hard link outside", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"passwd", b'1', b"/etc/passwd", b"");
            t
        }),
        ("hard link dotdot", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"hl", b'1', b"../outside/target", b"");
            t
        }),
        ("hard link to a missing entry", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"hl", b'1', b"existing.txt", b"");
            t
        }),
        ("char device", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"null", b'3', b"", b"");
            t
        }),
        ("block device", {
            let mut t = Vec::new();
            raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
            raw_tar_entry(&mut t, b"sda", b'4', b"", b"");
            t
        }),
    ];
    std::fs::write(outside.join("target"), "t").unwrap();
    for (what, mut tar) in tars {
        end_tar(&mut tar);
        let (status, body) = post_archive(&srv, &dest, "format=tar", tar).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["code"], "UNSAFE_ARCHIVE_ENTRY", "{what}: {body}");
        assert!(body["message"].as_str().unwrap().contains("unsafe archive entry \""), "{what}: {body}");
        assert_eq!(names(&dest), ["existing.txt"], "{what}: something was left");
        assert_eq!(names(&outside), ["target"], "{what}: something escaped");
        assert_eq!(std::fs::read_to_string(dest.join("existing.txt")).unwrap(), "keep");
    }
    for (what, zip) in [
        ("zip dotdot", zip_with(&[("ok.txt", b"fine"), ("../outside/z.txt", b"pwned")])),
        ("zip absolute", zip_with(&[("ok.txt", b"fine"), (&format!("{o}/z.txt"), b"pwned")])),
    ] {
        let (status, body) = post_archive(&srv, &dest, "format=zip", zip).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("UNSAFE_ARCHIVE_ENTRY")), "{what}: {body}");
        assert_eq!(names(&dest), ["existing.txt"], "{what}");
        assert_eq!(names(&outside), ["target"], "{what}");
    }
    // A symlink already in the target is never walked through either.
    symlink(&outside, dest.join("linkdir")).unwrap();
    let mut t = Vec::new();
    raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
    raw_tar_entry(&mut t, b"linkdir/", b'5', b"", b"");
    raw_tar_entry(&mut t, b"linkdir/x.txt", b'0', b"", b"pwned");
    end_tar(&mut t);
    let (status, body) = post_archive(&srv, &dest, "format=tar", t).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("UNSAFE_ARCHIVE_ENTRY")), "{body}");
    assert_eq!(names(&dest), ["existing.txt", "linkdir"]);
    assert_eq!(names(&outside), ["target"]);
    // A directory where the target has a file: 409, nothing moved.
    let mut t = Vec::new();
    raw_tar_entry(&mut t, b"ok.txt", b'0', b"", b"fine");
    raw_tar_entry(&mut t, b"existing.txt/", b'5', b"", b"");
    end_tar(&mut t);
    let (status, body) = post_archive(&srv, &dest, "format=tar", t).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("CONFLICT")), "{body}");
    assert_eq!(names(&dest), ["existing.txt", "linkdir"]);
    // A target directory the import created is removed again.
    let fresh = work.path().join("fresh/deeper");
    let mut t = Vec::new();
    raw_tar_entry(&mut t, b"../x", b'0', b"", b"x");
    end_tar(&mut t);
    let (status, _) = post_archive(&srv, &fresh, "format=tar", t).await;
    assert_eq!(status, 400);
    assert!(!work.path().join("fresh").exists());
}

#[tokio::test]
async fn x31_truncated_archives_are_refused_and_leave_nothing() {
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    make_tree(&src);
    std::fs::remove_file(src.join("a-fifo")).unwrap();
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    for format in FORMATS {
        let full = get_archive(&srv, &src, &format!("format={format}")).await.bytes().await.unwrap().to_vec();
        // Where the content ends (tar: the last data block; zip: inside its end record).
        let end = full.len() - full.iter().rev().take_while(|b| **b == 0).count();
        let mut cuts = vec![full.len() / 2, end - 1, 100];
        if format == "tar" {
            // Exactly at an entry boundary: only the end-of-archive blocks are missing.
            cuts.push(end.div_ceil(512) * 512);
        }
        for cut in cuts {
            let (status, body) = post_archive(&srv, &dest, &format!("format={format}"), full[..cut].to_vec()).await;
            assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_FILE")), "{format} cut at {cut}: {body}");
            assert!(names(&dest).is_empty(), "{format} cut at {cut}: {:?}", names(&dest));
        }
        let (status, body) = post_archive(&srv, &dest, &format!("format={format}"), full).await;
        assert_eq!(status, 200, "{format}: {body}");
        std::fs::remove_dir_all(&dest).unwrap();
        std::fs::create_dir(&dest).unwrap();
    }
}

#[tokio::test]
async fn x31_owner_preserve() {
    if !common::is_root() {
        common::prerequisite_missing("root (chown to another uid)");
        return;
    }
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let mut t = Vec::new();
    let mut header = tar::Header::new_gnu();
    header.set_path("owned.txt").unwrap();
    header.set_size(2);
    header.set_mode(0o4755);
    header.set_uid(4321);
    header.set_gid(4322);
    header.set_mtime(1_500_000_000);
    header.set_cksum();
    t.extend_from_slice(header.as_bytes());
    t.extend_from_slice(b"hi");
    t.resize(1024, 0);
    end_tar(&mut t);
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    assert_eq!(post_archive(&srv, &a, "format=tar", t.clone()).await.0, 200);
    let m = std::fs::metadata(a.join("owned.txt")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777, m.mtime()), (0, 0, 0o755, 1_500_000_000));
    assert_eq!(post_archive(&srv, &b, "format=tar&owner=preserve", t).await.0, 200);
    let m = std::fs::metadata(b.join("owned.txt")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4321, 4322, 0o4755));
}

/// A full disk: 507, and nothing of the archive left (a 4 MiB tmpfs, a 6 MiB archive).
#[tokio::test]
async fn x31_full_disk_is_507_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        common::prerequisite_missing("a tmpfs mount (root with CAP_SYS_ADMIN)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let srv = TestServer::start();
    let mut t = Vec::new();
    let noise: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for i in 0..3 {
        raw_tar_entry(&mut t, format!("f{i}.bin").as_bytes(), b'0', b"", &noise);
    }
    end_tar(&mut t);
    for format in ["tar", "zip"] {
        let body = if format == "zip" {
            zip_with(&[("a.bin", &noise), ("b.bin", &noise), ("c.bin", &noise)])
        } else {
            t.clone()
        };
        let (status, resp) = post_archive(&srv, &mnt, &format!("format={format}"), body).await;
        assert_eq!((status, resp["code"].as_str()), (507, Some("INSUFFICIENT_STORAGE")), "{format}: {resp}");
        assert!(names(&mnt).is_empty(), "{format}: {:?}", names(&mnt));
    }
}

#[tokio::test]
async fn x30_large_compressed_exports_are_complete() {
    if !tools_present(&["tar", "zstd", "cmp"]) {
        return;
    }
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("t");
    std::fs::create_dir(&src).unwrap();
    // More than the compressor thread's chunks and the body channel hold, half of it incompressible.
    std::fs::write(src.join("noise"), noise(6 << 20, 0x2545_F491_4F6C_DD1D)).unwrap();
    std::fs::write(src.join("text"), "a compressible line\n".repeat(300_000)).unwrap();
    for (format, unpack) in
        [("tar.zst", "zstd -q -d -c '{f}' | tar -xf - -C '{o}'"), ("tar.gz", "tar -xzf '{f}' -C '{o}'")]
    {
        let resp = get_archive(&srv, &src, &format!("format={format}")).await;
        assert_eq!(resp.status(), 200, "{format}");
        let bytes = resp.bytes().await.unwrap();
        let file = work.path().join(format!("out.{format}"));
        std::fs::write(&file, &bytes).unwrap();
        let out = work.path().join(format!("x-{format}"));
        std::fs::create_dir(&out).unwrap();
        run(&unpack.replace("{f}", &file.display().to_string()).replace("{o}", &out.display().to_string()));
        for name in ["noise", "text"] {
            run(&format!("cmp '{}' '{}'", src.join(name).display(), out.join(name).display()));
        }
    }
}

/// Headroom for execd's peak RSS (VmHWM) over an export: the archive is streamed, so this bounds
/// its buffers and the walker's state, whatever the tree's size.
const FLAT_KIB: u64 = 32 * 1024;

/// A temp dir on tmpfs (`/dev/shm`) when there is one: creating 100 000 files there takes well under
/// a second, against half a minute on this machine's ext4. Removed on drop, like any `TempDir`.
fn fast_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("execd-archive-").tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap()
}

/// `dirs` × `per_dir` files of 512 bytes of noise (incompressible, so a compressed export is as
/// long as a plain one and the walker feels the client's backpressure), `d000/f0000`, ….
fn make_wide_tree(root: &Path, dirs: usize, per_dir: usize) {
    let pool = noise(16 << 20, 0xD1B5_4A32_D192_ED03);
    let mut at = 0;
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:04}")), &pool[at..at + 512]).unwrap();
            at = (at + 512) % pool.len();
        }
    }
}

/// GNU tar listing an archive verbosely on its stdin (`tar_args`, e.g. `-tvf -`): the child, and
/// a thread returning the names of the regular files listed (lines of type `-`; the names here
/// have no spaces).
fn tar_lister(tar_args: &str) -> (std::process::Child, std::thread::JoinHandle<Vec<String>>) {
    use std::io::BufRead;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec tar {tar_args}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let names = std::thread::spawn(move || {
        std::io::BufReader::new(out)
            .lines()
            .map(|l| l.unwrap())
            .filter(|l| l.starts_with('-'))
            .map(|l| l.rsplit(' ').next().unwrap().trim_start_matches("./").to_string())
            .collect()
    });
    (child, names)
}

/// Exports of a 100 000-file tree as tar and tar.zst: execd's peak RSS grows by a bounded amount,
/// the first bytes arrive while the walk is still early (a file created in the last directory
/// after the first chunk was read is in the archive: that directory was not read yet), and GNU
/// tar lists every file.
#[tokio::test]
async fn x30_export_of_100k_files_streams_in_flat_memory() {
    if !tools_present(&["tar", "zstd"]) {
        return;
    }
    let srv = TestServer::start();
    let work = fast_tempdir();
    let src = work.path().join("t");
    let started = std::time::Instant::now();
    make_wide_tree(&src, 100, 1000);
    let made = started.elapsed();
    // Warm-up exports of a small tree, so threads and allocator arenas exist before the baseline.
    let small = work.path().join("small");
    make_wide_tree(&small, 2, 10);
    for format in ["tar", "tar.zst"] {
        let resp = get_archive(&srv, &small, &format!("format={format}")).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let base = common::hwm_kib(srv.pid());
    for (format, tar_args) in [("tar", "-tvf -"), ("tar.zst", "--zstd -tvf -")] {
        let late = src.join("d099").join(format!("zz-late-{format}"));
        let t0 = std::time::Instant::now();
        let mut resp = get_archive(&srv, &src, &format!("format={format}")).await;
        assert_eq!(resp.status(), 200, "{format}");
        let first = resp.chunk().await.unwrap().expect("a first chunk");
        let ttfb = t0.elapsed();
        // The walker is held back by this reader now; d099 comes last in its sorted walk.
        std::fs::write(&late, b"late").unwrap();
        let (mut child, names) = tar_lister(tar_args);
        let mut stdin = child.stdin.take().unwrap();
        let mut total = first.len() as u64;
        std::io::Write::write_all(&mut stdin, &first).unwrap();
        while let Some(chunk) = resp.chunk().await.unwrap_or_else(|e| panic!("{format}: {e:?}")) {
            total += chunk.len() as u64;
            std::io::Write::write_all(&mut stdin, &chunk).unwrap();
        }
        drop(stdin);
        let whole = t0.elapsed();
        assert!(child.wait().unwrap().success(), "{format}: tar failed");
        let files = names.join().unwrap();
        let late_name = format!("d099/zz-late-{format}");
        assert!(
            files.contains(&late_name),
            "{format}: {late_name} (created after the first chunk) is not in the archive: the walk had ended"
        );
        assert_eq!(files.len(), 100_001, "{format}: files listed");
        assert!(files.iter().any(|n| n == "d000/f0000") && files.iter().any(|n| n == "d099/f0999"), "{format}");
        let hwm = common::hwm_kib(srv.pid());
        println!(
            "{format}: tree made in {made:?}; {total} bytes, first after {ttfb:?}, all after {whole:?}; \
             execd VmHWM {base} → {hwm} KiB"
        );
        assert!(hwm <= base + FLAT_KIB, "{format}: execd's peak RSS grew from {base} to {hwm} KiB");
        std::fs::remove_file(&late).unwrap();
    }
}

/// A tree holding a 4 GiB sparse file: the tar export streams it whole (the header says 4 GiB,
/// the next entry starts right after its data) in flat memory. Nothing is stored: the bytes are
/// counted and only the two headers and the small file's data are kept.
#[tokio::test]
async fn x30_export_of_a_4gib_sparse_file_is_whole_in_flat_memory() {
    const BIG: u64 = 4 << 30;
    let srv = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("t");
    std::fs::create_dir(&src).unwrap();
    std::fs::File::create(src.join("a-big")).unwrap().set_len(BIG).unwrap();
    std::fs::write(src.join("b.txt"), "after the big file\n").unwrap();
    let warm = get_archive(&srv, &src, "format=tar&exclude=a-big").await;
    assert_eq!(warm.status(), 200);
    warm.bytes().await.unwrap();
    let base = common::hwm_kib(srv.pid());

    let started = std::time::Instant::now();
    let mut resp = get_archive(&srv, &src, "format=tar").await;
    assert_eq!(resp.status(), 200);
    // The first header, and the second header with b.txt's data block right after a-big's data.
    let next_at = 512 + BIG;
    let (mut head, mut next) = (Vec::with_capacity(512), Vec::with_capacity(1024));
    let mut total = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let (from, to) = (total, total + chunk.len() as u64);
        if from < 512 {
            head.extend_from_slice(&chunk[..(512.min(to) - from) as usize]);
        }
        if to > next_at && from < next_at + 1024 {
            let a = next_at.saturating_sub(from) as usize;
            let b = ((next_at + 1024).min(to) - from) as usize;
            next.extend_from_slice(&chunk[a..b]);
        }
        total = to;
    }
    let hwm = common::hwm_kib(srv.pid());
    println!("{total} bytes in {:?}; execd VmHWM {base} → {hwm} KiB", started.elapsed());
    assert_eq!(total % 512, 0);
    assert!(total >= next_at + 1024 + 1024, "{total} bytes: the archive is short");

    let name = |h: &[u8]| String::from_utf8_lossy(&h[..100]).trim_end_matches('\0').to_string();
    // ustar/GNU size: 11 octal digits, or base-256 when the first byte has its top bit set.
    let size = |h: &[u8]| -> u64 {
        let f = &h[124..136];
        if f[0] & 0x80 != 0 {
            f[1..].iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        } else {
            let s = String::from_utf8_lossy(f);
            u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap()
        }
    };
    assert_eq!(head.len(), 512);
    assert_eq!(name(&head), "a-big");
    assert_eq!(size(&head), BIG);
    assert_eq!(head[156], b'0', "a regular file");
    assert_eq!(next.len(), 1024);
    assert_eq!(name(&next), "b.txt");
    assert_eq!(size(&next), 19);
    assert_eq!(&next[512..531], b"after the big file\n");
    assert!(hwm <= base + FLAT_KIB, "execd's peak RSS grew from {base} to {hwm} KiB");
}
