//! Authoritative flash-sale stock in Redis.
//!
//! All stock changes happen inside Lua scripts, loaded once and called by
//! SHA (`redis::Script` falls back to loading on `NOSCRIPT`, e.g. after a
//! Redis restart). The buy path costs exactly one round trip: the reserve
//! script. The connection is a lazily connecting, self-healing
//! `ConnectionManager`: when Redis is down calls fail fast (the API answers
//! 503) and the next call after Redis returns reconnects by itself.

mod batcher;

use std::sync::Arc;
use std::time::Duration;

use batcher::ReserveBatcher;
pub use batcher::ReserveError;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use seckill_shared::api::SoldOutSnapshot;
use seckill_shared::keys::{DeadlineEntry, MemberState, RedisKeys, ORDER_GROUP};
use seckill_shared::{MemberId, ProductId};

use crate::db::products::{LiveOrders, ProductRow};

/// What the reserve script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    Queued { stock_left: i64, seq: i64 },
    SoldOut,
    AlreadyOrdered,
    NotStarted,
    Ended,
    UnknownProduct,
}

struct Scripts {
    preheat: Script,
    mark_sold_out: Script,
    ack_orders: Script,
    release: Script,
    claim_deadlines: Script,
    adjust_stock: Script,
    repair_stock: Script,
    lease: Script,
}

/// What `adjust_stock.lua` did with one stock edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockAdjustment {
    /// Moved `units` now (negative: removed); stock is now `stock`.
    Applied { units: i64, stock: i64 },
    /// Moved `units` when first seen; nothing done this time.
    AlreadyApplied { units: i64 },
    /// The item is not in Redis; nothing done.
    NotLive,
}

/// An item's live figures, read for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSnapshot {
    pub stock: Option<i64>,
    pub seq: i64,
    pub last_delivered: String,
    pub last_generated: String,
    pub pending: u64,
}

/// One reservation whose stock goes back (see `release.lua`).
#[derive(Debug, Clone)]
pub struct Release<'a> {
    pub product: ProductId,
    pub seq: i64,
    pub member: MemberId,
    /// The state the member moves to (`Failed` or `Cancelled`).
    pub new_state: MemberState,
    /// A state besides `Queued { seq }` that this release supersedes.
    pub supersedes: Option<MemberState>,
    /// The stream entry to acknowledge with the release, if any.
    pub ack_entry: Option<&'a str>,
    /// Reason and fields of a dead letter to record, if any.
    pub dead_letter: Option<(&'a str, Vec<(String, String)>)>,
}

/// An order committed to the database whose stream entry can be acknowledged.
#[derive(Debug, Clone)]
pub struct WrittenOrder<'a> {
    pub entry: &'a str,
    /// `None` acknowledges without touching member state.
    pub member_seq: Option<(MemberId, i64)>,
    pub order: i64,
}

#[derive(Clone)]
pub struct Inventory {
    conn: ConnectionManager,
    batcher: ReserveBatcher,
    client: redis::Client,
    keys: RedisKeys,
    scripts: Arc<Scripts>,
}

/// Reserve-script source, public so the benchmark can run the very same
/// script under `redis-benchmark`.
pub const RESERVE_LUA: &str = include_str!("reserve.lua");

