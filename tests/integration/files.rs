//! `/files/*` against the real binary: upload, download, info, delete, permissions, mv, search,
//! replace (C110–C130, C137; DECISIONS D30–D34).

use crate::common;
use crate::fsutil;

use std::os::unix::fs::MetadataExt;

use fsutil::{assert_empty_ok, assert_error, mode_of, q, status_json, temp_files, Fx, Part};
use serde_json::{json, Value};

#[tokio::test]
async fn c110_upload_creates_parents_and_download_returns_exact_bytes() {
    let fx = Fx::in_process();
    let target = fx.s("x/y/hello.txt");
    let resp = fx.upload(&[Part::metadata(json!({ "path": target })), Part::file(b"hello execd\n".to_vec())]).await;
    assert_empty_ok(resp).await;
    let resp = fx.get(&format!("/files/download?path={}", q(&target))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.headers()["content-length"], "12");
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert!(resp.headers().contains_key("last-modified"));
    assert_eq!(&resp.bytes().await.unwrap()[..], b"hello execd\n");
    // No mode given: a new file gets 0777 &^ umask (upstream), and no temp file remains.
    assert_eq!(mode_of(&fx.p("x/y/hello.txt")), 0o777 & !0o022);
    assert!(temp_files(&fx.p("x/y")).is_empty());
}

#[tokio::test]
async fn c111_three_pairs_in_one_request_keep_modes_and_owner() {
    let fx = Fx::in_process();
    let (a, b, c) = (fx.s("a.txt"), fx.s("sub/b.bin"), fx.s("c.txt"));
    let resp = fx
        .upload(&[
            Part::metadata(json!({"path": a, "mode": 644, "owner": null, "group": null})),
            Part::file(b"aaa".to_vec()),
            Part::metadata(json!({"path": b, "mode": 755})),
            Part::file(vec![0u8, 1, 2, 255]),
            Part::metadata(json!({"path": c, "mode": 755, "owner": "nobody", "group": "nogroup"})),
            Part::file(b"ccc".to_vec()),
        ])
        .await;
    assert_empty_ok(resp).await;
    let ia = fx.info(&a).await;
    assert_eq!((ia["mode"].as_u64(), ia["size"].as_u64()), (Some(644), Some(3)));
    let ib = fx.info(&b).await;
    assert_eq!((ib["mode"].as_u64(), ib["size"].as_u64()), (Some(755), Some(4)));
    let ic = fx.info(&c).await;
    assert_eq!(ic["mode"], 755);
    assert_eq!(ic["owner"], "nobody");
    assert_eq!(ic["group"], "nogroup");
    assert_eq!(std::fs::read(fx.p("sub/b.bin")).unwrap(), vec![0u8, 1, 2, 255]);
}

