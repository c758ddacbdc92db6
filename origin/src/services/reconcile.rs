//! Reconciliation: does Redis stock + queued reservations equal the
//! database's `stock_available` for every live item? (Invariant 5.)
//!
//! Runs every `SECKILL_RECONCILE_INTERVAL_S` on every origin and on demand
//! (`POST /admin/reconcile`). Drift is reported in the logs and in
//! `seckill_stock_drift{product}`. It is repaired only when the item is
//! quiet and the fix is unambiguous:
//! - Redis' figures are read before and after the database's, and must not
//!   have moved in between (no buy, release, delivery);
//! - nothing is pending or undelivered in the item's order stream (no
//!   reservation is on its way to the database);
//! - every cancelled order's unit is already back in Redis (no
//!   cancellation is half done).
//!
//! The repair script checks the same again, atomically, before it sets
//! Redis' stock to the database's figure. A busy item is reported as busy
//! and looked at again next time.

use std::sync::Arc;
use std::time::Duration;

use seckill_shared::api::ReconcileItem;
use seckill_shared::ProductId;
use tracing::Instrument;

use super::catalog::Catalog;
use super::sold_out::SoldOut;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::db::{orders, products, Database};
use crate::store::redis::order_streams::{OrderStreams, QueueProgress};
use crate::store::redis::stock::{ItemLevels, Stock};
use crate::store::StoreResult;
use crate::telemetry::chain;

pub struct Reconciler {
    pub db: Database,
    pub stock: Stock,
    pub streams: OrderStreams,
    pub sold_out: Arc<SoldOut>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
}

impl Reconciler {
    pub async fn run_periodically(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await; // not at start-up, when preheat is still running
        while shutdown.tick(&mut tick).await {
            if let Err(err) = self.run_once().await {
                tracing::warn!(error = %chain(&err), "reconciliation could not run");
            }
        }
    }

    /// Checks (and where safe, repairs) every live item.
    pub async fn run_once(&self) -> StoreResult<Vec<ReconcileItem>> {
        self.pass()
            .instrument(tracing::info_span!("reconcile"))
            .await
    }

    async fn pass(&self) -> StoreResult<Vec<ReconcileItem>> {
        let mut report = Vec::new();
        for product in self.stock.live_products().await? {
            let item = self.reconcile_item(product).await?;
            if let Some(drift) = item.drift {
                self.metrics
                    .stock_drift
                    .with_label_values(&[product.to_string().as_str()])
                    .set(drift);
                if drift != 0 {
                    tracing::warn!(product = product.get(), drift, redis_stock = ?item.redis_stock,
                        database_stock = item.database_stock, repaired = item.repaired, "stock drift between redis and the database");
                }
            }
            report.push(item);
        }
        // The sold-out registry must agree with stock too.
        self.sold_out.verified().await?;
        Ok(report)
    }

    async fn reconcile_item(&self, product: ProductId) -> StoreResult<ReconcileItem> {
        let before = (
            self.stock.levels(product).await?,
            self.streams.progress(product).await?,
        );
        let Some(record) = products::stock_on_record(&self.db, product).await? else {
            return self.clear_deleted(product, before).await;
        };
        let max_seq = products::max_reservation_seq(&self.db, product).await?;
        let after = (
            self.stock.levels(product).await?,
            self.streams.progress(product).await?,
        );
        let (levels, queue) = &after;

        let queued = queue.queued();
        let mut item = ReconcileItem {
            product_id: product,
            redis_stock: levels.stock,
            queued,
            database_stock: record.stock_available,
            drift: None,
            repaired: false,
            note: String::new(),
        };
        let Some(stock) = levels.stock else {
            item.note = "not live in redis".into();
            return Ok(item);
        };
        if before != after || queued > 0 {
            item.note = "busy: orders are moving; looked at again next time".into();
            return Ok(item);
        }
        if record.change_in_flight {
            // A stock edit moves Redis, then the database: in between, the
            // figures disagree by the edit, and "repairing" would undo it.
            item.note = "busy: a catalogue change is being applied".into();
            return Ok(item);
        }
        if !self.cancellations_settled(product).await? {
            item.note = "busy: a cancellation is half done".into();
            return Ok(item);
        }
        let drift = stock - record.stock_available;
        item.drift = Some(drift);
        if drift == 0 && levels.seq >= max_seq {
            item.note = "in step".into();
            return Ok(item);
        }
        item.repaired = self
            .stock
            .repair_stock(product, *levels, queue, record.stock_available, max_seq)
            .await?;
        if item.repaired {
            self.metrics.reconcile_repairs.inc();
            self.sold_out
                .mark(product, record.stock_available == 0)
                .await?;
            self.catalog.invalidate(product);
            item.note = format!(
                "repaired: redis stock set from {stock} to {}",
                record.stock_available
            );
        } else {
            item.note =
                "drift seen but orders moved before the repair; looked at again next time".into();
        }
        Ok(item)
    }

    /// A product deleted from the database: once it no longer sells and its
    /// queued reservations have all been dead-lettered, what is left of it
    /// in Redis goes.
    async fn clear_deleted(
        &self,
        product: ProductId,
        seen: (ItemLevels, QueueProgress),
    ) -> StoreResult<ReconcileItem> {
        let (levels, queue) = seen;
        let mut item = ReconcileItem {
            product_id: product,
            redis_stock: levels.stock,
            queued: queue.queued(),
            database_stock: 0,
            drift: None,
            repaired: false,
            note: String::new(),
        };
        if levels.stock.is_some() || item.queued > 0 {
            item.note =
                "deleted from the database; its queued reservations are being failed".into();
            return Ok(item);
        }
        self.stock.unload(product).await?;
        self.catalog.invalidate(product);
        item.repaired = true;
        item.note = "deleted from the database: removed from redis".into();
        Ok(item)
    }

    /// True when every cancelled order of the product has its unit back in Redis.
    async fn cancellations_settled(&self, product: ProductId) -> StoreResult<bool> {
        let seqs = orders::cancelled_seqs(&self.db, product).await?;
        for chunk in seqs.chunks(1_000) {
            if self.stock.released(product, chunk).await?.contains(&false) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
