//! The delayed-cancel poller: every `SECKILL_CANCEL_POLL_MS` it claims the
//! payment deadlines that are due and settles them.
//!
//! Several origin nodes poll the same sorted set at once; the claim script
//! hands each due entry to exactly one of them for a lease
//! (`SECKILL_CANCEL_LEASE_MS`). Unlike a cron scan of the orders table, a
//! poll costs one Redis call whatever the number of orders, and a deadline
//! is acted on within one poll interval of passing.

use std::time::Duration;

use futures::StreamExt;
use seckill_shared::keys::DeadlineEntry;
use seckill_shared::OrderId;
use tokio_util::sync::CancellationToken;

use super::{DeadlineOutcome, Lifecycle};
use crate::clock::unix_ms;

#[derive(Debug, Clone, Copy)]
pub struct PollerSettings {
    pub interval: Duration,
    pub lease: Duration,
    pub batch: usize,
}

/// Orders settled at once: a mass expiry at one second is handled in
/// parallel, not one database round trip after another.
const CONCURRENCY: usize = 16;

pub async fn run(lifecycle: Lifecycle, settings: PollerSettings, shutdown: CancellationToken) {
    tracing::info!(
        interval_ms = settings.interval.as_millis() as u64,
        "deadline poller started"
    );
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Drain everything due before waiting for the next tick.
        loop {
            let claimed = match lifecycle
                .inventory
                .claim_deadlines(unix_ms(), settings.lease, settings.batch)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "claiming due deadlines failed");
                    break;
                }
            };
            let full = claimed.len() == settings.batch;
            futures::stream::iter(claimed)
                .for_each_concurrent(CONCURRENCY, |entry| settle(&lifecycle, entry))
                .await;
            if !full || shutdown.is_cancelled() {
                break;
            }
        }
    }
    tracing::info!("deadline poller stopped");
}

async fn settle(lifecycle: &Lifecycle, entry: DeadlineEntry) {
    let Ok(order) = OrderId::new(entry.order) else {
        return;
    };
    let outcome = lifecycle.settle_deadline(order, unix_ms() as i64).await;
    let result = match outcome {
        Ok(DeadlineOutcome::NotDue { deadline_ms }) => {
            lifecycle
                .inventory
                .reschedule_deadline(entry, deadline_ms)
                .await
        }
        Ok(_) => lifecycle.inventory.forget_deadline(entry).await,
        Err(err) => {
            // Left claimed: when the lease runs out it is due again.
            tracing::warn!(order = entry.order, error = %err, "settling a deadline failed; retried after the lease");
            return;
        }
    };
    if let Err(err) = result {
        tracing::warn!(order = entry.order, error = %err, "updating a settled deadline failed; it will be looked at again");
    }
}
