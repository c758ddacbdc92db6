//! Recovery paths that keep every promise: the database is the source of
//! truth for everything durable, and Redis a fast, losable copy. Each test
//! reproduces an interleaving that broke an invariant before its fix.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::Method;
use seckill_shared::api::ResultStatus;
use seckill_tests::checks::{
    buy_all, keys, orders, redis_stock, stock_available, wait_for_orders,
};
use seckill_tests::{
    eventually, Api, AppSettings, Backend, RedisServer, Sale, TestApp, TestDatabase, TestWorker,
    ADMIN_TOKEN,
};
use serde_json::Value;
use sqlx::AnyPool;

/// Orders of `product` by status: `(unpaid, paid, cancelled)`.
async fn by_status(pool: &AnyPool, product: i64) -> (usize, usize, usize) {
    let rows = orders(pool, product).await;
    let count = |status: &str| rows.iter().filter(|(_, _, s)| s == status).count();
    (count("unpaid"), count("paid"), count("cancelled"))
}

/// Runs reconciliation now and returns the product's line of the report.
async fn reconcile(api: &Api, product: i64) -> Value {
    let report = api
        .send(Method::POST, "/admin/reconcile", Some(ADMIN_TOKEN), None)
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

async fn flush(redis: &RedisServer) {
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
}

/// Redis restarted without its data: the item is reloaded from the
/// database with everything Redis lost — members holding orders, the
/// payment deadlines of unpaid orders, and which reservations' units
/// already went back — so unpaid orders are still cancelled on time, their
/// stock returns once, their members may buy again, and reconciliation
/// does not call the item busy forever.
async fn redis_data_loss_rebuilds_what_the_database_knows(backend: Backend) {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    // No backstop sweep: the reload alone must bring the deadlines back.
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_PAY_TIMEOUT_S", 3)
            .set("SECKILL_CANCEL_POLL_MS", 100)
            .set("SECKILL_SWEEP_INTERVAL_S", 0)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let api = origin.api();
    let pool = db.pool().await;

    // One product whose order was cancelled before the loss (its unit is
    // back: the returned-stock state must survive), one with unpaid orders.
    let cancelled = api.create_sale(&Sale::open(5)).await.product_id.get();
    assert_eq!(buy_all(&api, cancelled, [1]).await, vec![1]);
    wait_for_orders(&pool, cancelled, 1).await;
    eventually(Duration::from_secs(10), "the first order to be cancelled", || {
        let pool = pool.clone();
        async move { (by_status(&pool, cancelled).await == (0, 0, 1)).then_some(()) }
    })
    .await;

    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=4).await, vec![1, 2, 3, 4]);
    wait_for_orders(&pool, product, 4).await;
    let paid = orders(&pool, product).await[0].clone();
    assert_eq!(api.pay(paid.0, paid.1).await.status, 200);

    flush(&redis).await;
    // The next buy finds the item unknown to Redis and reloads it.
    assert_eq!(
        api.buy(product, 2).await.error(),
        Some("already_ordered"),
        "members holding orders are known again"
    );
    let mut conn = redis.connection().await;
    assert_eq!(redis_stock(&mut conn, product).await, 6);
    let deadlines: u64 = conn.zcard(keys().pay_deadlines()).await.unwrap();
    assert_eq!(deadlines, 3, "the three unpaid orders' deadlines are back");

    // The deadlines pass: the unpaid orders are cancelled, their units come
    // back exactly once, and their members may buy again.
    eventually(Duration::from_secs(10), "the unpaid orders to be cancelled", || {
        let pool = pool.clone();
        async move { (by_status(&pool, product).await == (0, 1, 3)).then_some(()) }
    })
    .await;
    eventually(Duration::from_secs(5), "the units back in redis", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == 9).then_some(()) }
    })
    .await;
    assert_eq!(stock_available(&pool, product).await, 9);
    assert_eq!(api.buy(product, 2).await.status, 202, "free to buy again");

    // Reconciliation sees both items as they are, not as half-done
    // cancellations (which is what an empty returned-stock set looks like).
    api.product(cancelled).await;
    let item = reconcile(&api, cancelled).await;
    assert_eq!(item["note"], "in step", "{item}");
    assert_eq!(item["drift"], 0, "{item}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_loss_rebuilds_what_the_database_knows_sqlite() {
    redis_data_loss_rebuilds_what_the_database_knows(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_loss_rebuilds_what_the_database_knows_postgres() {
    redis_data_loss_rebuilds_what_the_database_knows(Backend::Postgres).await;
}

/// An order committed in the second that `appendfsync everysec` lost: the
/// item is still live, but Redis never heard of its deadline. The backstop
/// sweep finds it in the database and cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backstop_sweep_cancels_orders_redis_forgot() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_PAY_TIMEOUT_S", 3)
            .set("SECKILL_CANCEL_POLL_MS", 100)
            .set("SECKILL_CANCEL_LEASE_MS", 500)
            .set("SECKILL_SWEEP_INTERVAL_S", 1),
    )
    .await;
    let api = origin.api();
    let pool = db.pool().await;
    let product = api.create_sale(&Sale::open(3)).await.product_id.get();
    let mut conn = redis.connection().await;
    assert_eq!(buy_all(&api, product, 1..=3).await.len(), 3);
    wait_for_orders(&pool, product, 3).await;
    // Lose the deadlines before they come due, as a lost write would.
    let _: () = conn.del(keys().pay_deadlines()).await.unwrap();
    assert_eq!(by_status(&pool, product).await, (3, 0, 0));

    eventually(Duration::from_secs(10), "the sweep to cancel them", || {
        let pool = pool.clone();
        async move { (by_status(&pool, product).await == (0, 0, 3)).then_some(()) }
    })
    .await;
    eventually(Duration::from_secs(5), "the units back in redis", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == 3).then_some(()) }
    })
    .await;
    assert_eq!(stock_available(&pool, product).await, 3);
    for member in 1..=3 {
        assert_eq!(
            api.result(product, member).await.status,
            ResultStatus::None,
            "member {member} is free to buy again"
        );
    }
}

