//! Operator endpoints, behind `SECKILL_ADMIN_TOKEN`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::api::{
    AdminProductView, CreateProduct, NewFlashSale, ProductView, ReconcileItem, UpdateProduct,
};
use seckill_shared::{ErrorCode, ProductId};

use crate::catalog::product_view;
use crate::clock::unix_ms;
use crate::db::{orders, products};
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, PathId};
use crate::pipeline::queue;
use crate::state::AppState;

/// Creates a flash sale. The row is inserted and its stock loaded into Redis
/// inside one database transaction: if Redis cannot be reached the insert is
/// rolled back and the answer is 503, so no sale exists in one store only.
pub async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<(StatusCode, Json<ProductView>), ApiError> {
    let sale = NewFlashSale::try_from(body).map_err(ApiError::bad_request)?;
    let mut tx = state.db.pool.begin().await?;
    let row = products::insert(&mut *tx, &sale, unix_ms() as i64).await?;
    state.inventory.load_new(&row).await?;
    if let Err(err) = tx.commit().await {
        // The id may be handed out again (SQLite reuses a rolled-back
        // AUTOINCREMENT value); load_new overwrites whatever is left, but
        // clear it now so nothing can be sold meanwhile.
        if let Err(cleanup) = state.inventory.unload(row.product_id()).await {
            tracing::warn!(product = row.id, error = %cleanup, "could not remove a rolled-back item from redis");
        }
        return Err(err.into());
    }
    tracing::info!(
        product = row.id,
        stock = row.stock_total,
        "flash sale created"
    );
    Ok((
        StatusCode::CREATED,
        Json(product_view(&row, row.stock_available)),
    ))
}

/// How many items the operations view lists (the newest).
const LISTED_ITEMS: i64 = 50;

/// The newest items with their live figures: stock, order queue, orders by
/// status, and this node's sold-out flag. What the operations page polls.
pub async fn list_products(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<AdminProductView>>, ApiError> {
    let rows = products::recent(&state.db.pool, LISTED_ITEMS).await?;
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let counts = orders::counts_by_status(&state.db.pool, &ids).await?;
    let mut conn = state.inventory.connection();
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        let product = row.product_id();
        let stock_left = state
            .inventory
            .stock_left(product)
            .await?
            .unwrap_or(row.stock_available);
        views.push(AdminProductView {
            product: product_view(&row, stock_left),
            queue: queue::stats(&mut conn, state.inventory.keys(), product).await?,
            orders: counts.get(&row.id).copied().unwrap_or_default(),
            sold_out_flag: state.sold_out.is_raised(product),
        });
    }
    Ok(Json(views))
}

/// Edits a sale: name, prices, stock (the new total) and window. Only the
/// database is written here; the change-capture trigger records it and the
/// change relay carries it to Redis and every origin within about a second,
/// exactly as an edit made with plain SQL would travel.
pub async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(product): PathId<ProductId>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> Result<Json<ProductView>, ApiError> {
    save_edit(&state, product, |current| {
        body.apply_to(current.as_create())
    })
    .await
}

/// Ends a sale now (a sale that has not started yet ends before it
/// starts). The row stays: orders refer to it.
pub async fn end_sale(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(product): PathId<ProductId>,
) -> Result<Json<ProductView>, ApiError> {
    let now = crate::clock::unix_s() as i64;
    save_edit(&state, product, |current| {
        let mut sale = NewFlashSale::try_from(current.as_create())?;
        sale.ends_at = sale.ends_at.min(now);
        sale.starts_at = sale.starts_at.min(sale.ends_at - 1);
        Ok(sale)
    })
    .await
}

/// Reads the sale, lets `edit` produce its new version (refused edits are
/// 400), writes it, and answers with the product as it now stands.
async fn save_edit(
    state: &AppState,
    product: ProductId,
    edit: impl FnOnce(&products::ProductRow) -> Result<NewFlashSale, String>,
) -> Result<Json<ProductView>, ApiError> {
    let unknown = || ApiError::new(ErrorCode::UnknownProduct);
    let current = products::get(&state.db.pool, product)
        .await?
        .ok_or_else(unknown)?;
    let sale = edit(&current).map_err(ApiError::bad_request)?;
    let row = products::update(&state.db.pool, product, &sale, unix_ms() as i64)
        .await?
        .ok_or_else(unknown)?;
    tracing::info!(
        product = row.id,
        revision = row.revision,
        "flash sale edited"
    );
    let stock_left = state
        .inventory
        .stock_left(product)
        .await?
        .unwrap_or(row.stock_available);
    Ok(Json(product_view(&row, stock_left)))
}

/// Runs reconciliation now and returns its report.
pub async fn reconcile(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<ReconcileItem>>, ApiError> {
    Ok(Json(crate::reconcile::run_once(&state).await?))
}
