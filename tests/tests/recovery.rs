//! Recovery paths that keep every promise: the database is the source of
//! truth for everything durable, and Redis a fast, losable copy. Each test
//! reproduces an interleaving that broke an invariant before its fix.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::Method;
use seckill_shared::api::ResultStatus;
use seckill_shared::keys::RegistryGroup;
use seckill_tests::checks::{
    assert_invariants, buy_all, deadlines_from, group, keys, orders, pid, reconcile, redis_stock,
    sql, stock_available, wait_for_orders,
};
use seckill_tests::variants;
use seckill_tests::{
    eventually, AppSettings, Backend, RedisServer, Sale, TestApp, TestDatabase, TestWorker,
    ADMIN_TOKEN,
};
use sqlx::AnyPool;

/// Orders of `product` by status: `(unpaid, paid, cancelled)`.
async fn by_status(pool: &AnyPool, product: i64) -> (usize, usize, usize) {
    let rows = orders(pool, product).await;
    let count = |status: &str| rows.iter().filter(|(_, _, s)| s == status).count();
    (count("unpaid"), count("paid"), count("cancelled"))
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
    eventually(
        Duration::from_secs(10),
        "the first order to be cancelled",
        || {
            let pool = pool.clone();
            async move { (by_status(&pool, cancelled).await == (0, 0, 1)).then_some(()) }
        },
    )
    .await;

    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=4).await, vec![1, 2, 3, 4]);
    wait_for_orders(&pool, product, 4).await;
    let paid = orders(&pool, product).await[0].clone();
    assert_eq!(api.pay(paid.0, paid.1).await.status, 200);

    flush(&redis).await;
    // The next buy finds the item unknown to Redis and reloads it.
    assert_eq!(
        api.buy(product, 4).await.error(),
        Some("already_ordered"),
        "members holding orders are known again"
    );
    let mut conn = redis.connection().await;
    assert_eq!(redis_stock(&mut conn, product).await, 6);
    let deadlines = deadlines_from(&mut conn, 0).await;
    assert_eq!(deadlines, 3, "the three unpaid orders' deadlines are back");

    // The deadlines pass: the unpaid orders are cancelled, their units come
    // back exactly once, and their members may buy again.
    eventually(
        Duration::from_secs(10),
        "the unpaid orders to be cancelled",
        || {
            let pool = pool.clone();
            async move { (by_status(&pool, product).await == (0, 1, 3)).then_some(()) }
        },
    )
    .await;
    eventually(Duration::from_secs(5), "the units back in redis", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == 9).then_some(()) }
    })
    .await;
    assert_eq!(stock_available(&pool, product).await, 9);
    let freed = orders(&pool, product)
        .await
        .into_iter()
        .find(|(_, _, status)| status == "cancelled")
        .map(|(_, member, _)| member)
        .unwrap();
    let again = api.buy(product, freed).await;
    assert_eq!(again.status, 202, "free to buy again: {:?}", again.body);

    // Reconciliation sees both items as they are, not as half-done
    // cancellations (which is what an empty returned-stock set looks like).
    api.product(cancelled).await;
    let item = reconcile(&api, cancelled).await;
    assert_eq!(item["note"], "in step", "{item}");
    assert_eq!(item["drift"], 0, "{item}");
    let accepted = [
        (cancelled, 1),
        (product, 1),
        (product, 2),
        (product, 3),
        (product, 4),
    ];
    assert_invariants(&redis, &db, &[cancelled, product], &accepted).await;
}

variants!(redis_data_loss_rebuilds_what_the_database_knows {
    sqlite: (Backend::Sqlite),
    postgres: (Backend::Postgres),
});

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
    let _: () = conn
        .del(keys().pay_deadlines(group(product)))
        .await
        .unwrap();
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
    let accepted: Vec<(i64, i64)> = (1..=3).map(|m| (product, m)).collect();
    assert_invariants(&redis, &db, &[product], &accepted).await;
}

variants!(a_stalled_writer_and_a_takeover_never_both_win {
    postgres: (Backend::Postgres),
    sqlite: (Backend::Sqlite),
});

