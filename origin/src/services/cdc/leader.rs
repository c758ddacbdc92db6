//! The CDC leader: relays captured changes to the stream and applies them,
//! in order, one origin at a time.

use std::sync::Arc;
use std::time::Duration;

use seckill_shared::records::ChangeRecord;
use sqlx::postgres::PgListener;
use tracing::Instrument;

use crate::clock::unix_ms;
use crate::metrics::Metrics;
use crate::services::catalog::Catalog;
use crate::services::preheat::Preheater;
use crate::services::sold_out::SoldOut;
use crate::shutdown::Shutdown;
use crate::store::db::changes::{self, StockMove};
use crate::store::db::{products, Backend, Database};
use crate::store::redis::leases::{LeaseJob, Leases};
use crate::store::redis::product_changes::{ChangeRefresher, ChangeStream};
use crate::store::redis::stock::{Stock, StockAdjustment};
use crate::store::StoreResult;
use crate::telemetry::chain;

/// How long leadership lasts without renewal; a dead leader is replaced
/// after at most this long.
const LEASE: Duration = Duration::from_secs(5);
/// Change rows relayed, or events applied, per round.
const BATCH: usize = 100;
/// PostgreSQL channel the capture trigger notifies.
const CHANNEL: &str = "seckill_product_changes";
/// How long to wait after a failed round.
const RETRY: Duration = Duration::from_secs(1);

/// What the leader reads and writes.
pub struct CdcContext {
    pub db: Database,
    pub leases: Leases,
    pub changes: ChangeStream,
    pub stock: Stock,
    pub preheater: Preheater,
    pub sold_out: Arc<SoldOut>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
}

pub async fn run(ctx: CdcContext, poll: Duration) {
    let holder = {
        use rand::Rng;
        format!("{:016x}", rand::rng().random::<u64>())
    };
    let mut refresher = match ctx.changes.refresher(format!("cdc-{holder}")) {
        Ok(refresher) => refresher,
        Err(err) => {
            tracing::error!(error = %chain(&err), "change relay cannot start");
            return;
        }
    };
    let shutdown = ctx.shutdown.clone();
    let mut listener: Option<PgListener> = None;
    let mut leading = false;
    while !shutdown.is_triggered() {
        match ctx.leases.hold(LeaseJob::ChangeRelay, &holder, LEASE).await {
            Ok(true) => {
                if !leading {
                    tracing::info!("this origin now relays and applies catalogue changes");
                    leading = true;
                }
            }
            Ok(false) => {
                leading = false;
                shutdown.sleep(LEASE / 2).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %chain(&err), "cannot reach redis for the relay lease");
                shutdown.sleep(RETRY).await;
                continue;
            }
        }

        let relayed = match relay_once(&ctx)
            .instrument(tracing::info_span!("cdc_relay"))
            .await
        {
            Ok(relayed) => relayed,
            Err(err) => {
                tracing::warn!(error = %chain(&err), "relaying catalogue changes failed; will retry");
                ctx.metrics
                    .change_failures
                    .with_label_values(&["relay"])
                    .inc();
                shutdown.sleep(RETRY).await;
                continue;
            }
        };
        let applied = match refresh_once(&ctx, &mut refresher).await {
            Ok(applied) => applied,
            Err(err) => {
                tracing::warn!(error = %chain(&err), "applying catalogue changes failed; will retry");
                ctx.metrics
                    .change_failures
                    .with_label_values(&["apply"])
                    .inc();
                shutdown.sleep(RETRY).await;
                continue;
            }
        };
        if relayed == 0 && applied == 0 {
            wait_for_changes(&ctx, &mut listener, poll).await;
        }
    }
}

/// Sleeps until the next poll, or (PostgreSQL) until the capture trigger
/// notifies. A lost notification only costs one poll interval.
async fn wait_for_changes(ctx: &CdcContext, listener: &mut Option<PgListener>, poll: Duration) {
    if ctx.db.backend() != Backend::Postgres {
        ctx.shutdown.sleep(poll).await;
        return;
    }
    if listener.is_none() {
        match PgListener::connect(ctx.db.url()).await {
            Ok(mut new) => match new.listen(CHANNEL).await {
                Ok(()) => *listener = Some(new),
                Err(err) => tracing::warn!(error = %chain(&err), "LISTEN failed; polling only"),
            },
            Err(err) => {
                tracing::warn!(error = %chain(&err), "cannot open a LISTEN connection; polling only")
            }
        }
    }
    let Some(active) = listener.as_mut() else {
        ctx.shutdown.sleep(poll).await;
        return;
    };
    tokio::select! {
        _ = ctx.shutdown.triggered() => {}
        _ = tokio::time::sleep(poll) => {}
        received = active.recv() => {
            if let Err(err) = received {
                tracing::warn!(error = %chain(&err), "LISTEN connection lost; reconnecting");
                *listener = None;
            }
        }
    }
}

