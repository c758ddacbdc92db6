//! The correctness audit run after a load: it waits for the product's order
//! queue to drain, then checks the invariants that must hold whatever the
//! load was. Every check prints PASS or FAIL; any FAIL makes the run fail.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use seckill_shared::keys::{MemberState, RedisKeys, ORDER_GROUP};
use seckill_shared::ProductId;
use serde::Serialize;
use sqlx::AnyPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The design: stock in Redis, orders written from the queue.
    Reserve,
    /// The naive baseline (`SECKILL_MODE=sync-db`): no Redis at all.
    SyncDb,
}

pub struct AuditInput {
    pub database_url: String,
    pub redis_url: String,
    pub key_prefix: String,
    pub product: i64,
    pub mode: Mode,
    /// Members the load was answered 202 for.
    pub accepted: Vec<i64>,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

pub async fn connect(database_url: &str) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?)
}

/// (pending, not yet delivered) entries of the product's order stream.
async fn queued(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> anyhow::Result<(u64, u64)> {
    let groups: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(stream).await?;
    let group = groups.groups.into_iter().find(|g| g.name == ORDER_GROUP);
    Ok(group
        .map(|g| (g.pending as u64, g.lag.unwrap_or(0) as u64))
        .unwrap_or((0, 0)))
}

pub async fn audit(input: &AuditInput) -> anyhow::Result<Vec<Check>> {
    let pool = connect(&input.database_url).await?;
    let product =
        ProductId::new(input.product).map_err(|_| anyhow::anyhow!("a product id is positive"))?;
    let keys = RedisKeys::new(input.key_prefix.clone()).map_err(|e| anyhow::anyhow!(e))?;

    // Redis side: wait until every reservation has been written.
    let mut redis_view = None;
    if input.mode == Mode::Reserve {
        let mut conn = redis::Client::open(input.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let started = Instant::now();
        let stream = keys.orders(product);
        let mut left = queued(&mut conn, &stream).await?;
        while left != (0, 0) && started.elapsed() < input.drain_timeout {
            tokio::time::sleep(Duration::from_millis(200)).await;
            left = queued(&mut conn, &stream).await?;
        }
        let stock: i64 = conn.hget(keys.item(product), "stock").await?;
        let members: HashMap<String, String> = conn.hgetall(keys.members(product)).await?;
        redis_view = Some((stock, left, members));
    }

    let (stock_total, stock_available): (i64, i64) =
        sqlx::query_as("SELECT stock_total, stock_available FROM products WHERE id = $1")
            .bind(input.product)
            .fetch_one(&pool)
            .await?;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT member_id, status FROM orders WHERE product_id = $1")
            .bind(input.product)
            .fetch_all(&pool)
            .await?;
    let live: Vec<i64> = rows
        .iter()
        .filter(|(_, s)| s != "cancelled")
        .map(|(m, _)| *m)
        .collect();
    let with_order: HashSet<i64> = rows.iter().map(|(m, _)| *m).collect();

    let mut checks = Vec::new();
    checks.push(Check {
        name: "no oversell",
        passed: live.len() as i64 <= stock_total,
        detail: format!("{} live orders for a stock of {stock_total}", live.len()),
    });
    let sold = match &redis_view {
        Some((redis_stock, _, _)) => stock_total - redis_stock,
        None => stock_total - stock_available,
    };
    checks.push(Check {
        name: "orders equal the stock sold",
        passed: sold == live.len() as i64,
        detail: format!("{sold} units sold, {} live orders", live.len()),
    });
    let mut seen = HashSet::new();
    let twice: Vec<i64> = live.iter().copied().filter(|m| !seen.insert(*m)).collect();
    checks.push(Check {
        name: "no member twice",
        passed: twice.is_empty(),
        detail: if twice.is_empty() {
            format!("{} members, one live order each", seen.len())
        } else {
            format!(
                "members with two live orders: {:?}",
                &twice[..twice.len().min(10)]
            )
        },
    });
    if let Some((redis_stock, (pending, lag), _)) = &redis_view {
        let reservations = pending + lag;
        checks.push(Check {
            name: "redis stock + live reservations = database stock",
            passed: redis_stock + reservations as i64 == stock_available,
            detail: format!("{redis_stock} + {reservations} vs {stock_available}"),
        });
    }
    let lost: Vec<i64> = input
        .accepted
        .iter()
        .copied()
        .filter(|m| !with_order.contains(m))
        .filter(|m| match &redis_view {
            Some((_, _, members)) => !matches!(
                members
                    .get(&m.to_string())
                    .and_then(|s| MemberState::decode(s)),
                Some(MemberState::Failed { .. })
            ),
            None => true,
        })
        .collect();
    checks.push(Check {
        name: "every 202 has an order or an explicit failed",
        passed: lost.is_empty(),
        detail: if lost.is_empty() {
            format!("{} accepted buys accounted for", input.accepted.len())
        } else {
            format!(
                "{} accepted buys without an order, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            )
        },
    });
    Ok(checks)
}

/// Prints the checks; true when all passed.
pub fn report(checks: &[Check]) -> bool {
    for check in checks {
        println!(
            "  {} {}: {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    checks.iter().all(|c| c.passed)
}
