//! The sold-out registry: the set of products sold out, a version that
//! changes exactly when the set does, and the pub/sub channel that tells
//! every origin at once (see `mark_sold_out.lua`). Edges read the set and
//! version through `GET /api/soldout`; origins follow the channel.
//!
//! The registry is an optimisation: the reserve script stays the authority
//! on stock, and whoever uses the registry checks it against stock.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use redis::{RedisResult, Script};
use seckill_shared::api::SoldOutSnapshot;
use seckill_shared::ProductId;

use super::Redis;

/// A message on the channel: `+<product>:<version>` or `-<product>:<version>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoldOutEvent {
    SoldOut(ProductId),
    BackInStock(ProductId),
}

impl SoldOutEvent {
    pub fn parse(message: &str) -> Option<Self> {
        let (sign, rest) = message.split_at_checked(1)?;
        let product: ProductId = rest.split(':').next()?.parse().ok()?;
        match sign {
            "+" => Some(Self::SoldOut(product)),
            "-" => Some(Self::BackInStock(product)),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct SoldOutRegistry {
    redis: Redis,
    mark: Arc<Script>,
}

impl SoldOutRegistry {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            mark: Arc::new(Script::new(include_str!("scripts/mark_sold_out.lua"))),
        }
    }

    /// The registry, as edges read it.
    pub async fn snapshot(&self) -> RedisResult<SoldOutSnapshot> {
        let keys = &self.redis.keys;
        let (members, version): (Vec<i64>, Option<u64>) = redis::pipe()
            .smembers(keys.sold_out())
            .get(keys.sold_out_version())
            .query_async(&mut self.redis.connection())
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

    /// Records a sell-out (or its end) and broadcasts it. Returns the
    /// registry version after the call.
    pub async fn mark(&self, product: ProductId, sold_out: bool) -> RedisResult<u64> {
        let keys = &self.redis.keys;
        self.mark
            .key(keys.sold_out())
            .key(keys.sold_out_version())
            .arg(product.get())
            .arg(if sold_out { "1" } else { "0" })
            .arg(keys.sold_out_channel())
            .invoke_async(&mut self.redis.connection())
            .await
    }

    /// Subscribes to the channel. Messages come in order until the
    /// connection drops (the stream then ends); anything published while
    /// not subscribed is lost, so a subscriber resynchronises from
    /// [`Self::snapshot`] after every (re)subscription.
    pub async fn subscribe(&self) -> RedisResult<impl Stream<Item = Option<SoldOutEvent>>> {
        let mut pubsub = self.redis.pubsub().await?;
        pubsub.subscribe(self.redis.keys.sold_out_channel()).await?;
        Ok(pubsub.into_on_message().map(|message| {
            let payload: String = message.get_payload().unwrap_or_default();
            let event = SoldOutEvent::parse(&payload);
            if event.is_none() {
                tracing::warn!(payload, "unreadable sold-out message ignored");
            }
            event
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages() {
        let p = ProductId::new(42).unwrap();
        assert_eq!(SoldOutEvent::parse("+42:7"), Some(SoldOutEvent::SoldOut(p)));
        assert_eq!(
            SoldOutEvent::parse("-42:8"),
            Some(SoldOutEvent::BackInStock(p))
        );
        assert_eq!(SoldOutEvent::parse("42:8"), None);
        assert_eq!(SoldOutEvent::parse("+x:1"), None);
        assert_eq!(SoldOutEvent::parse(""), None);
    }
}
