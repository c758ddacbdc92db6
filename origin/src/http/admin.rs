//! Operator endpoints, behind `SECKILL_ADMIN_TOKEN`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::api::{
    AdminProductView, CreateProduct, ItemHistory, NewFlashSale, ProductView, ReconcileItem,
    UpdateProduct,
};
use seckill_shared::ProductId;

use super::error::ApiError;
use super::extract::{Admin, ApiJson, PathId};
use super::openapi::{E400, E401, E404, E413, E500, E503};
use super::state::AppState;
use crate::clock::unix_ms;

/// Creates a flash sale, live in Redis when this answers; if Redis cannot
/// be reached nothing is created and the answer is 503.
#[utoipa::path(post, path = "/admin/products", operation_id = "create_product", tag = "admin",
    request_body = CreateProduct, security(("admin_token" = [])),
    responses((status = 201, body = ProductView, description = "the sale, live in Redis"),
        (status = 400, response = E400), (status = 401, response = E401), (status = 413, response = E413),
        (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let sale = NewFlashSale::try_from(body).map_err(ApiError::bad_request)?;
    Ok((StatusCode::CREATED, Json(state.sales.create(&sale).await?)))
}

/// The newest items with their live figures: what the operations page polls.
#[utoipa::path(get, path = "/admin/products", operation_id = "list_products", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = Vec<AdminProductView>), (status = 401, response = E401),
        (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn list_products(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<AdminProductView>>, ApiError> {
    let items = state.sales.list().await?;
    let now_ms = unix_ms();
    for item in &items {
        state.metrics.history.record_levels(
            item.product.product_id,
            now_ms,
            item.product.stock_left,
            item.queue.lag + item.queue.pending,
        );
    }
    Ok(Json(items))
}

/// The last minutes of the newest items this origin has seen (buys per
/// second by outcome, stock left, queue depth): the operations page's
/// charts. Each origin answers with what it saw itself.
#[utoipa::path(get, path = "/admin/history", operation_id = "history", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = Vec<ItemHistory>), (status = 401, response = E401),
        (status = 500, response = E500)))]
pub async fn history(State(state): State<AppState>, _admin: Admin) -> Json<Vec<ItemHistory>> {
    let history = &state.metrics.history;
    Json(history.view(&history.items(HISTORY_ITEMS), unix_ms()))
}

/// Items `GET /admin/history` answers for, at most (as many as the list).
const HISTORY_ITEMS: usize = 50;

/// Edits a sale: name, prices, stock (the new total) and window. The edit
/// reaches Redis and every origin within about a second, through change
/// capture, exactly as an edit made with plain SQL would.
#[utoipa::path(patch, path = "/admin/products/{product_id}", operation_id = "update_product", tag = "admin",
    params(("product_id" = ProductId, Path, description = "the flash-sale item")), request_body = UpdateProduct, security(("admin_token" = [])),
    responses((status = 200, body = ProductView), (status = 400, response = E400),
        (status = 401, response = E401), (status = 404, response = E404), (status = 413, response = E413),
        (status = 500, response = E500), (status = 503, response = E503)))]
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
#[utoipa::path(delete, path = "/admin/products/{product_id}", operation_id = "end_sale", tag = "admin",
    params(("product_id" = ProductId, Path, description = "the flash-sale item")), security(("admin_token" = [])),
    responses((status = 200, body = ProductView), (status = 400, response = E400),
        (status = 401, response = E401), (status = 404, response = E404),
        (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn end_sale(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(product): PathId<ProductId>,
) -> Result<Json<ProductView>, ApiError> {
    Ok(Json(state.sales.end(product).await?))
}

/// Runs reconciliation now and returns its report.
#[utoipa::path(post, path = "/admin/reconcile", operation_id = "reconcile", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = Vec<ReconcileItem>), (status = 401, response = E401),
        (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn reconcile(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<ReconcileItem>>, ApiError> {
    Ok(Json(state.reconciler.run_once().await?))
}