/// A stock edit moves Redis first, then the database. Reconciliation
/// running in between sees them disagree by the edit: it must call the
/// item busy, not "repair" the edit away. The test holds the database step
/// back with a row lock on the change, so the middle lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_leaves_a_half_applied_stock_edit_alone() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    // This origin reconciles on demand and applies no changes itself.
    let checker = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_CDC_POLL_MS", 0)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let api = checker.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    let pool = db.pool().await;
    sql(
        &pool,
        "UPDATE products SET stock_total = 15 WHERE id = $1",
        product,
    )
    .await;
    let (change,): (i64,) = sqlx::query_as(
        "SELECT MAX(id) FROM product_changes WHERE product_id = $1 AND op = 'update'",
    )
    .bind(product)
    .fetch_one(&pool)
    .await
    .unwrap();
    // Relay the change by hand (as the relay would), then lock its row so
    // the database half of applying it waits.
    sqlx::query("UPDATE product_changes SET relayed_at_ms = $2 WHERE id = $1")
        .bind(change)
        .bind(seckill_tests::client::unix_now_ms())
        .execute(&pool)
        .await
        .unwrap();
    let mut conn = redis.connection().await;
    let _: String = redis::cmd("XADD")
        .arg(keys().product_changes())
        .arg("*")
        .arg(&[
            ("change", change.to_string()),
            ("product", product.to_string()),
            ("op", "update".to_string()),
            ("old_stock_total", "10".to_string()),
            ("new_stock_total", "15".to_string()),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut lock = sqlx::postgres::PgConnection::connect(db.url())
        .await
        .unwrap();
    use sqlx::{Connection, Executor};
    lock.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT id FROM product_changes WHERE id = $1 FOR UPDATE")
        .bind(change)
        .execute(&mut lock)
        .await
        .unwrap();

    let _applier = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_CDC_POLL_MS", 100)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the redis half of the edit",
        || {
            let mut conn = conn.clone();
            async move { (redis_stock(&mut conn, product).await == 15).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        stock_available(&pool, product).await,
        10,
        "the database half waits"
    );
    let item = reconcile(&api, product).await;
    assert_eq!(item["repaired"], false, "{item}");
    assert!(item["note"].as_str().unwrap().starts_with("busy"), "{item}");
    assert_eq!(redis_stock(&mut conn, product).await, 15, "the edit stands");

    lock.execute("COMMIT").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the database half of the edit",
        || {
            let pool = pool.clone();
            async move { (stock_available(&pool, product).await == 15).then_some(()) }
        },
    )
    .await;
    let item = reconcile(&api, product).await;
    assert_eq!(
        (item["note"].as_str(), item["drift"].as_i64()),
        (Some("in step"), Some(0)),
        "{item}"
    );
    assert_eq!(redis_stock(&mut conn, product).await, 15);
}

/// An origin starting up reads the items, then loads them. If an edit is
/// applied to Redis in between, the start-up load must not put the older
/// description back (an ended sale reopening, an old price returning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_preheat_never_undoes_a_newer_edit() {
    use seckill_tests::{Origin, OriginOptions};
    use sqlx::{Connection, Executor};
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let leader = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = leader.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();

    // Hold the second origin's start-up load between reading the items
    // and loading them: it reads the item's live orders next.
    let mut lock = sqlx::postgres::PgConnection::connect(db.url())
        .await
        .unwrap();
    lock.execute("BEGIN").await.unwrap();
    lock.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let starting = Origin::start(
        OriginOptions::new("recovery_preheat_revision", &redis, &db)
            .env("SECKILL_CDC_POLL_MS", 0)
            .env("SECKILL_CONSUMERS", 0),
    )
    .await;
    // The edit reaches Redis through the leader meanwhile.
    let patched = api
        .send(
            Method::PATCH,
            &format!("/admin/products/{product}"),
            Some(ADMIN_TOKEN),
            Some(&serde_json::json!({"flash_price_cents": 555})),
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    let mut conn = redis.connection().await;
    let price = |conn: redis::aio::MultiplexedConnection| async move {
        let mut conn = conn;
        let price: i64 = conn.hget(keys().item(pid(product)), "price").await.unwrap();
        price
    };
    eventually(Duration::from_secs(5), "the edit in redis", || {
        let conn = conn.clone();
        async move { (price(conn).await == 555).then_some(()) }
    })
    .await;
    lock.execute("COMMIT").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the start-up preheat to finish",
        || {
            let finished = starting.log().contains("stock preheat finished");
            async move { finished.then_some(()) }
        },
    )
    .await;
    assert_eq!(price(conn.clone()).await, 555, "the older row did not win");
    let revision: i64 = conn
        .hget(keys().item(pid(product)), "revision")
        .await
        .unwrap();
    assert_eq!(revision, 2);
    // New reservations are made at the new price.
    assert_eq!(api.buy(product, 1).await.status, 202);
    let entries: redis::streams::StreamRangeReply =
        conn.xrange_all(keys().orders(pid(product))).await.unwrap();
    assert_eq!(entries.ids[0].get::<i64>("price"), Some(555));
}