#[tokio::test]
async fn c112_upload_problems_answer_400_with_upstream_codes() {
    let fx = Fx::in_process();
    let target = fx.s("u.txt");
    // A metadata part without a filename is invisible.
    let no_filename = Part {
        name: "metadata",
        filename: None,
        content_type: None,
        body: json!({ "path": target }).to_string().into_bytes(),
    };
    let r = fx.upload(&[no_filename, Part::file(b"x".to_vec())]).await;
    assert_error(r, 400, "INVALID_FILE_METADATA").await;
    let r = fx.upload(&[Part::metadata(json!({ "path": target }))]).await;
    assert_error(r, 400, "INVALID_FILE_CONTENT").await;
    let r = fx
        .upload(&[
            Part::metadata(json!({ "path": target })),
            Part::metadata(json!({"path": fx.s("v.txt")})),
            Part::file(b"x".to_vec()),
        ])
        .await;
    let msg = assert_error(r, 400, "INVALID_FILE").await;
    assert!(msg.contains("2 vs 1"), "{msg}");
    let r = fx.client.post(fx.url("/files/upload")).body("just text").send().await.unwrap();
    assert_error(r, 400, "INVALID_FILE").await;
    let r = fx
        .client
        .post(fx.url("/files/upload"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "INVALID_FILE").await;
    let r = fx.upload(&[Part::metadata(json!({"path": ""})), Part::file(b"x".to_vec())]).await;
    let msg = assert_error(r, 400, "INVALID_FILE_METADATA").await;
    assert!(msg.contains("path is empty"), "{msg}");
    let bad_json =
        Part { name: "metadata", filename: Some("metadata".into()), content_type: None, body: b"{not json".to_vec() };
    let r = fx.upload(&[bad_json, Part::file(b"x".to_vec())]).await;
    assert_error(r, 400, "INVALID_FILE_METADATA").await;
    // Nothing was written by the failed requests that had no valid pair.
    assert!(!fx.p("v.txt").exists());
    assert!(temp_files(fx.dir.path()).is_empty());
    // The daemon keeps serving.
    assert_eq!(fx.get("/ping").await.status(), 200);
}

#[tokio::test]
async fn c113_chunked_50_mib_upload_matches() {
    use sha2::{Digest, Sha256};
    let fx = Fx::in_process();
    let target = fx.s("big/chunked.bin");
    const SIZE: usize = 50 * 1024 * 1024;
    const PIECE: usize = 256 * 1024;
    let head = format!(
        "{}{}\r\n{}",
        fsutil::part_head("metadata", Some("metadata"), Some("application/json")),
        json!({"path": target, "mode": 644}),
        fsutil::part_head("file", Some("chunked.bin"), Some("application/octet-stream"))
    );
    let tail = format!("\r\n{}", fsutil::closing());
    let mut hasher = Sha256::new();
    let mut pieces: Vec<bytes::Bytes> = vec![bytes::Bytes::from(head)];
    // Deterministic non-repeating-ish content, streamed (no Content-Length: chunked encoding).
    let mut seed = 0x1234_5678u32;
    let mut data_pieces = Vec::new();
    for _ in 0..SIZE / PIECE {
        let mut piece = vec![0u8; PIECE];
        for b in piece.iter_mut() {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (seed >> 24) as u8;
        }
        hasher.update(&piece);
        data_pieces.push(bytes::Bytes::from(piece));
    }
    pieces.extend(data_pieces);
    pieces.push(bytes::Bytes::from(tail));
    let want = hasher.finalize();
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let resp = fx
        .client
        .post(fx.url("/files/upload"))
        .header("content-type", fsutil::multipart_content_type())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_empty_ok(resp).await;
    let got = Sha256::digest(std::fs::read(fx.p("big/chunked.bin")).unwrap());
    assert_eq!(got, want);
    assert_eq!(mode_of(&fx.p("big/chunked.bin")), 0o644);
}

#[tokio::test]
async fn c114_download_missing_file_404_and_missing_path_400() {
    let fx = Fx::in_process();
    let r = fx.get(&format!("/files/download?path={}", q(&fx.s("nope.txt")))).await;
    let msg = assert_error(r, 404, "FILE_NOT_FOUND").await;
    assert!(msg.contains("nope.txt"), "{msg}");
    assert_error(fx.get("/files/download").await, 400, "MISSING_QUERY").await;
}

#[tokio::test]
async fn c115_ranges_first_bytes_suffix_and_open_end() {
    let fx = Fx::in_process();
    let content: Vec<u8> = (0..100u8).collect();
    std::fs::write(fx.p("r.bin"), &content).unwrap();
    let url = fx.url(&format!("/files/download?path={}", q(&fx.s("r.bin"))));
    let get = |range: &'static str| fx.client.get(&url).header("range", range).send();
    let r = get("bytes=0-9").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 0-9/100");
    assert_eq!(r.headers()["content-length"], "10");
    assert_eq!(&r.bytes().await.unwrap()[..], &content[..10]);
    let r = get("bytes=-5").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 95-99/100");
    assert_eq!(&r.bytes().await.unwrap()[..], &content[95..]);
    let r = get("bytes=5-").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &content[5..]);
    // Only the first range of several is served; an end past the size is clamped.
    let r = get("bytes=90-200, 0-1").await.unwrap();
    assert_eq!(r.headers()["content-range"], "bytes 90-99/100");
    assert_eq!(&r.bytes().await.unwrap()[..], &content[90..]);
    // Nothing satisfiable: 416 JSON with Content-Range */size.
    let r = get("bytes=100-").await.unwrap();
    assert_eq!(r.headers()["content-range"], "bytes */100");
    assert_error(r, 416, "UNKNOWN").await;
}

#[tokio::test]
async fn c116_content_disposition_ascii_raw_utf8_encoded_quotes_escaped() {
    let fx = Fx::in_process();
    let cases = [
        ("test.txt", "attachment; filename=\"test.txt\""),
        ("with space.txt", "attachment; filename=\"with space.txt\""),
        (
            "测试文件.txt",
            "attachment; filename=\"%E6%B5%8B%E8%AF%95%E6%96%87%E4%BB%B6.txt\"; filename*=UTF-8''%E6%B5%8B%E8%AF%95%E6%96%87%E4%BB%B6.txt",
        ),
        // DECISIONS D60: quotes in ASCII names are escaped.
        ("q\"uote.txt", "attachment; filename=\"q\\\"uote.txt\""),
    ];
    for (name, want) in cases {
        std::fs::write(fx.p(name), b"x").unwrap();
        let r = fx.get(&format!("/files/download?path={}", q(&fx.s(name)))).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(r.headers()["content-disposition"], want, "{name}");
    }
}

#[tokio::test]
async fn c117_range_with_other_unit_is_416_unknown() {
    let fx = Fx::in_process();
    std::fs::write(fx.p("r.txt"), b"0123456789").unwrap();
    let url = fx.url(&format!("/files/download?path={}", q(&fx.s("r.txt"))));
    for range in ["items=0-1", "bytes=5-1", "bytes=x-"] {
        let r = fx.client.get(&url).header("range", range).send().await.unwrap();
        assert_error(r, 416, "UNKNOWN").await;
    }
}

