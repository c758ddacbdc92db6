//! The buy path and its result query.
//!
//! Budget: one Redis round trip per buy (the reserve script), none once the
//! product is known to be sold out. Everything before the script call is
//! in-process: token check, sold-out flag, rate limit, unknown-id memory.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::api::{BuyAccepted, BuyStatus, ResultStatus, ResultView};
use seckill_shared::keys::MemberState;
use seckill_shared::{ErrorCode, MemberId, ProductId};

use crate::clock::unix_s;
use crate::config::BuyMode;
use crate::error::ApiError;
use crate::extract::{AuthedMember, PathId};
use crate::inventory::{ReserveError, ReserveOutcome};
use crate::state::AppState;

pub async fn buy(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(product): PathId<ProductId>,
) -> Result<(StatusCode, Json<BuyAccepted>), ApiError> {
    let result = match state.config.buy_mode {
        BuyMode::Reserve => reserve(&state, product, member).await,
        BuyMode::SyncDb => crate::sync_db::buy(&state, product, member).await,
    };
    match result {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(BuyAccepted {
                status: BuyStatus::Queued,
            }),
        )),
        Err(err) => {
            state
                .metrics
                .buy_refusals
                .with_label_values(&[err.code.as_str()])
                .inc();
            Err(err)
        }
    }
}

async fn reserve(state: &AppState, product: ProductId, member: MemberId) -> Result<(), ApiError> {
    if state.sold_out.is_raised(product) {
        state
            .metrics
            .sold_out_rejections
            .with_label_values(&["local_flag"])
            .inc();
        return Err(ApiError::new(ErrorCode::SoldOut));
    }
    if !state.rate_limiter.allow(member) {
        return Err(ApiError::new(ErrorCode::RateLimited));
    }
    if state.unknown_products.is_raised(product) {
        return Err(ApiError::new(ErrorCode::UnknownProduct));
    }

    let mut outcome = match state.inventory.reserve(product, member).await {
        Ok(outcome) => outcome,
        Err(err) => return settle_failed_reserve(state, product, member, err).await,
    };
    if outcome == ReserveOutcome::UnknownProduct {
        outcome = recover_unknown(state, product, member).await?;
    }

    match outcome {
        ReserveOutcome::Queued { stock_left, .. } => {
            state.metrics.reservations.inc();
            if stock_left == 0 {
                note_sold_out(state, product);
            }
            Ok(())
        }
        ReserveOutcome::SoldOut => {
            state
                .metrics
                .sold_out_rejections
                .with_label_values(&["redis"])
                .inc();
            note_sold_out(state, product);
            Err(ApiError::new(ErrorCode::SoldOut))
        }
        ReserveOutcome::AlreadyOrdered => Err(ApiError::new(ErrorCode::AlreadyOrdered)),
        ReserveOutcome::NotStarted => Err(ApiError::new(ErrorCode::NotStarted)),
        ReserveOutcome::Ended => Err(ApiError::new(ErrorCode::Ended)),
        ReserveOutcome::UnknownProduct => Err(ApiError::new(ErrorCode::UnknownProduct)),
    }
}

/// A reserve call failed. If Redis was never reached nothing was reserved
/// and the answer is 503. If the connection broke or timed out after the
/// script was sent, the script may have run: ask again (for up to about a
/// second) what the member holds, so a reservation that exists is answered
/// 202. If Redis stays silent the outcome cannot be known, and the 503 says
/// so: the result endpoint will tell once Redis is back.
async fn settle_failed_reserve(
    state: &AppState,
    product: ProductId,
    member: MemberId,
    err: ReserveError,
) -> Result<(), ApiError> {
    tracing::warn!(product = product.get(), member = member.get(), error = %err, "reserve call failed");
    if !err.ambiguous {
        return Err(ApiError::new(ErrorCode::Unavailable));
    }
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        match state.inventory.member_state(product, member).await {
            // Queued, or already written by a consumer while Redis was being
            // asked again: either way the member holds a reservation.
            Ok(Some(MemberState::Queued { .. } | MemberState::Ordered { .. })) => {
                tracing::warn!(
                    product = product.get(),
                    member = member.get(),
                    "reserve reply lost, but the reservation exists"
                );
                state.metrics.reservations.inc();
                return Ok(());
            }
            // Redis answered and holds no reservation for this member.
            Ok(_) => return Err(ApiError::new(ErrorCode::Unavailable)),
            Err(_) => continue,
        }
    }
    tracing::warn!(
        product = product.get(),
        member = member.get(),
        "reserve outcome unknown: redis stopped answering mid-request"
    );
    Err(ApiError::new(ErrorCode::OutcomeUnknown))
}

/// Redis does not know the product. Either the id is not a product (remember
/// that for a moment), or Redis lost its data (restarted without
/// persistence): load the item from the database and try once more.
async fn recover_unknown(
    state: &AppState,
    product: ProductId,
    member: MemberId,
) -> Result<ReserveOutcome, ApiError> {
    let Some(row) = state.preheater.ensure_live(product).await? else {
        state.unknown_products.raise(product);
        return Ok(ReserveOutcome::UnknownProduct);
    };
    if row.ends_at <= unix_s() as i64 {
        return Ok(ReserveOutcome::Ended);
    }
    state.metrics.preheats.inc();
    match state.inventory.reserve(product, member).await {
        Ok(outcome) => Ok(outcome),
        Err(err) => {
            tracing::warn!(product = product.get(), error = %err, "reserve after reloading the item failed");
            Err(ApiError::new(ErrorCode::Unavailable))
        }
    }
}

/// Raises the local flag; the first time this node sees the sell-out it also
/// records it in Redis' sold-out registry (which tells the other nodes). That
/// write is off the request path: the registry is an optimisation, the
/// reserve script stays the authority.
fn note_sold_out(state: &AppState, product: ProductId) {
    if state.sold_out.raise(product) {
        let inventory = state.inventory.clone();
        tokio::spawn(async move {
            if let Err(err) = inventory.mark_sold_out(product, true).await {
                tracing::warn!(product = product.get(), error = %err, "could not record sell-out in redis");
            }
        });
    }
}

/// The seed's `/miaosha/result`, for the calling member only.
pub async fn result(
    State(state): State<AppState>,
    AuthedMember(member): AuthedMember,
    PathId(product): PathId<ProductId>,
) -> Result<Json<ResultView>, ApiError> {
    if state.config.buy_mode == BuyMode::SyncDb {
        return Ok(Json(crate::sync_db::result(&state, product, member).await?));
    }
    let (status, order_id) = match state.inventory.member_state(product, member).await? {
        None => (ResultStatus::None, None),
        Some(MemberState::Queued { .. }) => (ResultStatus::Queued, None),
        Some(MemberState::Ordered { order }) => (ResultStatus::Success, Some(order)),
        Some(MemberState::Failed { .. }) => (ResultStatus::Failed, None),
        // The order was cancelled and its stock returned: the member holds
        // nothing and may buy again.
        Some(MemberState::Cancelled { .. }) => (ResultStatus::None, None),
    };
    Ok(Json(ResultView { status, order_id }))
}