impl Inventory {
    /// Creates the handle without connecting: the origin starts (and answers
    /// 503) while Redis is down, and connects when it comes up.
    pub fn new(redis_url: &str, keys: RedisKeys) -> redis::RedisResult<Self> {
        let client = redis::Client::open(redis_url)?;
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), connection_config())?;
        let batcher = ReserveBatcher::start(
            conn.clone(),
            keys.clone(),
            Arc::new(Script::new(RESERVE_LUA)),
        );
        Ok(Self {
            conn,
            batcher,
            keys,
            scripts: Arc::new(Scripts {
                preheat: Script::new(include_str!("preheat.lua")),
                mark_sold_out: Script::new(include_str!("mark_sold_out.lua")),
                ack_orders: Script::new(include_str!("ack_orders.lua")),
                release: Script::new(include_str!("release.lua")),
                claim_deadlines: Script::new(include_str!("claim_deadlines.lua")),
                adjust_stock: Script::new(include_str!("adjust_stock.lua")),
                repair_stock: Script::new(include_str!("repair_stock.lua")),
                lease: Script::new(include_str!("lease.lua")),
            }),
            client,
        })
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// A connection handle for other modules' commands (cheap clone).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK`) that
    /// must not hold up the shared, multiplexed one the buy path uses.
    pub fn dedicated_connection(&self) -> redis::RedisResult<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), connection_config())
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await
    }

    /// The buy decision: one script call (shared with the other buys of
    /// the item waiting at the same moment), at most one round trip.
    pub async fn reserve(
        &self,
        product: ProductId,
        member: MemberId,
    ) -> Result<ReserveOutcome, ReserveError> {
        self.batcher.reserve(product, member).await
    }

    /// Loads one item from its database row unless it is already live.
    /// Returns true when it was loaded.
    pub async fn preheat(&self, row: &ProductRow, live: &LiveOrders) -> redis::RedisResult<bool> {
        self.run_preheat(row, live, "keep").await
    }

    /// Refreshes a live item's description (window, price, total) from its
    /// row; false when the item is not live (nothing done).
    pub async fn describe(&self, row: &ProductRow) -> redis::RedisResult<bool> {
        let product = row.product_id();
        let mut conn = self.conn.clone();
        let mut call = self.scripts.preheat.prepare_invoke();
        for key in self.product_keys(product) {
            call.key(key);
        }
        let result: i64 = call
            .arg(row.stock_available)
            .arg(row.starts_at)
            .arg(row.ends_at)
            .arg(row.flash_price_cents)
            .arg(row.stock_total)
            .arg(0)
            .arg(ORDER_GROUP)
            .arg("describe")
            .invoke_async(&mut conn)
            .await?;
        Ok(result == 0)
    }

    /// Loads a sale that was just created, wiping anything Redis still holds
    /// under its id from a creation that was rolled back.
    pub async fn load_new(&self, row: &ProductRow) -> redis::RedisResult<()> {
        self.run_preheat(row, &LiveOrders::default(), "replace")
            .await
            .map(|_| ())
    }

    /// Removes every key of one product (used when its creation is rolled back).
    pub async fn unload(&self, product: ProductId) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(&self.product_keys(product)[..])
            .query_async::<()>(&mut conn)
            .await?;
        redis::cmd("SREM")
            .arg(self.keys.products())
            .arg(product.get())
            .query_async::<()>(&mut conn)
            .await
    }

    fn product_keys(&self, product: ProductId) -> [String; 5] {
        [
            self.keys.item(product),
            self.keys.members(product),
            self.keys.orders(product),
            self.keys.returned(product),
            self.keys.dead_letters(product),
        ]
    }

    async fn run_preheat(
        &self,
        row: &ProductRow,
        live: &LiveOrders,
        mode: &str,
    ) -> redis::RedisResult<bool> {
        let product = row.product_id();
        let mut conn = self.conn.clone();
        let mut call = self.scripts.preheat.prepare_invoke();
        for key in self.product_keys(product) {
            call.key(key);
        }
        call.arg(row.stock_available)
            .arg(row.starts_at)
            .arg(row.ends_at)
            .arg(row.flash_price_cents)
            .arg(row.stock_total)
            .arg(live.max_seq)
            .arg(ORDER_GROUP)
            .arg(mode);
        for &(member, order) in &live.member_orders {
            let order = seckill_shared::OrderId::new(order).expect("database ids are positive");
            call.arg(member)
                .arg(MemberState::Ordered { order }.encode());
        }
        let loaded: i64 = call.invoke_async(&mut conn).await?;
        // The registry of live products lets consumers and pollers find
        // every product's keys; it spans products, so it is its own command.
        redis::cmd("SADD")
            .arg(self.keys.products())
            .arg(product.get())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(loaded == 1)
    }

    /// Records each member's result and acknowledges the stream entries of
    /// orders the database has committed. Returns how many were acknowledged.
    pub async fn ack_orders(
        &self,
        product: ProductId,
        orders: &[WrittenOrder<'_>],
    ) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.ack_orders.prepare_invoke();
        call.key(self.keys.members(product))
            .key(self.keys.orders(product))
            .arg(ORDER_GROUP);
        for order in orders {
            match order.member_seq {
                Some((member, seq)) => call
                    .arg(order.entry)
                    .arg(member.get())
                    .arg(seq)
                    .arg(order.order),
                None => call.arg(order.entry).arg("").arg(0).arg(0),
            };
        }
        call.invoke_async(&mut conn).await
    }

    /// Gives a reservation's stock back (at most once ever) and, when stock
    /// comes back from zero, lifts the sold-out mark everywhere. Returns
    /// true when stock was returned by this call.
    pub async fn release(&self, release: &Release<'_>) -> redis::RedisResult<bool> {
        let product = release.product;
        let mut conn = self.conn.clone();
        let mut call = self.scripts.release.prepare_invoke();
        call.key(self.keys.item(product))
            .key(self.keys.members(product))
            .key(self.keys.returned(product))
            .key(self.keys.orders(product))
            .key(self.keys.dead_letters(product))
            .arg(release.seq)
            .arg(release.member.get())
            .arg(release.new_state.encode())
            .arg(
                release
                    .supersedes
                    .map(MemberState::encode)
                    .unwrap_or_default(),
            )
            .arg(ORDER_GROUP)
            .arg(release.ack_entry.unwrap_or(""));
        match &release.dead_letter {
            Some((reason, fields)) => {
                call.arg(*reason);
                for (name, value) in fields {
                    call.arg(name).arg(value);
                }
            }
            None => {
                call.arg("");
            }
        }
        let (returned, stock): (i64, i64) = call.invoke_async(&mut conn).await?;
        // Back from zero: every node must drop its sold-out flag now.
        if returned == 1 && stock == 1 {
            self.mark_sold_out(product, false).await?;
        }
        Ok(returned == 1)
    }

    /// Which of these reservation numbers already had their stock returned.
    pub async fn released(
        &self,
        product: ProductId,
        seqs: &[i64],
    ) -> redis::RedisResult<Vec<bool>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        redis::cmd("SMISMEMBER")
            .arg(self.keys.returned(product))
            .arg(seqs)
            .query_async(&mut conn)
            .await
    }

    /// Live product ids (the registry preheat maintains).
    pub async fn live_products(&self) -> redis::RedisResult<Vec<ProductId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<i64> = redis::cmd("SMEMBERS")
            .arg(self.keys.products())
            .query_async(&mut conn)
            .await?;
        let mut ids: Vec<ProductId> = ids
            .into_iter()
            .filter_map(|id| ProductId::new(id).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// What the member holds for the product, if anything.
    pub async fn member_state(
        &self,
        product: ProductId,
        member: MemberId,
    ) -> redis::RedisResult<Option<MemberState>> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.keys.members(product))
            .arg(member.get())
            .query_async(&mut conn)
            .await?;
        Ok(raw.as_deref().and_then(MemberState::decode))
    }

    /// Live stock, or `None` when the item is not in Redis.
    pub async fn stock_left(&self, product: ProductId) -> redis::RedisResult<Option<i64>> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(self.keys.item(product))
            .arg("stock")
            .query_async(&mut conn)
            .await
    }

    /// The sold-out registry, as edges read it.
    pub async fn sold_out_snapshot(&self) -> redis::RedisResult<SoldOutSnapshot> {
        let mut conn = self.conn.clone();
        let (members, version): (Vec<i64>, Option<u64>) = redis::pipe()
            .cmd("SMEMBERS")
            .arg(self.keys.sold_out())
            .cmd("GET")
            .arg(self.keys.sold_out_version())
            .query_async(&mut conn)
            .await?;
        let mut sold_out: Vec<ProductId> = members
            .into_iter()
            .filter_map(|id| ProductId::new(id).ok())
            .collect();
        sold_out.sort();
        Ok(SoldOutSnapshot {
            version: version.unwrap_or(0),
            sold_out,
        })
    }

    /// Records a sell-out (or its end) in the registry and broadcasts it
    /// (see `mark_sold_out.lua`). Returns the registry version after the call.
    pub async fn mark_sold_out(
        &self,
        product: ProductId,
        sold_out: bool,
    ) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        self.scripts
            .mark_sold_out
            .key(self.keys.sold_out())
            .key(self.keys.sold_out_version())
            .arg(product.get())
            .arg(if sold_out { "1" } else { "0" })
            .arg(self.keys.sold_out_channel())
            .invoke_async(&mut conn)
            .await
    }

    /// The products a node should hold sold-out flags for: those in the
    /// registry whose stock really is zero. Registry entries whose stock
    /// came back (a lost "back in stock" call) are repaired on the way.
    pub async fn verified_sold_out(&self) -> redis::RedisResult<Vec<ProductId>> {
        let snapshot = self.sold_out_snapshot().await?;
        if snapshot.sold_out.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for product in &snapshot.sold_out {
            pipe.cmd("HGET").arg(self.keys.item(*product)).arg("stock");
        }
        let stocks: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        let mut sold_out = Vec::new();
        for (product, stock) in snapshot.sold_out.into_iter().zip(stocks) {
            match stock {
                Some(stock) if stock > 0 => {
                    self.mark_sold_out(product, false).await?;
                }
                _ => sold_out.push(product),
            }
        }
        Ok(sold_out)
    }

    /// Claims up to `max` due payment deadlines for `lease`.
    pub async fn claim_deadlines(
        &self,
        now_ms: u64,
        lease: Duration,
        max: usize,
    ) -> redis::RedisResult<Vec<DeadlineEntry>> {
        let mut conn = self.conn.clone();
        let due: Vec<String> = self
            .scripts
            .claim_deadlines
            .key(self.keys.pay_deadlines())
            .arg(now_ms)
            .arg(lease.as_millis() as u64)
            .arg(max)
            .invoke_async(&mut conn)
            .await?;
        Ok(due
            .iter()
            .filter_map(|entry| DeadlineEntry::decode(entry))
            .collect())
    }

    /// Removes a settled order's deadline.
    pub async fn forget_deadline(&self, entry: DeadlineEntry) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.keys.pay_deadlines())
            .arg(entry.encode())
            .query_async(&mut conn)
            .await
    }

    /// Puts a claimed deadline back at its real time (it was claimed early).
    pub async fn reschedule_deadline(
        &self,
        entry: DeadlineEntry,
        deadline_ms: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("ZADD")
            .arg(self.keys.pay_deadlines())
            .arg("XX")
            .arg(deadline_ms)
            .arg(entry.encode())
            .query_async(&mut conn)
            .await
    }

    /// Takes or renews the lease at `key` for `holder`; true while held.
    pub async fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let held: i64 = self
            .scripts
            .lease
            .key(key)
            .arg(holder)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Applies one stock edit to live stock, at most once (see `adjust_stock.lua`).
    pub async fn adjust_stock(
        &self,
        product: ProductId,
        change: i64,
        delta: i64,
    ) -> redis::RedisResult<StockAdjustment> {
        let mut conn = self.conn.clone();
        let (units, stock, state): (i64, i64, i64) = self
            .scripts
            .adjust_stock
            .key(self.keys.item(product))
            .key(self.keys.stock_changes(product))
            .arg(change)
            .arg(delta)
            .invoke_async(&mut conn)
            .await?;
        Ok(match state {
            1 => StockAdjustment::Applied { units, stock },
            0 => StockAdjustment::AlreadyApplied { units },
            _ => StockAdjustment::NotLive,
        })
    }

    /// Reads what reconciliation compares, and what a repair must find
    /// unchanged.
    pub async fn item_snapshot(&self, product: ProductId) -> redis::RedisResult<ItemSnapshot> {
        let mut conn = self.conn.clone();
        let (stock, seq): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.keys.item(product))
            .arg("stock")
            .arg("seq")
            .query_async(&mut conn)
            .await?;
        let stream = self.keys.orders(product);
        let group = crate::pipeline::queue::group_info(&mut conn, &stream)
            .await?
            .unwrap_or_default();
        let info: redis::Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&stream)
            .query_async(&mut conn)
            .await?;
        let last_generated =
            stream_field(info, "last-generated-id").unwrap_or_else(|| "0-0".into());
        Ok(ItemSnapshot {
            stock,
            seq: seq.unwrap_or(0),
            last_delivered: group.last_delivered.to_string(),
            last_generated,
            pending: group.pending,
        })
    }

    /// Sets live stock to `stock` (and the reservation counter to at least
    /// `min_seq`) if nothing moved since `seen` was read; see `repair_stock.lua`.
    pub async fn repair_stock(
        &self,
        product: ProductId,
        seen: &ItemSnapshot,
        stock: i64,
        min_seq: i64,
    ) -> redis::RedisResult<bool> {
        let Some(seen_stock) = seen.stock else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        let repaired: i64 = self
            .scripts
            .repair_stock
            .key(self.keys.item(product))
            .key(self.keys.orders(product))
            .arg(ORDER_GROUP)
            .arg(seen_stock)
            .arg(seen.seq)
            .arg(&seen.last_delivered)
            .arg(stock)
            .arg(min_seq)
            .invoke_async(&mut conn)
            .await?;
        Ok(repaired == 1)
    }
}

/// Fail fast while Redis is down (the API answers 503 at once) and
/// reconnect on the next call after it returns. The response timeout is
/// longer than any blocking read the pipeline issues.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// One field of an `XINFO STREAM` reply (a flat name/value array).
fn stream_field(info: redis::Value, name: &str) -> Option<String> {
    let redis::Value::Array(items) = info else {
        return None;
    };
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        let key: String = redis::from_redis_value(key).ok()?;
        if key == name {
            return redis::from_redis_value(value).ok();
        }
    }
    None
}