/// A product deleted with plain SQL while reservations are still queued:
/// every one of them still ends as an explicit `failed`, with its reason
/// in the dead-letter stream, never as a silent `none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_deleted_with_sql_fails_its_queued_reservations() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_CONSUMERS", 0)
            .set("SECKILL_CDC_POLL_MS", 100)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=3).await, vec![1, 2, 3]);
    let pool = db.pool().await;
    sql(&pool, "DELETE FROM products WHERE id = $1", product).await;
    let conn = redis.connection().await;
    eventually(
        Duration::from_secs(10),
        "the deletion to reach redis",
        || {
            let mut conn = conn.clone();
            async move {
                let live: bool = conn.exists(keys().item(pid(product))).await.ok()?;
                (!live).then_some(())
            }
        },
    )
    .await;
    assert_eq!(api.buy(product, 9).await.error(), Some("unknown_product"));
    for member in 1..=3 {
        assert_eq!(
            api.result(product, member).await.status,
            ResultStatus::Queued
        );
    }

    let _worker = TestWorker::start(redis.url(), &db, AppSettings::new()).await;
    eventually(Duration::from_secs(10), "the queued buys to fail", || {
        let api = api.clone();
        async move {
            for member in 1..=3 {
                if api.result(product, member).await.status != ResultStatus::Failed {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let mut conn = redis.connection().await;
    let dead: redis::streams::StreamRangeReply = conn
        .xrange_all(keys().dead_letters(pid(product)))
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 3);
    for entry in &dead.ids {
        let reason: String = entry.get("reason").unwrap();
        assert!(reason.contains("unknown product"), "{reason}");
    }
    let (rejected,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM rejected_reservations WHERE product_id = $1")
            .bind(product)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rejected, 3, "the database records each rejection");

    // Once the stream is quiet, reconciliation clears what is left.
    let item = reconcile(&api, product).await;
    assert_eq!(item["repaired"], true, "{item}");
    let left: bool = conn.exists(keys().orders(pid(product))).await.unwrap();
    assert!(!left, "the deleted product's keys are gone");
    let listed: bool = conn
        .sismember(keys().products(group(product)), product)
        .await
        .unwrap();
    assert!(!listed);
}

/// The sold-out registry can list an item that has stock (a sell-out
/// recorded late, after a release). Within about a second it is neither
/// listed nor refused at any origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_sold_out_entry_is_dropped_within_a_second() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    // A late sell-out mark: recorded and broadcast, with stock on hand.
    let mut conn = redis.connection().await;
    let _: () = conn
        .sadd(keys().sold_out(group(product)), product)
        .await
        .unwrap();
    let version: u64 = conn
        .incr(keys().sold_out_version(group(product)), 1)
        .await
        .unwrap();
    let _: () = conn
        .publish(
            keys().sold_out_channel(group(product)),
            format!("+{product}:{version}"),
        )
        .await
        .unwrap();

    let started = std::time::Instant::now();
    eventually(Duration::from_secs(5), "the stray entry to go", || {
        let api = api.clone();
        async move {
            let listed = api.get("/api/soldout").await.body["sold_out"]
                .as_array()
                .unwrap()
                .iter()
                .any(|id| id == product);
            (!listed).then_some(())
        }
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "listed for {:?}",
        started.elapsed()
    );
    assert_eq!(api.buy(product, 1).await.status, 202, "and it sells");
}

/// Stock set with plain SQL to more units than a Lua number carries in its
/// own format: buys still work and report the true stock left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_stock_set_by_sql_still_sells_exactly() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new().set("SECKILL_CONSUMERS", 0),
    )
    .await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    let pool = db.pool().await;
    let huge: i64 = 9_007_199_254_740_000;
    sqlx::query("UPDATE products SET stock_total = $2 WHERE id = $1")
        .bind(product)
        .bind(huge)
        .execute(&pool)
        .await
        .unwrap();
    let mut conn = redis.connection().await;
    eventually(Duration::from_secs(10), "the added units in redis", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == huge).then_some(()) }
    })
    .await;
    assert_eq!(api.buy(product, 1).await.status, 202);
    assert_eq!(redis_stock(&mut conn, product).await, huge - 1);
    let members: std::collections::HashMap<String, String> =
        conn.hgetall(keys().members(pid(product))).await.unwrap();
    assert_eq!(members.get("1").map(String::as_str), Some("q:1"));

    // Beyond 2^53 - 1, the largest integer a script carries exactly, a
    // stock edit adds only up to that.
    sqlx::query("UPDATE products SET stock_total = $2 WHERE id = $1")
        .bind(product)
        .bind(i64::MAX / 2)
        .execute(&pool)
        .await
        .unwrap();
    let cap: i64 = (1 << 53) - 1;
    eventually(Duration::from_secs(10), "the stock at the cap", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == cap).then_some(()) }
    })
    .await;
    assert_eq!(api.buy(product, 2).await.status, 202);
    assert_eq!(redis_stock(&mut conn, product).await, cap - 1);
}

