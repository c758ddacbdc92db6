//! A member's orders: read one, pay one.

use axum::extract::State;
use axum::Json;
use seckill_shared::api::{OrderStatus, OrderView, PayResponse};
use seckill_shared::OrderId;

use super::error::ApiError;
use super::extract::{AuthedMember, PathId};
use super::openapi::{E400, E401, E404, E409, E500, E503};
use super::state::AppState;

/// One of the calling member's orders.
#[utoipa::path(get, path = "/api/orders/{order_id}", operation_id = "order", tag = "storefront",
    params(("order_id" = OrderId, Path, description = "one of the calling member's orders")),
    security(("member_token" = [])),
    responses((status = 200, body = OrderView), (status = 400, response = E400),
        (status = 401, response = E401), (status = 404, response = E404),
        (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn get(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(order): PathId<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(state.lifecycle.own_order(order, member).await?))
}

/// Pays an unpaid order inside its deadline; paying again is fine; an
/// order the deadline cancelled is `409 order_cancelled`.
#[utoipa::path(post, path = "/api/orders/{order_id}/pay", operation_id = "pay", tag = "storefront",
    params(("order_id" = OrderId, Path, description = "one of the calling member's orders")),
    security(("member_token" = [])),
    responses((status = 200, body = PayResponse), (status = 400, response = E400),
        (status = 401, response = E401), (status = 404, response = E404), (status = 409, response = E409),
        (status = 500, response = E500), (status = 503, response = E503)))]
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
