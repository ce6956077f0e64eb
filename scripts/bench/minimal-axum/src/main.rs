//! Minimal axum server for the startup benchmark: `GET /ping` answers 200 with an empty body on
//! `127.0.0.1:$PORT`, on a multi-threaded tokio runtime like execd's.

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(44772);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let app = Router::new().route("/ping", get(|| async {}));
    axum::serve(listener, app).await.expect("serve");
}
