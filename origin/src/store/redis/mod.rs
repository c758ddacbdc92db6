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
//! The connection is one of two, chosen by configuration (`REDIS_URL` or
//! `REDIS_CLUSTER_NODES`) and hidden behind [`Conn`]: a lazily connecting,
//! self-healing `ConnectionManager` to one Redis, or a cluster connection
//! that keeps one multiplexed connection per node, follows `MOVED`/`ASK`
//! and refreshes its slot map after a failover. While Redis is down calls
//! fail fast (the API answers 503) and the next call after it returns
//! reconnects by itself. Scripts are called by SHA (`redis::Script` loads
//! them again on `NOSCRIPT`, e.g. after a restart or on a new primary), and
//! every script touches keys of one slot, so it runs on either.
pub mod deadlines;
pub mod leases;
pub mod order_streams;
pub mod product_changes;
mod reserve_batcher;
pub mod sold_out;
pub mod stock;
mod stream_group;

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, ProtocolVersion, RedisError, RedisFuture, Value};
use seckill_shared::keys::RedisKeys;

pub use reserve_batcher::RESERVE_LUA;

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://host:port`
    Single(String),
    /// `host:port` of some nodes; the rest are discovered from them.
    Cluster(Vec<String>),
}

#[derive(Clone)]
enum Client {
    Single(redis::Client),
    Cluster {
        client: Box<ClusterClient>,
        seeds: Vec<String>,
    },
}

/// A connection to one Redis or to a cluster: every gateway talks through
/// this, so the same commands and scripts run on both.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Conn {
    /// `WAIT replicas timeout` on the primary that owns `key`'s slot (on a
    /// cluster, sent to all primaries it would answer the smallest count):
    /// how many of its replicas have every write this connection sent it.
    pub(super) async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u16,
        timeout: Duration,
    ) -> redis::RedisResult<i64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        match self {
            Self::Single(conn) => wait.query_async(conn).await,
            Self::Cluster(conn) => {
                let route = redis::cluster_routing::Route::with_key(
                    key,
                    redis::cluster_routing::SlotAddr::Master,
                );
                let acked = conn
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(acked)?)
            }
        }
    }
}

/// What `/readyz` reports about Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisHealth {
    /// One Redis answered `PING`.
    Single,
    /// A cluster: its own view (`cluster_state`) and how many primaries
    /// answered `PING` out of how many own slots.
    Cluster {
        state: String,
        primaries: usize,
        reachable: usize,
    },
}

impl RedisHealth {
    pub fn is_ok(&self) -> bool {
        match self {
            Self::Single => true,
            Self::Cluster {
                state,
                primaries,
                reachable,
            } => state == "ok" && *primaries > 0 && reachable == primaries,
        }
    }
}

/// The connection every gateway shares, and the key names.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    conn: Conn,
    keys: RedisKeys,
}

impl Redis {
    /// Creates the handle without connecting: the origin starts (and answers
    /// 503) while Redis is down, and connects when it comes up.
    pub fn new(target: &RedisTarget, keys: RedisKeys) -> redis::RedisResult<Self> {
        let client = match target {
            RedisTarget::Single(url) => Client::Single(redis::Client::open(url.as_str())?),
            RedisTarget::Cluster(nodes) => Client::Cluster {
                client: Box::new(cluster_client(nodes, ProtocolVersion::RESP2)?),
                seeds: nodes.clone(),
            },
        };
        let conn = connect(&client)?;
        Ok(Self { client, conn, keys })
    }

