//! Order lifecycle against real redis-server, databases and several
//! origins (in-process, or processes where one is killed): payment racing
//! the deadline, delayed cancellation, stock returned exactly once, and
//! sold-out flags kept in step across nodes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::AsyncCommands;
use seckill_shared::api::ResultStatus;
use seckill_tests::checks::{
    assert_invariants, buy_all, deadlines_from, keys, orders, pid, redis_stock, sold_out_refusals,
    stock_available, wait_for_orders,
};
use seckill_tests::client::{unix_now_ms, Api};
use seckill_tests::proxy::TcpProxy;
use seckill_tests::variants;
use seckill_tests::{
    eventually, AppSettings, Backend, Origin, OriginOptions, RedisBackend, RedisServer, Sale,
    TestApp, TestDatabase, TestRedis,
};
use sqlx::AnyPool;

/// `(order, created_at_ms, status, paid_at_ms, cancelled_at_ms)` of a product's orders.
async fn order_times(
    pool: &AnyPool,
    product: i64,
) -> Vec<(i64, i64, String, Option<i64>, Option<i64>)> {
    sqlx::query_as(
        "SELECT id, created_at_ms, status, paid_at_ms, cancelled_at_ms FROM orders WHERE product_id = $1 ORDER BY id",
    )
    .bind(product)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn pay(api: &Api, order: i64, member: i64) -> (u16, Option<String>) {
    let reply = api.pay(order, member).await;
    (reply.status, reply.error().map(str::to_string))
}

async fn returned_count(conn: &mut redis::aio::MultiplexedConnection, product: i64) -> u64 {
    conn.scard(keys().returned(pid(product))).await.unwrap()
}

async fn pay_races_the_deadline(backend: Backend) {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    let origin = |_| {
        TestApp::start(
            redis.url(),
            &db,
            AppSettings::new()
                .set("SECKILL_PAY_TIMEOUT_S", 3)
                .set("SECKILL_CANCEL_POLL_MS", 50)
                .set("SECKILL_CONSUMERS", 2),
        )
    };
    // Two nodes: both poll the deadlines, both take payments.
    let (a, b) = tokio::join!(origin(0), origin(1));
    let product = a.api().create_sale(&Sale::open(200)).await.product_id.get();
    assert_eq!(buy_all(&a.api(), product, 1..=200).await.len(), 200);
    let pool = db.pool().await;
    eventually(Duration::from_secs(10), "the orders to be written", || {
        let pool = pool.clone();
        async move { (orders(&pool, product).await.len() == 200).then_some(()) }
    })
    .await;

    // Each payment lands at a random moment within 150 ms of its deadline,
    // through either node, while the pollers cancel what is due.
    let times = order_times(&pool, product).await;
    let members: HashMap<i64, i64> = orders(&pool, product)
        .await
        .into_iter()
        .map(|(o, m, _)| (o, m))
        .collect();
    let epoch = Instant::now();
    let now_ms = unix_now_ms();
    let mut payments = tokio::task::JoinSet::new();
    for (i, (order, created_at_ms, _, _, _)) in times.iter().enumerate() {
        let jitter: i64 = rand::rng().random_range(-150..=150);
        let at_ms = (created_at_ms + 3_000 + jitter - now_ms).max(0) as u64;
        let api = if i % 2 == 0 { a.api() } else { b.api() };
        let (order, member) = (*order, members[order]);
        payments.spawn(async move {
            tokio::time::sleep_until((epoch + Duration::from_millis(at_ms)).into()).await;
            (order, pay(&api, order, member).await)
        });
    }
    let mut answers = HashMap::new();
    while let Some(done) = payments.join_next().await {
        let (order, answer) = done.unwrap();
        answers.insert(order, answer);
    }
    eventually(Duration::from_secs(10), "every order to be settled", || {
        let pool = pool.clone();
        async move {
            let rows = orders(&pool, product).await;
            rows.iter()
                .all(|(_, _, status)| status != "unpaid")
                .then_some(())
        }
    })
    .await;

    let settled = order_times(&pool, product).await;
    let mut cancelled = 0;
    for (order, _, status, paid_at, cancelled_at) in &settled {
        let answer = &answers[order];
        match status.as_str() {
            "paid" => {
                assert_eq!(
                    answer.0, 200,
                    "order {order} is paid, so its payment succeeded"
                );
                assert!(paid_at.is_some() && cancelled_at.is_none(), "order {order}");
            }
            "cancelled" => {
                cancelled += 1;
                assert_eq!(
                    answer,
                    &(409, Some("order_cancelled".to_string())),
                    "order {order}"
                );
                assert!(cancelled_at.is_some() && paid_at.is_none(), "order {order}");
            }
            other => panic!("order {order} ended {other}"),
        }
    }
    let paid = settled.len() - cancelled;
    assert!(
        paid > 0 && cancelled > 0,
        "the race went both ways: {paid} paid, {cancelled} cancelled"
    );

    let mut conn = redis.connection().await;
    assert_eq!(
        redis_stock(&mut conn, product).await,
        cancelled as i64,
        "redis got back one unit per cancellation"
    );
    assert_eq!(
        stock_available(&pool, product).await,
        cancelled as i64,
        "so did the database"
    );
    assert_eq!(returned_count(&mut conn, product).await, cancelled as u64);
    // Pollers finish clearing the deadlines they claimed.
    eventually(
        Duration::from_secs(5),
        "no deadline to be left behind",
        || {
            let mut conn = conn.clone();
            async move { (deadlines_from(&mut conn, 0).await == 0).then_some(()) }
        },
    )
    .await;
    let accepted: Vec<(i64, i64)> = (1..=200).map(|m| (product, m)).collect();
    assert_invariants(&redis, &db, &[product], &accepted).await;
}

variants!(pay_races_the_deadline {
    sqlite: (Backend::Sqlite),
    postgres: (Backend::Postgres),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_are_cancelled_on_time_and_paid_ones_never() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new().set("SECKILL_PAY_TIMEOUT_S", 2),
    )
    .await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(20)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=20).await.len(), 20);
    let pool = db.pool().await;
    let rows = wait_for_orders(&pool, product, 20).await;

    // The first ten pay at once; paying twice is fine.
    for (order, member, _) in &rows[..10] {
        assert_eq!(pay(&api, *order, *member).await, (200, None));
        assert_eq!(pay(&api, *order, *member).await, (200, None));
    }
    let (order, member, _) = rows[10];
    let view = api.order(order, member).await;
    assert_eq!(view.status, 200);
    assert_eq!(view.body["status"], "unpaid");
    assert_eq!(view.body["member_id"], member);
    let deadline = view.body["pay_deadline"].as_i64().unwrap();
    assert!((2..=3).contains(&(deadline - view.body["created_at"].as_i64().unwrap())));
    let stranger = api.order(order, 999).await;
    assert_eq!(
        (stranger.status, stranger.error()),
        (404, Some("unknown_order")),
        "owner only"
    );
    assert_eq!(
        pay(&api, order, 999).await,
        (404, Some("unknown_order".into()))
    );

    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let paid: Vec<i64> = rows[..10].iter().map(|(o, _, _)| *o).collect();
    for (order, created_at, status, _, cancelled_at) in order_times(&pool, product).await {
        if paid.contains(&order) {
            assert_eq!(status, "paid", "order {order}");
        } else {
            assert_eq!(status, "cancelled", "order {order}");
            let after = cancelled_at.unwrap() - created_at;
            assert!(
                (2_000..=3_500).contains(&after),
                "order {order} cancelled {after} ms after creation"
            );
        }
    }
    let mut conn = redis.connection().await;
    assert_eq!(redis_stock(&mut conn, product).await, 10);
    assert_eq!(stock_available(&pool, product).await, 10);
    assert_eq!(
        api.metric("seckill_orders_cancelled_total", &[]).await,
        10.0
    );

    // The cancelled buyer sees it, cannot pay, and may buy again.
    let view = api.order(order, member).await;
    assert_eq!(view.body["status"], "cancelled");
    assert_eq!(
        pay(&api, order, member).await,
        (409, Some("order_cancelled".into()))
    );
    assert_eq!(api.result(product, member).await.status, ResultStatus::None);
    assert_eq!(api.buy(product, member).await.status, 202);
    let again = eventually(Duration::from_secs(10), "the new order", || {
        let api = api.clone();
        async move {
            let result = api.result(product, member).await;
            (result.status == ResultStatus::Success).then(|| result.order_id.unwrap().get())
        }
    })
    .await;
    assert_ne!(again, order, "a new order, not the cancelled one revived");
    assert_eq!(pay(&api, again, member).await, (200, None));
}

