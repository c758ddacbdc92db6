//! The soak's faults and the seeded schedule they are drawn from. The
//! schedule is made up front from the seed alone (which fault, when, for
//! how long, against which process), so a failing seed replays the same
//! schedule; faults run one after another, each bounded in time.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use seckill_shared::keys::{RedisKeys, ORDER_GROUP};
use seckill_shared::ProductId;
use serde::Serialize;
use sqlx::{Connection, Executor};

use super::cluster::Process;
use super::Cluster;

/// Which deadline poller a fault kills.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Poller {
    Worker,
    /// The one origin that polls deadlines (the last).
    Origin,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL an origin, start it again after `down_ms`.
    KillOrigin { origin: usize, down_ms: u64 },
    /// SIGKILL the worker (order consumers, deadline poller).
    KillWorker { down_ms: u64 },
    /// Cut the database so the pollers' settles stall with due deadlines
    /// claimed, then SIGKILL one poller holding them.
    KillDeadlinePoller { poller: Poller, stall_ms: u64 },
    /// SIGKILL Redis and restart it on its append-only file: nothing lost.
    RedisCrash { down_ms: u64 },
    /// SIGKILL Redis and restart it without its data: queued reservations
    /// are lost (expected, counted), everything the database knows comes
    /// back.
    RedisEmpty { down_ms: u64 },
    /// Every database connection dropped, new ones refused.
    DatabaseCut { ms: u64 },
    /// Every byte to and from the database held `delay_ms` each way.
    DatabaseSlow { delay_ms: u64, ms: u64 },
    /// A product row locked by another session (`SELECT … FOR UPDATE` in
    /// an open transaction), as someone's `psql` would.
    RowLock { product: usize, ms: u64 },
    /// One origin cut off from Redis (and so from pub/sub) while an item's
    /// sold-out flag changes elsewhere.
    #[serde(rename = "pubsub_cut")]
    PubSubCut { origin: usize, ms: u64 },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KillOrigin { .. } => "kill_origin",
            Self::KillWorker { .. } => "kill_worker",
            Self::KillDeadlinePoller { .. } => "kill_deadline_poller",
            Self::RedisCrash { .. } => "redis_crash",
            Self::RedisEmpty { .. } => "redis_empty",
            Self::DatabaseCut { .. } => "database_cut",
            Self::DatabaseSlow { .. } => "database_slow",
            Self::RowLock { .. } => "row_lock",
            Self::PubSubCut { .. } => "pubsub_cut",
        }
    }

    /// Roughly how long the fault lasts, restart included.
    fn hold_ms(&self) -> u64 {
        match self {
            Self::KillOrigin { down_ms, .. }
            | Self::KillWorker { down_ms }
            | Self::RedisCrash { down_ms }
            | Self::RedisEmpty { down_ms } => down_ms + 1_000,
            Self::KillDeadlinePoller { stall_ms, .. } => stall_ms + 1_500,
            Self::DatabaseCut { ms }
            | Self::DatabaseSlow { ms, .. }
            | Self::RowLock { ms, .. }
            | Self::PubSubCut { ms, .. } => *ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    /// When it starts, from the start of the load.
    pub at_ms: u64,
    pub fault: Fault,
}

const KINDS: usize = 9;

/// The schedule of one seed: every kind once in a shuffled round, round
/// after round, with a quiet gap between faults, until `load` minus a
/// quiet tail; at most `max` faults.
pub fn schedule(
    seed: u64,
    load: Duration,
    origins: usize,
    products: usize,
    max: usize,
) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = (load.as_millis() as u64).saturating_sub(6_000);
    let mut at = 4_000;
    let mut bag: Vec<usize> = Vec::new();
    let mut plan = Vec::new();
    while at < end && plan.len() < max {
        if bag.is_empty() {
            bag = (0..KINDS).collect();
            bag.shuffle(&mut rng);
        }
        let fault = match bag.pop().expect("refilled above") {
            0 => Fault::KillOrigin {
                origin: rng.random_range(0..origins),
                down_ms: rng.random_range(200..2_000),
            },
            1 => Fault::KillWorker {
                down_ms: rng.random_range(200..2_000),
            },
            2 => Fault::KillDeadlinePoller {
                poller: if rng.random_bool(0.5) {
                    Poller::Worker
                } else {
                    Poller::Origin
                },
                stall_ms: rng.random_range(800..2_500),
            },
            3 => Fault::RedisCrash {
                down_ms: rng.random_range(100..1_500),
            },
            4 => Fault::RedisEmpty {
                down_ms: rng.random_range(100..1_500),
            },
            5 => Fault::DatabaseCut {
                ms: rng.random_range(500..4_000),
            },
            6 => Fault::DatabaseSlow {
                delay_ms: rng.random_range(20..200),
                ms: rng.random_range(1_000..5_000),
            },
            7 => Fault::RowLock {
                product: rng.random_range(0..products),
                ms: rng.random_range(1_000..7_000),
            },
            _ => Fault::PubSubCut {
                origin: rng.random_range(0..origins),
                ms: rng.random_range(1_000..4_000),
            },
        };
        let hold = fault.hold_ms();
        plan.push(Planned { at_ms: at, fault });
        at += hold + rng.random_range(1_000..4_000);
    }
    plan
}

