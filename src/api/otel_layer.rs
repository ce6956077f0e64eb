//! The tracing middleware (EXTENSIONS X60): when OTLP trace export runs, a server span per request
//! named by its route template (gin's spelling, as the metrics use), continuing an incoming W3C
//! `traceparent`. The span is the current OpenTelemetry context while the handler runs and while
//! the response body is produced, so executions started or finished there become its children;
//! it ends (with the status) when the body has ended or been dropped.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::observability::otel::end_request_span;
use crate::state::AppState;

/// The middleware (installed by `api::with_layers`); a pass-through when tracing is off.
pub async fn trace(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(otel) = state.observability.otel().filter(|o| o.tracing()) else {
        return next.run(req).await;
    };
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(req.headers()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| super::observe::route_label(p.as_str()))
        .unwrap_or_else(|| "unknown".to_string());
    let method = super::observe::method_label(req.method());
    let Some(cx) = otel.request_span(&parent, method, &route) else {
        return next.run(req).await;
    };
    let resp = next.run(req).with_context(cx.clone()).await;
    let status = resp.status().as_u16();
    resp.map(|b| Body::new(Traced { inner: b, cx: Some(cx), status }))
}

/// The response body, polled inside the request's context; ends the span once.
struct Traced {
    inner: Body,
    cx: Option<Context>,
    status: u16,
}

impl Traced {
    fn finish(&mut self) {
        if let Some(cx) = self.cx.take() {
            end_request_span(&cx, self.status);
        }
    }
}

impl HttpBody for Traced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = {
            let _attached = this.cx.clone().map(|c| c.attach());
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        if let Poll::Ready(None) = polled {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.finish();
    }
}
