//! The flash-sale hot path against a real redis-server and real databases:
//! exact sell-outs, the local sold-out flag, preheat across restarts (real
//! origin processes, stopped and started), bad input, the sale window, and
//! Redis going away. The rest run the origin in-process (the test app).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use redis::AsyncCommands;
use reqwest::Method;
use seckill_shared::api::ResultStatus;
use seckill_tests::checks::{keys, pid, rush, sold_out_refusals};
use seckill_tests::client::unix_now;
use seckill_tests::redis_server::Persistence;
use seckill_tests::variants;
use seckill_tests::{
    eventually, Api, AppSettings, Backend, Origin, OriginOptions, RedisBackend, RedisServer, Sale,
    TestApp, TestDatabase, TestRedis,
};
use serde_json::json;

/// An in-process origin whose background loops are off (see
/// [`AppSettings::quiet`]).
async fn quiet_app(redis: &RedisServer, db: &TestDatabase) -> TestApp {
    TestApp::start(redis.url(), db, AppSettings::new().quiet()).await
}

/// The same on one Redis or a cluster.
async fn quiet_app_on(redis: &TestRedis, db: &TestDatabase) -> TestApp {
    TestApp::start_on(redis, db, AppSettings::new().quiet()).await
}

/// The same as an origin process, for the tests that stop and start it.
async fn origin_without_consumers(label: &str, redis: &RedisServer, db: &TestDatabase) -> Origin {
    Origin::start(
        OriginOptions::new(label, redis, db)
            .env("SECKILL_CONSUMERS", 0)
            .env("SECKILL_CANCEL_POLL_MS", 0)
            .env("SECKILL_CDC_POLL_MS", 0)
            .env("SECKILL_RECONCILE_INTERVAL_S", 0),
    )
    .await
}

async fn exact_sell_out(backend: Backend, redis: RedisBackend) {
    let redis = TestRedis::start(redis).await;
    let db = TestDatabase::create(backend).await;
    let origin = quiet_app_on(&redis, &db).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(100)).await.product_id.get();

    // 2,000 distinct members, plus 500 repeated attempts by some of them.
    let mut members: Vec<i64> = (1..=2_000).collect();
    members.extend((1..=500).map(|i| i * 4));
    members.shuffle(&mut rand::rng());
    let outcomes = rush(&api, product, members, 200).await;

    let winners: Vec<i64> = outcomes
        .iter()
        .filter(|(_, s, _)| *s == 202)
        .map(|(m, _, _)| *m)
        .collect();
    assert_eq!(winners.len(), 100, "exactly the stock is sold");
    assert_eq!(
        winners.iter().collect::<HashSet<_>>().len(),
        100,
        "no member wins twice"
    );
    for (member, status, code) in &outcomes {
        if *status != 202 {
            assert_eq!(*status, 409, "member {member}: {code:?}");
            assert!(
                matches!(code.as_deref(), Some("sold_out" | "already_ordered")),
                "{code:?}"
            );
        }
    }

    let mut conn = redis.connection().await;
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(stock, 0, "redis stock ends at exactly zero");
    let entries: redis::streams::StreamRangeReply =
        conn.xrange_all(keys().orders(pid(product))).await.unwrap();
    assert_eq!(entries.ids.len(), 100, "one order request per sale");
    let queued: HashSet<i64> = entries
        .ids
        .iter()
        .map(|e| e.get::<i64>("member").expect("member field"))
        .collect();
    assert_eq!(queued.len(), 100, "no member queued twice");
    assert_eq!(queued, winners.iter().copied().collect::<HashSet<_>>());

    // Every winner's result says queued; a loser's says none.
    assert_eq!(
        api.result(product, winners[0]).await.status,
        ResultStatus::Queued
    );
    let loser = (1..=2_000).find(|m| !queued.contains(m)).unwrap();
    assert_eq!(api.result(product, loser).await.status, ResultStatus::None);
}

variants!(exact_sell_out {
    sqlite: (Backend::Sqlite, RedisBackend::Single),
    postgres: (Backend::Postgres, RedisBackend::Single),
    postgres_on_a_cluster: (Backend::Postgres, RedisBackend::Cluster),
});

