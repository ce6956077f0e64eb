//! The HTTP layer: the only module that knows axum, http and tower-http. Each area file owns its
//! routes and handlers; handlers extract, call one domain function and map the result.
//!
//! Layers, outermost first: panic → JSON 500, request log, tracing (X60), observation (metrics, audit: X61/X62),
//! access token, route (or JSON 404). A request goes first to its area (its first path segment:
//! [`AREAS`]), whose table of routes and layers is built on the area's first request ([`App`]).

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

/// Adds one module's routes to a router.
type AddRoutes = fn(Router<AppState>) -> Router<AppState>;

/// An area of the API: the routes under one first path segment, from the modules that serve them.
pub struct Area {
    /// The first segment of every path in the area (`command` for `/command/{id}/logs`).
    segment: &'static str,
    modules: &'static [AddRoutes],
}

/// Every route execd serves, by area. Each area's route table is built when its first request
/// comes (see [`App`]); every path of an area begins with `/<segment>/` or is `/<segment>`
/// (checked by a test), and a path whose first segment is none of these gets the JSON 404.
const AREAS: &[Area] = &[
    Area { segment: "ping", modules: &[ping::routes] },
    Area { segment: "command", modules: &[command::routes, command_ws::routes, inventory::routes] },
    Area {
        segment: "files",
        modules: &[files::routes, archive::routes, grep::routes, upload_raw::routes, tus::routes, watch::routes],
    },
    Area { segment: "session", modules: &[session::routes] },
    Area { segment: "code", modules: &[code::routes] },
    Area { segment: "directories", modules: &[directories::routes] },
    Area { segment: "metrics", modules: &[metrics::routes, prometheus::routes] },
    Area { segment: "proxy", modules: &[proxy::routes] },
    Area { segment: "pty", modules: &[pty::routes] },
    Area { segment: "ready", modules: &[ready::routes] },
    Area { segment: "capabilities", modules: &[capabilities::routes] },
    Area { segment: "openapi.json", modules: &[openapi::routes] },
    Area { segment: "v1", modules: &[isolated::routes, files::identity_routes] },
    Area { segment: "terminal", modules: &[terminal::routes] },
];

/// The whole API as one service: a request goes to its area's router, which is built (routes,
/// JSON 404s, the common layers, the state) on the area's first request and kept. Building all
/// ~100 routes at start was ~0.6 ms, most of what a start did after its runtime existed, for
/// areas most sandboxes never call (BENCHMARKS.md, "exec → first `/ping` taken apart"); an
/// area's own table is a few routes (~10–60 µs, once).
#[derive(Clone)]
pub struct App(std::sync::Arc<AppInner>);

struct AppInner {
    state: AppState,
    proxy: Option<proxy::Context>,
    areas: &'static [Area],
    /// One router per area, and last the one for paths of no area (only the 404 and the layers).
    built: Box<[std::sync::OnceLock<Router>]>,
}

impl App {
    fn with_areas(areas: &'static [Area], state: AppState, proxy: Option<proxy::Context>) -> App {
        let built = (0..=areas.len()).map(|_| std::sync::OnceLock::new()).collect();
        App(std::sync::Arc::new(AppInner { state, proxy, areas, built }))
    }

    /// The router of the area `path` belongs to, built on first use.
    fn router_for(&self, path: &str) -> &Router {
        let inner = &*self.0;
        let segment = path.strip_prefix('/').and_then(|p| p.split('/').next()).unwrap_or("");
        let i = inner.areas.iter().position(|a| a.segment == segment).unwrap_or(inner.areas.len());
        inner.built[i].get_or_init(|| {
            let modules = inner.areas.get(i).map_or(&[][..], |a| a.modules);
            let routes = modules.iter().fold(Router::new(), |r, add| add(r));
            with_layers(routes, inner.state.clone(), inner.proxy.clone())
        })
    }
}

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = <Router as tower::Service<Request>>::Future;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // A router is always ready (axum's `poll_ready` returns `Ready` at once).
        self.router_for(req.uri().path()).clone().call(req)
    }
}

/// Every route execd serves, wrapped in the common layers, and the proxy's way back into them.
pub fn app(state: AppState) -> App {
    proxy::with_self_dispatch(|context| App::with_areas(AREAS, state, Some(context)))
}

/// Every route execd serves in one router, without the layers (`api::openapi`'s tests enumerate
/// them against the OpenAPI document).
#[cfg(test)]
fn routes() -> Router<AppState> {
    AREAS.iter().flat_map(|a| a.modules).fold(Router::new(), |r, add| add(r))
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

    /// A route in the wrong area would never be reached: every path of an area must begin with
    /// its segment, and no two areas share one.
    #[test]
    fn every_route_is_in_the_area_of_its_first_segment() {
        let path = regex::Regex::new(r#"RouteId\(\d+\): "([^"]*)""#).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut routes = 0;
        for area in AREAS {
            assert!(seen.insert(area.segment), "two areas for /{}", area.segment);
            let router = area.modules.iter().fold(Router::<AppState>::new(), |r, add| add(r));
            let dbg = format!("{router:?}");
            let node = &dbg[dbg.find("node: Node { paths: {").expect("axum's Debug output lists the paths")..];
            for c in path.captures_iter(&node[..node.find("} }").unwrap()]) {
                routes += 1;
                let p = &c[1];
                let first = p.strip_prefix('/').and_then(|p| p.split('/').next());
                assert_eq!(first, Some(area.segment), "{p} is in the area of /{}", area.segment);
            }
        }
        assert!(routes >= 80, "only {routes} routes enumerated");
    }

    #[tokio::test]
    async fn an_area_is_built_on_its_first_request_and_unknown_paths_get_the_json_404() {
        let app = App::with_areas(AREAS, state(), None);
        let built = || app.0.built.iter().filter(|b| b.get().is_some()).count();
        assert_eq!(built(), 0);
        let resp = app.clone().oneshot(Request::get("/ping").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(built(), 1);
        for path in ["/nope", "/", "/pingx", "/ping/", "/%70ing"] {
            let resp = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["code"], "NOT_FOUND", "{path}");
        }
        // A wrong method is a 404 too (upstream has no 405).
        let resp = app.clone().oneshot(Request::delete("/ping").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(built(), 2, "the ping area and the one for paths of no area");
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
