//! Each product's order stream (`{p<id>}:orders`, filled by the reserve
//! script) and dead-letter stream (`{p<id>}:dead`), read by the
//! `order-writers` consumer group; and the ack script that records each
//! member's result as its entry is acknowledged.
//!
//! A product's streams share its hash tag, so the reserve script can queue
//! an order in the same atomic call that takes the unit. A consumer reads
//! on a connection of its own (a blocking read would hold up the shared
//! one): on one Redis, every live product's stream in one blocking
//! `XREADGROUP`. On a cluster one command may only name keys of one slot,
//! so a consumer sends one `XREADGROUP` per slot, each routed to the
//! primary that owns it, all at once and without blocking (a blocked
//! command would hold up the node connection the others share), and
//! pauses briefly when none had anything.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::Conn;
use redis::{AsyncCommands, RedisResult, Script, Value};
use seckill_shared::api::QueueView;
use seckill_shared::keys::{slot_of, RedisKeys, ORDER_GROUP};
use seckill_shared::records::{InvalidRecord, OrderRequest};
use seckill_shared::{MemberId, ProductId};

use super::stream_group;
use super::Redis;

/// An order request as a consumer received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub product: ProductId,
    /// The stream entry id, acknowledged once the order is committed.
    pub entry: String,
    /// How often it was delivered, for entries taken over from others.
    pub delivered: Option<u64>,
    /// The request, or why the entry is not one this system wrote.
    pub request: Result<OrderRequest, InvalidRecord>,
}

/// An order committed to the database whose stream entry can be acknowledged.
#[derive(Debug, Clone)]
pub struct WrittenOrder<'a> {
    pub entry: &'a str,
    /// `None` acknowledges without touching member state.
    pub member_seq: Option<(MemberId, i64)>,
    pub order: i64,
    /// The order was inserted by this write (not found from an earlier
    /// delivery).
    pub inserted: bool,
}

#[derive(Clone)]
pub struct OrderStreams {
    redis: Redis,
    ack_orders: std::sync::Arc<Script>,
}

impl OrderStreams {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            ack_orders: std::sync::Arc::new(Script::new(include_str!("scripts/ack_orders.lua"))),
        }
    }

    /// A reader for one consumer of the group, on its own connection.
    pub fn reader(&self, consumer: String) -> RedisResult<OrderReader> {
        Ok(OrderReader {
            conn: self.redis.dedicated()?,
            keys: self.redis.keys.clone(),
            consumer,
            cluster: self.redis.is_cluster(),
        })
    }

    /// Records each member's result and acknowledges the stream entries of
    /// orders the database has committed (see `ack_orders.lua`). Returns
    /// how many were acknowledged.
    pub async fn ack_orders(
        &self,
        product: ProductId,
        orders: &[WrittenOrder<'_>],
    ) -> RedisResult<u64> {
        let keys = &self.redis.keys;
        let mut call = self.ack_orders.prepare_invoke();
        call.key(keys.members(product))
            .key(keys.orders(product))
            .key(keys.item(product))
            .arg(ORDER_GROUP);
        for order in orders {
            match order.member_seq {
                Some((member, seq)) => call
                    .arg(order.entry)
                    .arg(member.get())
                    .arg(seq)
                    .arg(order.order)
                    .arg(u8::from(order.inserted)),
                None => call.arg(order.entry).arg("").arg(0).arg(0).arg(0),
            };
        }
        call.invoke_async(&mut self.redis.connection()).await
    }

    /// Moves an entry this system did not write (nothing can be given back
    /// for it) to the dead-letter stream as it is, and acknowledges it.
    pub async fn dead_letter_unreadable(
        &self,
        product: ProductId,
        entry: &str,
        reason: &str,
    ) -> RedisResult<()> {
        let keys = &self.redis.keys;
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(keys.dead_letters(product))
            .arg("*")
            .arg("reason")
            .arg(reason)
            .arg("entry")
            .arg(entry)
            .cmd("XACK")
            .arg(keys.orders(product))
            .arg(ORDER_GROUP)
            .arg(entry)
            .query_async::<Value>(&mut self.redis.connection())
            .await
            .map(|_| ())
    }

    /// Trims acknowledged entries older than the retention window, never
    /// past an entry still pending or not yet delivered. Returns entries
    /// removed.
    pub async fn trim(
        &self,
        product: ProductId,
        now_ms: u64,
        retention: Duration,
    ) -> RedisResult<u64> {
        let stream = self.redis.keys.orders(product);
        let mut conn = self.redis.connection();
        let Some(group) = stream_group::position(&mut conn, &stream, ORDER_GROUP).await? else {
            return Ok(0);
        };
        let floor = EntryId {
            ms: now_ms.saturating_sub(retention.as_millis() as u64),
            seq: 0,
        };
        let keep_from = trim_point(
            group.oldest_pending.as_deref().and_then(EntryId::parse),
            EntryId::parse(&group.last_delivered).unwrap_or_default(),
            floor,
        );
        redis::cmd("XTRIM")
            .arg(&stream)
            .arg("MINID")
            .arg(keep_from.to_string())
            .query_async(&mut conn)
            .await
    }

    /// The product's queue figures, for `/metrics` and the operations page.
    pub async fn stats(&self, product: ProductId) -> RedisResult<QueueView> {
        let keys = &self.redis.keys;
        let mut conn = self.redis.connection();
        let (length, dead_letters): (u64, u64) = redis::pipe()
            .xlen(keys.orders(product))
            .xlen(keys.dead_letters(product))
            .query_async(&mut conn)
            .await?;
        let group = stream_group::position(&mut conn, &keys.orders(product), ORDER_GROUP)
            .await?
            .unwrap_or_default();
        Ok(QueueView {
            length,
            pending: group.pending,
            lag: group.lag,
            dead_letters,
        })
    }

    /// Where the order group stands, and the newest entry id the stream
    /// ever held: what reconciliation must find unchanged.
    pub async fn progress(&self, product: ProductId) -> RedisResult<QueueProgress> {
        let stream = self.redis.keys.orders(product);
        let mut conn = self.redis.connection();
        let group = stream_group::position(&mut conn, &stream, ORDER_GROUP)
            .await?
            .unwrap_or_default();
        let last_generated = match conn
            .xinfo_stream::<_, redis::streams::StreamInfoStreamReply>(&stream)
            .await
        {
            Ok(info) => info.last_generated_id,
            Err(err) if err.code() == Some("ERR") => "0-0".to_string(), // no stream yet
            Err(err) => return Err(err),
        };
        Ok(QueueProgress {
            last_delivered: if group.last_delivered.is_empty() {
                "0-0".to_string()
            } else {
                group.last_delivered.clone()
            },
            last_generated,
            pending: group.pending,
        })
    }
}

