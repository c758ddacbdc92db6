//! Change data capture and reconciliation against real databases,
//! redis-server and several in-process origins: edits made through the API and with
//! plain SQL reach every origin, stock edits are applied once and never
//! oversell, and drift between Redis and the database is found and, when
//! safe, repaired.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::Method;
use seckill_tests::checks::{
    buy_all, keys, orders, pid, reconcile, redis_stock, rush, sql, stock_available, wait_for_orders,
};
use seckill_tests::client::unix_now;
use seckill_tests::variants;
use seckill_tests::{
    eventually, Api, AppSettings, Backend, Origin, OriginOptions, RedisBackend, RedisServer, Sale,
    TestApp, TestDatabase, TestRedis, TestWorker, ADMIN_TOKEN,
};
use serde_json::{json, Value};

/// "Within about a second": generous enough for a loaded 2-core machine,
/// far below anything but a working relay (polling the database every
/// 500 ms, or woken by NOTIFY).
const PROPAGATION: Duration = Duration::from_secs(3);

async fn admin(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> seckill_tests::client::Reply {
    api.send(method, path, Some(ADMIN_TOKEN), body.as_ref())
        .await
}

/// Waits until `origin` shows `field` of the product equal to `expected`.
async fn shows(origin: &TestApp, product: i64, field: &str, expected: Value) {
    let api = origin.api();
    eventually(
        PROPAGATION,
        &format!("{field} = {expected} on {}", api.base()),
        || {
            let (api, expected) = (api.clone(), expected.clone());
            async move {
                (api.get(&format!("/api/products/{product}")).await.body[field] == expected)
                    .then_some(())
            }
        },
    )
    .await;
}

async fn edits_reach_every_origin(backend: Backend, redis: RedisBackend) {
    let redis = TestRedis::start(redis).await;
    let db = TestDatabase::create(backend).await;
    let (a, b) = tokio::join!(
        TestApp::start_on(&redis, &db, AppSettings::new()),
        TestApp::start_on(&redis, &db, AppSettings::new())
    );
    let created = a.api().create_sale(&Sale::open(10)).await;
    let product = created.product_id.get();
    // Both origins have it cached before the edits.
    for origin in [&a, &b] {
        assert_eq!(
            origin.api().product(product).await.flash_price_cents,
            created.flash_price_cents
        );
    }

    let patched = admin(
        &a.api(),
        Method::PATCH,
        &format!("/admin/products/{product}"),
        Some(json!({"flash_price_cents": 555})),
    )
    .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(
        patched.body["revision"],
        json!(created.revision + 1),
        "the answer is the product as it now stands, revision included"
    );
    for origin in [&a, &b] {
        shows(origin, product, "flash_price_cents", json!(555)).await;
    }

    let pool = db.pool().await;
    sql(
        &pool,
        "UPDATE products SET flash_price_cents = 123, name = 'Renamed by SQL' WHERE id = $1",
        product,
    )
    .await;
    for origin in [&a, &b] {
        shows(origin, product, "flash_price_cents", json!(123)).await;
        shows(origin, product, "name", json!("Renamed by SQL")).await;
    }
    let view = b.api().product(product).await;
    assert_eq!(
        view.revision,
        created.revision + 2,
        "two edits, two revisions"
    );
    // New reservations are made at the new price.
    let mut conn = redis.connection().await;
    redis_price_becomes(&conn, product, 123).await;
    assert_eq!(b.api().buy(product, 1).await.status, 202);
    let entries: redis::streams::StreamRangeReply =
        conn.xrange_all(keys().orders(pid(product))).await.unwrap();
    assert_eq!(entries.ids[0].get::<i64>("price"), Some(123));

    // Ending the sale early reaches every origin too.
    let ended = admin(
        &a.api(),
        Method::DELETE,
        &format!("/admin/products/{product}"),
        None,
    )
    .await;
    assert_eq!(ended.status, 200);
    for origin in [&a, &b] {
        let api = origin.api();
        eventually(PROPAGATION, "buys to be refused as ended", || {
            let api = api.clone();
            async move { (api.buy(product, 77).await.error() == Some("ended")).then_some(()) }
        })
        .await;
    }

    // Ending keeps the sale: an edit with a later end reopens it everywhere.
    let reopened = admin(
        &b.api(),
        Method::PATCH,
        &format!("/admin/products/{product}"),
        Some(json!({"ends_at": unix_now() + 3_600})),
    )
    .await;
    assert_eq!(reopened.status, 200, "{:?}", reopened.body);
    for (origin, member) in [(&a, 78), (&b, 79)] {
        let api = origin.api();
        eventually(PROPAGATION, "buys to be taken again", || {
            let api = api.clone();
            async move { (api.buy(product, member).await.status == 202).then_some(()) }
        })
        .await;
    }
}

/// Waits until Redis sells `product` at `price` (cents): the edit reached
/// the item there.
async fn redis_price_becomes<C>(conn: &C, product: i64, price: i64)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    eventually(PROPAGATION, "the price in redis", || {
        let mut conn = conn.clone();
        async move {
            (conn
                .hget::<_, _, i64>(keys().item(pid(product)), "price")
                .await
                .ok()?
                == price)
                .then_some(())
        }
    })
    .await;
}

