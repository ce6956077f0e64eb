//! The API describes itself (EXTENSIONS X1, X2, X4): `GET /openapi.json` and `GET /capabilities`
//! against the real binary, and the document held to the live router: every documented operation
//! is routed, every other method on a documented path gets the router's JSON 404. (The unit tests
//! in `src/api/openapi.rs` enumerate the router's paths, so an undocumented path fails there.)
//! The document's validity as OpenAPI 3.1 is checked by `openapi-spec-validator` in the contract
//! run (tests/contract, which has the Python venv).

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use reqwest::Method;
use serde_json::Value;

const TOKEN: &str = "openapi-test-token";
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn repo_document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A concrete, harmless value for each path parameter: unknown ids, port 0 (refused before any
/// connection), uid/gid 0.
fn fill(path: &str) -> String {
    let re = regex::Regex::new(r"\{([^}]*)\}").unwrap();
    re.replace_all(path, |c: &regex::Captures| match &c[1] {
        "port" => "0".to_string(),
        "uid" | "gid" => "0".to_string(),
        "path" => "x/y".to_string(),
        _ => "openapi-test-unknown-id".to_string(),
    })
    .into_owned()
}

/// What one request got: status and, for JSON answers, the error code.
struct Answer {
    status: u16,
    code: Option<String>,
}

impl Answer {
    /// The router's answer for an unknown path or method (`api::not_found`).
    fn is_router_404(&self) -> bool {
        self.status == 404 && self.code.as_deref() == Some("NOT_FOUND")
    }
}

/// Sends `method path` with the token, no body and no query: every handler refuses that (400/404)
/// or answers harmlessly (ping, metrics, create an idle PTY or bash session). Only the head is
/// awaited for 200s, so streams (`/metrics/watch`) do not hold the test.
async fn probe(client: &reqwest::Client, server: &TestServer, method: &str, path: &str) -> Answer {
    let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let resp = client
        .request(m, server.url(&fill(path)))
        .header("X-EXECD-ACCESS-TOKEN", TOKEN)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let json =
        resp.headers().get("content-type").is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
    let code = if json && status >= 400 {
        let v: Value = tokio::time::timeout(Duration::from_secs(10), resp.json()).await.unwrap().unwrap_or(Value::Null);
        v["code"].as_str().map(str::to_string)
    } else {
        None
    };
    Answer { status, code }
}

fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                out.push((path.clone(), m.to_string()));
            }
        }
    }
    out
}

/// Documented prefixes implemented on another branch: skipped while none of them is routed.
const PENDING_PREFIXES: &[&str] = &["/v1/filesystem/"];

#[tokio::test]
async fn x1_every_documented_operation_is_routed_and_no_other_method_is() {
    let server = TestServer::options().token(TOKEN).in_process().start();
    let client = reqwest::Client::new();
    let doc = repo_document();
    let ops = operations(&doc);
    assert!(ops.len() > 60, "{} operations", ops.len());

    let mut answers = Vec::new();
    for (path, method) in &ops {
        answers.push((path.clone(), method.clone(), probe(&client, &server, method, path).await));
    }
    let mut failures = Vec::new();
    for pre in PENDING_PREFIXES {
        let under: Vec<_> = answers.iter().filter(|(p, _, _)| p.starts_with(pre)).collect();
        if !under.is_empty() && under.iter().all(|(_, _, a)| a.is_router_404()) {
            eprintln!("NOTE: {pre}… is documented but not routed in this build (pending branch); skipped");
            answers.retain(|(p, _, _)| !p.starts_with(pre));
        }
    }
    for (path, method, a) in &answers {
        if a.is_router_404() {
            failures.push(format!("{} {path}: documented but answered by the router's 404", method.to_uppercase()));
        }
    }

    // Methods a documented path does not have: the router's JSON 404 (no 405 upstream). HEAD is
    // implied wherever GET is routed (axum answers it).
    for (path, item) in doc["paths"].as_object().unwrap() {
        if PENDING_PREFIXES.iter().any(|pre| path.starts_with(pre)) && !answers.iter().any(|(p, _, _)| p == path) {
            continue;
        }
        for m in METHODS {
            if item.get(m).is_some() || (m == "head" && item.get("get").is_some()) {
                continue;
            }
            let a = probe(&client, &server, m, path).await;
            // HEAD answers carry no body: a bare 404 is the router's.
            let routers = a.is_router_404() || (m == "head" && a.status == 404);
            if !routers {
                failures.push(format!(
                    "{} {path}: not documented but answered {} {:?}",
                    m.to_uppercase(),
                    a.status,
                    a.code
                ));
            }
        }
    }
    assert!(failures.is_empty(), "document and router disagree:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn x1_openapi_json_is_the_repository_document_behind_the_token() {
    let server = TestServer::options().token(TOKEN).in_process().start();
    let client = reqwest::Client::new();
    let resp = client.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the document is behind the token like every route");

    let resp = client.get(server.url("/openapi.json")).header("X-EXECD-ACCESS-TOKEN", TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json; charset=utf-8");
    assert!(resp.headers().get("content-encoding").is_none(), "no gzip for a client that did not ask for it");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, repo_document());
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));

    // Gzipped as embedded for a client that takes gzip, the same document once decompressed.
    let resp = client
        .get(server.url("/openapi.json"))
        .header("X-EXECD-ACCESS-TOKEN", TOKEN)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.headers()["vary"], "Accept-Encoding");
    let gz = resp.bytes().await.unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&plain).unwrap(), repo_document());
    assert!(gz.len() * 5 < plain.len(), "{} bytes gzipped of {}", gz.len(), plain.len());
}

