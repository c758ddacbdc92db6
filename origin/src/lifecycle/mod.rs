//! After an order is written: payment, cancellation at the deadline, stock
//! coming back, and every node hearing about it.
//!
//! The rules that make this exact:
//! - payment and cancellation are both conditional updates of the same row
//!   (`status = 'unpaid'`), so exactly one of them can win;
//! - the database gives a cancelled order's unit back in the cancelling
//!   transaction (so only the winning cancellation does it), and Redis gets
//!   it back through `release.lua`, which returns a reservation's stock at
//!   most once however often it is retried;
//! - a deadline is claimed with a lease (see `claim_deadlines.lua`), so a
//!   poller that dies mid-way only delays the cancellation by the lease.

pub mod poller;
pub mod sold_out_sync;

use std::sync::Arc;

use seckill_shared::api::OrderStatus;
use seckill_shared::keys::MemberState;
use seckill_shared::{MemberId, OrderId, ProductId};

use crate::db::orders::{self, OrderRow};
use crate::db::Database;
use crate::inventory::{Inventory, Release};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl From<LifecycleError> for crate::error::ApiError {
    fn from(err: LifecycleError) -> Self {
        match err {
            LifecycleError::Database(err) => err.into(),
            LifecycleError::Redis(err) => err.into(),
        }
    }
}

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

#[derive(Clone)]
pub struct Lifecycle {
    pub db: Database,
    pub inventory: Inventory,
    pub metrics: Arc<Metrics>,
}

impl Lifecycle {
    /// Cancels the order if it is unpaid and past its deadline; whenever
    /// the order is cancelled (by this call or an earlier one that may have
    /// died half-way), makes sure its stock is back in Redis.
    pub async fn settle_deadline(
        &self,
        order: OrderId,
        now_ms: i64,
    ) -> Result<DeadlineOutcome, LifecycleError> {
        let cancelled_now = orders::cancel_if_due(&self.db.pool, order, now_ms).await?;
        let Some(row) = orders::get(&self.db.pool, order).await? else {
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
    async fn return_stock(&self, row: &OrderRow) -> Result<(), LifecycleError> {
        let order = row.order_id();
        let release = Release {
            product: ProductId::new(row.product_id).expect("database ids are positive"),
            seq: row.reservation_seq,
            member: MemberId::new(row.member_id).expect("database ids are positive"),
            new_state: MemberState::Cancelled { order },
            supersedes: Some(MemberState::Ordered { order }),
            ack_entry: None,
            dead_letter: None,
        };
        if self.inventory.release(&release).await? {
            self.metrics.stock_returned.inc();
        }
        Ok(())
    }
}