#[tokio::test]
async fn c118_info_keys_exactly_as_given_with_every_field() {
    let fx = Fx::in_process();
    std::fs::write(fx.p("a.txt"), b"hello").unwrap();
    std::fs::set_permissions(fx.p("a.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::create_dir(fx.p("d")).unwrap();
    // B is given with a redundant `./` and `..`: the key stays as given, the path is cleaned.
    let a = fx.s("a.txt");
    let b = format!("{}/./d/../d", fx.dir.path().display());
    let r = fx.get(&format!("/files/info?path={}&path={}", q(&a), q(&b))).await;
    let (st, v) = status_json(r).await;
    assert_eq!(st, 200);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2);
    assert!(v.get(&a).is_some() && v.get(&b).is_some(), "{v}");
    let ia = &v[&a];
    for key in ["path", "type", "size", "modified_at", "created_at", "owner", "group", "mode"] {
        assert!(ia.get(key).is_some(), "missing {key}: {ia}");
    }
    assert_eq!(ia["path"], a);
    assert_eq!(ia["type"], "file");
    assert_eq!(ia["size"], 5);
    assert_eq!(ia["mode"], 644);
    assert_eq!(ia["owner"], "root");
    assert_eq!(ia["group"], "root");
    assert!(ia["modified_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v[&b]["path"], fx.s("d"));
    assert_eq!(v[&b]["type"], "directory");
}

#[tokio::test]
async fn c119_info_symlink_is_symlink_missing_404_no_paths_empty_object() {
    let fx = Fx::in_process();
    std::fs::write(fx.p("t.txt"), b"x").unwrap();
    std::os::unix::fs::symlink(fx.p("t.txt"), fx.p("link")).unwrap();
    assert_eq!(fx.info(&fx.s("link")).await["type"], "symlink");
    let r = fx.get(&format!("/files/info?path={}", q(&fx.s("missing")))).await;
    let msg = assert_error(r, 404, "FILE_NOT_FOUND").await;
    assert!(msg.contains("missing"), "{msg}");
    let (st, v) = status_json(fx.get("/files/info").await).await;
    assert_eq!((st, v), (200, json!({})));
}

#[tokio::test]
async fn c120_tilde_and_home_resolve_on_every_route_and_undefined_var_fails() {
    let home = tempfile::tempdir().unwrap();
    let server = common::TestServer::options().env("HOME", home.path().to_str().unwrap()).start();
    let fx = Fx::with(server);
    let h = |rel: &str| home.path().join(rel);
    assert_empty_ok(fx.upload_one("~/up.txt", b"hello home").await).await;
    assert_eq!(std::fs::read(h("up.txt")).unwrap(), b"hello home");
    assert_eq!(fx.info("$HOME/up.txt").await["path"], h("up.txt").to_str().unwrap());
    assert_eq!(fx.info("${HOME}/up.txt").await["size"], 10);
    let r = fx.get("/files/download?path=~/up.txt").await;
    assert_eq!(&r.bytes().await.unwrap()[..], b"hello home");
    let (st, v) = status_json(fx.get("/files/search?path=~&pattern=up.txt").await).await;
    assert_eq!(st, 200);
    assert_eq!(v[0]["path"], h("up.txt").to_str().unwrap());
    let r = fx.post_json("/files/replace?verbose=true", json!({"~/up.txt": {"old": "home", "new": "HOME"}})).await;
    assert_eq!(status_json(r).await.1, json!({"~/up.txt": {"replacedCount": 1}}));
    assert_empty_ok(fx.post_json("/files/permissions", json!({"$HOME/up.txt": {"mode": 600}})).await).await;
    assert_eq!(mode_of(&h("up.txt")), 0o600);
    assert_empty_ok(fx.post_json("/files/mv", json!([{"src": "~/up.txt", "dest": "$HOME/moved/up.txt"}])).await).await;
    assert!(h("moved/up.txt").exists());
    let (st, v) = status_json(fx.get(&format!("/directories/list?path={}", q("~/moved"))).await).await;
    assert_eq!((st, v.as_array().unwrap().len()), (200, 1));
    assert_empty_ok(fx.post_json("/directories", json!({"~/newdir/sub": {"mode": 755}})).await).await;
    assert!(h("newdir/sub").is_dir());
    assert_empty_ok(fx.delete("/files?path=~/moved/up.txt").await).await;
    assert!(!h("moved/up.txt").exists());
    assert_empty_ok(fx.delete("/directories?path=$HOME/newdir").await).await;
    assert!(!h("newdir").exists());
    // An undefined variable stays literal (D31), so the path does not exist: non-2xx.
    let r = fx.get(&format!("/files/info?path={}", q("$NOPE_EXECD_UNDEFINED/x"))).await;
    let msg = assert_error(r, 404, "FILE_NOT_FOUND").await;
    assert!(msg.contains("$NOPE_EXECD_UNDEFINED/x"), "{msg}");
}

#[tokio::test]
async fn c121_delete_file_removes_missing_is_ok_directory_is_500_root_is_400() {
    let fx = Fx::in_process();
    std::fs::write(fx.p("f.txt"), b"x").unwrap();
    std::fs::create_dir(fx.p("d")).unwrap();
    assert_empty_ok(fx.delete(&format!("/files?path={}", q(&fx.s("f.txt")))).await).await;
    assert!(!fx.p("f.txt").exists());
    assert_empty_ok(fx.delete(&format!("/files?path={}", q(&fx.s("f.txt")))).await).await;
    let msg = assert_error(fx.delete(&format!("/files?path={}", q(&fx.s("d")))).await, 500, "RUNTIME_ERROR").await;
    assert!(msg.contains("is a directory"), "{msg}");
    assert!(fx.p("d").is_dir());
    assert_empty_ok(fx.delete("/files").await).await;
    // DECISIONS D32.
    assert_error(fx.delete("/files?path=/").await, 400, "INVALID_REQUEST_BODY").await;
}

#[tokio::test]
async fn c122_permissions_set_mode_owner_group_and_bad_mode_is_500() {
    let fx = Fx::in_process();
    let f = fx.s("p.txt");
    std::fs::write(&f, b"x").unwrap();
    let r =
        fx.post_json("/files/permissions", json!({ &f: {"mode": 600, "owner": "nobody", "group": "nogroup"} })).await;
    assert_empty_ok(r).await;
    let i = fx.info(&f).await;
    assert_eq!(
        (i["mode"].as_u64(), i["owner"].as_str(), i["group"].as_str()),
        (Some(600), Some("nobody"), Some("nogroup"))
    );
    let msg =
        assert_error(fx.post_json("/files/permissions", json!({ &f: {"mode": 789} })).await, 500, "RUNTIME_ERROR")
            .await;
    assert!(msg.contains("789"), "{msg}");
    // Keys are matched case-insensitively (Go's decoder).
    assert_empty_ok(fx.post_json("/files/permissions", json!({ &f: {"Mode": 640} })).await).await;
    assert_eq!(mode_of(&fx.p("p.txt")), 0o640);
    // A missing path is a 500 (chmod error), not a 404, as upstream.
    let r = fx.post_json("/files/permissions", json!({ fx.s("missing"): {"mode": 644} })).await;
    assert_error(r, 500, "RUNTIME_ERROR").await;
    assert_error(fx.post_json("/files/permissions", json!({ &f: {"mode": "755"} })).await, 400, "INVALID_REQUEST_BODY")
        .await;
}

#[tokio::test]
async fn c123_mode_only_chmod_keeps_the_owner_d30() {
    // DECISIONS D30: upstream would chown to root here; we leave ownership unchanged.
    let fx = Fx::in_process();
    let f = fx.s("owned.txt");
    std::fs::write(&f, b"x").unwrap();
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    assert_empty_ok(fx.post_json("/files/permissions", json!({ &f: {"mode": 644} })).await).await;
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o644));
    // The same for mkdir on an existing directory and for an upload over an existing file.
    std::fs::create_dir(fx.p("dir")).unwrap();
    std::os::unix::fs::chown(fx.p("dir"), Some(65534), Some(65534)).unwrap();
    assert_empty_ok(fx.post_json("/directories", json!({ fx.s("dir"): {"mode": 750} })).await).await;
    assert_eq!(std::fs::metadata(fx.p("dir")).unwrap().uid(), 65534);
    assert_empty_ok(fx.upload_one(&f, b"new content").await).await;
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o755));
}

