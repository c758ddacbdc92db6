//! The HTTP surface of `API.md`, and the layers every route shares.

mod admin;
mod catalogue;
mod ops;
mod orders;
mod pages;
mod seckill;
mod session;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::routing::{get, patch, post};
use axum::{middleware, Router};
use seckill_shared::ErrorCode;
use tower_http::request_id::PropagateRequestIdLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// Request bodies are tiny JSON objects; anything bigger is refused early.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/api/time", get(catalogue::time))
        .route("/api/products/{product_id}", get(catalogue::product))
        .route("/api/soldout", get(catalogue::sold_out))
        .route("/api/seckill/{product_id}/orders", post(seckill::buy))
        .route("/api/seckill/{product_id}/result", get(seckill::result))
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
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics));
    if state.config.demo_login {
        // Absent (404) unless SECKILL_DEMO_LOGIN=1, as the contract says.
        router = router.route("/api/session", post(session::create));
    }
    router
        .fallback(get(pages::serve).fallback(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // The edge (or any proxy) names each request; the answer carries the
        // same id so a request can be followed from edge logs to origin logs.
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
            "x-request-id",
        )))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed)
}
