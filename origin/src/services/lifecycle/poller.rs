//! The delayed-cancel poller: every `SECKILL_CANCEL_POLL_MS` it claims the
//! payment deadlines that are due and settles them. Behind it, a slow
//! backstop sweep (`SECKILL_SWEEP_INTERVAL_S`) settles from the database
//! the unpaid orders past their deadline that Redis does not know about
//! (their deadline was lost with Redis' data).
//!
//! Several origin nodes poll the same deadlines at once; the claim script
//! hands each due entry to exactly one of them for a lease
//! (`SECKILL_CANCEL_LEASE_MS`). Unlike a cron scan of the orders table, a
//! poll costs one Redis call whatever the number of orders, and a deadline
//! is acted on within one poll interval of passing.

use std::time::Duration;

use futures::StreamExt;
use seckill_shared::keys::DeadlineEntry;
use seckill_shared::OrderId;
use tracing::Instrument;

use super::{DeadlineOutcome, Lifecycle};
use crate::shutdown::Shutdown;
use crate::telemetry::chain;

#[derive(Debug, Clone, Copy)]
pub struct PollerSettings {
    pub interval: Duration,
    pub lease: Duration,
    pub batch: usize,
    /// How often the backstop sweep runs (`None`: never).
    pub sweep: Option<Duration>,
}

/// Orders settled at once: a mass expiry at one second is handled in
/// parallel, not one database round trip after another.
const CONCURRENCY: usize = 16;

pub async fn run(lifecycle: Lifecycle, settings: PollerSettings, shutdown: Shutdown) {
    tracing::info!(
        interval_ms = settings.interval.as_millis() as u64,
        "deadline poller started"
    );
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while shutdown.tick(&mut tick).await {
        // Drain everything due before waiting for the next tick.
        loop {
            let claimed = match lifecycle
                .deadlines()
                .claim(settings.lease, settings.batch)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %chain(&err), "claiming due deadlines failed");
                    break;
                }
            };
            if claimed.entries.is_empty() {
                break;
            }
            let full = claimed.more;
            let span = tracing::info_span!("deadline_claim", claimed = claimed.entries.len());
            futures::stream::iter(claimed.entries)
                .for_each_concurrent(CONCURRENCY, |entry| settle(&lifecycle, entry))
                .instrument(span)
                .await;
            if !full || shutdown.is_triggered() {
                break;
            }
        }
    }
    tracing::info!("deadline poller stopped");
}

/// Orders the backstop sweep settles per round.
const SWEEP_BATCH: i64 = 500;

/// Settles, from the database, unpaid orders past their deadline by more
/// than one lease: any poller would have claimed them by then, so Redis
/// has lost their deadline.
pub async fn sweep(lifecycle: Lifecycle, settings: PollerSettings, shutdown: Shutdown) {
    let Some(interval) = settings.sweep else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while shutdown.tick(&mut tick).await {
        let overdue = match lifecycle.overdue(settings.lease, SWEEP_BATCH).await {
            Ok(overdue) => overdue,
            Err(err) => {
                tracing::warn!(error = %chain(&err), "the backstop sweep could not look for overdue orders");
                continue;
            }
        };
        if overdue.is_empty() {
            continue;
        }
        let span = tracing::info_span!("backstop_sweep", overdue = overdue.len());
        let lifecycle = &lifecycle;
        let lease = settings.lease;
        async {
            tracing::warn!("unpaid orders past their deadline that redis did not know about: settling them");
            futures::stream::iter(overdue)
                .for_each_concurrent(CONCURRENCY, |entry| async move {
                    // Claimed in Redis first, as a poller claims: if settling
                    // stops half-way (cancelled in the database, the unit not
                    // yet back in Redis), the claim comes due after the lease
                    // and a poller finishes it. The next sweep would not: the
                    // order is no longer unpaid.
                    let until = crate::clock::unix_ms() as i64 + lease.as_millis() as i64;
                    if let Err(err) = lifecycle.deadlines().schedule(&[(until, entry)]).await {
                        tracing::warn!(order = entry.order, error = %chain(&err), "cannot claim an overdue order; the next sweep retries");
                        return;
                    }
                    settle(lifecycle, entry).await;
                })
                .await
        }
        .instrument(span)
        .await;
    }
}

async fn settle(lifecycle: &Lifecycle, entry: DeadlineEntry) {
    let Ok(order) = OrderId::new(entry.order) else {
        return;
    };
    let deadlines = lifecycle.deadlines();
    let result = match lifecycle.settle_deadline(order).await {
        Ok(DeadlineOutcome::NotDue { deadline_ms }) => {
            deadlines.reschedule(entry, deadline_ms).await
        }
        Ok(_) => deadlines.forget(entry).await,
        Err(err) => {
            // Left claimed: when the lease runs out it is due again.
            tracing::warn!(order = entry.order, error = %chain(&err), "settling a deadline failed; retried after the lease");
            return;
        }
    };
    if let Err(err) = result {
        tracing::warn!(order = entry.order, error = %chain(&err), "updating a settled deadline failed; it will be looked at again");
    }
}
