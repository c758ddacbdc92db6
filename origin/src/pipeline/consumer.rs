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
//! its stock goes back through the same release script cancellations use.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Value;
use seckill_shared::keys::{DeadlineEntry, MemberState};
use seckill_shared::{MemberId, ProductId};

use super::queue::{self, Delivery};
use super::writer::{self, OrderRequest, Outcome, WriteError};
use super::PipelineContext;
use crate::clock::unix_ms;
use crate::inventory::{Release, WrittenOrder};

/// How long one `XREADGROUP` blocks: bounds how long shutdown waits.
const READ_BLOCK: Duration = Duration::from_millis(500);
/// How often the list of live products is re-read.
const PRODUCTS_REFRESH: Duration = Duration::from_secs(1);
/// How often acknowledged entries are trimmed from the streams.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

pub struct Consumer {
    name: String,
    ctx: Arc<PipelineContext>,
    conn: ConnectionManager,
}

/// Doubling delay between retries, capped.
struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            current: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.current = Duration::from_millis(100);
    }
}

impl Consumer {
    pub fn new(name: String, ctx: Arc<PipelineContext>) -> redis::RedisResult<Self> {
        let conn = ctx.inventory.dedicated_connection()?;
        Ok(Self { name, ctx, conn })
    }

    /// Sleeps unless shutdown comes first; false when shutting down.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.ctx.shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    pub async fn run(mut self) {
        tracing::info!(consumer = %self.name, "order consumer started");
        let mut products: Vec<ProductId> = Vec::new();
        let mut products_read: Option<Instant> = None;
        let claim_every = (self.ctx.settings.claim_idle / 2).max(Duration::from_millis(100));
        let mut next_claim = Instant::now();
        let mut next_trim = Instant::now() + TRIM_INTERVAL;
        let mut backoff = Backoff::new();

        while !self.ctx.shutdown.is_cancelled() {
            if products_read.is_none_or(|at| at.elapsed() >= PRODUCTS_REFRESH) {
                match self.ctx.inventory.live_products().await {
                    Ok(live) => {
                        products = live;
                        products_read = Some(Instant::now());
                    }
                    Err(err) => {
                        tracing::warn!(consumer = %self.name, error = %err, "cannot list products; retrying");
                        let delay = backoff.next();
                        self.pause(delay).await;
                        continue;
                    }
                }
            }
            if products.is_empty() {
                self.pause(Duration::from_millis(200)).await;
                continue;
            }

            if Instant::now() >= next_claim {
                next_claim = Instant::now() + claim_every;
                for &product in &products {
                    match queue::reclaim(
                        &mut self.conn,
                        &self.ctx.inventory.keys().clone(),
                        &self.name,
                        product,
                        self.ctx.settings.claim_idle,
                        self.ctx.settings.batch,
                    )
                    .await
                    {
                        Ok(claimed) if !claimed.is_empty() => {
                            tracing::warn!(consumer = %self.name, product = product.get(), entries = claimed.len(),
                                "took over order requests left pending by another consumer");
                            self.ctx
                                .metrics
                                .orders_reclaimed
                                .inc_by(claimed.len() as u64);
                            self.handle(claimed).await;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(consumer = %self.name, error = %err, "reclaim failed")
                        }
                    }
                }
            }

            let keys = self.ctx.inventory.keys().clone();
            match queue::read_new(
                &mut self.conn,
                &keys,
                &self.name,
                &products,
                self.ctx.settings.batch,
                READ_BLOCK,
            )
            .await
            {
                Ok(batch) => {
                    backoff.reset();
                    if !batch.is_empty() {
                        self.handle(batch).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(consumer = %self.name, error = %err, "reading the order streams failed; retrying");
                    let delay = backoff.next();
                    self.pause(delay).await;
                }
            }

            if Instant::now() >= next_trim {
                next_trim = Instant::now() + TRIM_INTERVAL;
                for &product in &products {
                    if let Err(err) = queue::trim(
                        &mut self.conn,
                        &keys,
                        product,
                        unix_ms(),
                        self.ctx.settings.retention,
                    )
                    .await
                    {
                        tracing::warn!(consumer = %self.name, error = %err, "trimming the order stream failed");
                    }
                }
            }
        }
        tracing::info!(consumer = %self.name, "order consumer stopped");
    }