#[tokio::test]
async fn c124_mv_renames_and_creates_destination_parents() {
    let fx = Fx::in_process();
    std::fs::write(fx.p("a.txt"), b"move me").unwrap();
    let r = fx.post_json("/files/mv", json!([{"src": fx.s("a.txt"), "dest": fx.s("new/dir/b.txt")}])).await;
    assert_empty_ok(r).await;
    assert!(!fx.p("a.txt").exists());
    assert_eq!(std::fs::read(fx.p("new/dir/b.txt")).unwrap(), b"move me");
    // Directories move too.
    let r = fx.post_json("/files/mv", json!([{"src": fx.s("new/dir"), "dest": fx.s("other")}])).await;
    assert_empty_ok(r).await;
    assert!(fx.p("other/b.txt").exists());
}

#[tokio::test]
async fn c125_mv_missing_src_404_and_existing_dest_500_keeps_src() {
    let fx = Fx::in_process();
    let r = fx.post_json("/files/mv", json!([{"src": fx.s("nope"), "dest": fx.s("x")}])).await;
    assert_error(r, 404, "FILE_NOT_FOUND").await;
    std::fs::write(fx.p("src.txt"), b"src").unwrap();
    std::fs::write(fx.p("dst.txt"), b"dst").unwrap();
    let r = fx.post_json("/files/mv", json!([{"src": fx.s("src.txt"), "dest": fx.s("dst.txt")}])).await;
    let msg = assert_error(r, 500, "RUNTIME_ERROR").await;
    assert!(msg.contains("already exists"), "{msg}");
    assert_eq!(std::fs::read(fx.p("src.txt")).unwrap(), b"src");
    assert_eq!(std::fs::read(fx.p("dst.txt")).unwrap(), b"dst");
    // A dangling symlink at the destination exists too (renameat2 RENAME_NOREPLACE): kept.
    std::os::unix::fs::symlink(fx.p("nowhere"), fx.p("link")).unwrap();
    let r = fx.post_json("/files/mv", json!([{"src": fx.s("src.txt"), "dest": fx.s("link")}])).await;
    assert_error(r, 500, "RUNTIME_ERROR").await;
    assert!(std::fs::symlink_metadata(fx.p("link")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(fx.p("src.txt")).unwrap(), b"src");
}

fn search_paths(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn c126_search_finds_txt_at_any_depth_hidden_included_no_directories() {
    let fx = Fx::in_process();
    for rel in ["a.txt", "b.go", "sub/c.txt", "sub/deeper/d.txt", ".hidden.txt", ".hdir/e.txt", "dir.txt/f.md"] {
        let p = fx.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
    let r = fx.get(&format!("/files/search?path={}&pattern={}", q(&fx.s("")), q("*.txt"))).await;
    let (st, v) = status_json(r).await;
    assert_eq!(st, 200);
    // Pre-order, names sorted byte-wise; the directory `dir.txt` is not returned.
    let want: Vec<String> =
        [".hdir/e.txt", ".hidden.txt", "a.txt", "sub/c.txt", "sub/deeper/d.txt"].iter().map(|r| fx.s(r)).collect();
    assert_eq!(search_paths(&v), want);
    assert!(v.as_array().unwrap().iter().all(|e| e["type"] == "file" && e.get("created_at").is_some()));
    let three = tempfile::tempdir().unwrap();
    for n in ["x", "y", "z"] {
        std::fs::write(three.path().join(n), b"1").unwrap();
    }
    let r = fx.get(&format!("/files/search?path={}&pattern=*", q(three.path().to_str().unwrap()))).await;
    assert_eq!(status_json(r).await.1.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn c127_search_default_pattern_missing_path_400_nonexistent_404() {
    let fx = Fx::in_process();
    for rel in ["a", "s/b", "s/t/c"] {
        let p = fx.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
    let (st, v) = status_json(fx.get(&format!("/files/search?path={}", q(&fx.s("")))).await).await;
    assert_eq!(st, 200);
    assert_eq!(search_paths(&v), vec![fx.s("a"), fx.s("s/b"), fx.s("s/t/c")]);
    assert_error(fx.get("/files/search?pattern=*").await, 400, "MISSING_QUERY").await;
    assert_error(fx.get(&format!("/files/search?path={}", q(&fx.s("nope")))).await, 404, "FILE_NOT_FOUND").await;
    let (st, v) = status_json(fx.get(&format!("/files/search?path={}&pattern=zzz", q(&fx.s("")))).await).await;
    assert_eq!((st, v), (200, json!([])));
    // An invalid pattern is a 500 (once an entry is tested).
    let r = fx.get(&format!("/files/search?path={}&pattern={}", q(&fx.s("")), q("["))).await;
    assert_error(r, 500, "RUNTIME_ERROR").await;
}

#[tokio::test]
async fn c128_search_matches_base_name_only_and_does_not_follow_symlinked_dirs() {
    let fx = Fx::in_process();
    for rel in ["sub/a.txt", "x/y/a.txt", "outside/o.txt"] {
        let p = fx.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
    let root = fx.s("");
    let fxr = &fx;
    let search = |pattern: &str| {
        let url = format!("/files/search?path={}&pattern={}", q(&root), q(pattern));
        async move { fxr.get(&url).await }
    };
    assert_eq!(status_json(search("sub/*.txt").await).await.1, json!([]));
    let v = status_json(search("**/a.txt").await).await.1;
    assert_eq!(search_paths(&v), vec![fx.s("sub/a.txt"), fx.s("x/y/a.txt")]);
    let v = status_json(search("{o,a}.txt").await).await.1;
    assert_eq!(search_paths(&v).len(), 3);
    // A symlink to a directory is an entry (matched by its name), never descended.
    std::os::unix::fs::symlink(fx.p("outside"), fx.p("sub/link")).unwrap();
    let v = status_json(search("*").await).await.1;
    let paths = search_paths(&v);
    assert!(paths.contains(&fx.s("sub/link")), "{paths:?}");
    assert!(!paths.contains(&fx.s("sub/link/o.txt")), "{paths:?}");
    assert_eq!(v.as_array().unwrap().iter().find(|e| e["path"] == fx.s("sub/link")).unwrap()["type"], "symlink");
}

#[tokio::test]
async fn c129_replace_verbose_counts_and_rewrites() {
    let fx = Fx::in_process();
    let f = fx.s("r.txt");
    std::fs::write(&f, b"foo bar foo baz foo").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    let r = fx.post_json("/files/replace?verbose=true", json!({ &f: {"old": "foo", "new": "qux"} })).await;
    let (st, v) = status_json(r).await;
    assert_eq!((st, v), (200, json!({ &f: {"replacedCount": 3} })));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "qux bar qux baz qux");
    // Mode and owner are kept; no temporary file is left.
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.mode() & 0o777, m.uid()), (0o640, 65534));
    assert!(temp_files(fx.dir.path()).is_empty());
    let r = fx.post_json("/files/replace?verbose=true", json!({ &f: {"old": "nothing", "new": "x"} })).await;
    assert_eq!(status_json(r).await.1, json!({ &f: {"replacedCount": 0} }));
    // A batch of two, and a symlink is followed (the target is rewritten, the link stays).
    std::fs::write(fx.p("two.txt"), b"aXbX").unwrap();
    std::os::unix::fs::symlink(fx.p("two.txt"), fx.p("two.link")).unwrap();
    let r = fx
        .post_json(
            "/files/replace?verbose=true",
            json!({ &f: {"old": "qux", "new": "Q"}, fx.s("two.link"): {"old": "X", "new": "--"} }),
        )
        .await;
    assert_eq!(status_json(r).await.1, json!({ &f: {"replacedCount": 3}, fx.s("two.link"): {"replacedCount": 2} }));
    assert_eq!(std::fs::read_to_string(fx.p("two.txt")).unwrap(), "a--b--");
    assert!(std::fs::symlink_metadata(fx.p("two.link")).unwrap().file_type().is_symlink());
}

#[tokio::test]
async fn c130_replace_plain_is_empty_200_missing_404_empty_old_400() {
    let fx = Fx::in_process();
    let f = fx.s("r.txt");
    std::fs::write(&f, b"hello").unwrap();
    assert_empty_ok(fx.post_json("/files/replace", json!({ &f: {"old": "hello", "new": "hi"} })).await).await;
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "hi");
    let r = fx.post_json("/files/replace", json!({ fx.s("missing"): {"old": "a", "new": "b"} })).await;
    assert_error(r, 404, "FILE_NOT_FOUND").await;
    let msg = assert_error(
        fx.post_json("/files/replace", json!({ &f: {"old": "", "new": "b"} })).await,
        400,
        "INVALID_REQUEST_BODY",
    )
    .await;
    assert!(msg.contains("must not be empty"), "{msg}");
    assert_error(fx.client.post(fx.url("/files/replace")).send().await.unwrap(), 400, "INVALID_REQUEST_BODY").await;
}

#[tokio::test]
async fn c137_fresh_file_times_are_close_and_rewrite_moves_modified_forward() {
    let fx = Fx::in_process();
    let f = fx.s("t.txt");
    assert_empty_ok(fx.upload_one(&f, b"one").await).await;
    let i = fx.info(&f).await;
    let parse = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let (m1, c1) = (parse(&i["modified_at"]), parse(&i["created_at"]));
    assert!((m1 - c1).num_milliseconds().abs() <= 2000, "{m1} vs {c1}");
    // Set mtime into the past so that the rewrite is visibly later whatever the clock resolution.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options().write(true).open(&f).unwrap().set_modified(old).unwrap();
    let before = parse(&fx.info(&f).await["modified_at"]);
    assert_empty_ok(fx.upload_one(&f, b"two").await).await;
    let after = parse(&fx.info(&f).await["modified_at"]);
    assert!(after > before, "{before} -> {after}");
}

#[tokio::test]
async fn d34_download_of_a_directory_is_400() {
    let fx = Fx::in_process();
    let r = fx.get(&format!("/files/download?path={}", q(&fx.s("")))).await;
    let msg = assert_error(r, 400, "INVALID_REQUEST_BODY").await;
    assert!(msg.contains("directory"), "{msg}");
}

#[tokio::test]
async fn upload_file_part_before_its_metadata_is_paired_by_index() {
    // A private TMPDIR for execd, where file parts without metadata yet are spooled.
    let tmp = tempfile::tempdir().unwrap();
    let fx = Fx::with(common::TestServer::options().env("TMPDIR", tmp.path().to_str().unwrap()).start());
    let (a, b) = (fx.s("first.txt"), fx.s("second/b.txt"));
    let r = fx
        .upload(&[
            Part::file(b"content A".to_vec()),
            Part::file(b"content B".to_vec()),
            Part::metadata(json!({"path": a, "mode": 600})),
            Part::metadata(json!({"path": b})),
        ])
        .await;
    assert_empty_ok(r).await;
    assert_eq!(std::fs::read(fx.p("first.txt")).unwrap(), b"content A");
    assert_eq!(std::fs::read(fx.p("second/b.txt")).unwrap(), b"content B");
    assert_eq!(mode_of(&fx.p("first.txt")), 0o600);
    assert!(temp_files(tmp.path()).is_empty());
    // A file part whose metadata never comes: 400, and the spooled file is removed.
    let r = fx.upload(&[Part::file(b"orphan".to_vec())]).await;
    assert_error(r, 400, "INVALID_FILE_METADATA").await;
    assert!(temp_files(tmp.path()).is_empty());
}

#[tokio::test]
async fn upload_over_existing_file_keeps_its_mode_when_none_given_and_follows_symlinks() {
    let fx = Fx::in_process();
    let f = fx.s("keep.txt");
    std::fs::write(&f, b"old").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&f, fx.p("keep.link")).unwrap();
    let r = fx.upload(&[Part::metadata(json!({"path": fx.s("keep.link")})), Part::file(b"new".to_vec())]).await;
    assert_empty_ok(r).await;
    assert_eq!(std::fs::read(&f).unwrap(), b"new");
    assert_eq!(mode_of(&fx.p("keep.txt")), 0o600);
    assert!(std::fs::symlink_metadata(fx.p("keep.link")).unwrap().file_type().is_symlink());
    // Uploading onto a directory fails cleanly.
    std::fs::create_dir(fx.p("adir")).unwrap();
    let r = fx.upload_one(&fx.s("adir"), b"x").await;
    assert_error(r, 500, "RUNTIME_ERROR").await;
    assert!(temp_files(fx.dir.path()).is_empty());
}

// ---- Line ranges: `GET /files/download?offset=N&limit=M` (issue #24 part 3, upstream 1.0.19) ----

/// GETs the line range `query` (e.g. `offset=2&limit=1`) of `path`.
async fn lines(fx: &Fx, path: &str, query: &str) -> reqwest::Response {
    fx.get(&format!("/files/download?path={}&{query}", q(path))).await
}

/// Status and body of a line-range answer that must be `text/plain` without attachment headers.
async fn lines_text(fx: &Fx, path: &str, query: &str) -> (u16, Vec<u8>) {
    let r = lines(fx, path, query).await;
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8", "{query}");
        assert!(!r.headers().contains_key("content-disposition"), "{query}");
        assert!(!r.headers().contains_key("content-range"), "{query}");
    }
    (status, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn sdk24_lines_offset_and_limit_pick_lines_alone_or_together() {
    let fx = Fx::in_process();
    let p = fx.s("five.txt");
    std::fs::write(&p, "line1\nline2\nline3\nline4\nline5").unwrap();
    // Upstream's own cases: chosen lines joined by "\n", no trailing line break.
    for (query, want) in [
        ("offset=2&limit=2", "line2\nline3"),
        ("offset=4", "line4\nline5"),
        ("limit=2", "line1\nline2"),
        ("offset=2&limit=100", "line2\nline3\nline4\nline5"),
        ("offset=1&limit=1", "line1"),
        ("offset=%2B3&limit=1", "line3"),
        ("offset=&limit=1", "line1"),
        ("offset=5", "line5"),
    ] {
        let (status, body) = lines_text(&fx, &p, query).await;
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, want), "{query}");
    }
    // Both empty: not a line read, the plain download (octet-stream, whole file).
    let r = lines(&fx, &p, "offset=&limit=").await;
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().len(), 29);
}

