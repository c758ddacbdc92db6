//! The asynchronous order pipeline against real redis-server, SQLite and
//! PostgreSQL: queued reservations become exactly one order each, through
//! duplicates, replays, killed consumers, database outages, poison
//! messages and a Redis crash.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use seckill_shared::api::ResultStatus;
use seckill_shared::keys::ORDER_GROUP;
use seckill_tests::checks::{
    assert_invariants, buy_all, deadlines_from, group, keys, orders, pending, pid, stock_available,
    wait_for_orders,
};
use seckill_tests::redis_server::Persistence;
use seckill_tests::variants;
use seckill_tests::{
    eventually, AppSettings, Backend, Origin, OriginOptions, RedisBackend, RedisServer, Sale,
    TestApp, TestDatabase, TestRedis, TestWorker,
};
use tokio::sync::Semaphore;

/// An in-process origin that takes buys and writes no orders: the
/// workers under test do.
async fn buyer(redis: &RedisServer, db: &TestDatabase) -> TestApp {
    TestApp::start(
        redis.url(),
        db,
        AppSettings::new().set("SECKILL_CONSUMERS", 0),
    )
    .await
}

fn worker(label: &str, redis: &RedisServer, db: &TestDatabase) -> OriginOptions {
    OriginOptions::new(label, redis, db).arg("worker")
}

async fn thousand_reservations_become_thousand_orders(backend: Backend, redis: RedisBackend) {
    let redis = TestRedis::start(redis).await;
    let db = TestDatabase::create(backend).await;
    let buyer =
        TestApp::start_on(&redis, &db, AppSettings::new().set("SECKILL_CONSUMERS", 0)).await;
    let api = buyer.api();
    let product = api.create_sale(&Sale::open(1_000)).await.product_id.get();
    let queued = buy_all(&api, product, 1..=1_000).await;
    assert_eq!(queued.len(), 1_000);

    // Order writing runs in workers of its own, two consumers each.
    let two_consumers = || AppSettings::new().set("SECKILL_CONSUMERS", 2);
    let _workers = tokio::join!(
        TestWorker::start(redis.url(), &db, redis.settings(two_consumers())),
        TestWorker::start(redis.url(), &db, redis.settings(two_consumers())),
    );
    let pool = db.pool().await;
    let rows = wait_for_orders(&pool, product, 1_000).await;
    let members: HashSet<i64> = rows.iter().map(|(_, m, _)| *m).collect();
    assert_eq!(members.len(), 1_000, "each member once");
    assert!(rows.iter().all(|(_, _, status)| status == "unpaid"));
    assert_eq!(stock_available(&pool, product).await, 0);

    let order_of: HashMap<i64, i64> = rows.iter().map(|(o, m, _)| (*m, *o)).collect();
    for member in queued {
        let result = api.result(product, member).await;
        assert_eq!(result.status, ResultStatus::Success, "member {member}");
        assert_eq!(
            result.order_id.map(|o| o.get()),
            Some(order_of[&member]),
            "member {member}"
        );
    }
    let mut conn = redis.connection().await;
    assert_eq!(
        pending(&mut conn, product).await,
        0,
        "everything acknowledged"
    );
    let deadlines = deadlines_from(&mut conn, 0).await;
    assert_eq!(
        deadlines, 1_000,
        "every order has a payment deadline scheduled"
    );
    let accepted: Vec<(i64, i64)> = order_of.keys().map(|m| (product, *m)).collect();
    assert_invariants(&redis, &db, &[product], &accepted).await;
}

variants!(thousand_reservations_become_thousand_orders {
    sqlite: (Backend::Sqlite, RedisBackend::Single),
    postgres: (Backend::Postgres, RedisBackend::Single),
    postgres_on_a_cluster: (Backend::Postgres, RedisBackend::Cluster),
});

