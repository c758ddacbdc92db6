//! A member's orders: read one, pay one.

use axum::extract::State;
use axum::Json;
use seckill_shared::api::{OrderStatus, OrderView, PayResponse};
use seckill_shared::OrderId;

use super::error::ApiError;
use super::extract::{AuthedMember, PathId};
use super::state::AppState;

pub async fn get(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(order): PathId<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(state.lifecycle.own_order(order, member).await?))
}

/// Pays an unpaid order inside its deadline; paying again is fine; an
/// order the deadline cancelled is `409 order_cancelled`.
pub async fn pay(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(order): PathId<OrderId>,
) -> Result<Json<PayResponse>, ApiError> {
    state.lifecycle.pay(order, member).await?;
    Ok(Json(PayResponse {
        status: OrderStatus::Paid,
    }))
}