#[tokio::test]
async fn x2_capabilities_report_version_and_documented_features() {
    let server = TestServer::options().token(TOKEN).start();
    let client = reqwest::Client::new();
    assert_eq!(client.get(server.url("/capabilities")).send().await.unwrap().status(), 401);

    let resp = client.get(server.url("/capabilities")).header("X-EXECD-ACCESS-TOKEN", TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json; charset=utf-8");
    let caps: Value = resp.json().await.unwrap();
    assert_eq!(caps["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(caps.as_object().unwrap().len(), 2, "{caps}");
    let features = caps["features"].as_object().expect("features is an object");

    // What execd has today, usable on any machine it runs on.
    for key in ["argv", "line_ranges", "command_events", "proxy", "stdin", "command_signal", "command_output"] {
        assert_eq!(features[key], true, "{key}: {caps}");
    }
    // Not implemented (yet): reported, and reported as unavailable.
    for key in ["init", "otel"] {
        assert_eq!(features[key], false, "{key}: {caps}");
    }
    // File watches (X40): wherever inotify works (tests/integration/watch.rs checks the routes).
    assert!(features["watch"].is_boolean(), "{caps}");
    // cgroups (X20): whatever this machine offers; a mode without limits is only "none".
    let cgroup = features["cgroup"].as_str().expect("cgroup is a string");
    assert!(["v2", "v1", "none"].contains(&cgroup), "{caps}");
    if cgroup == "none" {
        assert_eq!(features["limits"], serde_json::json!([]), "{caps}");
    }
    // Directory archives (X30, X31): every format, on any machine.
    assert_eq!(features["archive"], serde_json::json!(["tar", "tar.gz", "tar.zst", "zip"]), "{caps}");
    // Machine probes agree with the machine.
    let ptmx = std::fs::OpenOptions::new().read(true).write(true).open("/dev/ptmx").is_ok();
    assert_eq!(features["pty"], ptmx, "{caps}");

    // Every key is documented in the Capabilities schema, with the documented JSON type.
    let doc = repo_document();
    let props = &doc["components"]["schemas"]["Capabilities"]["properties"]["features"]["properties"];
    let documented: BTreeSet<&String> = props.as_object().unwrap().keys().collect();
    for (key, value) in features {
        assert!(documented.contains(key), "feature {key} is not in the Capabilities schema");
        let want = props[key]["type"].as_str().unwrap();
        let got = match value {
            Value::Bool(_) => "boolean",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            _ => "other",
        };
        assert_eq!(got, want, "feature {key} = {value}");
    }
}

#[tokio::test]
async fn x2_capabilities_follow_the_cgroup_placement() {
    // Placement off: no cgroup, no limits (X20, X23), whatever the machine has.
    let off = TestServer::options().token(TOKEN).arg("--cgroup-root=none").start();
    let client = reqwest::Client::new();
    let caps: Value = client
        .get(off.url("/capabilities"))
        .header("X-EXECD-ACCESS-TOKEN", TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(caps["features"]["cgroup"], "none", "{caps}");
    assert_eq!(caps["features"]["limits"], serde_json::json!([]), "{caps}");
    // And a command asking for a limit is refused with the documented code.
    let resp = client
        .post(off.url("/command"))
        .header("X-EXECD-ACCESS-TOKEN", TOKEN)
        .json(&serde_json::json!({"command": "true", "limits": {"memory": "64M"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "LIMITS_UNAVAILABLE", "{body}");
}
