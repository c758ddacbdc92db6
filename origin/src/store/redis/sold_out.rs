//! The sold-out registry: per registry group, the set of its products sold
//! out, a version that changes exactly when the set does, and a channel
//! that tells every origin at once (see `mark_sold_out.lua`). Edges read
//! the sets and versions through `GET /api/soldout` (the version they see
//! is the sum of the groups', which only grows); origins follow the
//! channels.
//!
//! On one Redis the channels are plain pub/sub. On a cluster they are
//! shard channels (`SPUBLISH`/`SSUBSCRIBE`): a message stays on the shard
//! that owns the group instead of crossing the whole cluster bus, and the
//! subscription follows the slot. A subscriber's stream ends whenever
//! messages may have been missed (a disconnection, a failover, or the
//! server unsubscribing it because the slot moved), so it resubscribes and
//! resynchronises from the sets.
//!
//! The registry is an optimisation: the reserve script stays the authority
//! on stock, and whoever uses the registry checks it against stock.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use redis::{PushKind, RedisResult, Script, Value};
use seckill_shared::api::SoldOutSnapshot;
use seckill_shared::keys::RegistryGroup;
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

    /// The registry, as edges read it: every group's set and version (one
    /// round trip per group, sent together). Fails if any group does not
    /// answer: a partial registry would look like products back in stock.
    pub async fn snapshot(&self) -> RedisResult<SoldOutSnapshot> {
        let keys = &self.redis.keys;
        let reads = RegistryGroup::all().map(|group| {
            let mut conn = self.redis.connection();
            let mut pipe = redis::pipe();
            pipe.smembers(keys.sold_out(group))
                .get(keys.sold_out_version(group));
            async move { pipe.query_async::<(Vec<i64>, Option<u64>)>(&mut conn).await }
        });
        let mut sold_out = Vec::new();
        let mut version = 0;
        for read in futures::future::join_all(reads).await {
            let (members, group_version) = read?;
            version += group_version.unwrap_or(0);
            sold_out.extend(members.into_iter().filter_map(|id| ProductId::new(id).ok()));
        }
        sold_out.sort();
        Ok(SoldOutSnapshot { version, sold_out })
    }

    /// Records a sell-out (or its end) and broadcasts it. Returns the
    /// version of the product's group after the call.
    pub async fn mark(&self, product: ProductId, sold_out: bool) -> RedisResult<u64> {
        let keys = &self.redis.keys;
        let group = RegistryGroup::of(product);
        self.mark
            .key(keys.sold_out(group))
            .key(keys.sold_out_version(group))
            .key(keys.sold_out_channel(group))
            .arg(product.get())
            .arg(if sold_out { "1" } else { "0" })
            .arg(if self.redis.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            })
            .invoke_async(&mut self.redis.connection())
            .await
    }

    /// Subscribes to every group's channel. Messages come in order until
    /// the subscription may have missed one (the stream then ends);
    /// anything published while not subscribed is lost, so a subscriber
    /// resynchronises from [`Self::snapshot`] after every (re)subscription.
    pub async fn subscribe(&self) -> RedisResult<BoxStream<'static, Option<SoldOutEvent>>> {
        let channels: Vec<String> = RegistryGroup::all()
            .map(|group| self.redis.keys.sold_out_channel(group))
            .collect();
        let (pushes, received) = tokio::sync::mpsc::unbounded_channel();
        let Some(subscriber) = self.redis.cluster_subscriber(pushes) else {
            let mut pubsub = self.redis.pubsub().await?;
            pubsub.subscribe(&channels).await?;
            return Ok(pubsub
                .into_on_message()
                .map(|message| {
                    let payload: String = message.get_payload().unwrap_or_default();
                    event_of(&payload)
                })
                .boxed());
        };
        let mut subscriber = subscriber?;
        for channel in &channels {
            subscriber.ssubscribe(channel).await?;
        }
        // The stream owns the connection: dropping it unsubscribes.
        Ok(futures::stream::unfold(
            (received, subscriber),
            |(mut received, subscriber)| async move {
                loop {
                    let push = received.recv().await?;
                    match push.kind {
                        PushKind::SMessage => {
                            let payload = push
                                .data
                                .get(1)
                                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                                .unwrap_or_default();
                            return Some((event_of(&payload), (received, subscriber)));
                        }
                        // Messages may have been missed: end, so the caller
                        // resubscribes and resynchronises.
                        PushKind::Disconnection | PushKind::SUnsubscribe => {
                            tracing::info!(kind = ?push.kind, data = ?push.data.first().map(printable),
                                "sold-out shard subscription interrupted");
                            return None;
                        }
                        _ => {}
                    }
                }
            },
        )
        .boxed())
    }
}

fn printable(value: &Value) -> String {
    redis::from_redis_value_ref::<String>(value).unwrap_or_else(|_| format!("{value:?}"))
}

fn event_of(payload: &str) -> Option<SoldOutEvent> {
    let event = SoldOutEvent::parse(payload);
    if event.is_none() {
        tracing::warn!(payload, "unreadable sold-out message ignored");
    }
    event
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
