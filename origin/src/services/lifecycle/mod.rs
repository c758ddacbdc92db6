//! After an order is written: payment, cancellation at the deadline, and
//! stock coming back.
//!
//! The rules that make this exact:
//! - payment and cancellation are both conditional updates of the same row
//!   (`status = 'unpaid'`), so exactly one of them can win;
//! - the database gives a cancelled order's unit back in the cancelling
//!   transaction (so only the winning cancellation does it), and Redis gets
//!   it back through the release script, which returns a reservation's
//!   stock at most once however often it is retried;
//! - a deadline is claimed with a lease (see `poller`), so a poller that
//!   dies mid-way only delays the cancellation by the lease;
//! - a cancellation that finds its item missing from Redis (Redis lost
//!   its data) reloads the item and releases again: a reload that read the
//!   database before the cancellation may write its copy after it.

pub mod poller;

use std::sync::Arc;

use seckill_shared::api::{OrderStatus, OrderView};
use seckill_shared::keys::{DeadlineEntry, MemberState};
use seckill_shared::{MemberId, OrderId};

use super::preheat::Preheater;
use super::sold_out::SoldOut;
use crate::metrics::Metrics;
use crate::store::db::orders::{self, OrderRow};
use crate::store::db::Database;
use crate::store::redis::deadlines::PaymentDeadlines;
use crate::store::redis::stock::{Release, Released, Stock};
use crate::store::{StoreError, StoreResult};
use crate::telemetry::chain;

/// Where an order stands after its deadline was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineOutcome {
    /// Cancelled (now or earlier), and its stock is back in Redis.
    Cancelled,
    Paid,
    /// Still unpaid and not yet due (a claim came early): due at this time.
    NotDue {
        deadline_ms: i64,
    },
    /// No such order.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// No such order, or another member's.
    #[error("no such order")]
    Unknown,
    /// The deadline cancelled it before it was paid.
    #[error("the order was cancelled")]
    Cancelled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Gives reserved units back: the one way stock returns to Redis, for a
/// dead-lettered order request and for a cancelled order alike.
#[derive(Clone)]
pub struct StockReturns {
    stock: Stock,
    sold_out: Arc<SoldOut>,
    metrics: Arc<Metrics>,
}

impl StockReturns {
    pub fn new(stock: Stock, sold_out: Arc<SoldOut>, metrics: Arc<Metrics>) -> Self {
        Self {
            stock,
            sold_out,
            metrics,
        }
    }

    /// Releases the reservation (at most once ever); when stock comes back
    /// from zero, every node drops its sold-out flag.
    pub async fn give_back(&self, release: &Release<'_>) -> StoreResult<Released> {
        let released = self.stock.release(release).await?;
        if released.returned {
            self.metrics.stock_returned.inc();
        }
        if released.back_in_stock {
            self.sold_out.mark(release.product, false).await?;
        }
        Ok(released)
    }
}

#[derive(Clone)]
pub struct Lifecycle {
    db: Database,
    deadlines: PaymentDeadlines,
    returns: StockReturns,
    preheater: Preheater,
    metrics: Arc<Metrics>,
}

