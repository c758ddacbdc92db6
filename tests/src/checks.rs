//! Driving load and reading outcomes: concurrent buys, orders in the
//! database, stock, and the order stream's pending count; and the
//! invariant audit, which is `seckill_bench::audit` (the one the bench
//! and the chaos soak run), not a copy of it.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use seckill_shared::keys::{RedisKeys, RegistryGroup, ORDER_GROUP};
use seckill_shared::ProductId;
use sqlx::AnyPool;
use tokio::sync::Semaphore;

use crate::client::Api;

/// The key names every test origin uses (the default prefix).
pub fn keys() -> RedisKeys {
    RedisKeys::new("seckill:").unwrap()
}

pub fn pid(id: i64) -> ProductId {
    ProductId::new(id).unwrap()
}

/// The registry group of a product (its registry, sold-out and deadline keys).
pub fn group(id: i64) -> RegistryGroup {
    RegistryGroup::of(pid(id))
}

/// Payment deadlines scheduled, over every registry group, with a score
/// of at least `from_ms` (`0`: all of them).
pub async fn deadlines_from<C>(conn: &mut C, from_ms: i64) -> u64
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    let mut total = 0;
    for group in RegistryGroup::all() {
        let count: u64 = conn
            .zcount(keys().pay_deadlines(group), from_ms, "+inf")
            .await
            .expect("ZCOUNT of a deadline set");
        total += count;
    }
    total
}

/// One buy's outcome: `(member, status, error code)`.
pub type BuyOutcome = (i64, u16, Option<String>);

/// Fires a buy for every member at once, at most `concurrency` in flight.
pub async fn rush(
    api: &Api,
    product: i64,
    members: impl IntoIterator<Item = i64>,
    concurrency: usize,
) -> Vec<BuyOutcome> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for member in members {
        let (api, gate) = (api.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let reply = api.buy(product, member).await;
            (member, reply.status, reply.error().map(str::to_string))
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.unwrap());
    }
    outcomes
}

/// Buys for every member; returns the members answered 202, sorted.
pub async fn buy_all(api: &Api, product: i64, members: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut queued: Vec<i64> = rush(api, product, members, 100)
        .await
        .into_iter()
        .filter(|(_, status, _)| *status == 202)
        .map(|(member, _, _)| member)
        .collect();
    queued.sort();
    queued
}

/// `(order id, member id, status)` of every order of `product`.
pub async fn orders(pool: &AnyPool, product: i64) -> Vec<(i64, i64, String)> {
    sqlx::query_as("SELECT id, member_id, status FROM orders WHERE product_id = $1 ORDER BY id")
        .bind(product)
        .fetch_all(pool)
        .await
        .expect("read orders")
}

pub async fn stock_available(pool: &AnyPool, product: i64) -> i64 {
    let (stock,): (i64,) = sqlx::query_as("SELECT stock_available FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(pool)
        .await
        .expect("read product");
    stock
}

/// Redis' live stock of `product`.
pub async fn redis_stock<C>(conn: &mut C, product: i64) -> i64
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    redis::cmd("HGET")
        .arg(keys().item(pid(product)))
        .arg("stock")
        .query_async(conn)
        .await
        .expect("read redis stock")
}