/// An origin whose clock runs two minutes ahead writes orders, polls the
/// deadlines and takes payments: deadlines, payments and cancellations are
/// judged on one clock (the database's, and Redis' for what is due), so it
/// neither cancels an order early nor refuses a payment in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_with_a_wrong_clock_judges_deadlines_like_the_others() {
    use seckill_tests::{Origin, OriginOptions};
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let buyer = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_CONSUMERS", 0)
            .set("SECKILL_CANCEL_POLL_MS", 0),
    )
    .await;
    let api = buyer.api();
    let product = api.create_sale(&Sale::open(4)).await.product_id.get();
    let skewed = Origin::start(
        OriginOptions::new("recovery_clock_ahead", &redis, &db)
            .clock_ahead(120)
            .env("SECKILL_PAY_TIMEOUT_S", 30)
            .env("SECKILL_CANCEL_POLL_MS", 100),
    )
    .await;
    assert_eq!(buy_all(&api, product, 1..=4).await.len(), 4);
    let pool = db.pool().await;
    wait_for_orders(&pool, product, 4).await;

    // Deadlines are 30 s from when the order was written, on the
    // database's clock, not on the skewed writer's.
    let deadlines: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT pay_deadline_ms - created_at_ms, \
         pay_deadline_ms - (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT \
         FROM orders WHERE product_id = $1",
    )
    .bind(product)
    .fetch_all(&pool)
    .await
    .unwrap();
    for (timeout, left) in deadlines {
        assert_eq!(timeout, 30_000);
        assert!((20_000..=30_000).contains(&left), "{left} ms left");
    }
    // Its poller has had time to act on its own clock: nothing is
    // cancelled, and it takes a payment in time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(by_status(&pool, product).await, (4, 0, 0));
    let (order, member, _) = orders(&pool, product).await[0].clone();
    let paid = skewed.api().pay(order, member).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    assert_eq!(by_status(&pool, product).await, (3, 1, 0));
}

/// Redis lost an item while one of its orders came due, and a reload that
/// read the database just before the cancellation writes its copy (the
/// member still holding the order, the unit not back) just after the
/// cancellation found the item missing. The cancellation must still give
/// the unit back in Redis and free the member; before the fix the unit
/// stayed lost to Redis with no deadline left to retry it, and
/// reconciliation called the item "busy: a cancellation is half done"
/// forever (found by the chaos soak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_racing_the_reload_of_a_lost_item_still_returns_its_unit() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_PAY_TIMEOUT_S", 4)
            .set("SECKILL_CANCEL_POLL_MS", 100)
            .set("SECKILL_SWEEP_INTERVAL_S", 0)
            .set("SECKILL_SOLDOUT_CHECK_MS", 0)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let api = origin.api();
    let pool = db.pool().await;
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    assert_eq!(buy_all(&api, product, [1]).await, vec![1]);
    wait_for_orders(&pool, product, 1).await;
    assert_eq!(by_status(&pool, product).await, (1, 0, 0));

    // The copy a reload reads before the cancellation: the item as it is now.
    let mut conn = redis.connection().await;
    let item_keys = [
        keys().item(pid(product)),
        keys().members(pid(product)),
        keys().returned(pid(product)),
    ];
    let mut copy = Vec::new();
    for key in &item_keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        copy.push(dump.unwrap_or_default());
    }
    // Redis loses the item; its deadline stays, so the poller cancels it.
    let _: () = conn.del(&item_keys).await.unwrap();
    eventually(Duration::from_secs(10), "the order to be cancelled", || {
        let pool = pool.clone();
        async move { (by_status(&pool, product).await == (0, 0, 1)).then_some(()) }
    })
    .await;
    // The reload writes what it read, as the preheat script does: in full,
    // and only if the item is not live again already.
    let _: i64 = redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
         for i = 1, #KEYS do \
           if ARGV[i] ~= '' then redis.call('RESTORE', KEYS[i], 0, ARGV[i], 'REPLACE') end \
         end return 1",
    )
    .key(&item_keys[..])
    .arg(&copy[0])
    .arg(&copy[1])
    .arg(&copy[2])
    .invoke_async(&mut conn)
    .await
    .unwrap();

    eventually(Duration::from_secs(10), "the unit back in redis", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == 5).then_some(()) }
    })
    .await;
    assert_eq!(stock_available(&pool, product).await, 5);
    let state: Option<String> = conn.hget(&item_keys[1], 1).await.unwrap();
    // Freed: cancelled, or unknown (the item was loaded afresh).
    assert!(
        state.as_deref().is_none_or(|s| s.starts_with("c:")),
        "the member is freed: {state:?}"
    );
    let item = reconcile(&api, product).await;
    assert_eq!(
        (item["note"].as_str(), item["drift"].as_i64()),
        (Some("in step"), Some(0)),
        "{item}"
    );
    assert_invariants(&redis, &db, &[product], &[(product, 1)]).await;
    assert_eq!(api.buy(product, 1).await.status, 202, "and may buy again");
}