/// How long a relayed stock edit may stay unapplied before it is relayed
/// again (applying one takes well under a second; Redis may have lost it).
const RELAY_AGAIN_AFTER_MS: i64 = 15_000;

/// Publishes unrelayed change rows in order, then marks them. A crash in
/// between publishes them again: the refresh is idempotent.
async fn relay_once(ctx: &CdcContext) -> StoreResult<usize> {
    let stale_before_ms = unix_ms() as i64 - RELAY_AGAIN_AFTER_MS;
    let rows = changes::unrelayed(&ctx.db, BATCH as i64, stale_before_ms).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut records = Vec::with_capacity(rows.len());
    for (id, record) in &rows {
        match record {
            Some(record) => records.push(*record),
            None => tracing::warn!(change = id, "unreadable change row skipped"),
        }
    }
    ctx.changes.publish(&records).await?;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    changes::mark_relayed(&ctx.db, &ids, unix_ms() as i64).await?;
    ctx.metrics.changes_relayed.inc_by(ids.len() as u64);
    tracing::debug!(changes = ids.len(), "catalogue changes relayed");
    Ok(ids.len())
}

/// Applies events through the refresh group: first any a previous leader
/// left pending, then new ones. Each is acknowledged once applied.
async fn refresh_once(ctx: &CdcContext, refresher: &mut ChangeRefresher) -> StoreResult<usize> {
    let entries = refresher.next_batch(LEASE, BATCH).await?;
    let count = entries.len();
    for (entry, record) in entries {
        match record {
            Ok(record) => {
                let span = tracing::info_span!(
                    "cdc_apply",
                    change = record.change,
                    product = record.product.get()
                );
                apply(ctx, &record).instrument(span).await?
            }
            Err(reason) => {
                tracing::warn!(entry, %reason, "unreadable change event acknowledged and skipped")
            }
        }
        refresher.ack(&entry).await?;
    }
    Ok(count)
}

/// Brings Redis in line with one change. Safe to run any number of times.
async fn apply(ctx: &CdcContext, record: &ChangeRecord) -> StoreResult<()> {
    let product = record.product;
    let row = products::get(&ctx.db, product).await?;
    match &row {
        None => {
            // Deleted (now or since): nothing of it may be sold, and every
            // reservation still queued for it must end as an explicit
            // failure, so its stream and its members' states stay until
            // the consumers have dead-lettered them (reconciliation clears
            // the rest once the stream is quiet).
            ctx.stock.retire(product).await?;
            ctx.sold_out.mark(product, false).await?;
            tracing::info!(product = product.get(), "deleted item retired from redis");
        }
        Some(row) => {
            // The description as the database has it now (preheat keeps
            // live stock and refreshes window, price and total).
            ctx.preheater.refresh(row).await?;
        }
    }
    if let (Some(delta), Some(_)) = (record.stock_delta(), &row) {
        apply_stock_edit(ctx, record, delta).await?;
    }
    ctx.catalog.invalidate(product);
    ctx.metrics.changes_applied.inc();
    tracing::info!(
        change = record.change,
        product = product.get(),
        op = record.op.as_str(),
        "catalogue change applied"
    );
    Ok(())
}

/// Adds or removes units, once, in Redis then in the database.
async fn apply_stock_edit(ctx: &CdcContext, record: &ChangeRecord, delta: i64) -> StoreResult<()> {
    let product = record.product;
    let moved = match ctx
        .stock
        .adjust_stock(product, record.change, delta)
        .await?
    {
        StockAdjustment::Applied { units, stock } => {
            if units > 0 && stock == units {
                ctx.sold_out.mark(product, false).await?;
            } else if units < 0 && stock == 0 {
                ctx.sold_out.mark(product, true).await?;
            }
            if units != delta {
                tracing::warn!(
                    product = product.get(),
                    asked = delta,
                    removed = units,
                    "stock edit removed only the unsold units; the rest are reserved"
                );
            }
            StockMove::AsInRedis(units)
        }
        StockAdjustment::AlreadyApplied { units } => StockMove::AsInRedis(units),
        StockAdjustment::NotLive => StockMove::DatabaseOnly(delta),
    };
    changes::move_database_stock(&ctx.db, record.change, product, moved).await?;
    Ok(())
}
