//! Reads anyone may make: the clock, a product, the sold-out snapshot.

use axum::extract::State;
use axum::http::header::{HeaderName, CACHE_CONTROL};
use axum::Json;
use seckill_shared::api::{ProductView, SoldOutSnapshot, TimeResponse, SOLDOUT_CACHE_CONTROL};
use seckill_shared::{ErrorCode, ProductId};

use super::error::ApiError;
use super::extract::PathId;
use super::openapi::{E400, E404, E500, E503};
use super::state::AppState;
use crate::clock::unix_ms;

/// The server clock, so countdowns do not trust the browser's.
#[utoipa::path(get, path = "/api/time", operation_id = "time", tag = "storefront",
    responses((status = 200, body = TimeResponse), (status = 500, response = E500)))]
pub async fn time() -> Json<TimeResponse> {
    Json(TimeResponse { now_ms: unix_ms() })
}

/// One item: prices, stock left, window, sold-out.
#[utoipa::path(get, path = "/api/products/{product_id}", operation_id = "product", tag = "storefront",
    params(("product_id" = ProductId, Path, description = "the flash-sale item")),
    responses((status = 200, body = ProductView), (status = 400, response = E400),
        (status = 404, response = E404), (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn product(
    State(state): State<AppState>,
    PathId(product): PathId<ProductId>,
) -> Result<Json<ProductView>, ApiError> {
    state
        .catalog
        .view(product)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownProduct))
}

/// The sold-out registry and its version: what edges refresh their flags
/// from. Cacheable for a second (`SOLDOUT_CACHE_CONTROL`), so a CDN in front
/// of the origin answers a location's edges with one fetch per second.
#[utoipa::path(get, path = "/api/soldout", operation_id = "sold_out", tag = "storefront",
    responses((status = 200, body = SoldOutSnapshot), (status = 500, response = E500),
        (status = 503, response = E503)))]
pub async fn sold_out(
    State(state): State<AppState>,
) -> Result<([(HeaderName, &'static str); 1], Json<SoldOutSnapshot>), ApiError> {
    Ok((
        [(CACHE_CONTROL, SOLDOUT_CACHE_CONTROL)],
        Json(state.sold_out.snapshot().await?),
    ))
}
