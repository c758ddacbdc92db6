//! An item's live stock in Redis: the authority on what is left to sell
//! while a sale runs.
//!
//! Owns, per product (all under the product's hash tag `{p<id>}`, so every
//! script touches one slot): the item hash (`stock`, window, price, total,
//! `seq` — the last reservation number, `node` — on a cluster, the node
//! that last checked it against the database), the members hash (what each
//! member holds: see `MemberState`), the returned-stock set (reservations
//! whose unit came back, so none comes back twice) and the applied
//! stock-edit ledger; and, across products, the registry of live products
//! that consumers and pollers iterate (one set per registry group). Stock only changes inside scripts:
//! `reserve.lua` (through the batcher), `release.lua`, `adjust_stock.lua`
//! and `repair_stock.lua` (and the preheat script when it rebuilds an
//! item whose shard went back, and the acknowledgement of an order Redis
//! never counted). The reserve and release scripts also write the
//! product's order and dead-letter streams, in the same atomic call.

use std::sync::Arc;

use redis::{AsyncCommands, RedisResult, Script};
use seckill_shared::keys::{MemberState, RegistryGroup, ORDER_GROUP};
use seckill_shared::{MemberId, ProductId};

use super::order_streams::QueueProgress;
pub use super::reserve_batcher::ReplicaAcks;
use super::reserve_batcher::ReserveBatcher;
use super::Redis;
use crate::store::db::products::{LiveOrders, ProductRow};

/// The largest integer Lua (whose numbers are doubles) carries exactly.
const MAX_SCRIPT_INTEGER: i64 = (1 << 53) - 1;

/// A stock figure as the scripts can carry it: a row edited with plain SQL
/// to more units than that is sold as if it had that many.
fn script_integer(value: i64) -> i64 {
    value.clamp(-MAX_SCRIPT_INTEGER, MAX_SCRIPT_INTEGER)
}

/// What the reserve script decided for one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    Queued {
        stock_left: i64,
        seq: i64,
    },
    /// Reserved on the primary, but fewer replicas than
    /// `SECKILL_REDIS_REPLICA_ACKS` confirmed it in time: a failover now
    /// could lose it, so the buyer cannot be promised it.
    Unreplicated {
        wanted: u16,
        acked: u16,
    },
    SoldOut,
    AlreadyOrdered,
    NotStarted,
    Ended,
    UnknownProduct,
    /// The item was last checked against the database by another cluster
    /// node (its shard changed hands): check it again, then reserve.
    Unchecked,
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

/// How the preheat script treats an item Redis may already hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreheatMode {
    /// Start-up and recovery: live stock, members and reservation numbers
    /// are kept and the description is refreshed, except what the database
    /// shows Redis lost (its shard went back to older data).
    KeepLive,
    /// A sale just created: anything under its id is left from a creation
    /// that was rolled back, and is wiped first.
    Replace,
    /// A catalogue edit: refresh the description of a live item only.
    Describe,
}

impl PreheatMode {
    fn as_arg(self) -> &'static str {
        match self {
            Self::KeepLive => "keep",
            Self::Replace => "replace",
            Self::Describe => "describe",
        }
    }
}

/// How far above the database's highest reservation number a (re)loaded
/// item's numbers start: more than Redis could have handed out and not yet
/// written (numbers stay exact in the scripts up to 2^53, millions of
/// reloads). A number handed out twice (once before Redis lost its data,
/// once after) would make the second buyer's reservation fail as "already
/// another member's order".
const RELOAD_SEQ_GAP: i64 = 1_000_000_000;

/// What the preheat of one item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preheated {
    /// The item was not live and was loaded from the database.
    pub loaded: bool,
    /// Live orders the live item had not counted (Redis had gone back):
    /// their units were taken and their members shown holding them.
    pub counted: usize,
    /// Cancelled orders and rejected reservations settled as a release.
    pub settled: usize,
    /// The reservation counter moved past the database's numbers.
    pub seq_moved: bool,
}

impl Preheated {
    /// A live item that had gone back behind the database and was rebuilt.
    pub fn rebuilt(&self) -> bool {
        !self.loaded && (self.counted > 0 || self.settled > 0 || self.seq_moved)
    }
}

/// An item's stock and last reservation number, as read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemLevels {
    /// `None`: the item is not in Redis.
    pub stock: Option<i64>,
    pub seq: i64,
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

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The unit went back now (false: it had gone back before, or the item
    /// is not in Redis).
    pub returned: bool,
    /// Stock came back from zero: sold-out flags must drop everywhere.
    pub back_in_stock: bool,
    /// The item is in Redis (false: Redis lost it; nothing was touched).
    pub live: bool,
}

struct Scripts {
    preheat: Script,
    release: Script,
    adjust_stock: Script,
    repair_stock: Script,
}

#[derive(Clone)]
pub struct Stock {
    redis: Redis,
    batcher: ReserveBatcher,
    scripts: Arc<Scripts>,
}

