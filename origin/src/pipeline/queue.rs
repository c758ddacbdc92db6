//! The Redis Stream side of the order queue: reading as a consumer group,
//! taking over entries from dead consumers, trimming, and queue statistics.
//!
//! Each product has its own stream (its keys share the product's hash tag
//! so the reserve script can `XADD` atomically). A consumer reads all live
//! products' streams in one `XREADGROUP`.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::Value;
use seckill_shared::api::QueueView;
use seckill_shared::keys::{RedisKeys, ORDER_GROUP};
use seckill_shared::ProductId;

/// An entry as read, with how many times it has been delivered (known for
/// entries taken over from another consumer).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub product: ProductId,
    pub entry: StreamId,
    pub delivered: Option<u64>,
}

/// Reads up to `count` new entries across `products`, blocking up to `block`.
pub async fn read_new(
    conn: &mut ConnectionManager,
    keys: &RedisKeys,
    consumer: &str,
    products: &[ProductId],
    count: usize,
    block: Duration,
) -> redis::RedisResult<Vec<Delivery>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(ORDER_GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS");
    for product in products {
        cmd.arg(keys.orders(*product));
    }
    for _ in products {
        cmd.arg(">");
    }
    let reply: Option<StreamReadReply> = match cmd.query_async(conn).await {
        Ok(reply) => reply,
        Err(err) if err.code() == Some("NOGROUP") => {
            // A stream or group vanished (Redis lost data, or a product was
            // created elsewhere a moment ago): recreate the groups.
            ensure_groups(conn, keys, products).await?;
            return Ok(Vec::new());
        }
        Err(err) => return Err(err),
    };
    let by_key: HashMap<String, ProductId> =
        products.iter().map(|p| (keys.orders(*p), *p)).collect();
    Ok(reply
        .map(|reply| reply.keys)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|stream| by_key.get(&stream.key).map(|p| (*p, stream.ids)))
        .flat_map(|(product, ids)| {
            ids.into_iter().map(move |entry| Delivery {
                product,
                entry,
                delivered: None,
            })
        })
        .collect())
}

/// Creates the consumer group of each product's order stream where it is
/// missing.
pub async fn ensure_groups(
    conn: &mut ConnectionManager,
    keys: &RedisKeys,
    products: &[ProductId],
) -> redis::RedisResult<()> {
    for product in products {
        ensure_group(conn, &keys.orders(*product), ORDER_GROUP).await?;
    }
    Ok(())
}

/// Creates `group` on `stream` (and the stream) unless it exists.
pub async fn ensure_group(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(err) if err.code() != Some("BUSYGROUP") => Err(err),
        _ => Ok(()),
    }
}

/// Takes over entries idle for at least `min_idle` (their consumer died or
/// is stuck) and reports each one's delivery count.
pub async fn reclaim(
    conn: &mut ConnectionManager,
    keys: &RedisKeys,
    consumer: &str,
    product: ProductId,
    min_idle: Duration,
    count: usize,
) -> redis::RedisResult<Vec<Delivery>> {
    let stream = keys.orders(product);
    let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(&stream)
        .arg(ORDER_GROUP)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    if reply.claimed.is_empty() {
        return Ok(Vec::new());
    }
    // XAUTOCLAIM does not say how often an entry was delivered; XPENDING does.
    let first = reply
        .claimed
        .first()
        .map(|e| e.id.clone())
        .unwrap_or_default();
    let last = reply
        .claimed
        .last()
        .map(|e| e.id.clone())
        .unwrap_or_default();
    let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(ORDER_GROUP)
        .arg(&first)
        .arg(&last)
        .arg(reply.claimed.len() * 2 + 1)
        .arg(consumer)
        .query_async(conn)
        .await?;
    let counts: HashMap<String, u64> = pending
        .ids
        .into_iter()
        .map(|p| (p.id, p.times_delivered as u64))
        .collect();
    Ok(reply
        .claimed
        .into_iter()
        .map(|entry| Delivery {
            product,
            delivered: counts.get(&entry.id).copied(),
            entry,
        })
        .collect())
}