#[tokio::test]
async fn sdk24_lines_crlf_blank_lines_and_unterminated_last_line() {
    let fx = Fx::in_process();
    let crlf = fx.s("crlf.txt");
    std::fs::write(&crlf, "a\r\nb\r\n\r\nd\r\n").unwrap();
    for (query, want) in
        [("offset=1", "a\nb\n\nd"), ("offset=2&limit=1", "b"), ("offset=3&limit=1", ""), ("offset=3&limit=2", "\nd")]
    {
        let (status, body) = lines_text(&fx, &crlf, query).await;
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, want), "{query}");
    }
    // A last line without a newline is a line; a lone `\r` inside a line stays; trailing `\r`s
    // go with the line ending (upstream trims "\r\n" characters at the end of each line).
    let last = fx.s("last.txt");
    std::fs::write(&last, b"one\nt\rwo\r\r\nthree\r").unwrap();
    for (query, want) in
        [("offset=3", &b"three"[..]), ("offset=2&limit=1", b"t\rwo"), ("limit=5", b"one\nt\rwo\nthree")]
    {
        let (status, body) = lines_text(&fx, &last, query).await;
        assert_eq!((status, &body[..]), (200, want), "{query}");
    }
    // Bytes that are not UTF-8 pass through untouched.
    let bin = fx.s("bin.txt");
    std::fs::write(&bin, b"\xff\xfe\n\x00\x80x\n").unwrap();
    assert_eq!(lines_text(&fx, &bin, "offset=2").await, (200, b"\x00\x80x".to_vec()));
}

