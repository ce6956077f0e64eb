//! `/directories*` against the real binary: list, mkdir, rm -rf (C131–C136, DECISIONS D32).

use crate::fsutil;

use std::os::unix::fs::PermissionsExt;

use fsutil::{assert_empty_ok, assert_error, mode_of, q, status_json, Fx};
use serde_json::{json, Value};

fn tree(fx: &Fx) {
    for rel in ["alpha/x.txt", "alpha/y.txt", "alpha/deep/z.txt", "bravo.txt", "charlie.txt"] {
        let p = fx.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
}

fn paths(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn c131_list_direct_children_depth_two_adds_grandchildren_depth_zero_empty() {
    let fx = Fx::in_process();
    tree(&fx);
    let root = q(&fx.s(""));
    let (st, v) = status_json(fx.get(&format!("/directories/list?path={root}")).await).await;
    assert_eq!(st, 200);
    assert_eq!(paths(&v), vec![fx.s("alpha"), fx.s("bravo.txt"), fx.s("charlie.txt")]);
    let alpha = &v[0];
    assert_eq!(alpha["type"], "directory");
    for key in ["path", "type", "size", "modified_at", "created_at", "owner", "group", "mode"] {
        assert!(alpha.get(key).is_some(), "missing {key}");
    }
    let (_, v) = status_json(fx.get(&format!("/directories/list?path={root}&depth=2")).await).await;
    assert_eq!(paths(&v).len(), 6, "{v}");
    let (st, v) = status_json(fx.get(&format!("/directories/list?path={root}&depth=0")).await).await;
    assert_eq!((st, v), (200, json!([])));
}

#[tokio::test]
async fn c132_list_order_is_lexical_pre_order() {
    let fx = Fx::in_process();
    tree(&fx);
    let (_, v) = status_json(fx.get(&format!("/directories/list?path={}&depth=2", q(&fx.s("")))).await).await;
    let want: Vec<String> = ["alpha", "alpha/deep", "alpha/x.txt", "alpha/y.txt", "bravo.txt", "charlie.txt"]
        .iter()
        .map(|r| fx.s(r))
        .collect();
    assert_eq!(paths(&v), want);
    let (_, v) = status_json(fx.get(&format!("/directories/list?path={}&depth=3", q(&fx.s("")))).await).await;
    assert_eq!(paths(&v)[2], fx.s("alpha/deep/z.txt"));
}

#[tokio::test]
async fn c133_list_symlinks_not_descended_and_bad_roots_rejected() {
    let fx = Fx::in_process();
    tree(&fx);
    std::os::unix::fs::symlink(fx.p("alpha"), fx.p("link")).unwrap();
    let (_, v) = status_json(fx.get(&format!("/directories/list?path={}&depth=5", q(&fx.s("")))).await).await;
    let link = v.as_array().unwrap().iter().find(|e| e["path"] == fx.s("link")).unwrap().clone();
    assert_eq!(link["type"], "symlink");
    assert!(!paths(&v).iter().any(|p| p.starts_with(&format!("{}/", fx.s("link")))));
    let get = |rel: &str, extra: &str| {
        let url = format!("/directories/list?path={}{extra}", q(&fx.s(rel)));
        let fx = &fx;
        async move { fx.get(&url).await }
    };
    let msg = assert_error(get("link", "").await, 400, "INVALID_REQUEST_BODY").await;
    assert!(msg.contains("symbolic link"), "{msg}");
    let msg = assert_error(get("bravo.txt", "").await, 400, "INVALID_REQUEST_BODY").await;
    assert!(msg.contains("not a directory"), "{msg}");
    assert_error(get("missing", "").await, 404, "FILE_NOT_FOUND").await;
    assert_error(get("", "&depth=abc").await, 400, "INVALID_REQUEST_BODY").await;
    assert_error(get("", "&depth=-1").await, 400, "INVALID_REQUEST_BODY").await;
    assert_error(fx.get("/directories/list?depth=1").await, 400, "MISSING_QUERY").await;
}

#[tokio::test]
async fn c134_mkdir_modes_nested_parents_and_existing_ok() {
    let fx = Fx::in_process();
    let (d1, d2) = (fx.s("n1/a/b"), fx.s("n2"));
    assert_empty_ok(fx.post_json("/directories", json!({ &d1: {"mode": 755}, &d2: {"mode": 644} })).await).await;
    assert_eq!(mode_of(&fx.p("n1/a/b")), 0o755);
    assert_eq!(mode_of(&fx.p("n2")), 0o644);
    // Intermediate directories get 0777 &^ umask.
    assert_eq!(mode_of(&fx.p("n1/a")), 0o755);
    std::fs::set_permissions(fx.p("n2"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_empty_ok(fx.post_json("/directories", json!({ &d1: {"mode": 700} })).await).await;
    assert_eq!(mode_of(&fx.p("n1/a/b")), 0o700);
    assert_empty_ok(
        fx.post_json("/directories", json!({ &d1: {"mode": 700, "owner": "nobody", "group": "nogroup"} })).await,
    )
    .await;
    let i = fx.info(&d1).await;
    assert_eq!((i["owner"].as_str(), i["group"].as_str()), (Some("nobody"), Some("nogroup")));
    // An existing file at the path is an error.
    std::fs::write(fx.p("file"), b"x").unwrap();
    assert_error(fx.post_json("/directories", json!({ fx.s("file"): {"mode": 755} })).await, 500, "RUNTIME_ERROR")
        .await;
}

#[tokio::test]
async fn c135_mkdir_with_mode_zero_creates_the_directory() {
    let fx = Fx::in_process();
    assert_empty_ok(fx.post_json("/directories", json!({ fx.s("zero"): {"mode": 0} })).await).await;
    assert!(fx.p("zero").is_dir());
    assert_eq!(mode_of(&fx.p("zero")), 0o755);
}

#[tokio::test]
async fn c136_rmdir_recursive_missing_ok_files_too() {
    let fx = Fx::in_process();
    tree(&fx);
    assert_empty_ok(fx.delete(&format!("/directories?path={}", q(&fx.s("alpha")))).await).await;
    assert!(!fx.p("alpha").exists());
    assert_empty_ok(fx.delete(&format!("/directories?path={}", q(&fx.s("alpha")))).await).await;
    assert_empty_ok(fx.delete(&format!("/directories?path={}", q(&fx.s("bravo.txt")))).await).await;
    assert!(!fx.p("bravo.txt").exists());
    // A symlink to a directory: the link goes, the target stays.
    std::fs::create_dir(fx.p("target")).unwrap();
    std::fs::write(fx.p("target/keep"), b"x").unwrap();
    std::os::unix::fs::symlink(fx.p("target"), fx.p("tlink")).unwrap();
    assert_empty_ok(fx.delete(&format!("/directories?path={}", q(&fx.s("tlink")))).await).await;
    assert!(fx.p("target/keep").exists());
    // An empty path is refused like `/` (issue #13 finding 9; upstream: a no-op).
    assert_error(fx.delete("/directories?path=").await, 400, "INVALID_REQUEST_BODY").await;
}

#[tokio::test]
async fn d32_rmdir_refuses_root_and_dot() {
    let fx = Fx::in_process();
    for p in ["/", "/tmp/..", "//"] {
        let msg =
            assert_error(fx.delete(&format!("/directories?path={}", q(p))).await, 400, "INVALID_REQUEST_BODY").await;
        assert!(msg.contains("root"), "{msg}");
    }
    assert_error(fx.delete("/directories?path=.").await, 500, "RUNTIME_ERROR").await;
    assert!(std::path::Path::new("/tmp").is_dir());
}

/// A listing longer than the part buffered before answering (256 KiB) is streamed in chunks and
/// still arrives as one complete array, every entry once, in order.
#[tokio::test]
async fn list_longer_than_the_buffered_prefix_streams_whole() {
    let fx = Fx::in_process();
    let dir = fx.p("many");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (0..3000).map(|i| format!("entry-with-a-longish-name-{i:05}.txt")).collect();
    for n in &names {
        std::fs::File::create(dir.join(n)).unwrap();
    }
    let resp = fx.get(&format!("/directories/list?path={}", q(dir.to_str().unwrap()))).await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert!(body.len() > 256 * 1024, "only {} bytes: the test would not cross the prefix", body.len());
    let v: Value = serde_json::from_slice(&body).expect("complete JSON array");
    let want: Vec<String> = names.iter().map(|n| dir.join(n).to_str().unwrap().to_string()).collect();
    assert_eq!(paths(&v), want);
}