    /// Writes one batch and settles every entry in it.
    async fn handle(&mut self, batch: Vec<Delivery>) {
        self.ctx
            .metrics
            .order_batch_size
            .observe(batch.len() as f64);
        let mut requests = Vec::with_capacity(batch.len());
        for delivery in batch {
            match parse_request(&delivery) {
                Err(reason) => self.dead_letter_unreadable(&delivery, &reason).await,
                Ok(request) => match delivery.delivered {
                    Some(times) if times > self.ctx.settings.max_deliveries => {
                        self.give_up_on(request, times, &mut requests).await;
                    }
                    _ => requests.push(request),
                },
            }
        }
        let requests = self.drop_released(requests).await;
        if requests.is_empty() {
            return;
        }

        let Some(outcomes) = self.write_with_retry(&requests).await else {
            return; // shutting down with the database away: entries stay pending
        };
        self.settle(&requests, &outcomes).await;
    }

    /// An entry that consumers keep dying on. It may still have been
    /// committed by one of them just before it died: if so it is a success
    /// (settled with the batch), otherwise it is dead-lettered without
    /// being written again.
    async fn give_up_on(&self, request: OrderRequest, times: u64, batch: &mut Vec<OrderRequest>) {
        match writer::existing_order(&self.ctx.db, &request).await {
            Ok(Some(_)) => batch.push(request),
            Ok(None) => {
                let reason = format!("delivered {times} times without being written");
                self.reject(&request, &reason).await;
            }
            Err(err) => tracing::warn!(consumer = %self.name, error = %err, entry = %request.entry,
                "cannot check an often-delivered entry; it stays pending"),
        }
    }

    /// Entries whose reservation already had its stock returned (a message
    /// replayed after its dead letter) must never become orders: that
    /// stock may have been sold again. They are acknowledged and skipped.
    async fn drop_released(&mut self, requests: Vec<OrderRequest>) -> Vec<OrderRequest> {
        let mut by_product: BTreeMap<ProductId, Vec<OrderRequest>> = BTreeMap::new();
        for request in requests {
            by_product.entry(request.product).or_default().push(request);
        }
        let mut keep = Vec::new();
        for (product, requests) in by_product {
            let seqs: Vec<i64> = requests.iter().map(|r| r.seq).collect();
            let released = match self.ctx.inventory.released(product, &seqs).await {
                Ok(released) => released,
                Err(err) => {
                    // Leave them pending; they come back after the claim idle time.
                    tracing::warn!(consumer = %self.name, error = %err, "cannot check released reservations");
                    continue;
                }
            };
            let mut skipped = Vec::new();
            for (request, released) in requests.into_iter().zip(released) {
                if released {
                    tracing::warn!(consumer = %self.name, product = product.get(), seq = request.seq, entry = %request.entry,
                        "order request for a reservation whose stock was already returned: acknowledged, not written");
                    skipped.push(request);
                } else {
                    keep.push(request);
                }
            }
            if !skipped.is_empty() {
                let acks: Vec<WrittenOrder> = skipped
                    .iter()
                    .map(|r| WrittenOrder {
                        entry: &r.entry,
                        member_seq: None,
                        order: 0,
                    })
                    .collect();
                if let Err(err) = self.ctx.inventory.ack_orders(product, &acks).await {
                    tracing::warn!(consumer = %self.name, error = %err, "acknowledging skipped entries failed");
                }
            }
        }
        keep
    }

