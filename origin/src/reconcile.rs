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

use std::time::Duration;

use seckill_shared::api::ReconcileItem;
use seckill_shared::ProductId;
use sqlx::AnyPool;

use crate::db::products;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn run_periodically(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await; // not at start-up, when preheat is still running
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = run_once(&state).await {
            tracing::warn!(error = ?err.message, "reconciliation could not run");
        }
    }
}

/// Checks (and where safe, repairs) every live item.
pub async fn run_once(state: &AppState) -> Result<Vec<ReconcileItem>, ApiError> {
    let mut report = Vec::new();
    for product in state.inventory.live_products().await? {
        let item = reconcile_item(state, product).await?;
        if let Some(drift) = item.drift {
            state
                .metrics
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
    state.inventory.verified_sold_out().await?;
    Ok(report)
}

async fn reconcile_item(state: &AppState, product: ProductId) -> Result<ReconcileItem, ApiError> {
    let before = state.inventory.item_snapshot(product).await?;
    let Some(row) = products::get(&state.db.pool, product).await? else {
        return Ok(ReconcileItem {
            product_id: product,
            redis_stock: before.stock,
            queued: 0,
            database_stock: 0,
            drift: None,
            repaired: false,
            note: "live in redis but not in the database".into(),
        });
    };
    let (max_seq,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(MAX(reservation_seq), 0) FROM orders WHERE product_id = $1",
    )
    .bind(product.get())
    .fetch_one(&state.db.pool)
    .await?;
    let after = state.inventory.item_snapshot(product).await?;

    let undelivered = u64::from(after.last_delivered != after.last_generated);
    let queued = after.pending + undelivered;
    let mut item = ReconcileItem {
        product_id: product,
        redis_stock: after.stock,
        queued,
        database_stock: row.stock_available,
        drift: None,
        repaired: false,
        note: String::new(),
    };
    let Some(stock) = after.stock else {
        item.note = "not live in redis".into();
        return Ok(item);
    };
    if before != after || queued > 0 {
        item.note = "busy: orders are moving; looked at again next time".into();
        return Ok(item);
    }
    if !cancellations_settled(state, &state.db.pool, product).await? {
        item.note = "busy: a cancellation is half done".into();
        return Ok(item);
    }
    let drift = stock - row.stock_available;
    item.drift = Some(drift);
    if drift == 0 && after.seq >= max_seq {
        item.note = "in step".into();
        return Ok(item);
    }
    item.repaired = state
        .inventory
        .repair_stock(product, &after, row.stock_available, max_seq)
        .await?;
    if item.repaired {
        state.metrics.reconcile_repairs.inc();
        state
            .inventory
            .mark_sold_out(product, row.stock_available == 0)
            .await?;
        state.catalog.invalidate(product);
        item.note = format!(
            "repaired: redis stock set from {stock} to {}",
            row.stock_available
        );
    } else {
        item.note =
            "drift seen but orders moved before the repair; looked at again next time".into();
    }
    Ok(item)
}

/// True when every cancelled order of the product has its unit back in Redis.
async fn cancellations_settled(
    state: &AppState,
    pool: &AnyPool,
    product: ProductId,
) -> Result<bool, ApiError> {
    let seqs: Vec<(i64,)> = sqlx::query_as(
        "SELECT reservation_seq FROM orders WHERE product_id = $1 AND status = 'cancelled'",
    )
    .bind(product.get())
    .fetch_all(pool)
    .await?;
    let seqs: Vec<i64> = seqs.into_iter().map(|(seq,)| seq).collect();
    for chunk in seqs.chunks(1_000) {
        if state
            .inventory
            .released(product, chunk)
            .await?
            .contains(&false)
        {
            return Ok(false);
        }
    }
    Ok(true)
}