#[tokio::test]
async fn sdk24_lines_offset_past_the_end_or_empty_file_is_an_empty_200() {
    let fx = Fx::in_process();
    let p = fx.s("two.txt");
    std::fs::write(&p, "line1\nline2\n").unwrap();
    assert_eq!(lines_text(&fx, &p, "offset=3").await, (200, vec![]));
    assert_eq!(lines_text(&fx, &p, "offset=100&limit=5").await, (200, vec![]));
    assert_eq!(lines_text(&fx, &p, "offset=9223372036854775807").await, (200, vec![]));
    let empty = fx.s("empty.txt");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(lines_text(&fx, &empty, "offset=1&limit=1").await, (200, vec![]));
}

#[tokio::test]
async fn sdk24_lines_bad_values_and_range_together_are_json_400() {
    let fx = Fx::in_process();
    let p = fx.s("one.txt");
    std::fs::write(&p, "line1\n").unwrap();
    for query in [
        "offset=0",
        "offset=-1",
        "offset=abc",
        "offset=1.5",
        "offset=9223372036854775808",
        "limit=0",
        "limit=-3",
        "offset=1&limit=x",
    ] {
        let msg = assert_error(lines(&fx, &p, query).await, 400, "INVALID_REQUEST_BODY").await;
        let name = if query.starts_with("limit") || query.contains("limit=x") { "limit" } else { "offset" };
        assert!(msg.contains(&format!("'{name}'")), "{query}: {msg}");
    }
    // Range with any line parameter: 400 (before the file is even opened).
    let url = fx.url(&format!("/files/download?path={}&offset=1&limit=1", q(&p)));
    let r = fx.client.get(&url).header("range", "bytes=0-2").send().await.unwrap();
    let msg = assert_error(r, 400, "INVALID_REQUEST_BODY").await;
    assert!(msg.contains("mutually exclusive"), "{msg}");
    let url = fx.url(&format!("/files/download?path={}&limit=1", q(&fx.s("missing.txt"))));
    let r = fx.client.get(&url).header("range", "bytes=0-2").send().await.unwrap();
    assert_error(r, 400, "INVALID_REQUEST_BODY").await;
    // An empty Range header is no Range (upstream checks for a non-empty value).
    let url = fx.url(&format!("/files/download?path={}&limit=1", q(&p)));
    let r = fx.client.get(&url).header("range", "").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], b"line1");
    // A missing file is a 404 and a directory a 400, as for plain downloads.
    assert_error(lines(&fx, &fx.s("missing.txt"), "offset=1").await, 404, "FILE_NOT_FOUND").await;
    assert_error(lines(&fx, &fx.s(""), "offset=1").await, 400, "INVALID_REQUEST_BODY").await;
}