/// How far the order group has got through a product's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProgress {
    pub last_delivered: String,
    pub last_generated: String,
    pub pending: u64,
}

impl QueueProgress {
    /// Reservations on their way to the database: delivered and not yet
    /// acknowledged, plus (at least one) not yet delivered.
    pub fn queued(&self) -> u64 {
        self.pending + u64::from(self.last_delivered != self.last_generated)
    }
}

/// One consumer's view of the order streams, on its own connection.
pub struct OrderReader {
    conn: Conn,
    keys: RedisKeys,
    consumer: String,
    cluster: bool,
}

/// How long a cluster consumer pauses when no slot had a new entry.
const CLUSTER_IDLE_PAUSE: Duration = Duration::from_millis(20);

impl OrderReader {
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Reads up to `count` new entries across `products` (on a cluster,
    /// up to `count` per slot), waiting up to `block` for some.
    pub async fn read_new(
        &mut self,
        products: &[ProductId],
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<Delivery>> {
        let mut by_slot: BTreeMap<u16, Vec<ProductId>> = BTreeMap::new();
        for &product in products {
            let slot = if self.cluster {
                slot_of(self.keys.orders(product).as_bytes())
            } else {
                0
            };
            by_slot.entry(slot).or_default().push(product);
        }
        if by_slot.len() <= 1 {
            return self.read_slot(products, count, Some(block)).await;
        }
        let reads = by_slot.values().map(|products| {
            let mut reader = self.clone_reader();
            async move { reader.read_slot(products, count, None).await }
        });
        let mut read = Vec::new();
        let mut first_err = None;
        for answer in futures::future::join_all(reads).await {
            match answer {
                Ok(entries) => read.extend(entries),
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        if read.is_empty() {
            if let Some(err) = first_err {
                return Err(err);
            }
            tokio::time::sleep(CLUSTER_IDLE_PAUSE.min(block)).await;
        }
        Ok(read)
    }

    fn clone_reader(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            consumer: self.consumer.clone(),
            cluster: self.cluster,
        }
    }

    /// One `XREADGROUP` over streams of one slot (on one Redis: any).
    async fn read_slot(
        &mut self,
        products: &[ProductId],
        count: usize,
        block: Option<Duration>,
    ) -> RedisResult<Vec<Delivery>> {
        let streams: Vec<String> = products.iter().map(|p| self.keys.orders(*p)).collect();
        let by_stream: HashMap<&str, ProductId> = streams
            .iter()
            .map(String::as_str)
            .zip(products.iter().copied())
            .collect();
        let read = match stream_group::read_new(
            &mut self.conn,
            &streams,
            ORDER_GROUP,
            &self.consumer,
            count,
            block,
        )
        .await
        {
            Ok(read) => read,
            Err(err) if err.code() == Some("NOGROUP") => {
                // A stream or group vanished (Redis lost data, or a product
                // was created elsewhere a moment ago): recreate the groups.
                for stream in &streams {
                    stream_group::ensure_group(&mut self.conn, stream, ORDER_GROUP).await?;
                }
                return Ok(Vec::new());
            }
            Err(err) => return Err(err),
        };
        Ok(read
            .into_iter()
            .filter_map(|read| {
                let product = *by_stream.get(read.stream.as_str())?;
                Some(delivery(product, read))
            })
            .collect())
    }

    /// Takes over entries of `product` idle for at least `min_idle`.
    pub async fn reclaim(
        &mut self,
        product: ProductId,
        min_idle: Duration,
        count: usize,
    ) -> RedisResult<Vec<Delivery>> {
        let stream = self.keys.orders(product);
        let read = stream_group::claim_idle(
            &mut self.conn,
            &stream,
            ORDER_GROUP,
            &self.consumer,
            min_idle,
            count,
        )
        .await?;
        Ok(read
            .into_iter()
            .map(|read| delivery(product, read))
            .collect())
    }

    /// Keeps entries this consumer holds from being taken over while it
    /// waits for the database.
    pub async fn keep_claimed(&mut self, product: ProductId, entries: &[&str]) -> RedisResult<()> {
        let stream = self.keys.orders(product);
        stream_group::keep_claimed(
            &mut self.conn,
            &stream,
            ORDER_GROUP,
            &self.consumer,
            entries,
        )
        .await
    }
}

fn delivery(product: ProductId, read: stream_group::Read) -> Delivery {
    let fields = &read.entry.map;
    let request = OrderRequest::parse(product, |name| {
        fields
            .get(name)
            .and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
    });
    Delivery {
        product,
        entry: read.entry.id,
        delivered: read.delivered,
        request,
    }
}

/// A stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    fn next(self) -> Self {
        Self {
            ms: self.ms,
            seq: self.seq + 1,
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The oldest entry that must be kept: the oldest one still pending, else
/// the first not yet delivered, and never anything younger than
/// `retention` (kept for inspection and replays).
fn trim_point(
    oldest_pending: Option<EntryId>,
    last_delivered: EntryId,
    retention_floor: EntryId,
) -> EntryId {
    let keep_from = oldest_pending.unwrap_or_else(|| last_delivered.next());
    keep_from.min(retention_floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> EntryId {
        EntryId::parse(text).unwrap()
    }

    #[test]
    fn entry_ids_order_like_redis() {
        assert!(id("5-1") < id("5-2"));
        assert!(id("5-9") < id("6-0"));
        assert_eq!(id("5-1").next(), id("5-2"));
        assert_eq!(id("12-3").to_string(), "12-3");
        assert!(EntryId::parse("x-1").is_none());
    }

    #[test]
    fn trim_never_passes_pending_or_undelivered_entries() {
        let far_future = id("99999-0");
        // Something pending: keep from it.
        assert_eq!(
            trim_point(Some(id("10-0")), id("20-0"), far_future),
            id("10-0")
        );
        // Nothing pending: keep from the first undelivered entry.
        assert_eq!(trim_point(None, id("20-0"), far_future), id("20-1"));
        // The retention window keeps younger entries even when acknowledged.
        assert_eq!(trim_point(None, id("20-0"), id("15-0")), id("15-0"));
    }

    #[test]
    fn queued_counts_pending_and_undelivered() {
        let quiet = QueueProgress {
            last_delivered: "5-0".into(),
            last_generated: "5-0".into(),
            pending: 0,
        };
        assert_eq!(quiet.queued(), 0);
        let moving = QueueProgress {
            last_generated: "6-0".into(),
            pending: 2,
            ..quiet
        };
        assert_eq!(moving.queued(), 3);
    }
}