async fn sold_out_buys_are_answered_without_redis(redis: RedisBackend) {
    let redis = TestRedis::start(redis).await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = quiet_app_on(&redis, &db).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    for member in 1..=5 {
        assert_eq!(api.buy(product, member).await.status, 202);
    }
    // The sixth buy learns the sell-out from Redis (or the fifth already did).
    assert_eq!(api.buy(product, 6).await.error(), Some("sold_out"));
    // Let the one-off registry update settle before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let scripts_before = redis.command_calls("evalsha").await + redis.command_calls("eval").await;
    let reads_before = redis.command_calls("hget").await;
    let outcomes = rush(&api, product, 100..400, 50).await;
    assert!(outcomes
        .iter()
        .all(|(_, s, c)| *s == 409 && c.as_deref() == Some("sold_out")));
    let scripts_after = redis.command_calls("evalsha").await + redis.command_calls("eval").await;
    let reads_after = redis.command_calls("hget").await;
    assert_eq!(
        scripts_after, scripts_before,
        "300 sold-out buys ran no script in Redis"
    );
    assert_eq!(reads_after, reads_before, "nor any read");
    let (local, _) = sold_out_refusals(&api).await;
    assert!(local >= 300.0, "local flag answered them: {local}");

    // The registry edges read says so too.
    let snapshot = api.get("/api/soldout").await;
    assert_eq!(snapshot.status, 200);
    assert_eq!(snapshot.body["sold_out"], json!([product]));
    assert!(snapshot.body["version"].as_u64().unwrap() >= 1);
}

variants!(sold_out_buys_are_answered_without_redis {
    single: (RedisBackend::Single),
    on_a_cluster: (RedisBackend::Cluster),
});

async fn restart_keeps_live_stock(backend: Backend) {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    let label = "hot_path_restart";
    let mut first = origin_without_consumers(label, &redis, &db).await;
    let product = first
        .api()
        .create_sale(&Sale::open(10))
        .await
        .product_id
        .get();
    for member in 1..=3 {
        assert_eq!(first.api().buy(product, member).await.status, 202);
    }
    assert_eq!(first.stop().await, Some(0), "graceful exit on SIGTERM");

    // Two origins start at once against the same Redis and database: the
    // live count (7) survives; the database's original (10) is not reloaded.
    let (second, third) = tokio::join!(
        origin_without_consumers(label, &redis, &db),
        origin_without_consumers(label, &redis, &db)
    );
    let mut conn = redis.connection().await;
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(stock, 7);
    assert_eq!(second.api().product(product).await.stock_left, 7);
    assert_eq!(third.api().buy(product, 4).await.status, 202);
    assert_eq!(
        second.api().buy(product, 1).await.error(),
        Some("already_ordered"),
        "members survive too"
    );
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(stock, 6);
    drop((second, third));

    // Redis loses everything; two origins starting at once load the item once.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let (fourth, fifth) = tokio::join!(
        origin_without_consumers(label, &redis, &db),
        origin_without_consumers(label, &redis, &db)
    );
    // Each origin logs its start-up preheat's end after any item it loaded,
    // so once both have finished the count of loads is final (Redis showing
    // the stock is not enough: the loader may not have logged it yet).
    eventually(Duration::from_secs(10), "both start-up preheats", || {
        let finished = [&fourth, &fifth]
            .iter()
            .all(|o| o.log().contains("stock preheat finished"));
        async move { finished.then_some(()) }
    })
    .await;
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(
        stock, 10,
        "the item is live again with the database's stock"
    );
    let loads = [&fourth, &fifth]
        .iter()
        .map(|o| o.log().matches("stock preheated into redis").count())
        .sum::<usize>();
    assert_eq!(loads, 1, "exactly one origin loaded the item");
    // With no orders written yet, the database still says 10.
    assert_eq!(fourth.api().product(product).await.stock_left, 10);
}

variants!(restart_keeps_live_stock {
    sqlite: (Backend::Sqlite),
    postgres: (Backend::Postgres),
});

