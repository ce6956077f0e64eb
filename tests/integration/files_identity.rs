//! The per-identity filesystem routes `/v1/filesystem/{uid}/{gid}/…` (issue #24 part 4) against
//! the real binary: what is created belongs to the identity, the kernel refuses what the identity
//! may not do (403 `PERMISSION_DENIED`), paths resolve from `/`, bad ids are 400, and execd's own
//! credentials never change. The test users (4242, 4343) have no passwd entry. Needs root.

use crate::common;
use crate::fsutil;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use fsutil::{assert_empty_ok, assert_error, multipart, multipart_content_type, q, status_json, temp_files, Fx, Part};
use serde_json::{json, Value};

const A: u32 = 4242;
const B: u32 = 4343;

/// A server plus a scratch directory everybody may write in (the test users own nothing else).
fn fx() -> Option<Fx> {
    if !common::is_root() {
        common::prerequisite_missing("root (to act as other uids)");
        return None;
    }
    let fx = Fx::new();
    chmod(fx.dir.path(), 0o777);
    Some(fx)
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

fn prefix(uid: u32, gid: u32) -> String {
    format!("/v1/filesystem/{uid}/{gid}")
}

async fn upload_as(fx: &Fx, uid: u32, gid: u32, parts: &[Part]) -> reqwest::Response {
    fx.client
        .post(fx.url(&format!("{}/files/upload", prefix(uid, gid))))
        .header("content-type", multipart_content_type())
        .body(multipart(parts))
        .send()
        .await
        .unwrap()
}

async fn get_as(fx: &Fx, uid: u32, gid: u32, path_and_query: &str) -> reqwest::Response {
    fx.get(&format!("{}{path_and_query}", prefix(uid, gid))).await
}

async fn post_as(fx: &Fx, uid: u32, gid: u32, path_and_query: &str, body: Value) -> reqwest::Response {
    fx.post_json(&format!("{}{path_and_query}", prefix(uid, gid)), body).await
}

/// Every thread of execd: (real, effective, saved, fs) uids and gids, and its groups.
fn thread_creds(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else { continue };
        let field = |name: &str| {
            status.lines().find(|l| l.starts_with(name)).map(|l| l[name.len()..].trim().to_string()).unwrap_or_default()
        };
        out.push((field("Uid:"), field("Gid:"), field("Groups:")));
    }
    out
}

#[tokio::test]
async fn sdk24_identity_upload_is_owned_by_uid_and_gid_and_downloads_back() {
    let Some(fx) = fx() else { return };
    let target = fx.s("sub/new.txt");
    let resp =
        upload_as(&fx, A, B, &[Part::metadata(json!({"path": target, "mode": 640})), Part::file(b"mine\n")]).await;
    assert_empty_ok(resp).await;
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (A, B, 0o640));
    // The parent it created is the identity's too.
    let parent = std::fs::metadata(fx.p("sub")).unwrap();
    assert_eq!((parent.uid(), parent.gid()), (A, B));
    let resp = get_as(&fx, A, B, &format!("/files/download?path={}", q(&target))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"mine\n");
    // Replacing its own file (the rename-over path) keeps it the identity's, and leaves no
    // temporary file.
    let resp = upload_as(&fx, A, B, &[Part::metadata(json!({"path": target})), Part::file(b"again\n")]).await;
    assert_empty_ok(resp).await;
    assert_eq!(std::fs::read(&target).unwrap(), b"again\n");
    assert_eq!(std::fs::metadata(&target).unwrap().uid(), A);
    assert!(temp_files(&fx.p("sub")).is_empty());
}

