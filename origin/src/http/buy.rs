//! The buy path and its result query: `POST /api/seckill/{id}/orders`,
//! `GET /api/seckill/{id}/result`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::api::{BuyAccepted, BuyStatus, ResultView};
use seckill_shared::ProductId;

use super::error::ApiError;
use super::extract::{AuthedMember, PathId};
use super::openapi::{E400, E401, E403, E404, E409, E429, E500, E503};
use super::state::AppState;
use crate::clock::unix_s;
use crate::history::Outcome;

/// Buys one unit: `202 queued` when reserved; then poll the result.
#[utoipa::path(post, path = "/api/seckill/{product_id}/orders", operation_id = "buy", tag = "storefront",
    params(("product_id" = ProductId, Path, description = "the flash-sale item")),
    security(("member_token" = [])),
    responses((status = 202, body = BuyAccepted, description = "reserved and queued: poll the result"),
        (status = 400, response = E400), (status = 401, response = E401), (status = 403, response = E403),
        (status = 404, response = E404), (status = 409, response = E409), (status = 429, response = E429),
        (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn buy(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(product): PathId<ProductId>,
) -> Result<(StatusCode, Json<BuyAccepted>), ApiError> {
    let history = &state.metrics.history;
    match state.buying.buy(product, member).await {
        Ok(()) => {
            history.count_buy(product, Outcome::Queued, unix_s());
            Ok((
                StatusCode::ACCEPTED,
                Json(BuyAccepted {
                    status: BuyStatus::Queued,
                }),
            ))
        }
        Err(err) => {
            let err = ApiError::from(err);
            history.count_buy(product, Outcome::of_refusal(err.code()), unix_s());
            state
                .metrics
                .buy_refusals
                .with_label_values(&[err.code().as_str()])
                .inc();
            Err(err)
        }
    }
}

/// Where the calling member's buy stands (polled after a 202).
#[utoipa::path(get, path = "/api/seckill/{product_id}/result", operation_id = "result", tag = "storefront",
    params(("product_id" = ProductId, Path, description = "the flash-sale item")),
    security(("member_token" = [])),
    responses((status = 200, body = ResultView), (status = 400, response = E400),
        (status = 401, response = E401), (status = 500, response = E500), (status = 503, response = E503)))]
pub async fn result(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(product): PathId<ProductId>,
) -> Result<Json<ResultView>, ApiError> {
    Ok(Json(state.buying.result(product, member).await?))
}