    /// True on Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster { .. })
    }

    /// The shared, multiplexed connection (a cheap clone).
    fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK`) that
    /// must not hold up the shared one the buy path uses.
    fn dedicated(&self) -> redis::RedisResult<Conn> {
        connect(&self.client)
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.connection())
            .await
    }

    /// Redis answers; on a cluster, the cluster's state and its primaries.
    pub async fn health(&self) -> redis::RedisResult<RedisHealth> {
        let Conn::Cluster(mut conn) = self.connection() else {
            self.ping().await?;
            return Ok(RedisHealth::Single);
        };
        let info = conn
            .route_command(
                redis::cmd("CLUSTER").arg("INFO").to_owned(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let info: String = redis::from_redis_value(info)?;
        let state = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("cluster_state:"))
            .unwrap_or("unknown")
            .to_string();
        let primaries = primaries(&mut conn).await?;
        let pings = primaries.iter().map(|(host, port)| {
            let mut conn = conn.clone();
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            });
            async move {
                let ping = conn.route_command(redis::cmd("PING").to_owned(), route);
                matches!(
                    tokio::time::timeout(Duration::from_secs(1), ping).await,
                    Ok(Ok(_))
                )
            }
        });
        let reachable = futures::future::join_all(pings)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        Ok(RedisHealth::Cluster {
            state,
            primaries: primaries.len(),
            reachable,
        })
    }

    /// A pub/sub connection to one Redis (it cannot share the multiplexed
    /// one). On a cluster the sold-out registry subscribes through
    /// [`Self::cluster_subscriber`] instead.
    async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match &self.client {
            Client::Single(client) => client.get_async_pubsub().await,
            Client::Cluster { .. } => Err(RedisError::from((
                ErrorKind::Client,
                "plain pub/sub is for one Redis; a cluster uses sharded pub/sub",
            ))),
        }
    }

    /// A cluster connection of its own speaking RESP3, whose push messages
    /// (published messages, subscription changes, disconnections) go to
    /// `pushes`. `None` on one Redis.
    fn cluster_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Option<redis::RedisResult<ClusterConnection>> {
        let Client::Cluster { seeds, .. } = &self.client else {
            return None;
        };
        // A client of its own: the data connections stay on RESP2, whose
        // replies the gateways read.
        Some(cluster_client(seeds, ProtocolVersion::RESP3).map(|client| {
            client
                .get_pending_async_connection_with_config(cluster_config().set_push_sender(pushes))
        }))
    }
}

/// The primaries that own slots, as `CLUSTER SLOTS` lists them.
async fn primaries(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let slots = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let ranges: Vec<Vec<Value>> = redis::from_redis_value(slots)?;
    let mut found: Vec<(String, u16)> = ranges
        .into_iter()
        .filter_map(|range| {
            let primary: Vec<Value> = redis::from_redis_value(range.get(2)?.clone()).ok()?;
            let host: String = redis::from_redis_value(primary.first()?.clone()).ok()?;
            let port: u16 = redis::from_redis_value(primary.get(1)?.clone()).ok()?;
            Some((host, port))
        })
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

fn connect(client: &Client) -> redis::RedisResult<Conn> {
    Ok(match client {
        Client::Single(client) => Conn::Single(ConnectionManager::new_lazy_with_config(
            client.clone(),
            connection_config(),
        )?),
        Client::Cluster { client, .. } => {
            Conn::Cluster(client.get_pending_async_connection_with_config(cluster_config()))
        }
    })
}

/// The cluster client: seed nodes as `host:port`. Redirects, `TRYAGAIN`
/// and `CLUSTERDOWN` are retried with backoff for about the time a
/// failover takes to be noticed and decided (a few node timeouts).
fn cluster_client(
    nodes: &[String],
    protocol: ProtocolVersion,
) -> redis::RedisResult<ClusterClient> {
    let urls: Vec<String> = nodes.iter().map(|node| format!("redis://{node}")).collect();
    redis::cluster::ClusterClientBuilder::new(urls)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(50)
        .max_retry_wait(1_000)
        .use_protocol(protocol)
        .build()
}

/// Retries of one request on a cluster (redirects, `TRYAGAIN`,
/// `CLUSTERDOWN`, a primary that stopped answering).
const CLUSTER_RETRIES: u32 = 8;

/// Timeouts of cluster connections, as for one Redis (see below).
fn cluster_config() -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(5))
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

/// The answers of one command per registry group: those that came, unless
/// none did (then the first failure). A group whose shard is failing over
/// must not stop the work on the others.
fn any_answered<T>(answers: Vec<redis::RedisResult<T>>) -> redis::RedisResult<Vec<T>> {
    let mut got = Vec::with_capacity(answers.len());
    let mut first_err = None;
    for answer in answers {
        match answer {
            Ok(value) => got.push(value),
            Err(err) => {
                tracing::debug!(error = %err, "a registry group did not answer");
                first_err.get_or_insert(err);
            }
        }
    }
    match first_err {
        Some(err) if got.is_empty() => Err(err),
        _ => Ok(got),
    }
}

/// A reply that does not have the shape a script promises.
fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Parse, what))
}