/// Resets the idle time of entries this consumer still holds (while it
/// waits for the database), so others do not take them over meanwhile.
/// `JUSTID` leaves their delivery counts alone.
pub async fn keep_claimed(
    conn: &mut ConnectionManager,
    keys: &RedisKeys,
    consumer: &str,
    product: ProductId,
    entries: &[&str],
) -> redis::RedisResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    redis::cmd("XCLAIM")
        .arg(keys.orders(product))
        .arg(ORDER_GROUP)
        .arg(consumer)
        .arg(0)
        .arg(entries)
        .arg("JUSTID")
        .query_async::<Value>(conn)
        .await
        .map(|_| ())
}

/// A stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    pub fn next(self) -> Self {
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
pub fn trim_point(
    oldest_pending: Option<EntryId>,
    last_delivered: EntryId,
    retention_floor: EntryId,
) -> EntryId {
    let keep_from = oldest_pending.unwrap_or_else(|| last_delivered.next());
    keep_from.min(retention_floor)
}

/// Trims acknowledged entries older than the retention window, never past
/// an entry still pending or not yet delivered. Returns entries removed.
pub async fn trim(
    conn: &mut ConnectionManager,
    keys: &RedisKeys,
    product: ProductId,
    now_ms: u64,
    retention: Duration,
) -> redis::RedisResult<u64> {
    let stream = keys.orders(product);
    let Some(group) = group_info(conn, &stream).await? else {
        return Ok(0);
    };
    let summary: Value = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(ORDER_GROUP)
        .query_async(conn)
        .await?;
    let oldest_pending = match summary {
        Value::Array(parts) if parts.len() >= 2 => match &parts[1] {
            Value::BulkString(id) => EntryId::parse(&String::from_utf8_lossy(id)),
            Value::SimpleString(id) => EntryId::parse(id),
            _ => None,
        },
        _ => None,
    };
    let floor = EntryId {
        ms: now_ms.saturating_sub(retention.as_millis() as u64),
        seq: 0,
    };
    let keep_from = trim_point(oldest_pending, group.last_delivered, floor);
    redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MINID")
        .arg(keep_from.to_string())
        .query_async(conn)
        .await
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GroupInfo {
    pub pending: u64,
    pub lag: u64,
    pub last_delivered: EntryId,
}

/// The order group's state on one stream (`XINFO GROUPS`).
pub async fn group_info(
    conn: &mut ConnectionManager,
    stream: &str,
) -> redis::RedisResult<Option<GroupInfo>> {
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
    {
        Ok(groups) => groups,
        Err(err) if err.code() == Some("ERR") => return Ok(None), // no such stream
        Err(err) => return Err(err),
    };
    let Value::Array(groups) = groups else {
        return Ok(None);
    };
    for group in groups {
        let fields = pairs(group);
        if fields.get("name").map(String::as_str) != Some(ORDER_GROUP) {
            continue;
        }
        let number = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        return Ok(Some(GroupInfo {
            pending: number("pending"),
            lag: number("lag"),
            last_delivered: fields
                .get("last-delivered-id")
                .and_then(|id| EntryId::parse(id))
                .unwrap_or_default(),
        }));
    }
    Ok(None)
}

/// Flattens a RESP2 field/value array (or a RESP3 map) into strings.
fn pairs(value: Value) -> HashMap<String, String> {
    let items: Vec<(Value, Value)> = match value {
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((k, v));
            }
            out
        }
        Value::Map(items) => items,
        _ => Vec::new(),
    };
    items
        .into_iter()
        .filter_map(|(k, v)| Some((text(k)?, text(v).unwrap_or_default())))
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Value::SimpleString(s) => Some(s),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Per-product queue figures for `/metrics` and the operations page.
pub async fn stats(
    conn: &mut ConnectionManager,
    keys: &RedisKeys,
    product: ProductId,
) -> redis::RedisResult<QueueView> {
    let (length, dead_letters): (u64, u64) = redis::pipe()
        .cmd("XLEN")
        .arg(keys.orders(product))
        .cmd("XLEN")
        .arg(keys.dead_letters(product))
        .query_async(conn)
        .await?;
    let group = group_info(conn, &keys.orders(product))
        .await?
        .unwrap_or_default();
    Ok(QueueView {
        length,
        pending: group.pending,
        lag: group.lag,
        dead_letters,
    })
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
}
