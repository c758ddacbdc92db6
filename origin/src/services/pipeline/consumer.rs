//! One order-writing consumer: read a batch, write it, then acknowledge.
//!
//! The order of steps is the no-loss guarantee: an entry is acknowledged
//! (`XACK`) only after its order is committed to the database and the
//! member's result and payment deadline are recorded in Redis. If anything
//! fails before that, the entry stays pending: this consumer retries it, or,
//! if this consumer dies, another takes it over with `XAUTOCLAIM` once it
//! has been idle for `SECKILL_CLAIM_IDLE_MS`. A redelivered entry is
//! harmless, because the database's unique keys make the write idempotent.
//!
//! Failures are sorted: a database that cannot be reached is waited for
//! (with backoff, the entries held); an entry that can never become an
//! order (unknown product, a member who already holds a live order, an
//! entry that was delivered more than `SECKILL_MAX_DELIVERIES` times by
//! consumers that died on it) goes to the product's dead-letter stream, and
//! its stock goes back the way cancellations give it back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seckill_shared::keys::{DeadlineEntry, MemberState};
use seckill_shared::records::OrderRequest;
use seckill_shared::ProductId;
use tracing::Instrument;

use super::PipelineContext;
use crate::backoff::Backoff;
use crate::clock::unix_ms;
use crate::store::db::order_writes::{self, Outcome, Rejection};
use crate::store::redis::order_streams::{Delivery, OrderReader, WrittenOrder};
use crate::store::redis::stock::Release;
use crate::store::StoreResult;
use crate::telemetry::chain;

/// How long one `XREADGROUP` blocks: bounds how long shutdown waits.
const READ_BLOCK: Duration = Duration::from_millis(500);
/// How often the list of live products is re-read.
const PRODUCTS_REFRESH: Duration = Duration::from_secs(1);
/// How often acknowledged entries are trimmed from the streams.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// An order request with the stream entry that carried it.
#[derive(Debug, Clone)]
struct Queued {
    entry: String,
    request: OrderRequest,
}

pub(super) struct Consumer {
    reader: OrderReader,
    ctx: Arc<PipelineContext>,
}

fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

impl Consumer {
    pub(super) fn new(name: String, ctx: Arc<PipelineContext>) -> redis::RedisResult<Self> {
        let reader = ctx.streams.reader(name)?;
        Ok(Self { reader, ctx })
    }

    fn name(&self) -> &str {
        self.reader.consumer()
    }

    pub(super) async fn run(mut self) {
        let span = tracing::info_span!("consumer", name = %self.name());
        self.consume().instrument(span).await
    }