#[tokio::test]
async fn sdk24_lines_200_mb_file_lines_near_the_end_and_a_huge_line_in_flat_memory() {
    use futures_util::StreamExt;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    const HOLE: u64 = 200 * 1024 * 1024;
    let fx = Fx::new();
    let pid = fx.server.pid();
    // Line 1 "first", line 2 a 200 MiB run of zero bytes (a sparse hole), then three short lines.
    let p = fx.s("huge.txt");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(b"first\n").unwrap();
    f.set_len(6 + HOLE).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"\nnear-end-1\r\nnear-end-2\nlast").unwrap();
    drop(f);
    // Warm up (first request allocations), then take the baseline.
    assert_eq!(lines_text(&fx, &p, "limit=1").await, (200, b"first".to_vec()));
    let base = common::rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(common::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
    };
    let t0 = std::time::Instant::now();
    assert_eq!(lines_text(&fx, &p, "offset=3").await, (200, b"near-end-1\nnear-end-2\nlast".to_vec()));
    let skip_time = t0.elapsed();
    // The 200 MiB line itself, streamed: every byte arrives, none is buffered whole.
    let r = lines(&fx, &p, "offset=2&limit=1").await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|&b| b == 0), "only the hole's bytes");
        got += chunk.len() as u64;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(got, HOLE);
    let grew = peak.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!("200 MiB line file: skip to line 3 in {skip_time:?}; RSS base {base} KiB, grew {grew} KiB");
    assert!(grew < 16 * 1024, "RSS grew {grew} KiB over {base} KiB");
}