/// A stock edit relayed to the change stream just before Redis lost its
/// data: the stream entry is gone, but the database still records the edit
/// as not applied, so it is relayed again and applied exactly once (before
/// the fix it stayed unapplied forever, and reconciliation called the item
/// busy for good; found by the chaos soak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_edit_lost_with_redis_data_is_relayed_again_and_applied_once() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let quiet = AppSettings::new()
        .set("SECKILL_CDC_POLL_MS", 0)
        .set("SECKILL_RECONCILE_INTERVAL_S", 0);
    let origin = TestApp::start(redis.url(), &db, quiet).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    let pool = db.pool().await;
    sql(
        &pool,
        "UPDATE products SET stock_total = 15 WHERE id = $1",
        product,
    )
    .await;
    // Relayed (long ago), and its stream entry lost with Redis' data.
    sql(
        &pool,
        "UPDATE product_changes SET relayed_at_ms = 1 WHERE product_id = $1",
        product,
    )
    .await;

    let _applier = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_CDC_POLL_MS", 100)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let mut conn = redis.connection().await;
    eventually(Duration::from_secs(10), "the edit applied", || {
        let (mut conn, pool) = (conn.clone(), pool.clone());
        async move {
            (redis_stock(&mut conn, product).await == 15
                && stock_available(&pool, product).await == 15)
                .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(redis_stock(&mut conn, product).await, 15, "applied once");
    assert_eq!(stock_available(&pool, product).await, 15, "applied once");
    let item = reconcile(&api, product).await;
    assert_eq!(item["note"], "in step", "{item}");
    assert_invariants(&redis, &db, &[product], &[]).await;
}

/// The backstop sweep cancels an overdue order Redis forgot while Redis is
/// out of reach: it must not cancel in the database and then leave the
/// unit out of Redis for good (the next sweep no longer sees the order as
/// unpaid). It claims the order in Redis first, so either nothing happens
/// until Redis is back, or a poller finishes the cancellation after the
/// lease. Found by the chaos soak: cancelled orders whose members Redis
/// still held, their units never back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backstop_sweep_never_leaves_a_cancellation_half_done() {
    use seckill_tests::proxy::TcpProxy;
    let redis = RedisServer::start().await;
    let path = TcpProxy::start(redis.port()).await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(
        path.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_PAY_TIMEOUT_S", 2)
            .set("SECKILL_CANCEL_POLL_MS", 100)
            .set("SECKILL_CANCEL_LEASE_MS", 500)
            .set("SECKILL_SWEEP_INTERVAL_S", 1)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let api = origin.api();
    let pool = db.pool().await;
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    assert_eq!(buy_all(&api, product, [1]).await, vec![1]);
    wait_for_orders(&pool, product, 1).await;
    let mut conn = redis.connection().await;
    // Redis forgets the deadline; then the origin loses Redis while the
    // order comes due and the sweep runs.
    let _: () = conn
        .del(keys().pay_deadlines(RegistryGroup::of(pid(product))))
        .await
        .unwrap();
    path.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    path.restore();

    eventually(Duration::from_secs(15), "the cancellation done", || {
        let (mut conn, pool) = (conn.clone(), pool.clone());
        async move {
            (by_status(&pool, product).await == (0, 0, 1)
                && redis_stock(&mut conn, product).await == 5)
                .then_some(())
        }
    })
    .await;
    assert_eq!(stock_available(&pool, product).await, 5);
    assert_invariants(&redis, &db, &[product], &[(product, 1)]).await;
    assert_eq!(api.buy(product, 1).await.status, 202, "the member is free");
}

/// Redis loses its data while reservations are in a consumer's hands
/// (read, not yet written). The reloaded item must not hand out their
/// reservation numbers again: a new buyer given a number already on its
/// way to the database would be failed as "already another member's
/// order" though units were left. Found by the chaos soak (dozens of such
/// failures after each empty restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_after_redis_data_loss_never_reuse_numbers_in_flight() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_CONSUMERS", 0)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let api = origin.api();
    let pool = db.pool().await;
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=3).await, vec![1, 2, 3]);
    // What a consumer holds when Redis loses everything.
    let mut conn = redis.connection().await;
    let held: redis::streams::StreamRangeReply =
        conn.xrange_all(keys().orders(pid(product))).await.unwrap();
    assert_eq!(held.ids.len(), 3);
    flush(&redis).await;

    // New buyers: the item is reloaded from the database (no order yet).
    assert_eq!(buy_all(&api, product, 4..=6).await, vec![4, 5, 6]);
    // The held reservations reach the stream again, as the consumer holding
    // them would write them, and a worker writes everything.
    for entry in &held.ids {
        let fields: Vec<(String, String)> = entry
            .map
            .iter()
            .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
            .collect();
        let _: String = conn
            .xadd(keys().orders(pid(product)), "*", &fields)
            .await
            .unwrap();
    }
    let _worker = TestWorker::start(redis.url(), &db, AppSettings::new()).await;
    let rows = wait_for_orders(&pool, product, 6).await;
    let members: std::collections::BTreeSet<i64> = rows.iter().map(|(_, m, _)| *m).collect();
    assert_eq!(
        members,
        (1..=6).collect(),
        "every reservation became an order: {rows:?}"
    );
    for member in 4..=6 {
        assert_eq!(
            api.result(product, member).await.status,
            ResultStatus::Success,
            "member {member}"
        );
    }
}

