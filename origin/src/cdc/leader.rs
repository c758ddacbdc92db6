//! The CDC leader: relays captured changes to the stream and applies them,
//! in order, one origin at a time.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::Value;
use seckill_shared::keys::REFRESH_GROUP;
use sqlx::postgres::PgListener;

use super::ChangeEvent;
use crate::clock::unix_ms;
use crate::db::changes::{self, StockMove};
use crate::db::{products, Backend};
use crate::inventory::StockAdjustment;
use crate::pipeline::queue;
use crate::state::AppState;

/// How long leadership lasts without renewal; a dead leader is replaced
/// after at most this long.
const LEASE: Duration = Duration::from_secs(5);
/// Change rows relayed, or events applied, per round.
const BATCH: usize = 100;
/// PostgreSQL channel the capture trigger notifies.
const CHANNEL: &str = "seckill_product_changes";

pub async fn run(state: AppState, poll: Duration) {
    let holder = {
        use rand::Rng;
        format!("{:016x}", rand::rng().random::<u64>())
    };
    let consumer = format!("cdc-{holder}");
    let mut conn = match state.inventory.dedicated_connection() {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(error = %err, "change relay cannot start");
            return;
        }
    };
    let mut listener: Option<PgListener> = None;
    let mut leading = false;
    while !state.shutdown.is_cancelled() {
        let lease_key = state.inventory.keys().relay_lock();
        match state.inventory.hold_lease(&lease_key, &holder, LEASE).await {
            Ok(true) => {
                if !leading {
                    tracing::info!("this origin now relays and applies catalogue changes");
                    leading = true;
                }
            }
            Ok(false) => {
                leading = false;
                pause(&state, LEASE / 2).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot reach redis for the relay lease");
                pause(&state, Duration::from_secs(1)).await;
                continue;
            }
        }

        let relayed = match relay_once(&state, &mut conn).await {
            Ok(relayed) => relayed,
            Err(err) => {
                tracing::warn!(error = %err, "relaying catalogue changes failed; will retry");
                pause(&state, Duration::from_secs(1)).await;
                continue;
            }
        };
        let applied = match refresh_once(&state, &mut conn, &consumer).await {
            Ok(applied) => applied,
            Err(err) => {
                tracing::warn!(error = %err, "applying catalogue changes failed; will retry");
                pause(&state, Duration::from_secs(1)).await;
                continue;
            }
        };
        if relayed == 0 && applied == 0 {
            wait_for_changes(&state, &mut listener, poll).await;
        }
    }
}

async fn pause(state: &AppState, delay: Duration) {
    tokio::select! {
        _ = state.shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// Sleeps until the next poll, or (PostgreSQL) until the capture trigger
/// notifies. A lost notification only costs one poll interval.
async fn wait_for_changes(state: &AppState, listener: &mut Option<PgListener>, poll: Duration) {
    if state.db.backend != Backend::Postgres {
        return pause(state, poll).await;
    }
    if listener.is_none() {
        match PgListener::connect(&state.config.database_url).await {
            Ok(mut new) => match new.listen(CHANNEL).await {
                Ok(()) => *listener = Some(new),
                Err(err) => tracing::warn!(error = %err, "LISTEN failed; polling only"),
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot open a LISTEN connection; polling only")
            }
        }
    }
    let Some(active) = listener.as_mut() else {
        return pause(state, poll).await;
    };
    tokio::select! {
        _ = state.shutdown.cancelled() => {}
        _ = tokio::time::sleep(poll) => {}
        received = active.recv() => {
            if let Err(err) = received {
                tracing::warn!(error = %err, "LISTEN connection lost; reconnecting");
                *listener = None;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CdcError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("preheat: {0}")]
    Preheat(#[from] crate::preheat::PreheatError),
}

/// Publishes unrelayed change rows in order, then marks them. A crash in
/// between publishes them again: the refresh is idempotent.
async fn relay_once(state: &AppState, conn: &mut ConnectionManager) -> Result<usize, CdcError> {
    let rows = changes::unrelayed(&state.db.pool, BATCH as i64).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let stream = state.inventory.keys().product_changes();
    let mut pipe = redis::pipe();
    for row in &rows {
        let Some(event) = ChangeEvent::from_row(row) else {
            tracing::warn!(change = row.id, "unreadable change row skipped");
            continue;
        };
        pipe.cmd("XADD")
            .arg(&stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*");
        for (name, value) in event.fields() {
            pipe.arg(name).arg(value);
        }
    }
    pipe.query_async::<Value>(conn).await?;
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    changes::mark_relayed(&state.db.pool, &ids, unix_ms() as i64).await?;
    state.metrics.changes_relayed.inc_by(ids.len() as u64);
    tracing::debug!(changes = ids.len(), "catalogue changes relayed");
    Ok(ids.len())
}

/// Applies events through the refresh group: first any a previous leader
/// left pending, then new ones. Each is acknowledged once applied.
async fn refresh_once(
    state: &AppState,
    conn: &mut ConnectionManager,
    consumer: &str,
) -> Result<usize, CdcError> {
    let stream = state.inventory.keys().product_changes();
    queue::ensure_group(conn, &stream, REFRESH_GROUP).await?;
    let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(&stream)
        .arg(REFRESH_GROUP)
        .arg(consumer)
        .arg(LEASE.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(BATCH)
        .query_async(conn)
        .await?;
    let mut entries = claimed.claimed;
    if entries.is_empty() {
        let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(REFRESH_GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(conn)
            .await?;
        entries = read
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
    }
    let count = entries.len();
    for entry in entries {
        match ChangeEvent::parse(&entry.map) {
            Some(event) => apply(state, &event).await?,
            None => {
                tracing::warn!(entry = %entry.id, "unreadable change event acknowledged and skipped")
            }
        }
        redis::cmd("XACK")
            .arg(&stream)
            .arg(REFRESH_GROUP)
            .arg(&entry.id)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(count)
}

/// Brings Redis in line with one change. Safe to run any number of times.
async fn apply(state: &AppState, event: &ChangeEvent) -> Result<(), CdcError> {
    let product = event.product;
    let row = products::get(&state.db.pool, product).await?;
    match (&row, event.op) {
        (None, _) => {
            // Deleted (now or since): nothing of it may be sold.
            state.inventory.unload(product).await?;
            state.inventory.mark_sold_out(product, false).await?;
            tracing::info!(product = product.get(), "deleted item removed from redis");
        }
        (Some(row), _) => {
            // The description as the database has it now (preheat keeps
            // live stock and refreshes window, price and total).
            state.preheater.refresh(row).await?;
        }
    }
    if let (Some(delta), Some(_)) = (event.stock_delta(), &row) {
        apply_stock_edit(state, event, delta).await?;
    }
    state.catalog.invalidate(product);
    state.metrics.changes_applied.inc();
    tracing::info!(
        change = event.change,
        product = product.get(),
        op = event.op.as_str(),
        "catalogue change applied"
    );
    Ok(())
}

/// Adds or removes units, once, in Redis then in the database.
async fn apply_stock_edit(
    state: &AppState,
    event: &ChangeEvent,
    delta: i64,
) -> Result<(), CdcError> {
    let product = event.product;
    let moved = match state
        .inventory
        .adjust_stock(product, event.change, delta)
        .await?
    {
        StockAdjustment::Applied { units, stock } => {
            if units > 0 && stock == units {
                state.inventory.mark_sold_out(product, false).await?;
            } else if units < 0 && stock == 0 {
                state.inventory.mark_sold_out(product, true).await?;
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
    changes::move_database_stock(&state.db.pool, event.change, product.get(), moved).await?;
    Ok(())
}
