//! The Redis side: one small gateway per thing kept there, each owning its
//! keys and its Lua scripts, built on one shared handle ([`Redis`]).
//!
//! | gateway | owns |
//! |---|---|
//! | [`stock::Stock`] | an item's live stock and description, its members' states, returned reservations, applied stock edits, the live-product registry; the reserve, preheat, release, adjust and repair scripts |
//! | [`order_streams::OrderStreams`] | each product's order stream and dead-letter stream, read by the `order-writers` group; the ack script |
//! | [`sold_out::SoldOutRegistry`] | the sold-out set, its version and its pub/sub channel |
//! | [`deadlines::PaymentDeadlines`] | the sorted set of unpaid orders' deadlines; the claim script |
//! | [`leases::Leases`] | leases that make one process at a time do a job |
//! | [`product_changes::ChangeStream`] | the stream of catalogue changes and its `cache-refresh` group |
//!
//! The connection is a lazily connecting, self-healing `ConnectionManager`:
//! while Redis is down calls fail fast (the API answers 503) and the next
//! call after it returns reconnects by itself. Scripts are called by SHA
//! (`redis::Script` loads them again on `NOSCRIPT`, e.g. after a restart).

pub mod deadlines;
pub mod leases;
pub mod order_streams;
pub mod product_changes;
mod reserve_batcher;
pub mod sold_out;
pub mod stock;
mod stream_group;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError};
use seckill_shared::keys::RedisKeys;

pub use reserve_batcher::RESERVE_LUA;

/// The connection every gateway shares, and the key names.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    keys: RedisKeys,
}

impl Redis {
    /// Creates the handle without connecting: the origin starts (and answers
    /// 503) while Redis is down, and connects when it comes up.
    pub fn new(url: &str, keys: RedisKeys) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), connection_config())?;
        Ok(Self { client, conn, keys })
    }

    /// The shared, multiplexed connection (a cheap clone).
    fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK`) that
    /// must not hold up the shared one the buy path uses.
    fn dedicated(&self) -> redis::RedisResult<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), connection_config())
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.connection())
            .await
    }

    /// A pub/sub connection (it cannot share the multiplexed one).
    async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }
}

/// Fail fast while Redis is down (the API answers 503 at once) and
/// reconnect on the next call after it returns. The response timeout is
/// longer than any blocking read the consumers issue.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// Redis is down, restarting, failing over or out of memory: retry later.
/// A reply this code cannot read, a wrong type or a script error is a
/// defect, not an outage.
pub(super) fn is_transient(err: &RedisError) -> bool {
    match err.kind() {
        ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::InvalidClientConfig
        | ErrorKind::Client => false,
        ErrorKind::Extension => err.code() == Some("OOM") || err.code() == Some("BUSY"),
        ErrorKind::Server(_) => {
            err.is_cluster_error() || !matches!(err.retry_method(), redis::RetryMethod::NoRetry)
        }
        _ => true,
    }
}

/// The command was sent and then the connection broke or timed out: Redis
/// may have run it. A refused connection means it never left.
pub(super) fn may_have_run(err: &RedisError) -> bool {
    !err.is_connection_refusal()
        && (err.is_timeout() || err.is_connection_dropped() || err.is_unrecoverable_error())
}

/// A reply that does not have the shape a script promises.
fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Parse, what))
}
