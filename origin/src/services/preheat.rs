//! Stock preheat: make the database's flash items live in Redis.
//!
//! Runs for every item that has not ended when the origin starts (retrying
//! until Redis is reachable) and whenever the sold-out subscription is
//! renewed (Redis may have restarted or failed over), when an item is
//! created, lazily when the reserve script reports an item Redis does not
//! know (Redis was restarted without its data), and when it refuses an
//! item last checked by another node (on a cluster: the shard changed
//! hands). The preheat script never overwrites live stock, nor a newer
//! description. An item loaded from the database gets back what Redis lost
//! with it: members holding orders, the reservations whose unit already
//! went back, and the payment deadlines of its unpaid orders. A live item
//! whose shard went back to older data (a replica promoted before it had
//! the last writes) gets the same from the database: the orders it never
//! counted, the returns it never saw, and reservation numbers past every
//! number the database holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seckill_shared::keys::DeadlineEntry;
use seckill_shared::ProductId;

use crate::backoff::Backoff;
use crate::clock::unix_s;
use crate::shutdown::Shutdown;
use crate::store::db::products::{self, ProductRow};
use crate::store::db::Database;
use crate::store::redis::deadlines::PaymentDeadlines;
use crate::store::redis::stock::{Preheated, Stock};
use crate::store::StoreResult;
use crate::telemetry::chain;

/// When one product's check last finished; held while a check runs.
type LastCheck = tokio::sync::Mutex<Option<Instant>>;

#[derive(Clone)]
pub struct Preheater {
    db: Database,
    stock: Stock,
    deadlines: PaymentDeadlines,
    /// One check at a time per product, so the buyers that all find an
    /// item unchecked wait for one check instead of each running one.
    checks: Arc<Mutex<HashMap<ProductId, Arc<LastCheck>>>>,
}

impl Preheater {
    pub fn new(db: Database, stock: Stock, deadlines: PaymentDeadlines) -> Self {
        Self {
            db,
            stock,
            deadlines,
            checks: Arc::default(),
        }
    }

    /// Loads one database row into Redis unless it is already live; a live
    /// item is checked against the database and rebuilt where Redis went
    /// back (see `preheat.lua`). Reservation numbers of a loaded or rebuilt
    /// item start far above the highest the database has seen: reservations
    /// Redis handed out before it lost them may still be in a consumer's
    /// hands, on their way to the database with numbers above that.
    pub async fn load(&self, row: &ProductRow) -> StoreResult<bool> {
        Ok(self.preheat(row).await?.loaded)
    }

    async fn preheat(&self, row: &ProductRow) -> StoreResult<Preheated> {
        let product = row.product_id();
        let live = products::live_orders(&self.db, product).await?;
        let preheated = self.stock.preheat(row, &live).await?;
        // The deadlines sets span products, so this is a call of its own
        // (one already scheduled stays as it is). A live item's too: its
        // registry group's shard may be the one that went back. One that
        // is lost is found by the backstop sweep.
        let deadlines: Vec<(i64, DeadlineEntry)> = live
            .unpaid_deadlines
            .iter()
            .map(|&(order, deadline_ms)| (deadline_ms, DeadlineEntry { product, order }))
            .collect();
        self.deadlines.schedule(&deadlines).await?;
        if preheated.loaded {
            tracing::info!(
                product = row.id,
                stock = row.stock_available,
                unpaid = deadlines.len(),
                "stock preheated into redis"
            );
        } else if preheated.rebuilt() {
            tracing::warn!(
                product = row.id,
                orders_counted = preheated.counted,
                reservations_settled = preheated.settled,
                numbers_moved = preheated.seq_moved,
                "redis had gone back behind the database (a stale replica promoted?): item rebuilt from the database"
            );
        }
        Ok(preheated)
    }

    /// Checks a live item against the database (and rebuilds what Redis
    /// lost), for the reserve script that refused to sell it because a
    /// node other than the one that last checked it holds it now. Buyers
    /// that find it unchecked at the same moment share one check.
    pub async fn check(&self, product: ProductId) -> StoreResult<()> {
        let asked = Instant::now();
        let check = self
            .checks
            .lock()
            .expect("the checks map is never poisoned")
            .entry(product)
            .or_default()
            .clone();
        let mut checked = check.lock().await;
        if checked.is_some_and(|at| at >= asked) {
            return Ok(()); // checked by another buyer while this one waited
        }
        self.ensure_live(product).await?;
        *checked = Some(Instant::now());
        Ok(())
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