/// A consumer whose batch is stalled behind someone's row lock loses its
/// entry to another consumer, which gives up on it (it was delivered more
/// than `SECKILL_MAX_DELIVERIES` times). When the lock goes, exactly one of
/// the two wins: the order, or the rejection — never an order for a buyer
/// told `failed` whose unit went back to Redis.
async fn a_stalled_writer_and_a_takeover_never_both_win(backend: Backend) {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    let buyer = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new().set("SECKILL_CONSUMERS", 0),
    )
    .await;
    let api = buyer.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=3).await, vec![1, 2, 3]);
    let pool = db.pool().await;

    let lock = db.lock_writes().await;
    let _worker = TestWorker::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_CONSUMERS", 2)
            .set("SECKILL_CLAIM_IDLE_MS", 200)
            .set("SECKILL_MAX_DELIVERIES", 1),
    )
    .await;
    // Long enough for the entries to be delivered, stall, be taken over
    // and given up on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    lock.release().await;

    let mut conn = redis.connection().await;
    let settled = eventually(Duration::from_secs(20), "every buy to be settled", || {
        let (api, pool) = (api.clone(), pool.clone());
        async move {
            let mut states = Vec::new();
            for member in 1..=3 {
                let result = api.result(product, member).await.status;
                if result == ResultStatus::Queued {
                    return None;
                }
                states.push(result);
            }
            Some((states, orders(&pool, product).await))
        }
    })
    .await;
    let (states, rows) = settled;
    for (member, state) in (1..=3).zip(&states) {
        let ordered = rows.iter().any(|(_, m, _)| *m == member);
        match state {
            ResultStatus::Success => assert!(ordered, "member {member}: success without an order"),
            ResultStatus::Failed => assert!(
                !ordered,
                "member {member} was told failed but holds an order: {rows:?}"
            ),
            other => panic!("member {member}: {other:?}"),
        }
    }
    // Redis and the database count the same units as sold.
    assert_eq!(
        redis_stock(&mut conn, product).await,
        5 - rows.len() as i64,
        "redis holds exactly the units the database did not sell"
    );
    assert_eq!(stock_available(&pool, product).await, 5 - rows.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_and_a_takeover_never_both_win_postgres() {
    a_stalled_writer_and_a_takeover_never_both_win(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_and_a_takeover_never_both_win_sqlite() {
    a_stalled_writer_and_a_takeover_never_both_win(Backend::Sqlite).await;
}