/// One read takes up to `SECKILL_CONSUMER_BATCH` entries from every live
/// product's stream. Four busy products at the largest batch make one read
/// more rows than a PostgreSQL statement has parameters for (65,535; the
/// consumer wrote none of them and retried for ever): every reservation
/// must still become an order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_busy_products_in_one_read_all_become_orders() {
    const PRODUCTS: i64 = 4;
    const STOCK: i64 = 4_200;
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let app = buyer(&redis, &db).await;
    let api = app.api();
    let (mut products, mut accepted) = (Vec::new(), Vec::new());
    for index in 0..PRODUCTS {
        let product = api.create_sale(&Sale::open(STOCK)).await.product_id.get();
        products.push(product);
        let first = (index + 1) * 100_000;
        let queued = buy_all(&api, product, first..first + STOCK).await;
        assert_eq!(queued.len() as i64, STOCK, "product {product} sells out");
        accepted.extend(queued.into_iter().map(|member| (product, member)));
    }
    // Started after the buys, so its first read finds all of them.
    let _worker = TestWorker::start(
        redis.url(),
        &db,
        AppSettings::new().set("SECKILL_CONSUMER_BATCH", 5_000),
    )
    .await;
    let pool = db.pool().await;
    for &product in &products {
        wait_for_orders(&pool, product, STOCK as usize).await;
    }
    assert_invariants(&redis, &db, &products, &accepted).await;
}

async fn killed_worker_loses_nothing(backend: Backend) {
    let label = "pipeline_killed_worker";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    let buyer = buyer(&redis, &db).await;
    let api = buyer.api();
    let product = api.create_sale(&Sale::open(300)).await.product_id.get();
    let queued = buy_all(&api, product, 1..=300).await;
    assert_eq!(queued.len(), 300);

    // The database is stuck (its write lock held elsewhere): the worker
    // reads a whole batch it cannot write, and is killed holding it.
    let lock = db.lock_writes().await;
    let mut doomed =
        Origin::start(worker(label, &redis, &db).env("SECKILL_CONSUMER_BATCH", 200)).await;
    let mut conn = redis.connection().await;
    eventually(
        Duration::from_secs(20),
        "the worker to hold a batch",
        || {
            let mut conn = conn.clone();
            async move { (pending(&mut conn, product).await == 200).then_some(()) }
        },
    )
    .await;
    doomed.kill().await;
    lock.release().await;

    // A new consumer takes the dead one's entries over after the idle time.
    let rescuer = Origin::start(
        OriginOptions::new(label, &redis, &db)
            .env("SECKILL_CONSUMERS", 1)
            .env("SECKILL_CLAIM_IDLE_MS", 1_000),
    )
    .await;
    let pool = db.pool().await;
    let rows = wait_for_orders(&pool, product, 300).await;
    assert_eq!(
        rows.iter()
            .map(|(_, m, _)| *m)
            .collect::<HashSet<_>>()
            .len(),
        300
    );
    assert_eq!(stock_available(&pool, product).await, 0);
    assert_eq!(pending(&mut conn, product).await, 0);
    let reclaimed = rescuer
        .api()
        .metric("seckill_orders_reclaimed_total", &[])
        .await;
    assert_eq!(
        reclaimed, 200.0,
        "the dead worker's whole batch was taken over"
    );
    let accepted: Vec<(i64, i64)> = queued.iter().map(|m| (product, *m)).collect();
    assert_invariants(&redis, &db, &[product], &accepted).await;
}

