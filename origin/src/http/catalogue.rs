//! Reads anyone may make: the clock, a product, the sold-out snapshot.

use axum::extract::State;
use axum::Json;
use seckill_shared::api::{ProductView, SoldOutSnapshot, TimeResponse};
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

pub async fn sold_out(State(state): State<AppState>) -> Result<Json<SoldOutSnapshot>, ApiError> {
    Ok(Json(state.sold_out.snapshot().await?))
}