#[tokio::test]
async fn sdk24_identity_permission_denied_is_403_json_and_writes_nothing() {
    let Some(fx) = fx() else { return };
    let private = fx.p("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    std::fs::write(private.join("secret.txt"), b"root only").unwrap();
    let target = fx.s("private/x.txt");
    let resp = upload_as(&fx, A, A, &[Part::metadata(json!({"path": target})), Part::file(vec![7u8; 1 << 20])]).await;
    let msg = assert_error(resp, 403, "PERMISSION_DENIED").await;
    assert!(msg.contains("ermission denied"), "{msg}");
    assert!(!Path::new(&target).exists());
    let secret = fx.s("private/secret.txt");
    for resp in [
        get_as(&fx, A, A, &format!("/files/download?path={}", q(&secret))).await,
        get_as(&fx, A, A, &format!("/files/info?path={}", q(&secret))).await,
        get_as(&fx, A, A, &format!("/directories/list?path={}", q(&fx.s("private")))).await,
        post_as(&fx, A, A, "/directories", json!({ fx.s("private/d"): {"mode": 755} })).await,
        fx.delete(&format!("{}/files?path={}", prefix(A, A), q(&secret))).await,
    ] {
        assert_error(resp, 403, "PERMISSION_DENIED").await;
    }
    assert_eq!(std::fs::read(private.join("secret.txt")).unwrap(), b"root only");
    assert!(!private.join("d").exists());
    // The same requests without the prefix are still execd's own (root here).
    let resp = fx.get(&format!("/files/download?path={}", q(&secret))).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sdk24_identity_reads_a_file_only_that_identity_can_read() {
    let Some(fx) = fx() else { return };
    let own = fx.p("own.txt");
    std::fs::write(&own, b"for 4242 only\n").unwrap();
    chown(&own, A, A);
    chmod(&own, 0o600);
    let url = format!("/files/download?path={}", q(&fx.s("own.txt")));
    let resp = get_as(&fx, A, A, &url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"for 4242 only\n");
    // A byte range and a line range, under the identity.
    let resp =
        fx.client.get(fx.url(&format!("{}{url}", prefix(A, A)))).header("range", "bytes=4-7").send().await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"4242");
    let resp = get_as(&fx, A, A, &format!("{url}&offset=1&limit=1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"for 4242 only");
    // Another user may not.
    assert_error(get_as(&fx, B, B, &url).await, 403, "PERMISSION_DENIED").await;
    // Group permissions count: 4343 in group 4242 reads a 0640 file.
    chmod(&own, 0o640);
    let resp = get_as(&fx, B, A, &url).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sdk24_identity_relative_paths_resolve_from_root() {
    let Some(fx) = fx() else { return };
    let abs = fx.s("rel/file.txt");
    let rel = abs.trim_start_matches('/').to_string();
    let resp = upload_as(&fx, A, A, &[Part::metadata(json!({"path": rel})), Part::file(b"r")]).await;
    assert_empty_ok(resp).await;
    assert_eq!(std::fs::read(&abs).unwrap(), b"r");
    let resp = get_as(&fx, A, A, &format!("/files/info?path={}", q(&rel))).await;
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[&rel]["path"], abs, "{v}");
    // `~` is the account's home: `/` for a uid without a passwd entry.
    let home_rel = format!("~/{rel}");
    let resp = get_as(&fx, A, A, &format!("/files/download?path={}", q(&home_rel))).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sdk24_identity_invalid_ids_are_400_json() {
    let Some(fx) = fx() else { return };
    let path = q(&fx.s("x"));
    for (uid, gid) in [("abc", "1"), ("1", "-1"), ("4294967295", "0"), ("0", "4294967296"), ("+1", "1"), ("1.0", "1")] {
        let resp = fx.get(&format!("/v1/filesystem/{uid}/{gid}/files/info?path={path}")).await;
        let msg = assert_error(resp, 400, "INVALID_REQUEST_BODY").await;
        assert!(msg.contains("uid") || msg.contains("gid"), "{msg}");
    }
    // The largest ids are fine.
    let resp = fx.get(&format!("/v1/filesystem/4294967294/4294967294/files/info?path={path}")).await;
    assert_error(resp, 404, "FILE_NOT_FOUND").await;
}

#[tokio::test]
async fn sdk24_identity_refused_upload_body_is_read_and_answered() {
    let Some(fx) = fx() else { return };
    // 16 MiB: far beyond the socket buffers, so an answer sent without reading the body would
    // reach the client as a reset, not as this JSON.
    let body = multipart(&[Part::metadata(json!({"path": fx.s("big")})), Part::file(vec![1u8; 16 << 20])]);
    for prefix in ["/v1/filesystem/nope/1", "/v1/filesystem/1/99999999999"] {
        let resp = fx
            .client
            .post(fx.url(&format!("{prefix}/files/upload")))
            .header("content-type", multipart_content_type())
            .body(body.clone())
            .send()
            .await
            .expect("the refusal must be an HTTP answer, not a broken connection");
        assert_error(resp, 400, "INVALID_REQUEST_BODY").await;
    }
    // And a refusal by the kernel, after the body started.
    let private = fx.p("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let body = multipart(&[Part::metadata(json!({"path": fx.s("private/big")})), Part::file(vec![1u8; 16 << 20])]);
    let resp = fx
        .client
        .post(fx.url(&format!("{}/files/upload", prefix(A, A))))
        .header("content-type", multipart_content_type())
        .body(body)
        .send()
        .await
        .expect("an HTTP answer");
    assert_error(resp, 403, "PERMISSION_DENIED").await;
}

#[tokio::test]
async fn sdk24_identity_directories_create_list_and_remove() {
    let Some(fx) = fx() else { return };
    let d = fx.s("made/deep");
    assert_empty_ok(post_as(&fx, A, B, "/directories", json!({ &d: {"mode": 750} })).await).await;
    let meta = std::fs::metadata(&d).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (A, B, 0o750));
    let resp = get_as(&fx, A, B, &format!("/directories/list?path={}&depth=2", q(&fx.s("made")))).await;
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{v}");
    assert_eq!(entries[0]["path"], d);
    // Another user cannot remove it (the parent `made` is 4242's, 0755 from the umask).
    let resp = fx.delete(&format!("{}/directories?path={}", prefix(B, B), q(&d))).await;
    assert_error(resp, 403, "PERMISSION_DENIED").await;
    assert!(Path::new(&d).exists());
    assert_empty_ok(fx.delete(&format!("{}/directories?path={}", prefix(A, B), q(&d))).await).await;
    assert!(!Path::new(&d).exists());
}

#[tokio::test]
async fn sdk24_identity_search_replace_mv_and_permissions() {
    let Some(fx) = fx() else { return };
    let f = fx.s("s/notes.txt");
    let resp =
        upload_as(&fx, A, A, &[Part::metadata(json!({"path": f, "mode": 644})), Part::file(b"hello world\n")]).await;
    assert_empty_ok(resp).await;
    let resp = get_as(&fx, A, A, &format!("/files/search?path={}&pattern=*.txt", q(&fx.s("s")))).await;
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let resp = post_as(&fx, A, A, "/files/replace?verbose=true", json!({ &f: {"old": "world", "new": "there"} })).await;
    let (status, v) = status_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[&f]["replacedCount"], 1);
    assert_eq!(std::fs::read(&f).unwrap(), b"hello there\n");
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), A);
    // Another user may read but not change it.
    let resp = post_as(&fx, B, B, "/files/replace", json!({ &f: {"old": "hello", "new": "bye"} })).await;
    assert_error(resp, 403, "PERMISSION_DENIED").await;
    let g = fx.s("s/moved.txt");
    assert_empty_ok(post_as(&fx, A, A, "/files/mv", json!([{"src": &f, "dest": &g}])).await).await;
    assert!(Path::new(&g).exists());
    assert_empty_ok(post_as(&fx, A, A, "/files/permissions", json!({ &g: {"mode": 600} })).await).await;
    assert_eq!(std::fs::metadata(&g).unwrap().mode() & 0o777, 0o600);
    // Giving the file away needs CAP_CHOWN, which the identity does not have.
    let resp = post_as(&fx, A, A, "/files/permissions", json!({ &g: {"owner": "root"} })).await;
    assert_error(resp, 403, "PERMISSION_DENIED").await;
    assert_eq!(std::fs::metadata(&g).unwrap().uid(), A);
}

#[tokio::test]
async fn sdk24_identity_file_part_before_its_metadata_is_spooled_and_still_owned() {
    let Some(fx) = fx() else { return };
    let target = fx.s("late.txt");
    let resp = upload_as(&fx, A, B, &[Part::file(b"late meta"), Part::metadata(json!({"path": target}))]).await;
    assert_empty_ok(resp).await;
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (A, B));
    assert_eq!(std::fs::read(&target).unwrap(), b"late meta");
    // The spool is empty again.
    let spool = fx.server.state_dir().join("uploads");
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().filter(|e| e.file_name() != "journal").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn sdk24_identity_execd_keeps_its_own_credentials_on_every_thread() {
    let Some(fx) = fx() else { return };
    let pid = fx.server.pid();
    let before = thread_creds(pid);
    let main = before[0].clone();
    assert!(main.0.split_whitespace().all(|v| v == "0"), "{main:?}");
    // A burst of identity requests of every kind, some refused.
    let private = fx.p("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    std::fs::create_dir(fx.p("burst")).unwrap();
    chmod(&fx.p("burst"), 0o777);
    for i in 0..20u32 {
        let t = fx.s(&format!("burst/{i}.txt"));
        let resp = upload_as(&fx, A + i, A + i, &[Part::metadata(json!({"path": t})), Part::file(b"x")]).await;
        assert_eq!(resp.status(), 200);
        let resp = get_as(&fx, A, A, &format!("/directories/list?path={}", q(&fx.s("burst")))).await;
        assert_eq!(resp.status(), 200);
        let resp = get_as(&fx, A, A, &format!("/files/info?path={}", q(&fx.s("private/x")))).await;
        assert_eq!(resp.status(), 403);
    }
    // A streamed answer (the listing) can end a moment before its worker thread switches back
    // (the sender drops first): every thread is back to execd's credentials shortly after.
    let back = || thread_creds(pid).iter().all(|c| c == &main);
    if !common::wait_until(Duration::from_secs(2), back) {
        let odd: Vec<_> = thread_creds(pid).into_iter().filter(|c| c != &main).collect();
        panic!("threads kept other credentials: {odd:?} (execd's: {main:?})");
    }
    // And plain requests still act as execd.
    let resp = fx.get(&format!("/files/info?path={}", q(&fx.s("private")))).await;
    assert_eq!(resp.status(), 200);
}