variants!(killed_worker_loses_nothing {
    sqlite: (Backend::Sqlite),
    postgres: (Backend::Postgres),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_replayed_messages_make_one_order() {
    let label = "pipeline_duplicates";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut origin = Origin::start(OriginOptions::new(label, &redis, &db)).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=3).await, vec![1, 2, 3]);
    let pool = db.pool().await;
    let first = wait_for_orders(&pool, product, 3).await;

    // The same message injected twice more.
    let mut conn = redis.connection().await;
    let stream = keys().orders(pid(product));
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    let original = &entries.ids[0];
    for _ in 0..2 {
        let fields: Vec<(String, String)> = ["member", "product", "seq", "price", "reserved_at_ms"]
            .iter()
            .map(|f| (f.to_string(), original.get::<String>(f).unwrap()))
            .collect();
        let _: String = conn.xadd(&stream, "*", &fields).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "the copies to be acknowledged",
        || {
            let mut conn = conn.clone();
            async move { (pending(&mut conn, product).await == 0).then_some(()) }
        },
    )
    .await;
    assert_eq!(wait_for_orders(&pool, product, 3).await, first);

    // The consumer group restarted from id 0: every message is redelivered.
    origin.stop().await;
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&stream)
        .arg(ORDER_GROUP)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let origin = Origin::start(OriginOptions::new(label, &redis, &db)).await;
    eventually(Duration::from_secs(10), "the replay to be consumed", || {
        let mut conn = conn.clone();
        let stream = stream.clone();
        async move {
            let groups: redis::streams::StreamInfoGroupsReply =
                conn.xinfo_groups(&stream).await.ok()?;
            let group = groups.groups.into_iter().find(|g| g.name == ORDER_GROUP)?;
            (group.pending == 0 && group.entries_read == Some(5)).then_some(())
        }
    })
    .await;
    assert_eq!(
        wait_for_orders(&pool, product, 3).await,
        first,
        "still one order per reservation"
    );
    assert_eq!(stock_available(&pool, product).await, 2);
    for (order, member, _) in &first {
        let result = origin.api().result(product, *member).await;
        assert_eq!(result.order_id.map(|o| o.get()), Some(*order));
    }
}

async fn database_outage_during_a_burst(backend: Backend) {
    let label = "pipeline_db_outage";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    let origin = Origin::start(
        OriginOptions::new(label, &redis, &db)
            .env("SECKILL_CONSUMERS", 2)
            .env("SECKILL_STREAM_RETENTION_MS", 0),
    )
    .await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(400)).await.product_id.get();
    let pool = db.pool().await;

    let mut queued = buy_all(&api, product, 1..=100).await;
    wait_for_orders(&pool, product, 100).await;
    let outage = db.outage().await;
    queued.extend(buy_all(&api, product, 101..=300).await);
    assert_eq!(queued.len(), 300, "buying does not need the database");

    // Held, not lost, and not trimmed: the stream keeps what is unwritten.
    let mut conn = redis.connection().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let length: u64 = conn.xlen(keys().orders(pid(product))).await.unwrap();
    assert!(
        length >= 200,
        "unwritten order requests stay in the stream ({length})"
    );
    outage.end().await;

    let rows = wait_for_orders(&pool, product, 300).await;
    let members: Vec<i64> = {
        let mut m: Vec<i64> = rows.iter().map(|(_, m, _)| *m).collect();
        m.sort();
        m
    };
    assert_eq!(members, queued, "every reservation became one order");
    assert_eq!(stock_available(&pool, product).await, 100);
    let retries = api.metric("seckill_order_write_retries_total", &[]).await;
    assert!(retries > 0.0, "the consumers did see the outage");
    assert_eq!(
        api.metric("seckill_dead_letters_total", &[]).await,
        0.0,
        "nothing was given up on"
    );
    // Once written and acknowledged, the stream is trimmed.
    eventually(Duration::from_secs(15), "the stream to be trimmed", || {
        let mut conn = conn.clone();
        async move {
            let length: u64 = conn.xlen(keys().orders(pid(product))).await.ok()?;
            (length == 0).then_some(())
        }
    })
    .await;
}

