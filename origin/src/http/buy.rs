//! The buy path and its result query: `POST /api/seckill/{id}/orders`,
//! `GET /api/seckill/{id}/result`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::api::{BuyAccepted, BuyStatus, ResultView};
use seckill_shared::ProductId;

use super::error::ApiError;
use super::extract::{AuthedMember, PathId};
use super::state::AppState;

pub async fn buy(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(product): PathId<ProductId>,
) -> Result<(StatusCode, Json<BuyAccepted>), ApiError> {
    match state.buying.buy(product, member).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(BuyAccepted {
                status: BuyStatus::Queued,
            }),
        )),
        Err(err) => {
            let err = ApiError::from(err);
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
pub async fn result(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(product): PathId<ProductId>,
) -> Result<Json<ResultView>, ApiError> {
    Ok(Json(state.buying.result(product, member).await?))
}
