//! Operator endpoints, behind `SECKILL_ADMIN_TOKEN`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::api::{CreateProduct, NewFlashSale, ProductView};

use crate::catalog::product_view;
use crate::clock::unix_ms;
use crate::db::products;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};
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