    async fn consume(&mut self) {
        tracing::info!("order consumer started");
        let settings = self.ctx.settings.clone();
        let shutdown = self.ctx.shutdown.clone();
        let mut products: Vec<ProductId> = Vec::new();
        let mut products_read: Option<Instant> = None;
        let claim_every = (settings.claim_idle / 2).max(Duration::from_millis(100));
        let mut next_claim = Instant::now();
        let mut next_trim = Instant::now() + TRIM_INTERVAL;
        let mut backoff = retry_backoff();

        while !shutdown.is_triggered() {
            if products_read.is_none_or(|at| at.elapsed() >= PRODUCTS_REFRESH) {
                match self.ctx.stock.live_products().await {
                    Ok(live) => {
                        products = live;
                        products_read = Some(Instant::now());
                    }
                    Err(err) => {
                        tracing::warn!(error = %chain(&err), "cannot list products; retrying");
                        shutdown.sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            if products.is_empty() {
                shutdown.sleep(Duration::from_millis(200)).await;
                continue;
            }

            if Instant::now() >= next_claim {
                next_claim = Instant::now() + claim_every;
                for &product in &products {
                    match self
                        .reader
                        .reclaim(product, settings.claim_idle, settings.batch)
                        .await
                    {
                        Ok(claimed) if !claimed.is_empty() => {
                            tracing::warn!(
                                product = product.get(),
                                entries = claimed.len(),
                                "took over order requests left pending by another consumer"
                            );
                            self.ctx
                                .metrics
                                .orders_reclaimed
                                .inc_by(claimed.len() as u64);
                            self.handle(claimed).await;
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %chain(&err), "reclaim failed"),
                    }
                }
            }

            match self
                .reader
                .read_new(&products, settings.batch, READ_BLOCK)
                .await
            {
                Ok(batch) => {
                    backoff.reset();
                    if !batch.is_empty() {
                        self.handle(batch).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %chain(&err), "reading the order streams failed; retrying");
                    shutdown.sleep(backoff.next_delay()).await;
                }
            }

            if Instant::now() >= next_trim {
                next_trim = Instant::now() + TRIM_INTERVAL;
                for &product in &products {
                    if let Err(err) = self
                        .ctx
                        .streams
                        .trim(product, unix_ms(), settings.retention)
                        .await
                    {
                        tracing::warn!(error = %chain(&err), "trimming the order stream failed");
                    }
                }
            }
        }
        tracing::info!("order consumer stopped");
    }

    /// Writes what one read delivered and settles every entry in it, at
    /// most `batch` entries per transaction: a read takes up to `batch`
    /// from every product's stream, and many busy products at once would
    /// make one statement carry more rows than the database allows
    /// parameters for (PostgreSQL: 65,535).
    async fn handle(&mut self, mut delivered: Vec<Delivery>) {
        let batch = self.ctx.settings.batch.max(1);
        while !delivered.is_empty() {
            let chunk: Vec<Delivery> = delivered.drain(..delivered.len().min(batch)).collect();
            let span = tracing::info_span!("order_batch", entries = chunk.len());
            self.handle_batch(chunk).instrument(span).await;
        }
    }

    async fn handle_batch(&mut self, batch: Vec<Delivery>) {
        self.ctx
            .metrics
            .order_batch_size
            .observe(batch.len() as f64);
        let mut queued = Vec::with_capacity(batch.len());
        for delivery in batch {
            let request = match delivery.request {
                Ok(request) => request,
                Err(reason) => {
                    self.dead_letter_unreadable(
                        delivery.product,
                        &delivery.entry,
                        &reason.to_string(),
                    )
                    .await;
                    continue;
                }
            };
            let item = Queued {
                entry: delivery.entry,
                request,
            };
            match delivery.delivered {
                Some(times) if times > self.ctx.settings.max_deliveries => {
                    self.give_up_on(item, times).await;
                }
                _ => queued.push(item),
            }
        }
        let queued = self.drop_released(queued).await;
        if queued.is_empty() {
            return;
        }

        let Some(outcomes) = self.write_with_retry(&queued).await else {
            return; // shutting down with the database away: entries stay pending
        };
        self.settle(&queued, &outcomes).await;
    }

    /// An entry that consumers keep dying on: rejected, unless one of them
    /// committed its order after all (the database decides which).
    async fn give_up_on(&mut self, item: Queued, times: u64) {
        let reason = format!("delivered {times} times without being written");
        self.reject(&item, &reason).await;
    }

    /// Entries whose reservation already had its stock returned (a message
    /// replayed after its dead letter) must never become orders: that
    /// stock may have been sold again. They are acknowledged and skipped.
    async fn drop_released(&mut self, queued: Vec<Queued>) -> Vec<Queued> {
        let mut by_product: BTreeMap<ProductId, Vec<Queued>> = BTreeMap::new();
        for item in queued {
            by_product
                .entry(item.request.product)
                .or_default()
                .push(item);
        }
        let mut keep = Vec::new();
        for (product, items) in by_product {
            let seqs: Vec<i64> = items.iter().map(|q| q.request.seq).collect();
            let released = match self.ctx.stock.released(product, &seqs).await {
                Ok(released) => released,
                Err(err) => {
                    // Leave them pending; they come back after the claim idle time.
                    tracing::warn!(error = %chain(&err), "cannot check released reservations");
                    continue;
                }
            };
            let mut skipped = Vec::new();
            for (item, released) in items.into_iter().zip(released) {
                if released {
                    tracing::warn!(product = product.get(), seq = item.request.seq, entry = %item.entry,
                        "order request for a reservation whose stock was already returned: acknowledged, not written");
                    skipped.push(item);
                } else {
                    keep.push(item);
                }
            }
            if !skipped.is_empty() {
                let acks: Vec<WrittenOrder> = skipped
                    .iter()
                    .map(|q| WrittenOrder {
                        entry: &q.entry,
                        member_seq: None,
                        order: 0,
                        inserted: false,
                    })
                    .collect();
                if let Err(err) = self.ctx.streams.ack_orders(product, &acks).await {
                    tracing::warn!(error = %chain(&err), "acknowledging skipped entries failed");
                }
            }
        }
        keep
    }

    /// Writes the batch; on a permanent batch failure, writes entry by
    /// entry so one bad entry cannot hold back the rest. Waits out an
    /// unavailable database, keeping the entries claimed. `None` only when
    /// shutdown arrives while the database is still away.
    async fn write_with_retry(&mut self, queued: &[Queued]) -> Option<Vec<Outcome>> {
        let requests: Vec<OrderRequest> = queued.iter().map(|q| q.request).collect();
        let mut backoff = retry_backoff();
        loop {
            let attempt = match self.write(&requests).await {
                Err(err) if !err.is_transient() => {
                    tracing::warn!(error = %chain(&err), entries = requests.len(),
                        "batch write failed; writing its entries one by one");
                    self.write_one_by_one(&requests).await
                }
                other => other,
            };
            match attempt {
                Ok(outcomes) => return Some(outcomes),
                Err(err) => {
                    self.ctx.metrics.order_write_retries.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %chain(&err), entries = requests.len(),
                        retry_in_ms = delay.as_millis() as u64, "database unavailable; order requests held for retry");
                    self.keep_claimed(queued).await;
                    if !self.ctx.shutdown.sleep(delay).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn write(&self, requests: &[OrderRequest]) -> StoreResult<Vec<Outcome>> {
        order_writes::write_batch(
            &self.ctx.db,
            requests,
            self.ctx.settings.pay_timeout.as_millis() as i64,
        )
        .await
    }

    async fn write_one_by_one(&self, requests: &[OrderRequest]) -> StoreResult<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            match self.write(std::slice::from_ref(request)).await {
                Ok(mut one) => outcomes.push(one.remove(0)),
                Err(err) if !err.is_transient() => outcomes.push(Outcome::Rejected {
                    reason: format!("the database refused the order: {}", chain(&err)),
                }),
                Err(unavailable) => return Err(unavailable),
            }
        }
        Ok(outcomes)
    }

    async fn keep_claimed(&mut self, queued: &[Queued]) {
        let mut by_product: BTreeMap<ProductId, Vec<&str>> = BTreeMap::new();
        for item in queued {
            by_product
                .entry(item.request.product)
                .or_default()
                .push(&item.entry);
        }
        for (product, entries) in by_product {
            if let Err(err) = self.reader.keep_claimed(product, &entries).await {
                tracing::warn!(error = %chain(&err), "could not refresh held entries");
            }
        }
    }

    /// After the commit: record the written orders; reject the rest.
    async fn settle(&mut self, queued: &[Queued], outcomes: &[Outcome]) {
        let mut written = Vec::new();
        for (item, outcome) in queued.iter().zip(outcomes) {
            match outcome {
                Outcome::Written { .. } => written.push((item, outcome)),
                Outcome::Rejected { reason } => self.reject(item, reason).await,
            }
        }
        self.record_written(&written).await;
    }

    /// Schedules the payment deadlines of committed orders, records each
    /// member's result and acknowledges the entries.
    async fn record_written(&self, written: &[(&Queued, &Outcome)]) {
        let mut acks: BTreeMap<ProductId, Vec<WrittenOrder>> = BTreeMap::new();
        let mut deadlines: BTreeMap<ProductId, Vec<(i64, DeadlineEntry)>> = BTreeMap::new();
        let mut inserted = 0u64;
        for (item, outcome) in written {
            let Outcome::Written {
                order,
                inserted: new,
                unpaid,
                pay_deadline_ms,
            } = outcome
            else {
                continue;
            };
            let request = item.request;
            if *new {
                inserted += 1;
            }
            if *unpaid {
                deadlines.entry(request.product).or_default().push((
                    *pay_deadline_ms,
                    DeadlineEntry {
                        product: request.product,
                        order: *order,
                    },
                ));
            }
            acks.entry(request.product).or_default().push(WrittenOrder {
                entry: &item.entry,
                member_seq: Some((request.member, request.seq)),
                order: *order,
                inserted: *new,
            });
        }
        self.ctx.metrics.orders_written.inc_by(inserted);

        // Deadlines first: an entry acknowledged without its deadline would
        // leave an unpaid order nobody cancels (until the backstop sweep).
        // Product by product: on a cluster the deadlines and the streams
        // of different products may be on different shards, and one shard
        // failing over must not hold up the others' acknowledgements.
        for (product, orders) in acks {
            let due = deadlines.remove(&product).unwrap_or_default();
            if let Err(err) = self.ctx.deadlines.schedule(&due).await {
                tracing::warn!(product = product.get(), error = %chain(&err),
                    "cannot schedule payment deadlines; entries stay pending and will be redelivered");
                continue;
            }
            if let Err(err) = self.ctx.streams.ack_orders(product, &orders).await {
                tracing::warn!(product = product.get(), error = %chain(&err),
                    "orders are committed but not acknowledged; they will be redelivered and found");
            }
        }
    }

    /// Rejects one request: the database records the rejection (unless an
    /// order holds the reservation after all, which is then settled as
    /// written), then the entry goes to the dead-letter stream and its
    /// stock back. If the database cannot be asked, the entry stays pending.
    async fn reject(&self, item: &Queued, reason: &str) {
        match order_writes::reject(&self.ctx.db, &item.request, reason).await {
            Ok(Rejection::Ordered(outcome)) => {
                tracing::info!(entry = %item.entry, "an entry given up on was written after all");
                self.record_written(&[(item, &outcome)]).await;
            }
            Ok(Rejection::Rejected | Rejection::Taken) => self.dead_letter(item, reason).await,
            Err(err) => tracing::warn!(error = %chain(&err), entry = %item.entry,
                "cannot record a rejection; the entry stays pending"),
        }
    }

    /// Moves a rejected request to the dead-letter stream and gives its
    /// stock back.
    async fn dead_letter(&self, item: &Queued, reason: &str) {
        let request = item.request;
        tracing::warn!(product = request.product.get(), member = request.member.get(),
            seq = request.seq, entry = %item.entry, reason, "order request dead-lettered; stock returned");
        let mut fields: Vec<(String, String)> = vec![("entry".to_string(), item.entry.clone())];
        fields.extend(
            request
                .fields()
                .into_iter()
                .map(|(name, value)| (name.to_string(), value)),
        );
        fields.push(("failed_at_ms".to_string(), unix_ms().to_string()));
        let release = Release {
            product: request.product,
            seq: request.seq,
            member: request.member,
            new_state: MemberState::Failed { seq: request.seq },
            supersedes: None,
            ack_entry: Some(&item.entry),
            dead_letter: Some((reason, fields)),
        };
        match self.ctx.returns.give_back(&release).await {
            Ok(_) => self.ctx.metrics.dead_letters.inc(),
            Err(err) => tracing::warn!(error = %chain(&err),
                "dead-lettering failed; the entry stays pending and will be retried"),
        }
    }

    /// An entry this system did not write (no member or reservation number
    /// can be read from it): nothing can be given back, so it is moved to
    /// the dead-letter stream as it is.
    async fn dead_letter_unreadable(&self, product: ProductId, entry: &str, reason: &str) {
        tracing::error!(
            product = product.get(),
            entry,
            reason,
            "unreadable order request dead-lettered"
        );
        match self
            .ctx
            .streams
            .dead_letter_unreadable(product, entry, reason)
            .await
        {
            Ok(()) => self.ctx.metrics.dead_letters.inc(),
            Err(err) => tracing::warn!(error = %chain(&err), "dead-lettering failed; will retry"),
        }
    }
}
