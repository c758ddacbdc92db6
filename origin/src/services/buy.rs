//! The buy decision and its result query.
//!
//! Budget: one Redis round trip per buy (the reserve script), none once the
//! product is known to be sold out. Everything before the script call is
//! in-process: sold-out flag, rate limit, unknown-id memory. In the sync-db
//! baseline every buy is a database transaction instead (`sync_db`).

use std::sync::Arc;
use std::time::Duration;

use seckill_shared::api::{ResultStatus, ResultView};
use seckill_shared::keys::MemberState;
use seckill_shared::{MemberId, ProductId};

use super::preheat::Preheater;
use super::product_flags::ProductFlags;
use super::rate_limit::MemberRateLimiter;
use super::sold_out::SoldOut;
use super::sync_db::SyncDb;
use crate::clock::unix_s;
use crate::metrics::Metrics;
use crate::store::redis::stock::{ReserveOutcome, Stock};
use crate::store::{StoreError, StoreResult};
use crate::telemetry::chain;

/// How long an id the database does not know is remembered as unknown.
const UNKNOWN_PRODUCT_TTL_MS: u64 = 1_000;

/// Why a buy reserved nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SoldOut,
    AlreadyOrdered,
    NotStarted,
    Ended,
    UnknownProduct,
    RateLimited,
}

#[derive(Debug, thiserror::Error)]
pub enum BuyError {
    #[error("buy refused: {0:?}")]
    Refused(Refusal),
    /// A store failed before anything was reserved.
    #[error("buy failed")]
    Store(#[from] StoreError),
    /// The reserve script was sent and no answer could be had: it may or
    /// may not have reserved a unit.
    #[error("buy outcome unknown")]
    OutcomeUnknown(#[source] StoreError),
}

impl From<Refusal> for BuyError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// How buys are decided in this process.
pub enum BuyPath {
    Reserve,
    SyncDb(SyncDb),
}

pub struct Buying {
    path: BuyPath,
    stock: Stock,
    sold_out: Arc<SoldOut>,
    preheater: Preheater,
    rate_limiter: MemberRateLimiter,
    unknown_products: ProductFlags,
    metrics: Arc<Metrics>,
}

impl Buying {
    pub fn new(
        path: BuyPath,
        stock: Stock,
        sold_out: Arc<SoldOut>,
        preheater: Preheater,
        rate_limiter: MemberRateLimiter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            path,
            stock,
            sold_out,
            preheater,
            rate_limiter,
            unknown_products: ProductFlags::new(UNKNOWN_PRODUCT_TTL_MS),
            metrics,
        }
    }

    /// Reserves one unit for `member` (queued for writing), or says why not.
    pub async fn buy(&self, product: ProductId, member: MemberId) -> Result<(), BuyError> {
        let result = match &self.path {
            BuyPath::Reserve => self.reserve(product, member).await,
            BuyPath::SyncDb(sync_db) => {
                if !self.rate_limiter.allow(member) {
                    Err(Refusal::RateLimited.into())
                } else {
                    sync_db.buy(product, member).await
                }
            }
        };
        if result.is_ok() {
            self.metrics.reservations.inc();
        }
        result
    }

    async fn reserve(&self, product: ProductId, member: MemberId) -> Result<(), BuyError> {
        if self.sold_out.is_flagged(product) {
            self.metrics
                .sold_out_rejections
                .with_label_values(&["local_flag"])
                .inc();
            return Err(Refusal::SoldOut.into());
        }
        if !self.rate_limiter.allow(member) {
            return Err(Refusal::RateLimited.into());
        }
        if self.unknown_products.is_raised(product) {
            return Err(Refusal::UnknownProduct.into());
        }

        let mut outcome = match self.stock.reserve(product, member).await {
            Ok(outcome) => outcome,
            Err(err) => {
                return self
                    .settle_failed_reserve(product, member, err.into())
                    .await
            }
        };
        if outcome == ReserveOutcome::UnknownProduct {
            outcome = self.recover_unknown(product, member).await?;
        }
        if outcome == ReserveOutcome::Unchecked {
            outcome = self.check_then_reserve(product, member).await?;
        }

        match outcome {
            ReserveOutcome::Queued { stock_left, .. } => {
                if stock_left == 0 {
                    self.sold_out.note(product);
                }
                Ok(())
            }
            ReserveOutcome::SoldOut => {
                self.metrics
                    .sold_out_rejections
                    .with_label_values(&["redis"])
                    .inc();
                self.sold_out.note(product);
                Err(Refusal::SoldOut.into())
            }
            // Logged once, with its cause, where the answer is made.
            ReserveOutcome::Unreplicated { wanted, acked } => {
                Err(BuyError::OutcomeUnknown(StoreError::Unreplicated {
                    wanted,
                    acked,
                }))
            }
            ReserveOutcome::AlreadyOrdered => Err(Refusal::AlreadyOrdered.into()),
            ReserveOutcome::NotStarted => Err(Refusal::NotStarted.into()),
            ReserveOutcome::Ended => Err(Refusal::Ended.into()),
            ReserveOutcome::UnknownProduct => Err(Refusal::UnknownProduct.into()),
            // Checked, and refused again: the shard changed hands once more.
            ReserveOutcome::Unchecked => Err(StoreError::ShardMoved.into()),
        }
    }

    /// The item's shard changed hands since it was last checked against
    /// the database (a failover or a slot move on a cluster): check it
    /// (rebuilding what a promoted replica lacked) and try once more.
    /// Nothing was reserved by the refused call.
    async fn check_then_reserve(
        &self,
        product: ProductId,
        member: MemberId,
    ) -> Result<ReserveOutcome, BuyError> {
        self.preheater.check(product).await?;
        Ok(self
            .stock
            .reserve(product, member)
            .await
            .map_err(StoreError::from)?)
    }

    /// A reserve call failed. If Redis was never reached nothing was
    /// reserved. If the connection broke or timed out after the script was
    /// sent, the script may have run: ask again (for up to about a second)
    /// what the member holds, so a reservation that exists is answered as
    /// made. If Redis stays silent the outcome cannot be known: the result
    /// endpoint will tell once Redis is back.
    async fn settle_failed_reserve(
        &self,
        product: ProductId,
        member: MemberId,
        err: StoreError,
    ) -> Result<(), BuyError> {
        if !err.outcome_may_be_unknown() {
            return Err(err.into());
        }
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            match self.stock.member_state(product, member).await {
                // Queued, or already written by a consumer while Redis was
                // being asked again: either way the member holds a reservation.
                Ok(Some(MemberState::Queued { .. } | MemberState::Ordered { .. })) => {
                    tracing::warn!(
                        product = product.get(),
                        member = member.get(),
                        error = %chain(&err),
                        "reserve reply lost, but the reservation exists"
                    );
                    return Ok(());
                }
                // Redis answered and holds no reservation for this member.
                Ok(_) => return Err(err.into()),
                Err(_) => continue,
            }
        }
        Err(BuyError::OutcomeUnknown(err))
    }

