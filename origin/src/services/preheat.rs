//! Stock preheat: make the database's flash items live in Redis.
//!
//! Runs for every item that has not ended when the origin starts (retrying
//! until Redis is reachable), when an item is created, and lazily when the
//! reserve script reports an item Redis does not know (Redis was restarted
//! without its data). The preheat script never overwrites live stock, nor a
//! newer description. An item loaded from the database gets back what
//! Redis lost with it: members holding orders, the reservations whose unit
//! already went back, and the payment deadlines of its unpaid orders.

use std::time::Duration;

use seckill_shared::keys::DeadlineEntry;
use seckill_shared::ProductId;

use crate::backoff::Backoff;
use crate::clock::unix_s;
use crate::shutdown::Shutdown;
use crate::store::db::products::{self, ProductRow};
use crate::store::db::Database;
use crate::store::redis::deadlines::PaymentDeadlines;
use crate::store::redis::stock::Stock;
use crate::store::StoreResult;
use crate::telemetry::chain;

/// How far above the database's highest reservation number a (re)loaded
/// item's numbers start: more than Redis could have handed out and not yet
/// written (numbers stay exact in the scripts up to 2^53, millions of
/// reloads).
const RELOAD_SEQ_GAP: i64 = 1_000_000_000;

#[derive(Clone)]
pub struct Preheater {
    db: Database,
    stock: Stock,
    deadlines: PaymentDeadlines,
}

impl Preheater {
    pub fn new(db: Database, stock: Stock, deadlines: PaymentDeadlines) -> Self {
        Self {
            db,
            stock,
            deadlines,
        }
    }

    /// Loads one database row into Redis unless it is already live.
    ///
    /// Reservation numbers start far above the highest the database has
    /// seen: if Redis lost its data, reservations it had handed out may
    /// still be in a consumer's hands, on their way to the database with
    /// numbers above that, and a number handed out twice would make the
    /// second buyer's reservation fail as "already another member's order".
    pub async fn load(&self, row: &ProductRow) -> StoreResult<bool> {
        let product = row.product_id();
        let mut live = products::live_orders(&self.db, product).await?;
        live.max_seq = live.max_seq.saturating_add(RELOAD_SEQ_GAP);
        let loaded = self.stock.preheat(row, &live).await?;
        if loaded {
            // The deadlines set spans products, so it is a call of its own;
            // one that is lost is found by the backstop sweep.
            let deadlines: Vec<(i64, DeadlineEntry)> = live
                .unpaid_deadlines
                .iter()
                .map(|&(order, deadline_ms)| (deadline_ms, DeadlineEntry { product, order }))
                .collect();
            self.deadlines.schedule(&deadlines).await?;
            tracing::info!(
                product = row.id,
                stock = row.stock_available,
                unpaid = deadlines.len(),
                "stock preheated into redis"
            );
        }
        Ok(loaded)
    }

    /// Brings a live item's description in line with its row after an edit,
    /// or loads it in full if Redis does not have it.
    pub async fn refresh(&self, row: &ProductRow) -> StoreResult<()> {
        if !self.stock.describe(row).await? {
            self.load(row).await?;
        }
        Ok(())
    }

    /// Makes one product live if the database has it and its sale has not
    /// ended. Returns the database row (loaded or not), or `None` for an id
    /// the database does not know.
    pub async fn ensure_live(&self, product: ProductId) -> StoreResult<Option<ProductRow>> {
        let Some(row) = products::get(&self.db, product).await? else {
            return Ok(None);
        };
        if row.ends_at > unix_s() as i64 {
            self.load(&row).await?;
        }
        Ok(Some(row))
    }

    /// Preheats every item that has not ended; returns how many were loaded.
    pub async fn load_all(&self) -> StoreResult<usize> {
        let rows = products::not_ended(&self.db, unix_s() as i64).await?;
        let mut loaded = 0;
        for row in &rows {
            if self.load(row).await? {
                loaded += 1;
            }
        }
        tracing::info!(items = rows.len(), loaded, "stock preheat finished");
        Ok(loaded)
    }

    /// Start-up preheat, retried with backoff until it succeeds or shutdown.
    pub async fn load_all_with_retry(&self, shutdown: Shutdown) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let Err(err) = self.load_all().await else {
                return;
            };
            let delay = backoff.next_delay();
            tracing::warn!(error = %chain(&err), retry_in_ms = delay.as_millis() as u64, "stock preheat failed");
            if !shutdown.sleep(delay).await {
                return;
            }
        }
    }
}