impl Lifecycle {
    pub fn new(
        db: Database,
        deadlines: PaymentDeadlines,
        returns: StockReturns,
        preheater: Preheater,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            db,
            deadlines,
            returns,
            preheater,
            metrics,
        }
    }

    pub(crate) fn deadlines(&self) -> &PaymentDeadlines {
        &self.deadlines
    }

    /// The member's own order; anyone else's is as unknown as a missing one.
    pub async fn own_order(
        &self,
        order: OrderId,
        member: MemberId,
    ) -> Result<OrderView, OrderError> {
        Ok(self.own_row(order, member).await?.view())
    }

    async fn own_row(&self, order: OrderId, member: MemberId) -> Result<OrderRow, OrderError> {
        orders::get(&self.db, order)
            .await?
            .filter(|row| row.member() == member)
            .ok_or(OrderError::Unknown)
    }

    /// Pays an unpaid order inside its deadline. Paying again is fine; an
    /// order the deadline cancelled is [`OrderError::Cancelled`]. A payment
    /// arriving after the deadline but before the poller got to the order
    /// cancels it here, so the answer never depends on which node polled
    /// first.
    pub async fn pay(&self, order: OrderId, member: MemberId) -> Result<(), OrderError> {
        if orders::pay(&self.db, order, member).await? {
            self.paid(order).await;
            return Ok(());
        }
        let row = self.own_row(order, member).await?;
        let status = match row.status() {
            OrderStatus::Unpaid => match self.settle_deadline(order).await? {
                DeadlineOutcome::Paid => OrderStatus::Paid,
                DeadlineOutcome::Cancelled | DeadlineOutcome::Unknown => OrderStatus::Cancelled,
                // Unpaid and not due, yet the payment did not apply: the
                // deadline fell between the two reads. One more try decides.
                DeadlineOutcome::NotDue { .. } => {
                    if !orders::pay(&self.db, order, member).await? {
                        return Err(OrderError::Cancelled);
                    }
                    self.paid(order).await;
                    OrderStatus::Paid
                }
            },
            settled => settled,
        };
        match status {
            OrderStatus::Cancelled => Err(OrderError::Cancelled),
            _ => Ok(()),
        }
    }

    /// A paid order needs no deadline; removing it now keeps the set small
    /// (if this fails, the poller removes it when it comes due).
    async fn paid(&self, order: OrderId) {
        self.metrics.orders_paid.inc();
        let Ok(Some(row)) = orders::get(&self.db, order).await else {
            return;
        };
        let entry = DeadlineEntry {
            product: row.product(),
            order: order.get(),
        };
        let deadlines = self.deadlines.clone();
        tokio::spawn(async move {
            if let Err(err) = deadlines.forget(entry).await {
                tracing::debug!(error = %chain(&err), "could not remove a paid order's deadline");
            }
        });
    }

    /// Unpaid orders past their deadline by more than `grace` (the ones the
    /// deadline poller did not settle: Redis lost their deadline).
    pub async fn overdue(
        &self,
        grace: std::time::Duration,
        limit: i64,
    ) -> StoreResult<Vec<DeadlineEntry>> {
        Ok(orders::overdue(&self.db, grace.as_millis() as i64, limit)
            .await?
            .into_iter()
            .map(|(order, product)| DeadlineEntry {
                product,
                order: order.get(),
            })
            .collect())
    }

    /// Cancels the order if it is unpaid and past its deadline (on the
    /// database's clock); whenever the order is cancelled (by this call or
    /// an earlier one that may have died half-way), makes sure its stock is
    /// back in Redis.
    pub async fn settle_deadline(&self, order: OrderId) -> StoreResult<DeadlineOutcome> {
        let cancelled_now = orders::cancel_if_due(&self.db, order).await?;
        let Some(row) = orders::get(&self.db, order).await? else {
            return Ok(DeadlineOutcome::Unknown);
        };
        match row.status() {
            OrderStatus::Cancelled => {
                if cancelled_now {
                    self.metrics.orders_cancelled.inc();
                    tracing::info!(
                        order = row.id,
                        product = row.product_id,
                        member = row.member_id,
                        "unpaid order cancelled at its deadline"
                    );
                }
                self.return_stock(&row).await?;
                Ok(DeadlineOutcome::Cancelled)
            }
            OrderStatus::Paid => Ok(DeadlineOutcome::Paid),
            OrderStatus::Unpaid => Ok(DeadlineOutcome::NotDue {
                deadline_ms: row.pay_deadline_ms,
            }),
        }
    }

    /// Gives a cancelled order's unit back in Redis (idempotent) and frees
    /// the member to buy again.
    ///
    /// If Redis lost the item, a reload may have read the database before
    /// this cancellation and write its copy (the member holding the order,
    /// the unit not back) after it: so the item is reloaded here, which
    /// either loads it from the database as it is now or finds that copy
    /// live, and the release runs again. The returned-stock set makes the
    /// second release a no-op when the loaded item already counts the unit.
    async fn return_stock(&self, row: &OrderRow) -> StoreResult<()> {
        let order = row.order_id();
        let release = Release {
            product: row.product(),
            seq: row.reservation_seq,
            member: row.member(),
            new_state: MemberState::Cancelled { order },
            supersedes: Some(MemberState::Ordered { order }),
            ack_entry: None,
            dead_letter: None,
        };
        if !self.returns.give_back(&release).await?.live {
            self.preheater.ensure_live(row.product()).await?;
            self.returns.give_back(&release).await?;
        }
        Ok(())
    }
}