#[test]
fn sdk24_lines_clients_that_stop_reading_a_huge_line_pin_no_thread() {
    use std::io::Write;

    const CLIENTS: usize = 12;
    let fx = Fx::new();
    let pid = fx.server.pid();
    // One 1 GiB line (a sparse hole), then a short one.
    let p = fx.p("giant-line.txt");
    std::fs::File::create(&p).unwrap().set_len(1 << 30).unwrap();
    std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"\nend").unwrap();
    let threads0 = common::threads(pid);
    let req = format!(
        "GET /files/download?path={}&offset=1&limit=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        q(&p.display().to_string())
    );
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", fx.server.port)).unwrap();
        c.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        // Read just the head (and whatever body came with it), then stop reading.
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = common::read_retrying(&mut c, &mut buf).unwrap();
            assert!(n > 0, "closed before the head");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/plain; charset=utf-8"), "{head}");
        conns.push(c);
    }
    // Each stalled download holds its few buffered chunks and no blocking thread: the pool's
    // threads that read the first chunks go idle and leave (after tokio's 10 s keep-alive).
    let settled = common::wait_until(common::TIMEOUT, || common::threads(pid) <= threads0 + 4);
    assert!(settled, "threads {threads0} -> {} with {CLIENTS} stalled line downloads", common::threads(pid));
    eprintln!("threads {threads0} -> {} with {CLIENTS} stalled line downloads", common::threads(pid));
    // The rest of the API still answers, line ranges included.
    let small = fx.s("small.txt");
    std::fs::write(&small, "a\nb\n").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        assert_eq!(lines_text(&fx, &small, "offset=2").await, (200, b"b".to_vec()));
    });
    drop(conns);
}