/// Redis lost an item, and the reload reading it from the database is
/// slowed (someone holds a lock it needs) while one of its orders is
/// cancelled. What it loads must describe one moment: before the fix it
/// read the stock before the cancellation and the returned units after,
/// so the unit counted neither as unsold nor as still to come back, and
/// the member stayed held by a cancelled order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_database_as_of_one_moment() {
    use sqlx::{Connection, Executor};
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new()
            .set("SECKILL_PAY_TIMEOUT_S", 2)
            .set("SECKILL_CANCEL_POLL_MS", 100)
            .set("SECKILL_CANCEL_LEASE_MS", 500)
            .set("SECKILL_SWEEP_INTERVAL_S", 1)
            .set("SECKILL_PRODUCT_CACHE_MS", 0)
            .set("SECKILL_SOLDOUT_CHECK_MS", 0)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await;
    let api = origin.api();
    let pool = db.pool().await;
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    assert_eq!(buy_all(&api, product, [1]).await, vec![1]);
    wait_for_orders(&pool, product, 1).await;

    // The reload's later reads wait on this lock; the cancellation does not.
    let mut lock = sqlx::postgres::PgConnection::connect(db.url())
        .await
        .unwrap();
    lock.execute("BEGIN").await.unwrap();
    lock.execute("LOCK TABLE rejected_reservations IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    flush(&redis).await;
    let reading = {
        let api = api.clone();
        tokio::spawn(async move { api.product(product).await })
    };
    eventually(
        Duration::from_secs(15),
        "the sweep to cancel the order",
        || {
            let pool = pool.clone();
            async move { (by_status(&pool, product).await == (0, 0, 1)).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.execute("COMMIT").await.unwrap();
    reading.await.unwrap();

    let mut conn = redis.connection().await;
    eventually(Duration::from_secs(10), "the unit back in redis", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == 5).then_some(()) }
    })
    .await;
    let state: Option<String> = conn.hget(keys().members(pid(product)), 1).await.unwrap();
    assert!(
        state.as_deref().is_none_or(|s| s.starts_with("c:")),
        "the member is freed: {state:?}"
    );
    assert_invariants(&redis, &db, &[product], &[(product, 1)]).await;
    assert_eq!(api.buy(product, 1).await.status, 202, "and may buy again");
}
