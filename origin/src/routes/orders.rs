//! A member's orders: read one, pay one.

use axum::extract::State;
use axum::Json;
use seckill_shared::api::{OrderStatus, OrderView, PayResponse};
use seckill_shared::keys::DeadlineEntry;
use seckill_shared::{ErrorCode, MemberId, OrderId};

use crate::clock::unix_ms;
use crate::db::orders::{self, OrderRow};
use crate::error::ApiError;
use crate::extract::{AuthedMember, PathId};
use crate::lifecycle::DeadlineOutcome;
use crate::state::AppState;

/// The member's own order; anyone else's is as unknown as a missing one.
async fn own_order(
    state: &AppState,
    order: OrderId,
    member: MemberId,
) -> Result<OrderRow, ApiError> {
    orders::get(&state.db.pool, order)
        .await?
        .filter(|row| row.member_id == member.get())
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownOrder))
}

pub async fn get(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(order): PathId<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(own_order(&state, order, member).await?.view()))
}

/// Pays an unpaid order inside its deadline. Paying again is fine; an order
/// the deadline cancelled is `409 order_cancelled`. A payment arriving after
/// the deadline but before the poller got to the order cancels it here, so
/// the answer never depends on which node polled first.
pub async fn pay(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(order): PathId<OrderId>,
) -> Result<Json<PayResponse>, ApiError> {
    let now_ms = unix_ms() as i64;
    if orders::pay(&state.db.pool, order, member, now_ms).await? {
        state.metrics.orders_paid.inc();
        forget_deadline_later(&state, order).await;
        return Ok(Json(PayResponse {
            status: OrderStatus::Paid,
        }));
    }
    let row = own_order(&state, order, member).await?;
    let status = match row.status() {
        OrderStatus::Unpaid => match state.lifecycle.settle_deadline(order, now_ms).await? {
            DeadlineOutcome::Paid => OrderStatus::Paid,
            DeadlineOutcome::Cancelled | DeadlineOutcome::Unknown => OrderStatus::Cancelled,
            // Unpaid and not due, yet the payment did not apply: the
            // deadline fell between the two reads. One more try decides.
            DeadlineOutcome::NotDue { .. } => {
                if orders::pay(&state.db.pool, order, member, unix_ms() as i64).await? {
                    state.metrics.orders_paid.inc();
                    OrderStatus::Paid
                } else {
                    return Err(ApiError::new(ErrorCode::OrderCancelled));
                }
            }
        },
        settled => settled,
    };
    match status {
        OrderStatus::Cancelled => Err(ApiError::new(ErrorCode::OrderCancelled)),
        _ => Ok(Json(PayResponse {
            status: OrderStatus::Paid,
        })),
    }
}

/// A paid order needs no deadline; removing it now keeps the set small (if
/// this fails, the poller removes it when it comes due).
async fn forget_deadline_later(state: &AppState, order: OrderId) {
    let Ok(Some(row)) = orders::get(&state.db.pool, order).await else {
        return;
    };
    let Ok(product) = seckill_shared::ProductId::new(row.product_id) else {
        return;
    };
    let entry = DeadlineEntry {
        product,
        order: order.get(),
    };
    let inventory = state.inventory.clone();
    tokio::spawn(async move {
        if let Err(err) = inventory.forget_deadline(entry).await {
            tracing::debug!(error = %err, "could not remove a paid order's deadline");
        }
    });
}
