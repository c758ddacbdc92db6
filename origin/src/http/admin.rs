//! Operator endpoints, behind `SECKILL_ADMIN_TOKEN`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::api::{
    AdminProductView, CreateProduct, NewFlashSale, ProductView, ReconcileItem, UpdateProduct,
};
use seckill_shared::ProductId;

use super::error::ApiError;
use super::extract::{Admin, ApiJson, PathId};
use super::state::AppState;

/// Creates a flash sale, live in Redis when this answers; if Redis cannot
/// be reached nothing is created and the answer is 503.
pub async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let sale = NewFlashSale::try_from(body).map_err(ApiError::bad_request)?;
    Ok((StatusCode::CREATED, Json(state.sales.create(&sale).await?)))
}

/// The newest items with their live figures: what the operations page polls.
pub async fn list_products(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<AdminProductView>>, ApiError> {
    Ok(Json(state.sales.list().await?))
}

/// Edits a sale: name, prices, stock (the new total) and window. The edit
/// reaches Redis and every origin within about a second, through change
/// capture, exactly as an edit made with plain SQL would.
pub async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(product): PathId<ProductId>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> Result<Json<ProductView>, ApiError> {
    let edited = state
        .sales
        .edit(product, |current| body.apply_to(current.as_create()))
        .await?;
    Ok(Json(edited))
}

/// Ends a sale now. The row stays: orders refer to it.
pub async fn end_sale(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(product): PathId<ProductId>,
) -> Result<Json<ProductView>, ApiError> {
    Ok(Json(state.sales.end(product).await?))
}

/// Runs reconciliation now and returns its report.
pub async fn reconcile(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<ReconcileItem>>, ApiError> {
    Ok(Json(state.reconciler.run_once().await?))
}
