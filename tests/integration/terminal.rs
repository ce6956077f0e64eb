//! `GET /terminal` and its assets (EXTENSIONS X70) against the real binary: the page and its
//! headers when the build embeds xterm.js (`scripts/fetch-xterm.sh`), the 404 that says how to get
//! it otherwise, and where the query token is (and is not) accepted. The page itself is driven in
//! headless Chromium by tests/browser (scripts/browser-test.sh).

use crate::common;

use common::TestServer;
use serde_json::Value;

const TOKEN: &str = "terminal-test-token-5f1c";

async fn capability(server: &TestServer) -> Value {
    let caps: Value = server.client().get(server.url("/capabilities")).send().await.unwrap().json().await.unwrap();
    caps["features"]["terminal"].clone()
}

#[tokio::test]
async fn x70_terminal_page_answers_200_with_assets_404_without() {
    let server = TestServer::options().token(TOKEN).start();
    let plain = reqwest::Client::new();
    let page_url = server.url(&format!("/terminal?access_token={TOKEN}"));

    // Without the token, or with a wrong one: 401 whatever the build.
    assert_eq!(plain.get(server.url("/terminal")).send().await.unwrap().status(), 401);
    assert_eq!(plain.get(server.url("/terminal?access_token=nope")).send().await.unwrap().status(), 401);

    let embedded = capability(&server).await;
    if embedded != Value::Bool(true) {
        assert_eq!(embedded, Value::Bool(false));
        let resp = plain.get(&page_url).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "NOT_SUPPORTED");
        assert!(body["message"].as_str().unwrap().contains("scripts/fetch-xterm.sh"), "{body}");
        common::prerequisite_missing("xterm.js in the binary (run scripts/fetch-xterm.sh, then build)");
        return;
    }

    // The page: the query token is enough, directly and through the proxy to execd's own port.
    for url in [page_url.clone(), server.url(&format!("/proxy/{}/terminal?access_token={TOKEN}", server.port))] {
        let resp = plain.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'sha256-") && csp.contains("default-src 'none'"), "{csp}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("execdTerminal") && html.contains("<script>"), "the script is inlined");
        // Relative URLs only: the page works under /proxy/<port>/.
        assert!(!html.contains("\"/") && !html.contains("'/pty") && !html.contains("`/"), "absolute URL in the page");
    }
    // HEAD too; the page's token never opens another route.
    assert_eq!(plain.head(&page_url).send().await.unwrap().status(), 200);
    assert_eq!(
        plain.get(server.url(&format!("/terminal/xterm.js?access_token={TOKEN}"))).send().await.unwrap().status(),
        401
    );
    assert_eq!(plain.post(&page_url).send().await.unwrap().status(), 401);
    assert_eq!(plain.get(server.url(&format!("/ping?access_token={TOKEN}"))).send().await.unwrap().status(), 401);

    // Assets: gzipped as embedded when accepted, plain otherwise, revalidated by ETag.
    let client = server.client();
    let resp = client.get(server.url("/terminal/xterm.js")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.headers()["vary"], "Accept-Encoding");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let gz = resp.bytes().await.unwrap();
    assert_eq!(&gz[..2], [0x1f, 0x8b]);

    let resp = client.get(server.url("/terminal/xterm.js")).send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    let js = resp.text().await.unwrap();
    assert!(js.len() > gz.len() * 2 && js.contains("Terminal"), "plain JS, {} bytes", js.len());

    let resp = client.get(server.url("/terminal/xterm.js")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(resp.status(), 304);
    for (name, ty) in [("addon-fit.js", "text/javascript"), ("xterm.css", "text/css"), ("LICENSE.txt", "text/plain")] {
        let resp = client.get(server.url(&format!("/terminal/{name}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(ty), "{name}");
    }
    assert!(client
        .get(server.url("/terminal/LICENSE.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("MIT"));
    let resp = client.get(server.url("/terminal/nope.js")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "FILE_NOT_FOUND");

    // The query token never reaches the request log (queries are not logged), the path does.
    let log = server.log();
    assert!(log.contains("\"/terminal\""), "the page requests are logged: {log}");
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
}
