//! Minimal multipart receiver for the upload benchmark: `POST /files/upload` with `metadata`
//! (JSON `{"path": ...}`) then `file` parts; each file part is streamed to its path with
//! tokio::fs and fsynced. No atomic rename, no permissions, no error mapping.
//!
//!   fs-upload-baseline <port>

use axum::extract::{DefaultBodyLimit, Multipart};
use axum::routing::post;
use axum::Router;
use tokio::io::AsyncWriteExt;

async fn upload(mut form: Multipart) -> Result<(), String> {
    let mut path = String::new();
    while let Some(mut field) = form.next_field().await.map_err(|e| e.to_string())? {
        if field.name() == Some("metadata") {
            let v: serde_json::Value =
                serde_json::from_slice(&field.bytes().await.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            path = v["path"].as_str().unwrap_or_default().to_string();
            continue;
        }
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
        while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.sync_all().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8099);
    let app = Router::new().route("/files/upload", post(upload)).layer(DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