variants!(database_outage_during_a_burst {
    postgres: (Backend::Postgres),
    sqlite: (Backend::Sqlite),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_their_stock_returned_once() {
    let label = "pipeline_poison";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(
        OriginOptions::new(label, &redis, &db)
            .env("SECKILL_CLAIM_IDLE_MS", 500)
            .env("SECKILL_MAX_DELIVERIES", 3),
    )
    .await;
    let api = origin.api();
    let mut conn = redis.connection().await;

    // Redis holds an item the database does not know (its row is gone):
    // its order request can never be written.
    let ghost = pid(999);
    let _: () = conn
        .hset_multiple(
            keys().item(ghost),
            &[
                ("stock", "0"),
                ("starts_at", "0"),
                ("ends_at", "9999999999"),
                ("price", "100"),
                ("total", "1"),
                ("seq", "1"),
            ],
        )
        .await
        .unwrap();
    let _: () = conn.hset(keys().members(ghost), 77, "q:1").await.unwrap();
    let fields = [
        ("member", "77"),
        ("product", "999"),
        ("seq", "1"),
        ("price", "100"),
        ("reserved_at_ms", "1"),
    ];
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(keys().orders(ghost))
        .arg(ORDER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = conn.xadd(keys().orders(ghost), "*", &fields).await.unwrap();
    let _: () = conn.sadd(keys().products(group(999)), 999).await.unwrap();

    let dead_letters = |conn: redis::aio::MultiplexedConnection| async move {
        let mut conn = conn;
        conn.xlen::<_, u64>(keys().dead_letters(ghost))
            .await
            .unwrap()
    };
    eventually(
        Duration::from_secs(10),
        "the poison message to be dead-lettered",
        || {
            let conn = conn.clone();
            async move { (dead_letters(conn).await == 1).then_some(()) }
        },
    )
    .await;
    let stock: i64 = conn.hget(keys().item(ghost), "stock").await.unwrap();
    assert_eq!(stock, 1, "its stock came back");
    assert_eq!(api.result(999, 77).await.status, ResultStatus::Failed);
    let letter: redis::streams::StreamRangeReply =
        conn.xrange_all(keys().dead_letters(ghost)).await.unwrap();
    let reason: String = letter.ids[0].get("reason").unwrap();
    assert!(reason.contains("unknown product"), "{reason}");

    // The same message again: acknowledged, but nothing is returned twice.
    let _: String = conn.xadd(keys().orders(ghost), "*", &fields).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the copy to be acknowledged",
        || {
            let mut conn = conn.clone();
            async move { (pending(&mut conn, 999).await == 0).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stock: i64 = conn.hget(keys().item(ghost), "stock").await.unwrap();
    assert_eq!(stock, 1, "stock returned exactly once");
    assert_eq!(dead_letters(conn.clone()).await, 1);

    // An entry that consumers keep dying on: delivered more than the limit
    // to a consumer that never acknowledges, it is given up on, once.
    let product = api.create_sale(&Sale::open(2)).await.product_id.get();
    let origin_consumers_off =
        Origin::start(OriginOptions::new(label, &redis, &db).env("SECKILL_CONSUMERS", 0)).await;
    drop(origin); // only the ghost consumer below reads for a moment
    assert_eq!(origin_consumers_off.api().buy(product, 5).await.status, 202);
    let stream = keys().orders(pid(product));
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(ORDER_GROUP)
        .arg("crashing-consumer")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let entry = read.keys[0].ids[0].id.clone();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg(ORDER_GROUP)
        .arg("crashing-consumer")
        .arg(0)
        .arg(&entry)
        .arg("RETRYCOUNT")
        .arg(10)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stock_before: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    let _rescuer = Origin::start(
        OriginOptions::new(label, &redis, &db)
            .env("SECKILL_CLAIM_IDLE_MS", 500)
            .env("SECKILL_MAX_DELIVERIES", 3),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the worn-out entry to be dead-lettered",
        || {
            let mut conn = conn.clone();
            async move {
                let n: u64 = conn.xlen(keys().dead_letters(pid(product))).await.ok()?;
                (n == 1).then_some(())
            }
        },
    )
    .await;
    let stock_after: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(stock_after, stock_before + 1);
    let pool = db.pool().await;
    assert!(orders(&pool, product).await.is_empty());
    assert_eq!(
        origin_consumers_off.api().result(product, 5).await.status,
        ResultStatus::Failed
    );
    // The member is free to try again.
    assert_eq!(origin_consumers_off.api().buy(product, 5).await.status, 202);
    wait_for_orders(&pool, product, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_batch_in_hand() {
    let label = "pipeline_shutdown";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let buyer = buyer(&redis, &db).await;
    let api = buyer.api();
    let product = api.create_sale(&Sale::open(2_000)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=2_000).await.len(), 2_000);

    let mut conn = redis.connection().await;
    let mut first =
        Origin::start(worker(label, &redis, &db).env("SECKILL_CONSUMER_BATCH", 50)).await;
    let pool = db.pool().await;
    eventually(Duration::from_secs(20), "draining to start", || {
        let pool = pool.clone();
        async move { (!orders(&pool, product).await.is_empty()).then_some(()) }
    })
    .await;
    assert_eq!(
        first.stop().await,
        Some(0),
        "SIGTERM ends the worker cleanly"
    );
    // Whatever it had read, it wrote and acknowledged before exiting.
    assert_eq!(
        pending(&mut conn, product).await,
        0,
        "nothing left pending by a clean stop"
    );

    let _second = Origin::start(worker(label, &redis, &db)).await;
    let rows = wait_for_orders(&pool, product, 2_000).await;
    assert_eq!(
        rows.iter()
            .map(|(_, m, _)| *m)
            .collect::<HashSet<_>>()
            .len(),
        2_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_with_aof_always_loses_no_202() {
    let label = "pipeline_redis_crash";
    let mut redis = RedisServer::start_with(Persistence::AofAlways).await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin =
        Origin::start(OriginOptions::new(label, &redis, &db).env("SECKILL_CONSUMERS", 2)).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5_000)).await.product_id.get();

    // Buyers keep coming while Redis is killed and restarted under them.
    let burst = {
        let api = api.clone();
        tokio::spawn(async move {
            let gate = Arc::new(Semaphore::new(50));
            let mut tasks = tokio::task::JoinSet::new();
            for member in 1..=3_000 {
                let (api, gate) = (api.clone(), gate.clone());
                tasks.spawn(async move {
                    let _permit = gate.acquire_owned().await.unwrap();
                    let reply = api.buy(product, member).await;
                    let unknown = reply.error() == Some("outcome_unknown");
                    (member, reply.status, unknown)
                });
                if member % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let mut outcomes = Vec::new();
            while let Some(done) = tasks.join_next().await {
                outcomes.push(done.unwrap());
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    let outcomes = burst.await.unwrap();

    let accepted: HashSet<i64> = outcomes
        .iter()
        .filter(|(_, s, _)| *s == 202)
        .map(|(m, _, _)| *m)
        .collect();
    let unknown: HashSet<i64> = outcomes
        .iter()
        .filter(|(_, s, u)| *s == 503 && *u)
        .map(|(m, _, _)| *m)
        .collect();
    let refused = outcomes.iter().filter(|(_, s, _)| *s == 503).count();
    assert!(refused > 0, "the crash was felt by some buyers");
    assert!(
        accepted.len() > 100,
        "buying resumed after the restart: {}",
        accepted.len()
    );
    for (member, status, _) in &outcomes {
        assert!(matches!(status, 202 | 503), "member {member}: {status}");
    }

    let pool = db.pool().await;
    let mut conn = redis.connection().await;
    eventually(Duration::from_secs(60), "the queue to drain", || {
        let mut conn = conn.clone();
        async move {
            let groups: redis::streams::StreamInfoGroupsReply =
                conn.xinfo_groups(keys().orders(pid(product))).await.ok()?;
            let group = groups.groups.into_iter().find(|g| g.name == ORDER_GROUP)?;
            (group.pending == 0 && group.lag == Some(0)).then_some(())
        }
    })
    .await;
    let written: HashSet<i64> = orders(&pool, product)
        .await
        .into_iter()
        .map(|(_, m, _)| m)
        .collect();
    assert!(
        accepted.is_subset(&written),
        "every accepted buy was written"
    );
    // Every 202 is an order; an order without a 202 can only belong to a
    // buyer told the outcome was unknown (Redis died between running the
    // script and answering).
    for member in written.difference(&accepted) {
        assert!(
            unknown.contains(member),
            "member {member} has an order but was refused"
        );
    }
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(
        stock as usize + written.len(),
        5_000,
        "stock and orders agree after the crash"
    );
    eprintln!(
        "crash test: {} accepted, {} refused, {} with unknown outcome, {} written",
        accepted.len(),
        refused,
        unknown.len(),
        written.len()
    );
    let accepted: Vec<(i64, i64)> = accepted.iter().map(|m| (product, *m)).collect();
    assert_invariants(&redis, &db, &[product], &accepted).await;
}