/// One malformed request: method, path, bearer token, JSON body, and the
/// status and error code the contract promises for it.
type Case<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    Option<serde_json::Value>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_contracts_4xx() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = quiet_app(&redis, &db).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();

    let good = Api::token(7);
    let expired = Api::token_expiring(7, unix_now() - 1);
    let forged = {
        let (payload, _) = good.rsplit_once('.').unwrap();
        format!("{payload}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    };
    let other_member = {
        // A valid signature moved onto another member id.
        let sig = good.rsplit_once('.').unwrap().1;
        format!("v1.8.{}.{sig}", unix_now() + 3_600)
    };
    let sale = Sale::open(1).body();
    let mut unknown_field = sale.clone();
    unknown_field["colour"] = json!("red");
    let mut wrong_type = sale.clone();
    wrong_type["stock"] = json!("ten");
    let mut no_stock = sale.clone();
    no_stock["stock"] = json!(0);
    let mut backwards = sale.clone();
    backwards["ends_at"] = sale["starts_at"].clone();
    let buy = format!("/api/seckill/{product}/orders");

    let admin = Some(seckill_tests::ADMIN_TOKEN);
    let (none, good) = (None, Some(good.as_str()));
    let result = format!("/api/seckill/{product}/result");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Method::POST, &buy, none, None, 401, "unauthorized"),
        (Method::POST, &buy, Some("not-a-token"), None, 401, "unauthorized"),
        (Method::POST, &buy, Some(&expired), None, 401, "unauthorized"),
        (Method::POST, &buy, Some(&forged), None, 401, "unauthorized"),
        (Method::POST, &buy, Some(&other_member), None, 401, "unauthorized"),
        (Method::POST, &buy, admin, None, 401, "unauthorized"),
        (Method::POST, "/api/seckill/abc/orders", good, None, 400, "bad_request"),
        (Method::POST, "/api/seckill/0/orders", good, None, 400, "bad_request"),
        (Method::POST, "/api/seckill/-5/orders", good, None, 400, "bad_request"),
        (Method::POST, "/api/seckill/1.5/orders", good, None, 400, "bad_request"),
        (Method::POST, "/api/seckill/99999999999999999999/orders", good, None, 400, "bad_request"),
        (Method::POST, "/api/seckill/424242/orders", good, None, 404, "unknown_product"),
        (Method::GET, &buy, good, None, 405, "method_not_allowed"),
        (Method::GET, "/api/seckill/abc/result", good, None, 400, "bad_request"),
        (Method::GET, &result, none, None, 401, "unauthorized"),
        (Method::GET, "/api/products/abc", none, None, 400, "bad_request"),
        (Method::GET, "/api/products/424242", none, None, 404, "unknown_product"),
        (Method::GET, "/api/nothing-here", none, None, 404, "not_found"),
        (Method::POST, "/admin/products", none, Some(sale.clone()), 401, "unauthorized"),
        (Method::GET, "/admin/products", none, None, 401, "unauthorized"),
        (Method::GET, "/admin/products", good, None, 401, "unauthorized"),
        (Method::POST, "/admin/products", good, Some(sale.clone()), 401, "unauthorized"),
        (Method::POST, "/admin/products", admin, Some(unknown_field), 400, "bad_request"),
        (Method::POST, "/admin/products", admin, Some(wrong_type), 400, "bad_request"),
        (Method::POST, "/admin/products", admin, Some(no_stock), 400, "bad_request"),
        (Method::POST, "/admin/products", admin, Some(backwards), 400, "bad_request"),
        (Method::POST, "/admin/products", admin, Some(json!([1, 2])), 400, "bad_request"),
        (Method::POST, "/api/session", none, Some(json!({"member_id": 0})), 400, "bad_request"),
        (Method::POST, "/api/session", none, Some(json!({"member_id": 1, "admin": true})), 400, "bad_request"),
        (Method::POST, "/api/session", none, Some(json!({})), 400, "bad_request"),
    ];
    for (method, path, token, body, status, code) in cases {
        let reply = api.send(method.clone(), path, token, body.as_ref()).await;
        assert_eq!(
            (reply.status, reply.error()),
            (status, Some(code)),
            "{method} {path}: {:?}",
            reply.body
        );
        assert!(
            reply.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "every error has a message: {:?}",
            reply.body
        );
    }

    // Raw bodies: not JSON, no content type, oversized.
    let url = format!("{}/admin/products", api.base());
    let not_json = api
        .send_raw(
            api.http()
                .post(&url)
                .bearer_auth(seckill_tests::ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_eq!(
        (not_json.status, not_json.error()),
        (400, Some("bad_request"))
    );
    let no_type = api
        .send_raw(
            api.http()
                .post(&url)
                .bearer_auth(seckill_tests::ADMIN_TOKEN)
                .body(sale.to_string()),
        )
        .await;
    assert_eq!(
        (no_type.status, no_type.error()),
        (400, Some("bad_request"))
    );
    let huge = json!({ "name": "x".repeat(100_000) });
    let too_big = api
        .send_raw(
            api.http()
                .post(&url)
                .bearer_auth(seckill_tests::ADMIN_TOKEN)
                .json(&huge),
        )
        .await;
    assert_eq!(
        (too_big.status, too_big.error()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(
        too_big.header("connection"),
        Some("close"),
        "a body refused unread ends the connection, so no client reuses it"
    );

    // A request id given by the edge comes back with the answer.
    let traced = api
        .send_raw(
            api.http()
                .get(format!("{}/api/time", api.base()))
                .header("x-request-id", "edge-42"),
        )
        .await;
    assert_eq!(traced.header("x-request-id"), Some("edge-42"));

    // None of that reserved anything.
    let mut conn = redis.connection().await;
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(stock, 10);
    let statuses_500 = api
        .metric("http_requests_total", &[("status", "500")])
        .await;
    assert_eq!(statuses_500, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_login_is_absent_unless_enabled() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let with = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let reply = with
        .api()
        .send(
            Method::POST,
            "/api/session",
            None,
            Some(&json!({"member_id": 42})),
        )
        .await;
    assert_eq!(reply.status, 200);
    let token = reply.body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("v1.42."));
    let product = with
        .api()
        .create_sale(&Sale::open(1))
        .await
        .product_id
        .get();
    let bought = with
        .api()
        .send(
            Method::POST,
            &format!("/api/seckill/{product}/orders"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(bought.status, 202, "the demo token buys");

    let without = TestApp::start(
        redis.url(),
        &db,
        AppSettings::new().set("SECKILL_DEMO_LOGIN", 0),
    )
    .await;
    let reply = without
        .api()
        .send(
            Method::POST,
            "/api/session",
            None,
            Some(&json!({"member_id": 42})),
        )
        .await;
    assert_eq!((reply.status, reply.error()), (404, Some("not_found")));
}

async fn buys_outside_the_sale_window_are_refused(redis: RedisBackend) {
    let redis = TestRedis::start(redis).await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = quiet_app_on(&redis, &db).await;
    let api = origin.api();
    let now = unix_now();
    let later = api
        .create_sale(&Sale::window(5, now + 3_600, now + 7_200))
        .await
        .product_id
        .get();
    let over = api
        .create_sale(&Sale::window(5, now - 7_200, now - 3_600))
        .await
        .product_id
        .get();
    let soon = api
        .create_sale(&Sale::window(5, now + 2, now + 3_600))
        .await
        .product_id
        .get();

    assert_eq!(api.buy(later, 1).await.error(), Some("not_started"));
    assert_eq!(api.buy(later, 1).await.status, 403);
    let ended = api.buy(over, 1).await;
    assert_eq!((ended.status, ended.error()), (403, Some("ended")));
    assert_eq!(api.buy(soon, 1).await.error(), Some("not_started"));
    // The window opens by itself, on Redis' clock.
    eventually(Duration::from_secs(6), "the sale to open", || {
        let api = api.clone();
        async move { (api.buy(soon, 2).await.status == 202).then_some(()) }
    })
    .await;

    let mut conn = redis.connection().await;
    for (product, expected) in [(later, 5), (over, 5), (soon, 4)] {
        let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
        assert_eq!(stock, expected, "product {product}");
    }
}

variants!(buys_outside_the_sale_window_are_refused {
    single: (RedisBackend::Single),
    on_a_cluster: (RedisBackend::Cluster),
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_503_and_nothing_reserved() {
    let mut redis = RedisServer::start_with(Persistence::AofAlways).await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = quiet_app(&redis, &db).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();
    assert_eq!(api.buy(product, 1).await.status, 202);
    assert_eq!(api.buy(product, 2).await.status, 202);

    redis.kill();
    let mut refused = Vec::new();
    for member in 10..20 {
        let reply = api.buy(product, member).await;
        // A buy sent on the connection Redis dropped may have run for all
        // the origin can tell: it says so (`outcome_unknown`); once the
        // origin knows Redis is gone, nothing is reserved (`unavailable`).
        // Either way the member holds nothing (checked below).
        assert_eq!(reply.status, 503, "member {member}: {:?}", reply.body);
        assert!(
            matches!(reply.error(), Some("unavailable" | "outcome_unknown")),
            "member {member}: {:?}",
            reply.body
        );
        refused.push(member);
    }
    let last = api.buy(product, 20).await;
    assert_eq!(
        (last.status, last.error()),
        (503, Some("unavailable")),
        "with Redis known to be down, a buy is refused outright"
    );
    refused.push(20);
    let ready = api.get("/readyz").await;
    assert_eq!((ready.status, ready.error()), (503, Some("unavailable")));

    // Redis comes back (from its append-only file); the same origin process
    // serves buys again without a restart.
    redis.restart().await;
    let mut next_member = 100;
    eventually(Duration::from_secs(10), "buying to work again", || {
        next_member += 1;
        let api = api.clone();
        let member = next_member;
        async move {
            let reply = api.buy(product, member).await;
            assert!(matches!(reply.status, 202 | 503), "{:?}", reply.body);
            (reply.status == 202).then_some(())
        }
    })
    .await;
    assert_eq!(api.get("/readyz").await.status, 200);

    let mut conn = redis.connection().await;
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(
        stock, 7,
        "two before the outage, one after; none from the 503s"
    );
    let queued: HashMap<String, String> = conn.hgetall(keys().members(pid(product))).await.unwrap();
    assert_eq!(queued.len(), 3);
    for member in refused {
        assert!(
            !queued.contains_key(&member.to_string()),
            "member {member} got 503 and holds nothing"
        );
        assert_eq!(api.result(product, member).await.status, ResultStatus::None);
    }
}

/// The reserve script decides a whole batch of buys in one call (the origin
/// coalesces concurrent buys for an item): each member must be decided
/// exactly as if alone, in order, including a member twice in one batch
/// and members who already hold or have lost a reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reserve_call_decides_each_member_of_a_batch_as_if_alone() {
    let redis = RedisServer::start().await;
    let mut conn = redis.connection().await;
    let (item, members, orders) = (
        keys().item(pid(5)),
        keys().members(pid(5)),
        keys().orders(pid(5)),
    );
    let now = unix_now();
    let _: () = redis::cmd("HSET")
        .arg(&item)
        .arg(&[
            ("stock", 3),
            ("starts_at", now - 10),
            ("ends_at", now + 600),
        ])
        .arg(&[("price", 100), ("seq", 40)])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Member 11 already holds a reservation; member 12's earlier one failed
    // (a member whose order failed may buy again).
    let _: () = conn
        .hset_multiple(&members, &[("11", "q:39"), ("12", "f:38")])
        .await
        .unwrap();

    let reserve = redis::Script::new(seckill_origin::RESERVE_LUA);
    let call = |id: &str| {
        let mut call = reserve.prepare_invoke();
        call.key(&item)
            .key(&members)
            .key(&orders)
            .key(keys().reserve_reply(pid(5), id))
            .arg(5)
            .arg(30_000)
            .arg(&[7, 7, 11, 12, 8, 9, 12]);
        call
    };
    let reply: Vec<String> = call("call-1").invoke_async(&mut conn).await.unwrap();
    assert_eq!(
        reply,
        ["each", "q:41:2", "a", "a", "q:42:1", "q:43:0", "x", "a"],
        "7 wins once, 11 already holds one, 12 buys again, 9 finds it sold out"
    );

    let item_state: HashMap<String, i64> = conn.hgetall(&item).await.unwrap();
    assert_eq!((item_state["stock"], item_state["seq"]), (0, 43));
    let states: HashMap<String, String> = conn.hgetall(&members).await.unwrap();
    assert_eq!(
        states,
        HashMap::from([
            ("7".into(), "q:41".into()),
            ("11".into(), "q:39".into()),
            ("12".into(), "q:42".into()),
            ("8".into(), "q:43".into()),
        ])
    );
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&orders).await.unwrap();
    let queued: Vec<(i64, i64)> = entries
        .ids
        .iter()
        .map(|e| (e.get("member").unwrap(), e.get("seq").unwrap()))
        .collect();
    assert_eq!(queued, [(7, 41), (12, 42), (8, 43)], "in arrival order");

    // The same call arriving again (a client resending it after an I/O
    // error) answers what it decided, so 7, 12 and 8 are told of their own
    // reservations instead of being refused as already holding one; and
    // it changes nothing.
    let again: Vec<String> = call("call-1").invoke_async(&mut conn).await.unwrap();
    assert_eq!(again, reply, "a resent call answers the first run's reply");
    let entries: redis::streams::StreamRangeReply = conn.xrange_all(&orders).await.unwrap();
    assert_eq!(entries.ids.len(), 3, "and queues nothing twice");
    let item_after: HashMap<String, i64> = conn.hgetall(&item).await.unwrap();
    assert_eq!(item_after, item_state);
    // A new call for the same members is decided afresh.
    let fresh: Vec<String> = call("call-2").invoke_async(&mut conn).await.unwrap();
    assert_eq!(fresh, ["each", "a", "a", "a", "a", "a", "x", "a"]);
}

/// A request's id (as the edge sends it) is on every log line the origin
/// writes for it, with the matched route and the status, and the log can
/// be one JSON object per line for a shipper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_followed_into_the_json_log() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(
        OriginOptions::new("hot_path_request_log", &redis, &db)
            .env("SECKILL_LOG_FORMAT", "json")
            .env("SECKILL_CONSUMERS", 0),
    )
    .await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(1)).await.product_id.get();
    let token = Api::token(5);
    let buy = api
        .send_raw(
            api.http()
                .post(format!("{}/api/seckill/{product}/orders", api.base()))
                .bearer_auth(&token)
                .header("x-request-id", "edge-buy-5"),
        )
        .await;
    assert_eq!(buy.status, 202);
    assert_eq!(buy.header("x-request-id"), Some("edge-buy-5"));
    // A request without an id is given one, and answers with it.
    let unnamed = api.get("/api/time").await;
    let given = unnamed
        .header("x-request-id")
        .expect("an id is given")
        .to_string();

    let lines = eventually(Duration::from_secs(5), "the answers to be logged", || {
        let (log, given) = (origin.log(), given.clone());
        async move {
            let lines: Vec<serde_json::Value> = log
                .lines()
                .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
                .collect();
            let answered = |id: &str| {
                lines.iter().any(|line| {
                    line["span"]["request_id"] == id && line["fields"]["status"].is_number()
                })
            };
            (answered("edge-buy-5") && answered(&given)).then_some(lines)
        }
    })
    .await;
    let answer = lines
        .iter()
        .find(|line| line["span"]["request_id"] == "edge-buy-5")
        .unwrap();
    assert_eq!(answer["span"]["route"], "/api/seckill/{product_id}/orders");
    assert_eq!(answer["span"]["method"], "POST");
    assert_eq!(answer["fields"]["status"], 202);
}

/// With `SECKILL_REDIS_REPLICA_ACKS=1` a buy is promised only once a
/// replica has it. A Redis with no replica can never confirm: the buyer is
/// told `outcome_unknown` (after the wait), not 202, while the reservation
/// itself stands and the result endpoint tells the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buy_no_replica_confirms_is_answered_outcome_unknown() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let settings = AppSettings::new()
        .quiet()
        .set("SECKILL_REDIS_REPLICA_ACKS", 1)
        .set("SECKILL_REDIS_REPLICA_WAIT_MS", 100);
    let origin = TestApp::start(redis.url(), &db, settings).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(5)).await.product_id.get();
    let reply = api.buy(product, 1).await;
    assert_eq!(
        (reply.status, reply.error()),
        (503, Some("outcome_unknown")),
        "{:?}",
        reply.body
    );
    assert_eq!(
        redis.command_calls("wait").await,
        1,
        "one WAIT for the call"
    );
    assert_eq!(api.result(product, 1).await.status, ResultStatus::Queued);
    // A refusal needs no replica: nothing was written.
    let again = api.buy(product, 1).await;
    assert_eq!(again.error(), Some("already_ordered"));
    assert_eq!(
        redis.command_calls("wait").await,
        1,
        "no WAIT for a refusal"
    );
}