impl Stock {
    /// Starts the reserve batcher (inside the Tokio runtime).
    pub fn new(redis: Redis, replicas: ReplicaAcks) -> Self {
        let batcher = ReserveBatcher::start(redis.connection(), redis.keys.clone(), replicas);
        Self {
            redis,
            batcher,
            scripts: Arc::new(Scripts {
                preheat: Script::new(include_str!("scripts/preheat.lua")),
                release: Script::new(include_str!("scripts/release.lua")),
                adjust_stock: Script::new(include_str!("scripts/adjust_stock.lua")),
                repair_stock: Script::new(include_str!("scripts/repair_stock.lua")),
            }),
        }
    }

    /// The buy decision: one script call (shared with the other buys of
    /// the item waiting at the same moment), at most one round trip.
    pub async fn reserve(
        &self,
        product: ProductId,
        member: MemberId,
    ) -> RedisResult<ReserveOutcome> {
        self.batcher.reserve(product, member).await
    }

    /// Loads one item from its database row unless it is already live; a
    /// live item is brought in line with what the database knows that
    /// Redis lost (see `preheat.lua`).
    pub async fn preheat(&self, row: &ProductRow, live: &LiveOrders) -> RedisResult<Preheated> {
        let (state, counted, settled, seq_moved) =
            self.run_preheat(row, live, PreheatMode::KeepLive).await?;
        Ok(Preheated {
            loaded: state == 1,
            counted: counted as usize,
            settled: settled as usize,
            seq_moved: seq_moved == 1,
        })
    }

    /// Refreshes a live item's description (window, price, total) from its
    /// row; false when the item is not live (nothing done).
    pub async fn describe(&self, row: &ProductRow) -> RedisResult<bool> {
        Ok(self
            .run_preheat(row, &LiveOrders::default(), PreheatMode::Describe)
            .await?
            .0
            == 0)
    }

    /// Loads a sale that was just created, wiping anything Redis still holds
    /// under its id from a creation that was rolled back.
    pub async fn load_new(&self, row: &ProductRow) -> RedisResult<()> {
        self.run_preheat(row, &LiveOrders::default(), PreheatMode::Replace)
            .await
            .map(|_| ())
    }

    /// Stops a deleted product from selling, keeping what its queued
    /// reservations need to end as explicit failures: its members' states
    /// and its order and dead-letter streams stay (and it stays in the
    /// registry, so consumers still read its stream), while the item (its
    /// stock and window) and its stock ledgers go.
    pub async fn retire(&self, product: ProductId) -> RedisResult<()> {
        let keys = &self.redis.keys;
        self.redis
            .connection()
            .del(&[
                keys.item(product),
                keys.returned(product),
                keys.stock_changes(product),
            ])
            .await
    }

    /// Removes every key of one product and its registry entry.
    pub async fn unload(&self, product: ProductId) -> RedisResult<()> {
        let mut conn = self.redis.connection();
        let _: () = conn.del(self.all_keys(product)).await?;
        conn.srem(self.registry(product), product.get()).await
    }

    /// The registry set of the product's group.
    fn registry(&self, product: ProductId) -> String {
        self.redis.keys.products(RegistryGroup::of(product))
    }

    fn product_keys(&self, product: ProductId) -> [String; 5] {
        let keys = &self.redis.keys;
        [
            keys.item(product),
            keys.members(product),
            keys.orders(product),
            keys.returned(product),
            keys.dead_letters(product),
        ]
    }

    /// Every key of one product (what `unload` removes).
    fn all_keys(&self, product: ProductId) -> Vec<String> {
        let mut keys = self.product_keys(product).to_vec();
        keys.push(self.redis.keys.stock_changes(product));
        keys
    }

    async fn run_preheat(
        &self,
        row: &ProductRow,
        live: &LiveOrders,
        mode: PreheatMode,
    ) -> RedisResult<(i64, i64, i64, i64)> {
        let product = row.product_id();
        let mut conn = self.redis.connection();
        if mode != PreheatMode::Describe {
            // The registry spans products, so it is a command of its own;
            // it goes first, so an item is never live without being listed
            // (a listed item that is not live costs nothing).
            let _: () = conn.sadd(self.registry(product), product.get()).await?;
        }
        let mut call = self.scripts.preheat.prepare_invoke();
        for key in self.product_keys(product) {
            call.key(key);
        }
        call.arg(mode.as_arg())
            .arg(row.revision)
            // The snapshot's stock when the item is loaded from the
            // database (it matches the members and returned units read
            // with it), else the row's.
            .arg(script_integer(
                live.stock_available.unwrap_or(row.stock_available),
            ))
            .arg(row.starts_at)
            .arg(row.ends_at)
            .arg(row.flash_price_cents)
            .arg(script_integer(row.stock_total))
            // A sale just created numbers from 1; an item (re)loaded or
            // rebuilt, far above what the database holds.
            .arg(if mode == PreheatMode::Replace {
                0
            } else {
                live.max_seq.saturating_add(RELOAD_SEQ_GAP)
            })
            .arg(ORDER_GROUP)
            .arg(live.live.len())
            .arg(live.max_seq);
        for order in &live.live {
            call.arg(order.member).arg(order.order).arg(order.seq);
        }
        for returned in &live.returned {
            call.arg(returned.seq)
                .arg(returned.member)
                .arg(returned.order.unwrap_or(0));
        }
        call.invoke_async(&mut conn).await
    }

