//! Auth matrix (issue 8, C10): with a token configured, every route of the reference route table
//! (§2.7 of execd-reference.md, read from the document itself rather than listed here) plus the
//! routes we add answers 401 without the token and with a wrong one, WebSocket upgrades included;
//! with the right token no route answers 401.

use crate::common;

use common::TestServer;

/// Routes execd adds beyond upstream's table (DECISIONS D11).
const OUR_ROUTES: &[(&str, &str)] = &[("GET", "/command/{id}/events")];

/// `(method, path)` rows of the reference's "Complete route table".
fn reference_routes() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/docs/execd-reference.md"))
        .expect("../shared/docs/execd-reference.md is part of the contract and must be present");
    let start = doc.find("### 2.7 Complete route table").expect("route table section");
    let section = &doc[start..];
    let end = section[5..].find("\n### ").map(|i| i + 5).unwrap_or(section.len());
    let mut out = Vec::new();
    for line in section[..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[2].starts_with('`') {
            continue;
        }
        let path = cells[2].trim_matches('`').split('?').next().unwrap().to_string();
        out.push((cells[1].to_string(), path));
    }
    out.extend(OUR_ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())));
    out
}

/// Fills `{param}` and `{rest...}` placeholders with harmless values.
fn concrete(path: &str) -> String {
    path.replace("{port}", "1")
        .replace("{rest...}", "x")
        .split('/')
        .map(|seg| if seg.starts_with('{') { "00000000000000000000000000000000" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn methods(m: &str) -> Vec<reqwest::Method> {
    if m == "ANY" {
        vec![reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE]
    } else {
        vec![m.parse().unwrap()]
    }
}

#[tokio::test]
async fn c10_every_route_in_the_route_table_requires_the_token() {
    let routes = reference_routes();
    assert!(routes.len() >= 30, "route table parse found only {} rows", routes.len());
    let server = TestServer::options().token("right-token").in_process().start();
    let c = reqwest::Client::new();
    for (m, p) in &routes {
        let path = concrete(p);
        for method in methods(m) {
            for token in [None, Some("wrong-token")] {
                let mut req = c.request(method.clone(), server.url(&path));
                if let Some(t) = token {
                    req = req.header("X-EXECD-ACCESS-TOKEN", t);
                }
                if path.ends_with("/ws") {
                    req = req
                        .header("Connection", "Upgrade")
                        .header("Upgrade", "websocket")
                        .header("Sec-WebSocket-Version", "13")
                        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
                let v: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(v["code"], "UNAUTHORIZED", "{method} {path}");
            }
        }
    }
    // A wrong token in the browser query parameter does not open a WebSocket either (D51).
    let resp = c
        .get(server.url("/pty/00000000000000000000000000000000/ws?access_token=wrong"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn c11_right_token_is_never_401_on_any_route() {
    let server = TestServer::options().token("right-token").in_process().start();
    let c = server.client();
    for (m, p) in reference_routes() {
        // Only idempotent probes: a GET, or a method on an id that does not exist.
        let path = concrete(&p);
        for method in methods(&m) {
            if method == reqwest::Method::POST || path.starts_with("/proxy") || path == "/metrics/watch" {
                continue;
            }
            let resp = c.request(method.clone(), server.url(&path)).send().await.unwrap();
            assert_ne!(resp.status(), 401, "{method} {path}");
        }
    }
}
