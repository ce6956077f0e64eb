//! Upstream for the proxy benchmark, on `127.0.0.1:$PORT`:
//! `GET /small` answers 200 with a 2-byte body; `GET /bytes?n=N` streams N zero bytes in 256 KiB
//! frames cut from one shared buffer (no per-frame allocation or copy), so the client and the
//! proxy, not this server, are the bottleneck.
//!
//! With `RELAY_TO=<port>` it is instead a raw TCP relay (`tokio::io::copy_bidirectional` per
//! connection) to `127.0.0.1:<port>`: the floor for any user-space proxy on this machine.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;

const FRAME: usize = 256 * 1024;

/// `remaining` bytes of zeros, one shared frame at a time.
struct Zeros {
    frame: Bytes,
    remaining: u64,
}

impl http_body::Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(FRAME as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.frame.slice(..n)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[derive(serde::Deserialize)]
struct N {
    n: u64,
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(18000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    if let Some(to) = std::env::var("RELAY_TO").ok().and_then(|p| p.parse::<u16>().ok()) {
        loop {
            let (mut inbound, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(("127.0.0.1", to)).await.expect("connect");
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    }
    let frame = Bytes::from(vec![0u8; FRAME]);
    let app = Router::new().route("/small", get(|| async { "ok" })).route(
        "/bytes",
        get(move |Query(q): Query<N>| {
            let frame = frame.clone();
            async move { Body::new(Zeros { frame, remaining: q.n }) }
        }),
    );
    axum::serve(listener, app).await.expect("serve");
}