/// On a cluster the broadcast is sharded pub/sub (`SPUBLISH` to the
/// product's registry group, `SSUBSCRIBE` on every node).
async fn sold_out_flags_follow_across_three_origins(redis: RedisBackend) {
    let redis = TestRedis::start(redis).await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    // Flags that would otherwise last a minute: only the broadcast can
    // explain a node changing its mind within seconds.
    let start = || {
        TestApp::start_on(
            &redis,
            &db,
            AppSettings::new()
                .set("SECKILL_SOLDOUT_TTL_MS", 60_000)
                .set("SECKILL_PAY_TIMEOUT_S", 2),
        )
    };
    let (a, b, c) = tokio::join!(start(), start(), start());
    let product = a.api().create_sale(&Sale::open(3)).await.product_id.get();
    assert_eq!(buy_all(&a.api(), product, 1..=3).await.len(), 3);
    assert_eq!(a.api().buy(product, 4).await.error(), Some("sold_out"));

    for node in [&b, &c] {
        let api = node.api();
        eventually(Duration::from_secs(5), "the other nodes to hear of the sell-out", || {
            let api = api.clone();
            async move { (api.metric("seckill_sold_out_flags", &[]).await == 1.0).then_some(()) }
        })
        .await;
        for member in 100..150 {
            assert_eq!(api.buy(product, member).await.error(), Some("sold_out"));
        }
        assert_eq!(
            sold_out_refusals(&api).await,
            (50.0, 0.0),
            "no reserve script ran for them"
        );
    }

    // The three unpaid orders are cancelled two seconds after creation;
    // then every node takes buys again, long before its flag would expire.
    let pool = db.pool().await;
    let cancelled_at = eventually(Duration::from_secs(10), "the cancellations", || {
        let pool = pool.clone();
        async move {
            let rows = order_times(&pool, product).await;
            let times: Vec<i64> = rows.iter().filter_map(|r| r.4).collect();
            (times.len() == 3).then(|| *times.iter().min().unwrap())
        }
    })
    .await;
    let mut member = 200;
    for node in [&a, &b, &c] {
        let api = node.api();
        eventually(Duration::from_secs(5), "a buy to be accepted again", || {
            member += 1;
            let (api, member) = (api.clone(), member);
            async move { (api.buy(product, member).await.status == 202).then_some(()) }
        })
        .await;
        let waited = unix_now_ms() - cancelled_at;
        assert!(
            waited < 3_000,
            "accepted {waited} ms after the cancellation"
        );
    }
}