    /// Redis does not know the product. Either the id is not a product
    /// (remember that for a moment), or Redis lost its data (restarted
    /// without persistence): load the item from the database and try once
    /// more.
    async fn recover_unknown(
        &self,
        product: ProductId,
        member: MemberId,
    ) -> Result<ReserveOutcome, BuyError> {
        let Some(row) = self.preheater.ensure_live(product).await? else {
            self.unknown_products.raise(product);
            return Ok(ReserveOutcome::UnknownProduct);
        };
        if row.ends_at <= unix_s() as i64 {
            return Ok(ReserveOutcome::Ended);
        }
        self.metrics.preheats.inc();
        Ok(self
            .stock
            .reserve(product, member)
            .await
            .map_err(StoreError::from)?)
    }

    /// Where the calling member's buy of `product` stands.
    pub async fn result(&self, product: ProductId, member: MemberId) -> StoreResult<ResultView> {
        if let BuyPath::SyncDb(sync_db) = &self.path {
            return sync_db.result(product, member).await;
        }
        let (status, order_id) = match self.stock.member_state(product, member).await? {
            None => (ResultStatus::None, None),
            Some(MemberState::Queued { .. }) => (ResultStatus::Queued, None),
            Some(MemberState::Ordered { order }) => (ResultStatus::Success, Some(order)),
            Some(MemberState::Failed { .. }) => (ResultStatus::Failed, None),
            // The order was cancelled and its stock returned: the member
            // holds nothing and may buy again.
            Some(MemberState::Cancelled { .. }) => (ResultStatus::None, None),
        };
        Ok(ResultView { status, order_id })
    }

    pub fn purge_expired(&self) {
        self.sold_out.purge_expired();
        self.unknown_products.purge_expired();
    }
}
