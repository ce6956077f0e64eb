//! Helpers shared by the filesystem test files (`files.rs`, `directories.rs`, `files_heavy.rs`):
//! a fixture with a running execd and a scratch directory, multipart body builders, and JSON
//! request shortcuts.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::TestServer;

pub const BOUNDARY: &str = "execd-test-boundary-7MA4YWxkTrZu0gW";

/// One multipart part: form name, optional filename, optional content type, content.
pub struct Part {
    pub name: &'static str,
    pub filename: Option<String>,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Part {
    /// A metadata part as every SDK sends it (`filename="metadata"`, JSON).
    pub fn metadata(json: Value) -> Part {
        Part {
            name: "metadata",
            filename: Some("metadata".into()),
            content_type: Some("application/json"),
            body: json.to_string().into_bytes(),
        }
    }
    /// A file part.
    pub fn file(body: impl Into<Vec<u8>>) -> Part {
        Part {
            name: "file",
            filename: Some("blob".into()),
            content_type: Some("application/octet-stream"),
            body: body.into(),
        }
    }
}

/// The head of a part (boundary line and headers).
pub fn part_head(name: &str, filename: Option<&str>, content_type: Option<&str>) -> String {
    let mut s = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"");
    if let Some(f) = filename {
        s.push_str(&format!("; filename=\"{f}\""));
    }
    s.push_str("\r\n");
    if let Some(ct) = content_type {
        s.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    s.push_str("\r\n");
    s
}

/// The closing boundary.
pub fn closing() -> String {
    format!("--{BOUNDARY}--\r\n")
}

/// A whole multipart body.
pub fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(part_head(p.name, p.filename.as_deref(), p.content_type).as_bytes());
        out.extend_from_slice(&p.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(closing().as_bytes());
    out
}

pub fn multipart_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A running execd and a scratch directory for the test's files.
pub struct Fx {
    pub server: TestServer,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Fx {
    pub fn new() -> Fx {
        Fx::with(TestServer::start())
    }

    /// With execd served from the test process (`common::InProcess`): for file tests that look
    /// at nothing but the API.
    pub fn in_process() -> Fx {
        Fx::with(TestServer::options().in_process().start())
    }

    pub fn with(server: TestServer) -> Fx {
        let client = server.client();
        Fx { server, client, dir: tempfile::tempdir().unwrap() }
    }

    /// Absolute path of `rel` in the scratch directory.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The same as a string.
    pub fn s(&self, rel: &str) -> String {
        self.p(rel).to_string_lossy().into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub async fn upload(&self, parts: &[Part]) -> reqwest::Response {
        self.client
            .post(self.url("/files/upload"))
            .header("content-type", multipart_content_type())
            .body(multipart(parts))
            .send()
            .await
            .unwrap()
    }

    /// Uploads one file (Python SDK layout, mode 755 unless given in `meta`).
    pub async fn upload_one(&self, path: &str, content: &[u8]) -> reqwest::Response {
        self.upload(&[Part::metadata(serde_json::json!({"path": path, "mode": 755})), Part::file(content.to_vec())])
            .await
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client.get(self.url(path_and_query)).send().await.unwrap()
    }

    pub async fn delete(&self, path_and_query: &str) -> reqwest::Response {
        self.client.delete(self.url(path_and_query)).send().await.unwrap()
    }

    pub async fn post_json(&self, path_and_query: &str, body: Value) -> reqwest::Response {
        self.client.post(self.url(path_and_query)).body(body.to_string()).send().await.unwrap()
    }

    /// `GET /files/info?path=<p>` → the FileInfo of `p`.
    pub async fn info(&self, p: &str) -> Value {
        let resp = self.get(&format!("/files/info?path={}", q(p))).await;
        assert_eq!(resp.status(), 200, "info {p}");
        let v: Value = resp.json().await.unwrap();
        v[p].clone()
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Status and JSON body of a response (Null when the body is not JSON).
pub async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Asserts an error answer: status and `code`, with a non-empty message.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    let (st, v) = status_json(resp).await;
    assert_eq!(st, status, "body {v}");
    assert_eq!(v["code"], code, "body {v}");
    let msg = v["message"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "empty message: {v}");
    msg
}

/// Asserts an empty 200 (`Content-Length: 0`, no content type).
pub async fn assert_empty_ok(resp: reqwest::Response) {
    let status = resp.status();
    let ct = resp.headers().get("content-type").cloned();
    let body = resp.bytes().await.unwrap();
    assert_eq!(status, 200, "body {}", String::from_utf8_lossy(&body));
    assert!(ct.is_none(), "content type on an empty 200");
    assert!(body.is_empty());
}

/// Mode bits of a path (lstat), as `0o` number.
pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Temporary upload files (`.execd-*.tmp`) left in `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".execd-") && n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts execd with its working directory at `cwd` and its state in `state_dir` (both kept by
/// the caller, so that a test can restart execd on the same state), with extra environment.
/// The TestServer's own scratch directory holds only the log.
pub fn start_in(cwd: &Path, state_dir: &Path, env: &[(&str, &str)]) -> TestServer {
    let opts = env.iter().fold(TestServer::options().cwd(cwd).state_dir(state_dir), |o, (k, v)| o.env(k, v));
    opts.start()
}

/// Paths of the files `pid` has open under `dir` (an anonymous `O_TMPFILE` file shows as
/// `<dir>/#<inode> (deleted)`).
pub fn open_files_under(pid: u32, dir: &Path) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.starts_with(dir))
                .map(|l| l.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}