    /// Gives a reservation's stock back (at most once ever).
    pub async fn release(&self, release: &Release<'_>) -> RedisResult<Released> {
        let product = release.product;
        let keys = &self.redis.keys;
        let mut call = self.scripts.release.prepare_invoke();
        call.key(keys.item(product))
            .key(keys.members(product))
            .key(keys.returned(product))
            .key(keys.orders(product))
            .key(keys.dead_letters(product))
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
        let (returned, stock, live): (i64, i64, i64) =
            call.invoke_async(&mut self.redis.connection()).await?;
        Ok(Released {
            returned: returned == 1,
            back_in_stock: returned == 1 && stock == 1,
            live: live == 1,
        })
    }

    /// Which of these reservation numbers already had their stock returned.
    pub async fn released(&self, product: ProductId, seqs: &[i64]) -> RedisResult<Vec<bool>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        redis::cmd("SMISMEMBER")
            .arg(self.redis.keys.returned(product))
            .arg(seqs)
            .query_async(&mut self.redis.connection())
            .await
    }

    /// Live product ids (the registry preheat maintains), in id order: one
    /// `SMEMBERS` per group, sent together. While some groups' shard is
    /// failing over, the products of the others are still listed.
    pub async fn live_products(&self) -> RedisResult<Vec<ProductId>> {
        let reads = RegistryGroup::all().map(|group| {
            let mut conn = self.redis.connection();
            let key = self.redis.keys.products(group);
            async move { conn.smembers::<_, Vec<i64>>(key).await }
        });
        let groups = super::any_answered(futures::future::join_all(reads).await)?;
        let mut ids: Vec<ProductId> = groups
            .into_iter()
            .flatten()
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
    ) -> RedisResult<Option<MemberState>> {
        let raw: Option<String> = self
            .redis
            .connection()
            .hget(self.redis.keys.members(product), member.get())
            .await?;
        Ok(raw.as_deref().and_then(MemberState::decode))
    }

    /// Live stock, or `None` when the item is not in Redis.
    pub async fn stock_left(&self, product: ProductId) -> RedisResult<Option<i64>> {
        self.redis
            .connection()
            .hget(self.redis.keys.item(product), "stock")
            .await
    }

    /// Live stock of several items in one round trip (`None`: not live).
    pub async fn stock_of(&self, products: &[ProductId]) -> RedisResult<Vec<Option<i64>>> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        // One command per item (they may live on different shards), sent
        // together on the multiplexed connection.
        let reads = products.iter().map(|product| {
            let mut conn = self.redis.connection();
            let key = self.redis.keys.item(*product);
            async move { conn.hget::<_, _, Option<i64>>(key, "stock").await }
        });
        futures::future::join_all(reads).await.into_iter().collect()
    }

    /// Applies one stock edit to live stock, at most once (see `adjust_stock.lua`).
    pub async fn adjust_stock(
        &self,
        product: ProductId,
        change: i64,
        delta: i64,
    ) -> RedisResult<StockAdjustment> {
        let (units, stock, state): (i64, i64, i64) = self
            .scripts
            .adjust_stock
            .key(self.redis.keys.item(product))
            .key(self.redis.keys.stock_changes(product))
            .arg(change)
            .arg(script_integer(delta))
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(match state {
            1 => StockAdjustment::Applied { units, stock },
            0 => StockAdjustment::AlreadyApplied { units },
            _ => StockAdjustment::NotLive,
        })
    }

    /// The item's stock and last reservation number.
    pub async fn levels(&self, product: ProductId) -> RedisResult<ItemLevels> {
        let (stock, seq): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.redis.keys.item(product))
            .arg("stock")
            .arg("seq")
            .query_async(&mut self.redis.connection())
            .await?;
        Ok(ItemLevels {
            stock,
            seq: seq.unwrap_or(0),
        })
    }

    /// Sets live stock to `stock` (and the reservation counter to at least
    /// `min_seq`) if nothing moved since `seen` and `queue` were read: no
    /// buy, release or edit, and the order group has delivered nothing new
    /// and holds nothing pending (see `repair_stock.lua`).
    pub async fn repair_stock(
        &self,
        product: ProductId,
        seen: ItemLevels,
        queue: &QueueProgress,
        stock: i64,
        min_seq: i64,
    ) -> RedisResult<bool> {
        let Some(seen_stock) = seen.stock else {
            return Ok(false);
        };
        let stock = script_integer(stock);
        let repaired: i64 = self
            .scripts
            .repair_stock
            .key(self.redis.keys.item(product))
            .key(self.redis.keys.orders(product))
            .arg(ORDER_GROUP)
            .arg(seen_stock)
            .arg(seen.seq)
            .arg(&queue.last_delivered)
            .arg(stock)
            .arg(min_seq)
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(repaired == 1)
    }
}