    /// Writes the batch; on a non-transient batch failure, writes entry by
    /// entry so one bad entry cannot hold back the rest. Waits out an
    /// unavailable database, keeping the entries claimed. `None` only when
    /// shutdown arrives while the database is still away.
    async fn write_with_retry(&mut self, requests: &[OrderRequest]) -> Option<Vec<Outcome>> {
        let pay_timeout_ms = self.ctx.settings.pay_timeout.as_millis() as i64;
        let mut backoff = Backoff::new();
        loop {
            let attempt = match writer::write_batch(
                &self.ctx.db,
                requests,
                unix_ms() as i64,
                pay_timeout_ms,
            )
            .await
            {
                Err(WriteError::Failed(err)) => {
                    tracing::warn!(consumer = %self.name, error = %err, entries = requests.len(),
                        "batch write failed; writing its entries one by one");
                    self.write_one_by_one(requests, pay_timeout_ms).await
                }
                other => other,
            };
            match attempt {
                Ok(outcomes) => return Some(outcomes),
                Err(err) => {
                    self.ctx.metrics.order_write_retries.inc();
                    let delay = backoff.next();
                    tracing::warn!(consumer = %self.name, error = %err, entries = requests.len(),
                        retry_in_ms = delay.as_millis() as u64, "database unavailable; order requests held for retry");
                    self.keep_claimed(requests).await;
                    if !self.pause(delay).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn write_one_by_one(
        &self,
        requests: &[OrderRequest],
        pay_timeout_ms: i64,
    ) -> Result<Vec<Outcome>, WriteError> {
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            match writer::write_batch(
                &self.ctx.db,
                std::slice::from_ref(request),
                unix_ms() as i64,
                pay_timeout_ms,
            )
            .await
            {
                Ok(mut one) => outcomes.push(one.remove(0)),
                Err(WriteError::Failed(err)) => outcomes.push(Outcome::Rejected {
                    reason: format!("the database refused the order: {err}"),
                }),
                Err(unavailable) => return Err(unavailable),
            }
        }
        Ok(outcomes)
    }

    async fn keep_claimed(&mut self, requests: &[OrderRequest]) {
        let mut by_product: BTreeMap<ProductId, Vec<&str>> = BTreeMap::new();
        for request in requests {
            by_product
                .entry(request.product)
                .or_default()
                .push(&request.entry);
        }
        let keys = self.ctx.inventory.keys().clone();
        for (product, entries) in by_product {
            if let Err(err) =
                queue::keep_claimed(&mut self.conn, &keys, &self.name, product, &entries).await
            {
                tracing::warn!(consumer = %self.name, error = %err, "could not refresh held entries");
            }
        }
    }

    /// After the commit: schedule payment deadlines, record results and
    /// acknowledge; send rejected entries to the dead-letter stream.
    async fn settle(&mut self, requests: &[OrderRequest], outcomes: &[Outcome]) {
        let mut written: BTreeMap<ProductId, Vec<WrittenOrder>> = BTreeMap::new();
        let mut deadlines: Vec<(i64, String)> = Vec::new();
        let mut inserted = 0u64;
        for (request, outcome) in requests.iter().zip(outcomes) {
            match outcome {
                Outcome::Written {
                    order,
                    inserted: new,
                    unpaid,
                    pay_deadline_ms,
                } => {
                    if *new {
                        inserted += 1;
                    }
                    if *unpaid {
                        deadlines.push((
                            *pay_deadline_ms,
                            DeadlineEntry {
                                product: request.product,
                                order: *order,
                            }
                            .encode(),
                        ));
                    }
                    written
                        .entry(request.product)
                        .or_default()
                        .push(WrittenOrder {
                            entry: &request.entry,
                            member_seq: Some((request.member, request.seq)),
                            order: *order,
                        });
                }
                Outcome::Rejected { reason } => self.reject(request, reason).await,
            }
        }
        self.ctx.metrics.orders_written.inc_by(inserted);

        // Deadlines first: an entry acknowledged without its deadline would
        // leave an unpaid order nobody cancels. NX keeps a deadline already
        // scheduled (and possibly leased by a poller) as it is.
        if !deadlines.is_empty() {
            let mut conn = self.ctx.inventory.connection();
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(self.ctx.inventory.keys().pay_deadlines())
                .arg("NX");
            for (score, member) in &deadlines {
                zadd.arg(score).arg(member);
            }
            if let Err(err) = zadd.query_async::<Value>(&mut conn).await {
                tracing::warn!(consumer = %self.name, error = %err,
                    "cannot schedule payment deadlines; entries stay pending and will be redelivered");
                return;
            }
        }
        for (product, orders) in written {
            if let Err(err) = self.ctx.inventory.ack_orders(product, &orders).await {
                tracing::warn!(consumer = %self.name, product = product.get(), error = %err,
                    "orders are committed but not acknowledged; they will be redelivered and found");
            }
        }
    }

    /// Dead-letters one request and gives its stock back.
    async fn reject(&self, request: &OrderRequest, reason: &str) {
        tracing::warn!(consumer = %self.name, product = request.product.get(), member = request.member.get(),
            seq = request.seq, entry = %request.entry, reason, "order request dead-lettered; stock returned");
        let fields = vec![
            ("entry".to_string(), request.entry.clone()),
            ("member".to_string(), request.member.to_string()),
            ("product".to_string(), request.product.to_string()),
            ("seq".to_string(), request.seq.to_string()),
            ("price".to_string(), request.price_cents.to_string()),
            (
                "reserved_at_ms".to_string(),
                request.reserved_at_ms.to_string(),
            ),
            ("failed_at_ms".to_string(), unix_ms().to_string()),
        ];
        let release = Release {
            product: request.product,
            seq: request.seq,
            member: request.member,
            new_state: MemberState::Failed { seq: request.seq },
            supersedes: None,
            ack_entry: Some(&request.entry),
            dead_letter: Some((reason, fields)),
        };
        match self.ctx.inventory.release(&release).await {
            Ok(returned) => {
                self.ctx.metrics.dead_letters.inc();
                if returned {
                    self.ctx.metrics.stock_returned.inc();
                }
            }
            Err(err) => tracing::warn!(consumer = %self.name, error = %err,
                "dead-lettering failed; the entry stays pending and will be retried"),
        }
    }

    /// An entry this system did not write (no member or reservation number
    /// can be read from it): nothing can be given back, so it is moved to
    /// the dead-letter stream as it is.
    async fn dead_letter_unreadable(&self, delivery: &Delivery, reason: &str) {
        let keys = self.ctx.inventory.keys();
        tracing::error!(consumer = %self.name, product = delivery.product.get(), entry = %delivery.entry.id, reason,
            "unreadable order request dead-lettered");
        let mut conn = self.ctx.inventory.connection();
        let result: redis::RedisResult<Value> = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(keys.dead_letters(delivery.product))
            .arg("*")
            .arg("reason")
            .arg(reason)
            .arg("entry")
            .arg(&delivery.entry.id)
            .cmd("XACK")
            .arg(keys.orders(delivery.product))
            .arg(seckill_shared::keys::ORDER_GROUP)
            .arg(&delivery.entry.id)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) => self.ctx.metrics.dead_letters.inc(),
            Err(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "dead-lettering failed; will retry")
            }
        }
    }
}

/// Reads the fields the reserve script writes.
fn parse_request(delivery: &Delivery) -> Result<OrderRequest, String> {
    let field = |name: &str| -> Result<i64, String> {
        let value = delivery
            .entry
            .map
            .get(name)
            .ok_or_else(|| format!("field {name:?} is missing"))?;
        let text: String = redis::from_redis_value_ref(value)
            .map_err(|_| format!("field {name:?} is not text"))?;
        text.parse()
            .map_err(|_| format!("field {name:?} is not a number: {text:?}"))
    };
    let member =
        MemberId::new(field("member")?).map_err(|_| "member is not a valid id".to_string())?;
    let product = field("product")?;
    if product != delivery.product.get() {
        return Err(format!(
            "entry names product {product} but sits in product {}'s stream",
            delivery.product
        ));
    }
    Ok(OrderRequest {
        entry: delivery.entry.id.clone(),
        product: delivery.product,
        member,
        seq: field("seq")?,
        price_cents: field("price")?,
        reserved_at_ms: field("reserved_at_ms")?,
    })
}