/// What happened when a fault ran.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub at_ms: u64,
    pub started_ms: u64,
    pub took_ms: u64,
    pub fault: Fault,
    /// What the fault met (queued reservations lost, deadlines held…).
    pub details: serde_json::Value,
    /// A step of the fault that went wrong (a process that would not
    /// start again, …): the soak fails on it.
    pub error: Option<String>,
}

/// Queued reservations across `products`: (delivered to a consumer and
/// not yet acknowledged, not yet delivered).
async fn queued(redis_url: &str, keys: &RedisKeys, products: &[i64]) -> anyhow::Result<(u64, u64)> {
    let mut conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut total = (0, 0);
    for product in products {
        let stream = keys.orders(ProductId::new(*product).expect("positive"));
        let exists: bool = conn.exists(&stream).await?;
        if !exists {
            continue;
        }
        let groups: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(&stream).await?;
        if let Some(group) = groups.groups.into_iter().find(|g| g.name == ORDER_GROUP) {
            total.0 += group.pending as u64;
            total.1 += group.lag.unwrap_or(0) as u64;
        }
    }
    Ok(total)
}

/// Deadlines currently claimed by a poller: a claim moves an entry's
/// score past the order's deadline (to the claim time plus the lease).
async fn claimed_deadlines(cluster: &Cluster) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(cluster.redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let mut entries: Vec<(String, i64)> = Vec::new();
    for group in seckill_shared::keys::RegistryGroup::all() {
        let group_entries: Vec<(String, i64)> = conn
            .zrange_withscores(cluster.keys.pay_deadlines(group), 0, -1)
            .await?;
        entries.extend(group_entries);
    }
    let mut db = sqlx::PgConnection::connect(&cluster.db.url).await?;
    let deadlines: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, pay_deadline_ms FROM orders WHERE status = 'unpaid'")
            .fetch_all(&mut db)
            .await?;
    let _ = db.close().await;
    let deadline_of: std::collections::HashMap<i64, i64> = deadlines.into_iter().collect();
    Ok(entries
        .iter()
        .filter_map(|(entry, score)| {
            let entry = seckill_shared::keys::DeadlineEntry::decode(entry)?;
            let deadline = deadline_of.get(&entry.order)?;
            (*score > deadline + 100).then_some(())
        })
        .count() as u64)
}

