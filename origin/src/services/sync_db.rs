//! The naive synchronous design, kept as a measured baseline
//! (`SECKILL_MODE=sync-db`).
//!
//! Every buy is one database transaction: a conditional stock decrement and
//! an order insert, with no Redis and no queue. It is correct (the
//! conditional update cannot oversell, the unique index refuses a second
//! live order) but every buyer queues on the product row's lock, which is
//! exactly what the reserve design exists to avoid. `seckill-bench` drives
//! both modes with the same load so the difference is measured, not claimed.

use std::time::Duration;

use seckill_shared::api::{ResultStatus, ResultView};
use seckill_shared::{MemberId, ProductId};

use super::buy::{BuyError, Refusal};
use crate::clock::unix_ms;
use crate::store::db::orders::{self, SyncBuy};
use crate::store::db::{products, Database};
use crate::store::StoreResult;

pub struct SyncDb {
    db: Database,
    pay_timeout: Duration,
}

impl SyncDb {
    pub fn new(db: Database, pay_timeout: Duration) -> Self {
        Self { db, pay_timeout }
    }

    pub async fn buy(&self, product: ProductId, member: MemberId) -> Result<(), BuyError> {
        let now_ms = unix_ms() as i64;
        let deadline_ms = now_ms + self.pay_timeout.as_millis() as i64;
        match orders::buy_synchronously(&self.db, product, member, now_ms, deadline_ms).await? {
            SyncBuy::Bought => Ok(()),
            SyncBuy::AlreadyOrdered => Err(Refusal::AlreadyOrdered.into()),
            SyncBuy::NoUnit => Err(self.why_refused(product, now_ms / 1_000).await?.into()),
        }
    }

    async fn why_refused(&self, product: ProductId, now_s: i64) -> StoreResult<Refusal> {
        Ok(match products::get(&self.db, product).await? {
            None => Refusal::UnknownProduct,
            Some(row) if now_s < row.starts_at => Refusal::NotStarted,
            Some(row) if now_s >= row.ends_at => Refusal::Ended,
            Some(_) => Refusal::SoldOut,
        })
    }

    /// The result query in this mode: the order is written by the buy itself.
    pub async fn result(&self, product: ProductId, member: MemberId) -> StoreResult<ResultView> {
        let order = orders::live_for_member(&self.db, product, member).await?;
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
}
