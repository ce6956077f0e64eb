//! The exporter's HTTP client: `opentelemetry_http::HttpClient` on the hyper 1 client execd already
//! has (plain `http://` only: no TLS in the binary). The SDK's batch threads drive the exporter
//! with a bare executor, outside tokio, so each request is spawned on execd's runtime and awaited
//! through a oneshot channel; every request has a deadline and the response body a size cap.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// Largest collector response body read (an `Export*ServiceResponse` is a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;

pub struct HyperClient {
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperClient").field("timeout", &self.timeout).finish()
    }
}

impl HyperClient {
    pub fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> HyperClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(2).build(connector);
        HyperClient { client, runtime, timeout }
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        if request.uri().scheme_str() != Some("http") {
            return Err("only http:// collector endpoints are supported (execd has no TLS client)".into());
        }
        let (parts, body) = request.into_parts();
        let request = hyper::Request::from_parts(parts, Full::new(body));
        let client = self.client.clone();
        let timeout = self.timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.runtime.spawn(async move {
            let exchange = async {
                let resp = client.request(request).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            let result = match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer from the collector within {timeout:?}").into()),
            };
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| HttpError::from("the export request was cancelled"))?
    }
}