/// Starts a killed process again, retrying a few times (a port in
/// TIME_WAIT, a database still refusing).
async fn restart(process: &mut Process) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match process.start().await {
            Ok(()) => return Ok(()),
            Err(err) => {
                last = Some(err);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Err(last.expect("tried at least once"))
}

/// Runs one fault to its end.
pub async fn inject(cluster: &mut Cluster, fault: &Fault) -> (serde_json::Value, Option<String>) {
    let result: anyhow::Result<serde_json::Value> = async {
        match *fault {
            Fault::KillOrigin { origin, down_ms } => {
                let process = &mut cluster.origins[origin];
                process.kill().await;
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                restart(process).await?;
                Ok(serde_json::json!({ "origin": process.spec.name }))
            }
            Fault::KillWorker { down_ms } => {
                cluster.worker.kill().await;
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                restart(&mut cluster.worker).await?;
                Ok(serde_json::json!({}))
            }
            Fault::KillDeadlinePoller { poller, stall_ms } => {
                cluster.db_proxy.cut();
                tokio::time::sleep(Duration::from_millis(stall_ms)).await;
                let held = claimed_deadlines(cluster).await.ok();
                let process = match poller {
                    Poller::Worker => &mut cluster.worker,
                    Poller::Origin => cluster.origins.last_mut().expect("an origin"),
                };
                process.kill().await;
                cluster.db_proxy.restore();
                tokio::time::sleep(Duration::from_millis(300)).await;
                restart(process).await?;
                Ok(serde_json::json!({
                    "killed": process.spec.name,
                    "deadlines_claimed_at_kill": held,
                }))
            }
            Fault::RedisCrash { down_ms } => {
                let queued = queued(&cluster.redis.url(), &cluster.keys, &cluster.products)
                    .await
                    .ok();
                cluster.redis.kill().await;
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                cluster.redis.restart(false).await?;
                Ok(serde_json::json!({
                    "pending_at_crash": queued.map(|q| q.0),
                    "undelivered_at_crash": queued.map(|q| q.1),
                }))
            }
            Fault::RedisEmpty { down_ms } => {
                let queued = queued(&cluster.redis.url(), &cluster.keys, &cluster.products)
                    .await
                    .ok();
                // Counted before the kill: a buy sent from now on may be
                // answered by the Redis that is about to be lost.
                cluster
                    .shared
                    .wipes
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                cluster.redis.kill().await;
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                cluster.redis.restart(true).await?;
                Ok(serde_json::json!({
                    "pending_at_restart": queued.map(|q| q.0),
                    "undelivered_at_restart": queued.map(|q| q.1),
                }))
            }
            Fault::DatabaseCut { ms } => {
                cluster.db_proxy.cut();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                cluster.db_proxy.restore();
                Ok(serde_json::json!({}))
            }
            Fault::DatabaseSlow { delay_ms, ms } => {
                cluster.db_proxy.set_delay(Duration::from_millis(delay_ms));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                cluster.db_proxy.set_delay(Duration::ZERO);
                Ok(serde_json::json!({}))
            }
            Fault::RowLock { product, ms } => {
                let product = cluster.products[product];
                let mut conn = sqlx::PgConnection::connect(&cluster.db.url).await?;
                conn.execute("BEGIN").await?;
                sqlx::query("SELECT id FROM products WHERE id = $1 FOR UPDATE")
                    .bind(product)
                    .execute(&mut conn)
                    .await?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                conn.execute("COMMIT").await?;
                let _ = conn.close().await;
                Ok(serde_json::json!({ "product": product }))
            }
            Fault::PubSubCut { origin, ms } => {
                cluster.redis_proxies[origin].cut();
                // The flag changes elsewhere: the emptiest item is restocked
                // through another origin (a sold-out item's flag clears).
                let mut conn = redis::Client::open(cluster.redis.url())?
                    .get_multiplexed_async_connection()
                    .await?;
                let mut emptiest = (i64::MAX, cluster.products[0]);
                for product in &cluster.products {
                    let stock: Option<i64> = conn
                        .hget(
                            cluster
                                .keys
                                .item(ProductId::new(*product).expect("positive")),
                            "stock",
                        )
                        .await?;
                    emptiest = emptiest.min((stock.unwrap_or(i64::MAX), *product));
                }
                let (stock, product) = emptiest;
                let through = (origin + 1) % cluster.origins.len();
                let patched = super::restock(cluster, through, product, 10).await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                cluster.redis_proxies[origin].restore();
                Ok(serde_json::json!({
                    "origin": cluster.origins[origin].spec.name,
                    "restocked": product,
                    "was_sold_out": stock == 0,
                    "restock_answer": patched,
                }))
            }
        }
    }
    .await;
    match result {
        Ok(details) => (details, None),
        Err(err) => (serde_json::Value::Null, Some(format!("{err:#}"))),
    }
}

/// Runs the schedule against the cluster until its end or `until`.
pub async fn run(cluster: &mut Cluster, plan: &[Planned], started: Instant) -> Vec<Injected> {
    let mut done = Vec::new();
    for planned in plan {
        let at = started + Duration::from_millis(planned.at_ms);
        tokio::time::sleep_until(at.into()).await;
        let began = Instant::now();
        eprintln!(
            "chaos: {:>6.1} s {} {}",
            started.elapsed().as_secs_f64(),
            planned.fault.kind(),
            serde_json::to_string(&planned.fault).unwrap_or_default()
        );
        let (details, error) = inject(cluster, &planned.fault).await;
        if let Some(error) = &error {
            eprintln!("chaos: the fault went wrong: {error}");
        }
        done.push(Injected {
            at_ms: planned.at_ms,
            started_ms: began.duration_since(started).as_millis() as u64,
            took_ms: began.elapsed().as_millis() as u64,
            fault: planned.fault.clone(),
            details,
            error,
        });
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_schedule_and_covers_every_kind() {
        let plan = |seed| {
            serde_json::to_string(&schedule(seed, Duration::from_secs(75), 3, 4, 100)).unwrap()
        };
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
        let kinds: std::collections::HashSet<&str> =
            schedule(7, Duration::from_secs(75), 3, 4, 100)
                .iter()
                .map(|p| p.fault.kind())
                .collect();
        assert_eq!(kinds.len(), KINDS, "{kinds:?}");
    }
}