variants!(edits_reach_every_origin {
    sqlite: (Backend::Sqlite, RedisBackend::Single),
    postgres: (Backend::Postgres, RedisBackend::Single),
    postgres_on_a_cluster: (Backend::Postgres, RedisBackend::Cluster),
});

async fn stock_added_with_sql_sells_again_without_oversell(backend: Backend) {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    let long_flags = || AppSettings::new().set("SECKILL_SOLDOUT_TTL_MS", 60_000);
    let (a, b) = tokio::join!(
        TestApp::start(redis.url(), &db, long_flags()),
        TestApp::start(redis.url(), &db, long_flags())
    );
    let product = a.api().create_sale(&Sale::open(3)).await.product_id.get();
    assert_eq!(buy_all(&a.api(), product, 1..=3).await.len(), 3);
    assert_eq!(a.api().buy(product, 4).await.error(), Some("sold_out"));
    let api_b = b.api();
    eventually(PROPAGATION, "b to hold the sold-out flag", || {
        let api = api_b.clone();
        async move { (api.metric("seckill_sold_out_flags", &[]).await == 1.0).then_some(()) }
    })
    .await;
    let version_before = a.api().get("/api/soldout").await.body["version"]
        .as_u64()
        .unwrap();

    let pool = db.pool().await;
    sql(
        &pool,
        "UPDATE products SET stock_total = stock_total + 2 WHERE id = $1",
        product,
    )
    .await;
    eventually(PROPAGATION, "b to sell again", || {
        let api = api_b.clone();
        async move { (api.metric("seckill_sold_out_flags", &[]).await == 0.0).then_some(()) }
    })
    .await;
    let snapshot = a.api().get("/api/soldout").await.body;
    assert!(
        snapshot["version"].as_u64().unwrap() > version_before,
        "the sold-out version moved"
    );
    assert_eq!(snapshot["sold_out"], json!([]));

    // A rush through both origins gets exactly the two new units.
    let api_a = a.api();
    let (first, second) = tokio::join!(
        rush(&api_a, product, 100..150, 20),
        rush(&api_b, product, 150..200, 20)
    );
    let sold = first
        .iter()
        .chain(&second)
        .filter(|(_, s, _)| *s == 202)
        .count();
    assert_eq!(sold, 2, "exactly the added units were sold");
    wait_for_orders(&pool, product, 5).await;
    let mut conn = redis.connection().await;
    assert_eq!(redis_stock(&mut conn, product).await, 0);
    assert_eq!(stock_available(&pool, product).await, 0);
}

variants!(stock_added_with_sql_sells_again_without_oversell {
    sqlite: (Backend::Sqlite),
    postgres: (Backend::Postgres),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_stock_never_takes_reserved_units() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    // Reservations stay queued (no consumers) while the stock is cut.
    let origin = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new().set("SECKILL_CONSUMERS", 0),
    )
    .await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=6).await.len(), 6);
    let pool = db.pool().await;
    sql(
        &pool,
        "UPDATE products SET stock_total = 2 WHERE id = $1",
        product,
    )
    .await;

    let conn = redis.connection().await;
    eventually(PROPAGATION, "the unsold units to be removed", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == 0).then_some(()) }
    })
    .await;
    assert_eq!(api.buy(product, 7).await.error(), Some("sold_out"));
    // The six reservations still become orders.
    let _worker = TestWorker::start(redis.url(), &db, AppSettings::new()).await;
    let rows = wait_for_orders(&pool, product, 6).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(
        stock_available(&pool, product).await,
        0,
        "database: 10 - 4 removed - 6 sold"
    );
}