/// Waits until the database holds `count` orders for `product`, then a
/// little longer to make sure no more appear.
pub async fn wait_for_orders(
    pool: &AnyPool,
    product: i64,
    count: usize,
) -> Vec<(i64, i64, String)> {
    crate::eventually(
        Duration::from_secs(60),
        &format!("{count} orders of product {product}"),
        || async {
            let rows = orders(pool, product).await;
            assert!(
                rows.len() <= count,
                "more orders than reservations: {}",
                rows.len()
            );
            (rows.len() == count).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = orders(pool, product).await;
    assert_eq!(rows.len(), count, "no further orders appear");
    rows
}

/// Entries of `product`'s order stream delivered but not acknowledged.
pub async fn pending<C>(conn: &mut C, product: i64) -> u64
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(keys().orders(pid(product)))
        .arg(ORDER_GROUP)
        .query_async(conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(parts) => redis::from_redis_value_ref(&parts[0]).unwrap(),
        _ => 0,
    }
}

/// One origin's sold-out refusals: `(answered from its local flag, answered
/// by the reserve script in Redis)`.
pub async fn sold_out_refusals(api: &Api) -> (f64, f64) {
    let metric = "seckill_sold_out_rejections_total";
    (
        api.metric(metric, &[("source", "local_flag")]).await,
        api.metric(metric, &[("source", "redis")]).await,
    )
}

/// Runs reconciliation now (`POST /admin/reconcile`) and returns the
/// product's line of the report.
pub async fn reconcile(api: &Api, product: i64) -> serde_json::Value {
    let report = api
        .send(
            reqwest::Method::POST,
            "/admin/reconcile",
            Some(crate::ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(report.status, 200, "{:?}", report.body);
    report
        .body
        .as_array()
        .expect("a report is a list")
        .iter()
        .find(|item| item["product_id"] == product)
        .cloned()
        .unwrap_or_else(|| panic!("product {product} is not in {:?}", report.body))
}

/// Runs one statement with the product id as its `$1`.
pub async fn sql(pool: &AnyPool, statement: &str, product: i64) {
    sqlx::query(statement)
        .bind(product)
        .execute(pool)
        .await
        .expect(statement);
}

/// The shared invariant audit of `products` in `db` and `redis`, with the
/// buys answered 202 as `(product, member)`: panics naming every broken
/// invariant.
pub async fn assert_invariants(
    redis: &impl AuditedRedis,
    db: &crate::TestDatabase,
    products: &[i64],
    accepted: &[(i64, i64)],
) -> seckill_bench::audit::AuditReport {
    let accepted: Vec<(i64, i64, bool)> = accepted
        .iter()
        .map(|&(product, member)| (product, member, false))
        .collect();
    assert_invariants_with_losses(redis, db, products, &accepted).await
}

/// [`assert_invariants`] for a test in which Redis may have lost some
/// accepted buys with its data: `accepted` is `(product, member, loss
/// expected)`, and a buy marked so that ended as nothing is reported in
/// the report's `expected_losses`, not as a broken invariant.
pub async fn assert_invariants_with_losses(
    redis: &impl AuditedRedis,
    db: &crate::TestDatabase,
    products: &[i64],
    accepted: &[(i64, i64, bool)],
) -> seckill_bench::audit::AuditReport {
    use seckill_bench::audit::{Accepted, Scope};
    let mut scope = redis
        .audited(Scope::new(db.url()))
        .products(products.iter().copied());
    scope.accepted = accepted
        .iter()
        .map(|&(product, member, loss_expected)| Accepted {
            product,
            member,
            loss_expected,
        })
        .collect();
    let report = seckill_bench::audit::run(&scope)
        .await
        .expect("the audit reads redis and the database");
    assert!(report.passed, "invariants broke:\n{}", report.failures());
    report
}

/// A test's Redis, one server or a cluster, as the audit reads it.
pub trait AuditedRedis {
    fn audited(&self, scope: seckill_bench::audit::Scope) -> seckill_bench::audit::Scope;
}

impl AuditedRedis for crate::RedisServer {
    fn audited(&self, scope: seckill_bench::audit::Scope) -> seckill_bench::audit::Scope {
        scope.redis(self.url(), keys().prefix())
    }
}

impl AuditedRedis for crate::RedisCluster {
    fn audited(&self, scope: seckill_bench::audit::Scope) -> seckill_bench::audit::Scope {
        let nodes = self
            .ports()
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect();
        scope.redis_cluster(nodes, keys().prefix())
    }
}

impl AuditedRedis for crate::TestRedis {
    fn audited(&self, scope: seckill_bench::audit::Scope) -> seckill_bench::audit::Scope {
        match self {
            crate::TestRedis::Single(server) => server.audited(scope),
            crate::TestRedis::Cluster(cluster) => cluster.audited(scope),
        }
    }
}
