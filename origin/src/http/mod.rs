//! The HTTP layer: routes, the extractors that validate input, the one
//! mapping from failures to the contract's answers, and what every request
//! goes through (request id, trace span, metrics, body limit).

mod admin;
mod body;
mod buy;
mod catalogue;
pub mod error;
mod extract;
mod observe;
pub mod openapi;
mod ops;
mod orders;
mod pages;
mod session;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::routing::{get, patch, post};
use axum::{middleware, Router};
use seckill_shared::ErrorCode;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use error::ApiError;
use state::AppState;

pub use body::MAX_BODY_BYTES;

/// The header naming a request from the edge (or any proxy) to the logs.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/api/time", get(catalogue::time))
        .route("/api/products/{product_id}", get(catalogue::product))
        .route("/api/soldout", get(catalogue::sold_out))
        .route("/api/seckill/{product_id}/orders", post(buy::buy))
        .route("/api/seckill/{product_id}/result", get(buy::result))
        .route("/api/orders/{order_id}", get(orders::get))
        .route("/api/orders/{order_id}/pay", post(orders::pay))
        .route(
            "/admin/products",
            post(admin::create_product).get(admin::list_products),
        )
        .route(
            "/admin/products/{product_id}",
            patch(admin::update_product).delete(admin::end_sale),
        )
        .route("/admin/reconcile", post(admin::reconcile))
        .route("/admin/history", get(admin::history))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(openapi::document));
    if state.auth.demo_sessions.is_some() {
        // Absent (404) unless SECKILL_DEMO_LOGIN=1, as the contract says.
        router = router.route("/api/session", post(session::create));
    }
    router
        .fallback(get(pages::serve).fallback(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            observe::count,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(body::read_whole))
        .layer(observe::trace_layer())
        // The edge names each request (a request without a name gets one);
        // the answer carries the same id, and so does every log line of the
        // request, so a buyer's report can be followed from edge to origin.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed)
}
