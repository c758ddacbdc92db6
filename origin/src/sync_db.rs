//! The naive synchronous design, kept as a measured baseline
//! (`SECKILL_MODE=sync-db`).
//!
//! Every buy is one database transaction: a conditional stock decrement and
//! an order insert, with no Redis and no queue. It is correct (the
//! conditional update cannot oversell, the unique index refuses a second
//! live order) but every buyer queues on the product row's lock, which is
//! exactly what the seed's design exists to avoid. `seckill-bench` drives
//! both modes with the same load so the difference is measured, not claimed.

use seckill_shared::api::{ResultStatus, ResultView};
use seckill_shared::{ErrorCode, MemberId, ProductId};

use crate::clock::{unix_ms, unix_s};
use crate::db::{orders, products};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn buy(state: &AppState, product: ProductId, member: MemberId) -> Result<(), ApiError> {
    if !state.rate_limiter.allow(member) {
        return Err(ApiError::new(ErrorCode::RateLimited));
    }
    let now_ms = unix_ms() as i64;
    let now_s = unix_s() as i64;
    let mut tx = state.db.pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE products SET stock_available = stock_available - 1, updated_at_ms = $2 \
         WHERE id = $1 AND stock_available > 0 AND starts_at <= $3 AND ends_at > $3",
    )
    .bind(product.get())
    .bind(now_ms)
    .bind(now_s)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        drop(tx);
        return Err(ApiError::new(why_refused(state, product, now_s).await?));
    }
    // The product row is locked by the update above until commit, so the
    // next reservation number cannot be taken twice.
    let inserted = sqlx::query(
        "INSERT INTO orders (product_id, member_id, reservation_seq, price_cents, status, created_at_ms, pay_deadline_ms) \
         VALUES ($1, $2, (SELECT COALESCE(MAX(reservation_seq), 0) + 1 FROM orders WHERE product_id = $1), \
                 (SELECT flash_price_cents FROM products WHERE id = $1), 'unpaid', $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(product.get())
    .bind(member.get())
    .bind(now_ms)
    .bind(now_ms + state.config.pay_timeout.as_millis() as i64)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // The member already holds a live order: the decrement is rolled back.
        return Err(ApiError::new(ErrorCode::AlreadyOrdered));
    }
    tx.commit().await?;
    state.metrics.reservations.inc();
    Ok(())
}

async fn why_refused(
    state: &AppState,
    product: ProductId,
    now_s: i64,
) -> Result<ErrorCode, ApiError> {
    Ok(match products::get(&state.db.pool, product).await? {
        None => ErrorCode::UnknownProduct,
        Some(row) if now_s < row.starts_at => ErrorCode::NotStarted,
        Some(row) if now_s >= row.ends_at => ErrorCode::Ended,
        Some(_) => ErrorCode::SoldOut,
    })
}

/// The result query in this mode: the order is written by the buy itself.
pub async fn result(
    state: &AppState,
    product: ProductId,
    member: MemberId,
) -> Result<ResultView, ApiError> {
    let order = orders::live_for_member(&state.db.pool, product, member).await?;
    Ok(match order {
        Some(order) => ResultView {
            status: ResultStatus::Success,
            order_id: Some(order.order_id()),
        },
        None => ResultView {
            status: ResultStatus::None,
            order_id: None,
        },
    })
}
