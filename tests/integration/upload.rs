//! Resumable uploads over tus 1.0 (EXTENSIONS X33) and the raw `PUT /files/content` upload (X34),
//! driven over HTTP against the real binary: the protocol's edge cases (offset mismatch 409,
//! checksum 460, version 412, expiry, termination, an execd restart between chunks, the proxy
//! prefix) and the digest check that must leave nothing behind. A real tus client (tuspy) is
//! exercised by the SDK suite (tests/sdk/test_tus.py).

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use common::{wait_until_async, TestServer, TIMEOUT};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TUS: &str = "1.0.0";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// Hidden partial files (`.execd-tus-*`) and temporary files (`.execd-*`) in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".execd-"))
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /files/tus` for `target` with `length` bytes; returns the upload's absolute URL (the
/// relative Location resolved against the creation URL, as tus clients do).
async fn create(s: &TestServer, base: &str, target: &Path, length: u64) -> String {
    let url = format!("{base}/files/tus");
    let resp = s
        .client()
        .post(&url)
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", format!("path {},filename {}", b64(target.to_str().unwrap().as_bytes()), b64(b"f")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text().await);
    assert_eq!(header(&resp, "tus-resumable"), TUS);
    let location = header(&resp, "location");
    assert!(location.starts_with("tus/"), "relative location: {location}");
    reqwest::Url::parse(&url).unwrap().join(&location).unwrap().to_string()
}

async fn patch(s: &TestServer, url: &str, offset: u64, data: &[u8], checksum: Option<String>) -> Response {
    let mut req = s
        .client()
        .patch(url)
        .header("Tus-Resumable", TUS)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(data.to_vec());
    if let Some(c) = checksum {
        req = req.header("Upload-Checksum", c);
    }
    req.send().await.unwrap()
}

async fn head(s: &TestServer, url: &str) -> Response {
    s.client().head(url).header("Tus-Resumable", TUS).send().await.unwrap()
}

async fn offset_of(s: &TestServer, url: &str) -> u64 {
    let resp = head(s, url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    header(&resp, "upload-offset").parse().unwrap()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn work(s: &TestServer) -> PathBuf {
    let d = s.dir.path().join("work");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn x33_options_advertise_version_extensions_and_checksums() {
    let s = TestServer::start();
    let resp = s.client().request(Method::OPTIONS, s.url("/files/tus")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "tus-version"), TUS);
    assert_eq!(header(&resp, "tus-resumable"), TUS);
    let ext = header(&resp, "tus-extension");
    for e in ["creation", "creation-with-upload", "termination", "checksum", "expiration"] {
        assert!(ext.split(',').any(|x| x == e), "{e} in {ext}");
    }
    assert_eq!(header(&resp, "tus-checksum-algorithm"), "sha1,sha256");
    assert!(header(&resp, "tus-max-size").parse::<u64>().unwrap() > 1 << 30);

    let caps: Value = s.client().get(s.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    assert_eq!(caps["features"]["tus"]["version"], TUS);
    assert_eq!(caps["features"]["tus"]["extensions"].as_array().unwrap().len(), 5);
    assert_eq!(caps["features"]["upload_raw"], true);
}

#[tokio::test]
async fn x33_chunks_land_atomically_only_at_the_end() {
    let s = TestServer::start();
    let dir = work(&s).join("new/sub");
    let target = dir.join("file.bin");
    let body = data(300_000);
    let url = create(&s, &s.base(), &target, body.len() as u64).await;

    let resp = head(&s, &url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "upload-offset"), "0");
    assert_eq!(header(&resp, "upload-length"), body.len().to_string());
    assert_eq!(header(&resp, "cache-control"), "no-store");
    assert_eq!(header(&resp, "tus-resumable"), TUS);
    assert!(header(&resp, "upload-metadata").starts_with("path "));
    // An IMF-fixdate (RFC 9110) about the expiry (24 h by default) from now.
    let expires = httpdate::parse_http_date(&header(&resp, "upload-expires")).expect("an IMF-fixdate");
    let ahead = expires.duration_since(std::time::SystemTime::now()).unwrap().as_secs();
    assert!((23 * 3600..=24 * 3600).contains(&ahead), "Upload-Expires {ahead} s ahead");

    // The partial file: beside the target, hidden, 0600; the target does not exist yet.
    let parts = leftovers(&dir);
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(parts[0].starts_with(".execd-tus-") && parts[0].ends_with(".part"));
    let mode = std::fs::metadata(dir.join(&parts[0])).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let mut at = 0usize;
    for chunk in body.chunks(100_000) {
        assert!(!target.exists(), "target visible before the last chunk");
        let resp = patch(&s, &url, at as u64, chunk, None).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{:?}", resp.text().await);
        at += chunk.len();
        assert_eq!(header(&resp, "upload-offset"), at.to_string());
        assert_eq!(header(&resp, "tus-resumable"), TUS);
    }
    assert_eq!(std::fs::read(&target).unwrap(), body);
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    // A finished upload is gone.
    assert_eq!(head(&s, &url).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn x33_offset_mismatch_is_409_and_changes_nothing() {
    let s = TestServer::start();
    let target = work(&s).join("f");
    let url = create(&s, &s.base(), &target, 10).await;
    assert_eq!(patch(&s, &url, 0, b"abcd", None).await.status(), StatusCode::NO_CONTENT);
    for wrong in [0u64, 3, 5, 99] {
        let resp = patch(&s, &url, wrong, b"xy", None).await;
        assert_eq!(resp.status(), StatusCode::CONFLICT, "offset {wrong}");
        assert_eq!(header(&resp, "tus-resumable"), TUS);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "CONFLICT");
    }
    assert_eq!(offset_of(&s, &url).await, 4);
    // A chunk longer than what is left: 413, nothing kept.
    assert_eq!(patch(&s, &url, 4, b"0123456789", None).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset_of(&s, &url).await, 4);
    assert_eq!(patch(&s, &url, 4, b"efghij", None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(&target).unwrap(), b"abcdefghij");
}

#[tokio::test]
async fn x33_checksum_mismatch_is_460_and_discards_the_chunk() {
    let s = TestServer::start();
    let target = work(&s).join("sum");
    let url = create(&s, &s.base(), &target, 8).await;
    let wrong = format!("sha256 {}", b64(&Sha256::digest(b"other")));
    let resp = patch(&s, &url, 0, b"abcd", Some(wrong)).await;
    assert_eq!(resp.status().as_u16(), 460);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "CHECKSUM_MISMATCH");
    assert_eq!(offset_of(&s, &url).await, 0);
    let dir = target.parent().unwrap();
    let part = dir.join(&leftovers(dir)[0]);
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 0, "discarded bytes cut off");

    let good256 = format!("sha256 {}", b64(&Sha256::digest(b"abcd")));
    assert_eq!(patch(&s, &url, 0, b"abcd", Some(good256)).await.status(), StatusCode::NO_CONTENT);
    let good1 = format!("sha1 {}", b64(&<sha1::Sha1 as Digest>::digest(b"efgh")));
    assert_eq!(patch(&s, &url, 4, b"efgh", Some(good1)).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(&target).unwrap(), b"abcdefgh");

    // Unsupported algorithm: 400.
    let url = create(&s, &s.base(), &work(&s).join("sum2"), 4).await;
    assert_eq!(patch(&s, &url, 0, b"abcd", Some("md5 AAAA".into())).await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn x33_wrong_version_and_bad_requests_are_refused() {
    let s = TestServer::start();
    let target = work(&s).join("v");
    let meta = format!("path {}", b64(target.to_str().unwrap().as_bytes()));
    for version in [None, Some("0.2.2"), Some("1.0.1")] {
        let mut req =
            s.client().post(s.url("/files/tus")).header("Upload-Length", "4").header("Upload-Metadata", &meta);
        if let Some(v) = version {
            req = req.header("Tus-Resumable", v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED, "{version:?}");
        assert_eq!(header(&resp, "tus-version"), TUS);
        assert_eq!(header(&resp, "tus-resumable"), TUS);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "UNSUPPORTED_VERSION");
    }
    let post = |len: &str, meta: &str| {
        s.client()
            .post(s.url("/files/tus"))
            .header("Tus-Resumable", TUS)
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", meta.to_string())
            .send()
    };
    // No path, bad base64, bad length, bad mode, too large.
    for (len, m, want) in [
        ("4", "filename Zg==", 400),
        ("4", "path !!", 400),
        ("x", meta.as_str(), 400),
        ("-1", meta.as_str(), 400),
        ("4", &format!("{meta},mode {}", b64(b"999")), 400),
        ("99999999999999999", meta.as_str(), 413),
    ] {
        let resp = post(len, m).await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{len} {m}");
        assert_eq!(header(&resp, "tus-resumable"), TUS);
    }
    assert!(!target.exists() && leftovers(target.parent().unwrap()).is_empty());
    // A chunk of the wrong type: 415; unknown ids: 404.
    let url = create(&s, &s.base(), &target, 4).await;
    let resp = s
        .client()
        .patch(&url)
        .header("Tus-Resumable", TUS)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/octet-stream")
        .body("abcd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for id in ["00000000000000000000000000000000", "..%2F..%2Fetc", "x"] {
        let u = s.url(&format!("/files/tus/{id}"));
        assert_eq!(head(&s, &u).await.status(), StatusCode::NOT_FOUND, "{id}");
        assert_eq!(patch(&s, &u, 0, b"a", None).await.status(), StatusCode::NOT_FOUND, "{id}");
    }
}

#[tokio::test]
async fn x33_creation_with_upload_and_empty_uploads() {
    let s = TestServer::start();
    let target = work(&s).join("cwu");
    let resp = s
        .client()
        .post(s.url("/files/tus"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", "10")
        .header("Upload-Metadata", format!("path {},mode {}", b64(target.to_str().unwrap().as_bytes()), b64(b"640")))
        .header("Content-Type", "application/offset+octet-stream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "upload-offset"), "5");
    let url = reqwest::Url::parse(&s.url("/files/tus")).unwrap().join(&header(&resp, "location")).unwrap().to_string();
    assert_eq!(patch(&s, &url, 5, b"world", None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(&target).unwrap(), b"helloworld");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640);

    // Length 0: the file lands at creation.
    let empty = work(&s).join("empty");
    let url = create(&s, &s.base(), &empty, 0).await;
    assert_eq!(std::fs::read(&empty).unwrap(), b"");
    assert_eq!(head(&s, &url).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn x33_termination_removes_the_partial_file() {
    let s = TestServer::start();
    let dir = work(&s);
    let target = dir.join("t");
    let url = create(&s, &s.base(), &target, 10).await;
    assert_eq!(patch(&s, &url, 0, b"abc", None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(leftovers(&dir).len(), 1);
    let resp = s.client().delete(&url).header("Tus-Resumable", TUS).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "tus-resumable"), TUS);
    assert!(leftovers(&dir).is_empty());
    assert!(!target.exists());
    assert_eq!(head(&s, &url).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(patch(&s, &url, 3, b"d", None).await.status(), StatusCode::NOT_FOUND);
    let resp = s.client().delete(&url).header("Tus-Resumable", TUS).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn x33_expired_uploads_are_swept() {
    let s = TestServer::options().arg("--tus-expiry=1s").start();
    let dir = work(&s);
    let url = create(&s, &s.base(), &dir.join("e"), 10).await;
    let resp = patch(&s, &url, 0, b"abc", None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(!header(&resp, "upload-expires").is_empty());
    assert_eq!(leftovers(&dir).len(), 1);
    // The sweeper removes the partial file without any request.
    assert!(wait_until_async(TIMEOUT, || async { leftovers(&dir).is_empty() }).await, "partial file not swept");
    assert_eq!(head(&s, &url).await.status(), StatusCode::NOT_FOUND);
    assert!(!dir.join("e").exists());
}

#[tokio::test]
async fn x33_offsets_survive_an_execd_restart() {
    let mut first = TestServer::start();
    let dir = work(&first);
    let target = dir.join("restart.bin");
    let body = data(200_000);
    let url = create(&first, &first.base(), &target, body.len() as u64).await;
    assert_eq!(patch(&first, &url, 0, &body[..120_000], None).await.status(), StatusCode::NO_CONTENT);
    let id = url.rsplit('/').next().unwrap().to_string();
    first.kill();

    let second = TestServer::options().arg("--state-dir").arg(first.state_dir().to_str().unwrap()).start();
    let url = second.url(&format!("/files/tus/{id}"));
    assert_eq!(offset_of(&second, &url).await, 120_000);
    assert!(!target.exists());
    let resp = patch(&second, &url, 120_000, &body[120_000..], None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(&target).unwrap(), body);
    assert!(leftovers(&dir).is_empty());
}

/// Stands in for a machine crash: rewrites the upload's record as if written in another boot.
fn as_if_written_in_another_boot(state: &Path, id: &str) {
    let path = state.join("tus").join(format!("{id}.json"));
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(rec["boot_id"].is_string(), "the record names its boot: {rec}");
    rec["boot_id"] = Value::from("00000000-0000-0000-0000-000000000000");
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
}

#[tokio::test]
async fn x33_after_a_machine_crash_an_upload_resumes_at_its_last_synced_offset() {
    // Syncs are checkpointed (one per 64 MiB): in the same boot the acknowledged offset stands
    // (previous test); after a reboot only what was synced counts, and the partial file is cut
    // back to it.
    const MIB: usize = 1 << 20;
    let mut first = TestServer::start();
    let dir = work(&first);
    let target = dir.join("crash.bin");
    let body = data(64 * MIB + 10_000);
    let url = create(&first, &first.base(), &target, body.len() as u64).await;
    let synced = 64 * MIB + 1_000;
    assert_eq!(patch(&first, &url, 0, &body[..synced], None).await.status(), StatusCode::NO_CONTENT);
    let acked = synced + 5_000;
    assert_eq!(patch(&first, &url, synced as u64, &body[synced..acked], None).await.status(), StatusCode::NO_CONTENT);
    let id = url.rsplit('/').next().unwrap().to_string();
    first.kill();
    as_if_written_in_another_boot(first.state_dir(), &id);

    let second = TestServer::options().arg("--state-dir").arg(first.state_dir().to_str().unwrap()).start();
    let url = second.url(&format!("/files/tus/{id}"));
    assert_eq!(offset_of(&second, &url).await, synced as u64, "resumes at the checkpoint, not at {acked}");
    let partial = dir.join(format!(".execd-tus-{id}.part"));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), synced as u64, "the unsynced tail is cut off");
    assert_eq!(patch(&second, &url, synced as u64, &body[synced..], None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(&target).unwrap(), body);
    assert!(leftovers(&dir).is_empty());
}

#[tokio::test]
async fn x33_location_resolves_under_the_proxy_prefix() {
    let s = TestServer::start();
    let target = work(&s).join("proxied");
    let base = s.url(&format!("/proxy/{}", s.port));
    let url = create(&s, &base, &target, 6).await;
    assert!(url.contains(&format!("/proxy/{}/files/tus/", s.port)), "{url}");
    assert_eq!(offset_of(&s, &url).await, 0);
    assert_eq!(patch(&s, &url, 0, b"abc", None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(patch(&s, &url, 3, b"def", None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read(&target).unwrap(), b"abcdef");
}

/// execd's open descriptors on partial files of resumable uploads.
fn open_partials(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".execd-tus-")))
        .count()
}

/// A partial file stays open between chunks (no open per `PATCH`), but only for a bounded number
/// of uploads: 40 open uploads do not hold 40 descriptors, and finished or terminated ones hold
/// none.
#[tokio::test]
async fn x33_partial_files_kept_open_between_chunks_are_bounded() {
    let s = TestServer::start();
    let dir = work(&s);
    let mut urls = Vec::new();
    for i in 0..40 {
        let url = create(&s, &s.base(), &dir.join(format!("f{i}")), 6).await;
        assert_eq!(patch(&s, &url, 0, b"abc", None).await.status(), StatusCode::NO_CONTENT);
        urls.push(url);
    }
    let open = open_partials(s.pid());
    assert!((1..=16).contains(&open), "{open} partial files open for 40 unfinished uploads");
    for (i, url) in urls.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(patch(&s, url, 3, b"def", None).await.status(), StatusCode::NO_CONTENT);
            assert_eq!(std::fs::read(dir.join(format!("f{i}"))).unwrap(), b"abcdef");
        } else {
            let resp = s.client().delete(url).header("Tus-Resumable", TUS).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        }
    }
    assert_eq!(open_partials(s.pid()), 0, "finished and terminated uploads keep no descriptor");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[tokio::test]
async fn x33_open_uploads_are_capped() {
    let s = TestServer::options().arg("--tus-max-uploads=2").start();
    let dir = work(&s);
    let a = create(&s, &s.base(), &dir.join("a"), 4).await;
    let _b = create(&s, &s.base(), &dir.join("b"), 4).await;
    let resp = s
        .client()
        .post(s.url("/files/tus"))
        .header("Tus-Resumable", TUS)
        .header("Upload-Length", "4")
        .header("Upload-Metadata", format!("path {}", b64(dir.join("c").to_str().unwrap().as_bytes())))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(leftovers(&dir).len(), 2);
    // Finishing one makes room.
    assert_eq!(patch(&s, &a, 0, b"abcd", None).await.status(), StatusCode::NO_CONTENT);
    create(&s, &s.base(), &dir.join("c"), 4).await;
}

async fn put(s: &TestServer, path: &Path, query: &str, body: &[u8], digest: Option<String>) -> Response {
    let mut pairs = vec![("path".to_string(), path.to_str().unwrap().to_string())];
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap();
        pairs.push((k.to_string(), v.to_string()));
    }
    let mut req = s.client().put(s.url("/files/content")).query(&pairs);
    if let Some(d) = digest {
        req = req.header("Content-Digest", d);
    }
    req.body(body.to_vec()).send().await.unwrap()
}

fn digest_of(data: &[u8]) -> String {
    format!("sha-256=:{}:", b64(&Sha256::digest(data)))
}

#[tokio::test]
async fn x34_put_creates_then_replaces_and_answers_file_info() {
    let s = TestServer::start();
    let target = work(&s).join("deep/dir/raw.bin");
    let body = data(1_500_000);
    let resp = put(&s, &target, "mode=640", &body, Some(digest_of(&body))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["size"], body.len());
    assert_eq!(info["mode"], 640);
    assert_eq!(std::fs::read(&target).unwrap(), body);

    let resp = put(&s, &target, "", b"second", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["size"], 6);
    assert_eq!(std::fs::read(&target).unwrap(), b"second");
    // The mode of the file it replaced is kept.
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(leftovers(target.parent().unwrap()).is_empty());
}

#[tokio::test]
async fn x34_digest_mismatch_writes_nothing() {
    let s = TestServer::start();
    let dir = work(&s);
    let fresh = dir.join("fresh");
    let body = data(700_000);
    let resp = put(&s, &fresh, "", &body, Some(digest_of(b"something else"))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "DIGEST_MISMATCH");
    assert!(!fresh.exists());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

    let old = dir.join("old");
    std::fs::write(&old, b"keep me").unwrap();
    let resp = put(&s, &old, "", &body, Some(digest_of(&body[1..]))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(std::fs::read(&old).unwrap(), b"keep me");
    assert!(leftovers(&dir).is_empty());

    // Malformed or unsupported digests are refused before anything is written.
    for bad in ["sha-256=abc", "sha-512=:AAAA:", "sha-256=:AAAA:"] {
        let resp = put(&s, &fresh, "", b"x", Some(bad.to_string())).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(!fresh.exists());
    }
}

#[tokio::test]
async fn x34_bad_requests_are_400() {
    let s = TestServer::start();
    let dir = work(&s);
    let resp = s.client().put(s.url("/files/content")).body("x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "MISSING_QUERY");
    assert_eq!(put(&s, &dir.join("m"), "mode=999", b"x", None).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(put(&s, &dir.join("m"), "mode=abc", b"x", None).await.status(), StatusCode::BAD_REQUEST);
    assert!(!dir.join("m").exists());
    // A directory target: refused, the directory untouched.
    let resp = put(&s, &dir, "", b"x", None).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(dir.is_dir());
}
