//! Keeps this node's sold-out flags in step with every other node's,
//! through Redis pub/sub (the seed's `cleanNoStockCache` channel).
//!
//! Pub/sub has no acknowledgements: a node that is disconnected misses
//! messages. So every (re)subscription starts with a full resynchronisation
//! from the sold-out registry, checked against the real stock; and flags
//! expire by themselves (`SECKILL_SOLDOUT_TTL_MS`), so none sticks forever.

use std::time::Duration;

use futures::StreamExt;
use seckill_shared::ProductId;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

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

pub async fn run(state: AppState, redis_url: String, shutdown: CancellationToken) {
    let channel = state.inventory.keys().sold_out_channel();
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match subscribe_and_follow(&state, &redis_url, &channel, &shutdown).await {
            Ok(()) => return, // shutdown
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64,
                    "sold-out subscription lost; will resubscribe and resynchronise");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn subscribe_and_follow(
    state: &AppState,
    redis_url: &str,
    channel: &str,
    shutdown: &CancellationToken,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(redis_url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    // Subscribed first, then read the registry: nothing can fall between.
    let asked_ms = state.sold_out.now_ms();
    let sold_out = state.inventory.verified_sold_out().await?;
    tracing::info!(
        flags = sold_out.len(),
        "sold-out flags resynchronised from redis"
    );
    state.sold_out.replace_all(sold_out, asked_ms);

    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connection closed")));
                };
                let payload: String = message.get_payload().unwrap_or_default();
                match SoldOutEvent::parse(&payload) {
                    Some(SoldOutEvent::SoldOut(product)) => {
                        state.sold_out.raise(product);
                    }
                    Some(SoldOutEvent::BackInStock(product)) => {
                        state.sold_out.clear(product);
                        state.catalog.invalidate(product);
                    }
                    None => tracing::warn!(payload, "unreadable sold-out message ignored"),
                }
            }
        }
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
