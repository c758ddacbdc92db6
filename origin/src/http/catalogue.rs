//! Reads anyone may make: the clock, a product, the sold-out snapshot.

use axum::extract::State;
use axum::http::header::{HeaderName, CACHE_CONTROL};
use axum::Json;
use seckill_shared::api::{ProductView, SoldOutSnapshot, TimeResponse, SOLDOUT_CACHE_CONTROL};
use seckill_shared::{ErrorCode, ProductId};

use super::error::ApiError;
use super::extract::PathId;
use super::state::AppState;
use crate::clock::unix_ms;

/// The server clock, so countdowns do not trust the browser's.
pub async fn time() -> Json<TimeResponse> {
    Json(TimeResponse { now_ms: unix_ms() })
}

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

/// Cacheable for a second (`SOLDOUT_CACHE_CONTROL`), so a CDN in front of
/// the origin answers a location's edges with one fetch per second.
pub async fn sold_out(
    State(state): State<AppState>,
) -> Result<([(HeaderName, &'static str); 1], Json<SoldOutSnapshot>), ApiError> {
    Ok((
        [(CACHE_CONTROL, SOLDOUT_CACHE_CONTROL)],
        Json(state.sold_out.snapshot().await?),
    ))
}