variants!(sold_out_flags_follow_across_three_origins {
    single: (RedisBackend::Single),
    on_a_cluster: (RedisBackend::Cluster),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_catches_up_on_flags() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let proxy = TcpProxy::start(redis.port()).await;
    let settings = || {
        AppSettings::new()
            .set("SECKILL_SOLDOUT_TTL_MS", 60_000)
            .set("SECKILL_CONSUMERS", 0)
    };
    let direct = TestApp::start(redis.url(), &db, settings()).await;
    let cut_off = TestApp::start(proxy.url(), &db, settings()).await;
    let product = direct
        .api()
        .create_sale(&Sale::open(2))
        .await
        .product_id
        .get();

    proxy.cut();
    assert_eq!(
        cut_off.api().buy(product, 50).await.status,
        503,
        "the cut node cannot reach redis"
    );
    assert_eq!(buy_all(&direct.api(), product, 1..=2).await.len(), 2);
    assert_eq!(direct.api().buy(product, 3).await.error(), Some("sold_out"));
    // The broadcast went out while the node could not hear it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cut_off.api().metric("seckill_sold_out_flags", &[]).await,
        0.0
    );

    proxy.restore();
    let api = cut_off.api();
    eventually(
        Duration::from_secs(10),
        "the node to resynchronise its flags",
        || {
            let api = api.clone();
            async move { (api.metric("seckill_sold_out_flags", &[]).await == 1.0).then_some(()) }
        },
    )
    .await;
    assert_eq!(api.buy(product, 60).await.error(), Some("sold_out"));
    assert_eq!(
        sold_out_refusals(&api).await,
        (1.0, 0.0),
        "answered from the resynchronised flag"
    );
}