/// While the database is away the relaying origin's failed rounds are
/// counted (what `SeckillCatalogueChangesFailing` watches); once it is back
/// they stop, and an edit made then reaches Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_relay_rounds_are_counted_until_the_database_returns() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let origin = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    let failures = || {
        let api = api.clone();
        async move {
            api.metric(
                "seckill_catalogue_change_failures_total",
                &[("stage", "relay")],
            )
            .await
        }
    };
    assert_eq!(failures().await, 0.0);

    db.refuse_connections().await;
    eventually(
        Duration::from_secs(10),
        "failed rounds to be counted",
        || async { (failures().await >= 2.0).then_some(()) },
    )
    .await;
    db.allow_connections().await;

    let pool = db.pool().await;
    sql(
        &pool,
        "UPDATE products SET flash_price_cents = 321 WHERE id = $1",
        product,
    )
    .await;
    redis_price_becomes(&redis.connection().await, product, 321).await;
    let settled = failures().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(failures().await, settled, "no failed round once it is back");
}

/// Units removed from an item already sold out remove nothing, and are
/// applied as such at once: the edit does not fail and retry for ever,
/// and the edits after it apply too. (The script once asked Redis to add
/// "-0" units, which Redis refuses as not an integer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_stock_from_a_sold_out_item_is_applied_and_later_edits_follow() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(3)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=3).await.len(), 3);
    let pool = db.pool().await;
    wait_for_orders(&pool, product, 3).await;
    sql(
        &pool,
        "UPDATE products SET stock_total = 2 WHERE id = $1",
        product,
    )
    .await;
    let applied = || {
        let pool = pool.clone();
        async move {
            let rows: Vec<(Option<i64>,)> = sqlx::query_as(
                "SELECT stock_applied FROM product_changes \
                 WHERE product_id = $1 AND op = 'update' ORDER BY id",
            )
            .bind(product)
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.iter()
                .all(|(a,)| a.is_some())
                .then(|| rows.iter().map(|(a,)| a.unwrap()).collect::<Vec<_>>())
        }
    };
    let moved = eventually(PROPAGATION, "the removal to be applied", applied).await;
    assert_eq!(moved, vec![0], "nothing unsold to remove");
    assert_eq!(stock_available(&pool, product).await, 0);

    sql(
        &pool,
        "UPDATE products SET stock_total = 7 WHERE id = $1",
        product,
    )
    .await;
    let moved = eventually(PROPAGATION, "the addition to be applied", applied).await;
    assert_eq!(moved, vec![0, 5]);
    let mut conn = redis.connection().await;
    assert_eq!(redis_stock(&mut conn, product).await, 5);
    eventually(PROPAGATION, "the added units to sell", || {
        let api = api.clone();
        async move { (api.buy(product, 4).await.status == 202).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_relayed_twice_is_applied_once() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    let pool = db.pool().await;
    sql(
        &pool,
        "UPDATE products SET stock_total = stock_total + 3 WHERE id = $1",
        product,
    )
    .await;
    let mut conn = redis.connection().await;
    eventually(PROPAGATION, "the added units", || {
        let mut conn = conn.clone();
        async move { (redis_stock(&mut conn, product).await == 8).then_some(()) }
    })
    .await;
    let (change,): (i64,) = sqlx::query_as(
        "SELECT MAX(id) FROM product_changes WHERE product_id = $1 AND op = 'update'",
    )
    .bind(product)
    .fetch_one(&pool)
    .await
    .unwrap();
    let applied_before = api
        .metric("seckill_catalogue_changes_applied_total", &[])
        .await;

    // What a relay killed after publishing and before marking leaves
    // behind: the change published, and not marked relayed. It goes out
    // again.
    sqlx::query("UPDATE product_changes SET relayed_at_ms = NULL WHERE id = $1")
        .bind(change)
        .execute(&pool)
        .await
        .unwrap();
    eventually(
        PROPAGATION,
        "the change to be relayed and applied again",
        || {
            let api = api.clone();
            async move {
                (api.metric("seckill_catalogue_changes_applied_total", &[])
                    .await
                    > applied_before)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        redis_stock(&mut conn, product).await,
        8,
        "the units were added once"
    );
    assert_eq!(stock_available(&pool, product).await, 8);
    let moves: u64 = conn.hlen(keys().stock_changes(pid(product))).await.unwrap();
    assert_eq!(moves, 1);
    assert_eq!(api.product(product).await.stock_left, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_repaired_only_when_quiet() {
    // An origin process: the test reads what it logs.
    let label = "cdc_drift";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let quiet_options = |options: OriginOptions| options.env("SECKILL_RECONCILE_INTERVAL_S", 0);
    let origin = Origin::start(quiet_options(OriginOptions::new(label, &redis, &db))).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    assert_eq!(buy_all(&api, product, 1..=3).await.len(), 3);
    let pool = db.pool().await;
    wait_for_orders(&pool, product, 3).await;

    // Redis gains four units it should not have, and forgets its
    // reservation counter.
    let mut conn = redis.connection().await;
    let _: i64 = conn
        .hincr(keys().item(pid(product)), "stock", 4)
        .await
        .unwrap();
    let _: () = conn
        .hset(keys().item(pid(product)), "seq", 1)
        .await
        .unwrap();
    let item = reconcile(&api, product).await;
    assert_eq!(item["drift"], 4, "{item}");
    assert_eq!(item["repaired"], true, "{item}");
    assert_eq!(redis_stock(&mut conn, product).await, 7);
    let seq: i64 = conn.hget(keys().item(pid(product)), "seq").await.unwrap();
    assert_eq!(
        seq, 3,
        "the reservation counter is never behind the database"
    );
    assert_eq!(
        api.metric("seckill_stock_drift", &[("product", &product.to_string())])
            .await,
        4.0
    );
    assert!(origin.log().contains("stock drift"), "the drift is logged");

    // Busy: a reservation on its way to the database makes any figure
    // ambiguous, so drift is reported as unknown and nothing is touched.
    drop(origin);
    let origin = Origin::start(quiet_options(
        OriginOptions::new(label, &redis, &db).env("SECKILL_CONSUMERS", 0),
    ))
    .await;
    let api = origin.api();
    assert_eq!(api.buy(product, 4).await.status, 202);
    let _: i64 = conn
        .hincr(keys().item(pid(product)), "stock", 2)
        .await
        .unwrap();
    let item = reconcile(&api, product).await;
    assert_eq!(
        (
            item["queued"].clone(),
            item["drift"].clone(),
            item["repaired"].clone()
        ),
        (json!(1), Value::Null, json!(false)),
        "{item}"
    );
    assert_eq!(
        redis_stock(&mut conn, product).await,
        8,
        "left alone while busy"
    );

    // Once the reservation is written the item is quiet again and repaired.
    let _worker = TestWorker::start(redis.url(), &db, AppSettings::new()).await;
    wait_for_orders(&pool, product, 4).await;
    let item = reconcile(&api, product).await;
    assert_eq!(
        (item["drift"].clone(), item["repaired"].clone()),
        (json!(2), json!(true)),
        "{item}"
    );
    assert_eq!(redis_stock(&mut conn, product).await, 6);
    assert_eq!(stock_available(&pool, product).await, 6);
    assert_eq!(orders(&pool, product).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_edits_validate_their_input() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    let path = format!("/admin/products/{product}");
    for (method, path, token, body, status, code) in [
        (
            Method::PATCH,
            path.as_str(),
            None,
            Some(json!({"name": "x"})),
            401,
            "unauthorized",
        ),
        (
            Method::PATCH,
            path.as_str(),
            Some(ADMIN_TOKEN),
            Some(json!({"colour": "red"})),
            400,
            "bad_request",
        ),
        (
            Method::PATCH,
            path.as_str(),
            Some(ADMIN_TOKEN),
            Some(json!({})),
            400,
            "bad_request",
        ),
        (
            Method::PATCH,
            path.as_str(),
            Some(ADMIN_TOKEN),
            Some(json!({"ends_at": 1})),
            400,
            "bad_request",
        ),
        (
            Method::PATCH,
            path.as_str(),
            Some(ADMIN_TOKEN),
            Some(json!({"stock": -1})),
            400,
            "bad_request",
        ),
        (
            Method::PATCH,
            path.as_str(),
            Some(ADMIN_TOKEN),
            Some(json!({"price_cents": "ten"})),
            400,
            "bad_request",
        ),
        (
            Method::PATCH,
            "/admin/products/424242",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "x"})),
            404,
            "unknown_product",
        ),
        (
            Method::PATCH,
            "/admin/products/abc",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "x"})),
            400,
            "bad_request",
        ),
        (
            Method::DELETE,
            path.as_str(),
            None,
            None,
            401,
            "unauthorized",
        ),
        (
            Method::DELETE,
            "/admin/products/424242",
            Some(ADMIN_TOKEN),
            None,
            404,
            "unknown_product",
        ),
        (
            Method::POST,
            "/admin/reconcile",
            None,
            None,
            401,
            "unauthorized",
        ),
    ] {
        let reply = api.send(method.clone(), path, token, body.as_ref()).await;
        assert_eq!(
            (reply.status, reply.error()),
            (status, Some(code)),
            "{method} {path} {body:?}: {:?}",
            reply.body
        );
    }
    assert_eq!(
        api.product(product).await.revision,
        1,
        "no refused edit changed anything"
    );
}
