//! The HTTP layer: the only module that knows axum, http and tower-http. Each area file owns its
//! routes and handlers; handlers extract, call one domain function and map the result.
//!
//! Layers, outermost first: panic → JSON 500, request log, tracing (X60), observation (metrics, audit: X61/X62),
//! access token, route (or JSON 404).

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::state::AppState;

pub mod archive;
pub mod auth;
pub mod capabilities;
pub mod code;
pub mod command;
pub mod command_ws;
pub mod directories;
pub mod error;
pub mod extract;
pub mod files;
pub mod grep;
pub mod inventory;
pub mod isolated;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod otel_layer;
pub mod ping;
pub mod prometheus;
pub mod proxy;
pub mod pty;
pub mod ready;
pub mod server;
pub mod session;
pub mod sse;
pub mod terminal;
pub mod tus;
pub mod upload_raw;
pub mod watch;

use error::{ApiError, ErrorCode};

/// Largest JSON request body we buffer (uploads stream and are not bound by this).
const JSON_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Every route execd serves, wrapped in the common layers.
pub fn router(state: AppState) -> Router {
    proxy::with_self_dispatch(|context| with_layers(routes(), state, Some(context)))
}

/// Every route execd serves, without the layers (`api::openapi`'s tests enumerate them against
/// the OpenAPI document). Each module adds its routes to the one router: merging a router per
/// module inserted every route twice and was a third of the start's instructions (BENCHMARKS.md,
/// "exec → first `/ping` taken apart").
fn routes() -> Router<AppState> {
    let modules: [fn(Router<AppState>) -> Router<AppState>; 23] = [
        ping::routes,
        command::routes,
        command_ws::routes,
        inventory::routes,
        ready::routes,
        session::routes,
        code::routes,
        metrics::routes,
        prometheus::routes,
        proxy::routes,
        pty::routes,
        files::routes,
        archive::routes,
        grep::routes,
        upload_raw::routes,
        tus::routes,
        directories::routes,
        openapi::routes,
        capabilities::routes,
        isolated::routes,
        files::identity_routes,
        watch::routes,
        terminal::routes,
    ];
    modules.into_iter().fold(Router::new(), |r, add| add(r))
}

/// The common layers around `routes`: JSON 404 for unknown paths and methods, body limit, auth,
/// request log, panic → JSON 500 (the daemon keeps serving), and the proxy's context when given.
fn with_layers(routes: Router<AppState>, state: AppState, proxy: Option<proxy::Context>) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        // One layer made of all of them: axum wraps (and boxes) every method of every route once
        // per `layer` call, so one call instead of seven builds a seventh of the services at
        // start (BENCHMARKS.md, "One layer instead of seven").
        .layer(
            tower::ServiceBuilder::new()
                .option_layer(proxy)
                .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
                    ApiError::runtime("internal error: the handler panicked").into_response()
                }))
                .layer(middleware::from_fn(log_request))
                .layer(middleware::from_fn_with_state(state.clone(), otel_layer::trace))
                .layer(middleware::from_fn_with_state(state.clone(), observe::observe))
                .layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
                .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT)),
        )
        .with_state(state)
}

/// Unknown path or wrong method: 404 (upstream has no 405), as JSON.
async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "404 page not found")
}

/// One log line per request: method, path (query dropped: it may carry tokens), status, time.
async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    tracing::info!(
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn state() -> AppState {
        let dir = std::env::temp_dir().join(format!("execd-api-test-{}", std::process::id()));
        AppState::new(crate::config::Config::for_tests(dir)).unwrap()
    }

    #[tokio::test]
    async fn panicking_handler_answers_json_500_and_router_keeps_serving() {
        let routes = ping::routes(Router::new().route("/boom", get(|| async { panic!("boom") as &str })));
        let app = with_layers(routes, state(), None);
        let resp = app.clone().oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "RUNTIME_ERROR");
        let resp = app.oneshot(Request::get("/ping").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