async fn killed_poller_claims_are_retried(backend: Backend) {
    let label = "lifecycle_killed_poller";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    // Deadlines three seconds out: time to take the lock before they pass.
    let with_lease = |options: OriginOptions, lease_ms: u64| {
        options
            .env("SECKILL_PAY_TIMEOUT_S", 3)
            .env("SECKILL_CANCEL_LEASE_MS", lease_ms)
    };
    let mut doomed = Origin::start(with_lease(OriginOptions::new(label, &redis, &db), 3_000)).await;
    let product = doomed
        .api()
        .create_sale(&Sale::open(20))
        .await
        .product_id
        .get();
    assert_eq!(buy_all(&doomed.api(), product, 1..=20).await.len(), 20);
    let pool = db.pool().await;
    eventually(Duration::from_secs(10), "the orders to be written", || {
        let pool = pool.clone();
        async move { (orders(&pool, product).await.len() == 20).then_some(()) }
    })
    .await;

    // The database is stuck when the deadlines pass: the poller claims them
    // and cannot finish. It dies holding its claims.
    let lock = db.lock_writes().await;
    let mut conn = redis.connection().await;
    eventually(
        Duration::from_secs(10),
        "the deadlines to be claimed",
        || {
            let mut conn = conn.clone();
            async move {
                let now_ms = unix_now_ms();
                let later = deadlines_from(&mut conn, now_ms).await;
                let total = deadlines_from(&mut conn, 0).await;
                (total == 20 && later == 20).then_some(())
            }
        },
    )
    .await;
    doomed.kill().await;
    lock.release().await;
    assert!(
        orders(&pool, product)
            .await
            .iter()
            .all(|(_, _, s)| s == "unpaid"),
        "nothing was cancelled yet"
    );

    let rescuer = Origin::start(with_lease(OriginOptions::new(label, &redis, &db), 1_000)).await;
    eventually(
        Duration::from_secs(15),
        "every order to be cancelled",
        || {
            let pool = pool.clone();
            async move {
                let rows = orders(&pool, product).await;
                rows.iter().all(|(_, _, s)| s == "cancelled").then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        redis_stock(&mut conn, product).await,
        20,
        "each unit returned once"
    );
    assert_eq!(stock_available(&pool, product).await, 20);
    assert_eq!(returned_count(&mut conn, product).await, 20);
    assert_eq!(
        rescuer
            .api()
            .metric("seckill_orders_cancelled_total", &[])
            .await,
        20.0
    );
    let left = deadlines_from(&mut conn, 0).await;
    assert_eq!(left, 0);
}

variants!(killed_poller_claims_are_retried {
    postgres: (Backend::Postgres),
    sqlite: (Backend::Sqlite),
});
