//! The origin on a real Redis Cluster (three primaries, three replicas,
//! started by the test): many products spread over every shard rushed at
//! once, what `/readyz` says of the cluster, and a primary killed in the
//! middle of a rush. The suites shared with
//! one Redis (hot path, pipeline, lifecycle) run their cluster variants in
//! their own files.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seckill_shared::keys::slot_of;
use seckill_tests::checks::{
    assert_invariants, assert_invariants_with_losses, buy_all, deadlines_from, group, keys, orders,
    pid, redis_stock, rush, stock_available,
};
use seckill_tests::proxy::TcpProxy;
use seckill_tests::{
    eventually, Api, AppSettings, Backend, RedisCluster, Sale, TestApp, TestDatabase, TestRedis,
    TestWorker,
};

const PRODUCTS: usize = 30;
const STOCK: i64 = 20;
const BUYERS_PER_PRODUCT: i64 = 50;

/// 30 products whose keys land on all three primaries, rushed at the same
/// time by 50 members each for 20 units: every product sells exactly its
/// stock, and the orders in PostgreSQL equal it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_products_over_three_shards_sell_out_exactly() {
    let redis = TestRedis::start(seckill_tests::RedisBackend::Cluster).await;
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let db = TestDatabase::create(Backend::Postgres).await;
    let app = TestApp::start_on(&redis, &db, AppSettings::new().set("SECKILL_CONSUMERS", 2)).await;
    let api = app.api();

    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["cluster"]["cluster_state"], "ok");
    assert_eq!(ready.body["cluster"]["primaries"], 3);
    assert_eq!(ready.body["cluster"]["primaries_reachable"], 3);

    let mut products = Vec::new();
    for _ in 0..PRODUCTS {
        products.push(api.create_sale(&Sale::open(STOCK)).await.product_id.get());
    }
    let shards = products_by_shard(cluster, &products).await;
    assert_eq!(
        shards.len(),
        3,
        "the products span every primary: {shards:?}"
    );

    let rushes = products.iter().map(|&product| {
        let api = api.clone();
        // Members of their own per product: the per-member rate limit is
        // not what this test is about.
        let members = (1..=BUYERS_PER_PRODUCT).map(move |i| product * 1_000 + i);
        async move { (product, rush(&api, product, members, 8).await) }
    });
    let outcomes = futures::future::join_all(rushes).await;

    let pool = db.pool().await;
    let mut conn = redis.connection().await;
    for (product, outcomes) in &outcomes {
        let winners: HashSet<i64> = outcomes
            .iter()
            .filter(|(_, status, _)| *status == 202)
            .map(|(member, _, _)| *member)
            .collect();
        for (member, status, code) in outcomes {
            if *status != 202 {
                assert_eq!(
                    (*status, code.as_deref()),
                    (409, Some("sold_out")),
                    "product {product}, member {member}"
                );
            }
        }
        assert_eq!(
            winners.len() as i64,
            STOCK,
            "product {product} sells its stock"
        );
        assert_eq!(redis_stock(&mut conn, *product).await, 0);
    }
    for (product, outcomes) in &outcomes {
        let winners: HashSet<i64> = outcomes
            .iter()
            .filter(|(_, status, _)| *status == 202)
            .map(|(member, _, _)| *member)
            .collect();
        let rows = eventually(
            Duration::from_secs(30),
            &format!("the orders of product {product}"),
            || {
                let pool = pool.clone();
                async move {
                    let rows = orders(&pool, *product).await;
                    assert!(rows.len() as i64 <= STOCK, "oversold: {}", rows.len());
                    (rows.len() as i64 == STOCK).then_some(rows)
                }
            },
        )
        .await;
        let members: HashSet<i64> = rows.iter().map(|(_, member, _)| *member).collect();
        assert_eq!(members, winners, "product {product}: the winners' orders");
        assert_eq!(stock_available(&pool, *product).await, 0);
    }

    // Every sell-out is in the registry edges read, whatever its shard.
    let snapshot = api.get("/api/soldout").await;
    let listed: HashSet<i64> = snapshot.body["sold_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    assert_eq!(listed, products.iter().copied().collect::<HashSet<_>>());

    let accepted: Vec<(i64, i64)> = outcomes
        .iter()
        .flat_map(|(product, outcomes)| {
            outcomes
                .iter()
                .filter(|(_, status, _)| *status == 202)
                .map(|(member, _, _)| (*product, *member))
        })
        .collect();
    assert_invariants(cluster, &db, &products, &accepted).await;
}

/// The connection to a product's primary breaks after its reserve script
/// has run there but before the reply is back. The cluster client sends
/// the script again on a new connection; the buyer must still be told the
/// reservation the first run made (`202`), never `already_ordered` for
/// their own unit, and exactly one unit and one order exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_resent_after_a_broken_connection_answers_the_first_run() {
    const STOCK: i64 = 10;
    let redis = TestRedis::start(seckill_tests::RedisBackend::Cluster).await;
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let db = TestDatabase::create(Backend::Postgres).await;
    let setup = TestApp::start_on(&redis, &db, AppSettings::new()).await;
    let product = setup
        .api()
        .create_sale(&Sale::open(STOCK))
        .await
        .product_id
        .get();
    let primary = cluster.primary_of(&keys().item(pid(product))).await;
    // The primary is reached through a proxy from now on, by a fresh origin.
    let proxy = TcpProxy::start(primary).await;
    cluster.announce_port(primary, proxy.port()).await;
    let app = TestApp::start_on(&redis, &db, AppSettings::new()).await;
    let api = app.api();
    let warm = api.buy(product, 1).await;
    assert_eq!(warm.status, 202, "{}", warm.body);

    proxy.set_delay(Duration::from_millis(400));
    let buy = tokio::spawn({
        let api = api.clone();
        async move { api.buy(product, 2).await }
    });
    // The script reaches the primary after 400 ms; its reply would be back
    // after 800 ms: the connection breaks in between. (Without the
    // script's kept reply the resent run answers `already_ordered`: this
    // test failed so when the replay was switched off.)
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.cut();
    proxy.set_delay(Duration::ZERO);
    proxy.restore();
    let answer = buy.await.unwrap();
    assert_eq!(
        answer.status, 202,
        "the first run's reservation: {}",
        answer.body
    );
    let again = api.buy(product, 2).await;
    assert_eq!(again.error(), Some("already_ordered"), "{}", again.body);

    let mut conn = redis.connection().await;
    assert_eq!(redis_stock(&mut conn, product).await, STOCK - 2);
    let pool = db.pool().await;
    let rows = eventually(Duration::from_secs(20), "the two orders", || {
        let pool = pool.clone();
        async move {
            let rows = orders(&pool, product).await;
            (rows.len() == 2).then_some(rows)
        }
    })
    .await;
    let members: HashSet<i64> = rows.iter().map(|(_, member, _)| *member).collect();
    assert_eq!(members, HashSet::from([1, 2]));
    assert_invariants(&redis, &db, &[product], &[(product, 1), (product, 2)]).await;
}

/// Which primary (by port) holds each product's keys.
async fn products_by_shard(cluster: &RedisCluster, products: &[i64]) -> BTreeMap<u16, Vec<i64>> {
    let mut shards: BTreeMap<u16, Vec<i64>> = BTreeMap::new();
    for &product in products {
        let port = cluster.primary_of(&keys().item(pid(product))).await;
        shards.entry(port).or_default().push(product);
    }
    shards
}

/// One buy of a rush: `(product, member, status, error code, sent, answered)`.
type TimedOutcome = (i64, i64, u16, Option<String>, Instant, Instant);

/// Buys `product` with fresh members, `concurrency` at a time, until a
/// buy is answered sold out (or `deadline`), recording every answer.
async fn rush_until_sold_out(
    api: Api,
    product: i64,
    concurrency: usize,
    deadline: Instant,
) -> Vec<TimedOutcome> {
    let next = Arc::new(AtomicI64::new(1));
    let sold_out = Arc::new(AtomicBool::new(false));
    let buyers = (0..concurrency).map(|_| {
        let (api, next, sold_out) = (api.clone(), next.clone(), sold_out.clone());
        async move {
            let mut seen = Vec::new();
            while !sold_out.load(Ordering::Relaxed) && Instant::now() < deadline {
                let member = product * 100_000 + next.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let reply = api.buy(product, member).await;
                let code = reply.error().map(str::to_string);
                if code.as_deref() == Some("sold_out") {
                    sold_out.store(true, Ordering::Relaxed);
                }
                seen.push((product, member, reply.status, code, sent, Instant::now()));
                if reply.status >= 500 {
                    // What a client does when the origin is briefly unavailable.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            seen
        }
    });
    futures::future::join_all(buyers)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A primary is SIGKILLed in the middle of a rush over nine products on
/// three shards. The products of the other shards sell on without a single
/// error; the failed shard's products are sold again within the node
/// timeout plus a few seconds (its replica is promoted); no product is
/// oversold, no member holds two orders of one product, and every 202 ends
/// as an order (with `replica_acks` 0, one the failover lost is counted
/// and reported; with 1, none may be lost); every order has its member's
/// result and its payment deadline in Redis.
///
/// With `replica_acks` 1 the promoted replica has no replica of its own
/// until the killed node is started again (it rejoins as its replica):
/// until then its shard answers `outcome_unknown`, as promised.
async fn a_primary_killed_mid_rush(replica_acks: u16) {
    const STOCK: i64 = 150;
    let redis = TestRedis::start(seckill_tests::RedisBackend::Cluster).await;
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let db = TestDatabase::create(Backend::Postgres).await;
    let settings = AppSettings::new()
        .set("SECKILL_CONSUMERS", 2)
        // Entries a consumer held when their primary died are taken over
        // this soon (the default is 30 s).
        .set("SECKILL_CLAIM_IDLE_MS", 2_000)
        .set("SECKILL_REDIS_REPLICA_ACKS", replica_acks)
        .set("SECKILL_REDIS_REPLICA_WAIT_MS", 1_500);
    let app = TestApp::start_on(&redis, &db, settings).await;
    let api = app.api();
    let mut products = Vec::new();
    let shards = loop {
        products.push(api.create_sale(&Sale::open(STOCK)).await.product_id.get());
        let shards = products_by_shard(cluster, &products).await;
        if shards.len() == 3 && shards.values().all(|on| on.len() >= 3) {
            break shards;
        }
    };
    let (&victim, victim_products) = shards.iter().next().unwrap();
    let victim_products: HashSet<i64> = victim_products.iter().copied().collect();

    let deadline = Instant::now() + Duration::from_secs(40);
    let rushes: Vec<_> = products
        .iter()
        .map(|&product| tokio::spawn(rush_until_sold_out(api.clone(), product, 3, deadline)))
        .collect();
    // Killed once every product of the victim shard has sold a few units,
    // and long before any sells out: a fixed delay is too long on a fast
    // run and too short on a loaded one.
    let conn = cluster.connection().await;
    eventually(
        Duration::from_secs(20),
        "every product of the victim shard to be selling",
        || {
            let (mut conn, victim_products) = (conn.clone(), &victim_products);
            async move {
                for &product in victim_products {
                    if STOCK - redis_stock(&mut conn, product).await < 5 {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
    drop(conn);
    let mut cluster_handle = match redis {
        TestRedis::Cluster(cluster) => cluster,
        TestRedis::Single(_) => unreachable!(),
    };
    let victim_slot = slot_of(
        keys()
            .item(pid(*victim_products.iter().next().unwrap()))
            .as_bytes(),
    );
    cluster_handle.kill(victim);
    let killed_at = Instant::now();
    if replica_acks > 0 {
        eventually(
            Duration::from_secs(15),
            "the replica to be promoted",
            || {
                let cluster = &cluster_handle;
                async move { (cluster.primary_of_slot(victim_slot).await != victim).then_some(()) }
            },
        )
        .await;
        cluster_handle.restart(victim).await;
    }
    let mut outcomes: Vec<TimedOutcome> = Vec::new();
    for rush in rushes {
        outcomes.extend(rush.await.unwrap());
    }

    let pool = db.pool().await;
    let mut by_product: BTreeMap<i64, Vec<&TimedOutcome>> = BTreeMap::new();
    for outcome in &outcomes {
        by_product.entry(outcome.0).or_default().push(outcome);
    }
    let mut lost = 0;
    for (&product, answers) in &by_product {
        let accepted: HashSet<i64> = answers.iter().filter(|o| o.2 == 202).map(|o| o.1).collect();
        // Told their outcome is unknown: they may hold an order.
        let unknown: HashSet<i64> = answers
            .iter()
            .filter(|o| o.3.as_deref() == Some("outcome_unknown"))
            .map(|o| o.1)
            .collect();
        assert!(
            answers.iter().any(|o| o.3.as_deref() == Some("sold_out")),
            "product {product} sells out"
        );
        assert!(accepted.len() as i64 <= STOCK, "product {product} oversold");
        if victim_products.contains(&product) {
            let again = answers
                .iter()
                .filter(|o| o.2 == 202 && o.4 > killed_at)
                .map(|o| o.5 - killed_at)
                .min()
                .unwrap_or_else(|| {
                    let mut seen: BTreeMap<(u16, Option<String>, bool), usize> = BTreeMap::new();
                    for o in answers {
                        *seen.entry((o.2, o.3.clone(), o.4 > killed_at)).or_default() += 1;
                    }
                    panic!(
                        "product {product} on the killed shard never sold again; \
                         (status, code, sent after the kill) -> answers: {seen:?}"
                    )
                });
            let errors = answers.iter().filter(|o| o.2 >= 500).count();
            println!(
                "failover: product {product} on the killed shard sold again after {again:?} \
                 ({errors} answers 5xx meanwhile)"
            );
            // With acks the shard also needs its restarted node back in sync.
            let few_seconds = Duration::from_secs(if replica_acks > 0 { 10 } else { 5 });
            assert!(
                again
                    < Duration::from_millis(seckill_tests::redis_cluster::NODE_TIMEOUT_MS)
                        + few_seconds,
                "product {product} sold again {again:?} after the kill"
            );
        } else {
            let errors: Vec<_> = answers.iter().filter(|o| o.2 >= 500).collect();
            assert!(
                errors.is_empty(),
                "product {product} on a healthy shard: {} errors, first {:?}",
                errors.len(),
                errors.first()
            );
            assert_eq!(accepted.len() as i64, STOCK, "product {product}");
        }
        // Every order written, then nothing more: no 202 left in between.
        let rows = eventually(
            Duration::from_secs(30),
            &format!("product {product}'s orders to settle"),
            || {
                let told: HashSet<i64> = accepted.union(&unknown).copied().collect();
                let (pool, api) = (pool.clone(), api.clone());
                async move {
                    for &member in &told {
                        let result = api.result(product, member).await;
                        if result.status == seckill_shared::api::ResultStatus::Queued {
                            return None;
                        }
                    }
                    Some(orders(&pool, product).await)
                }
            },
        )
        .await;
        assert!(
            rows.len() as i64 <= STOCK,
            "product {product}: {} orders",
            rows.len()
        );
        let members: HashSet<i64> = rows.iter().map(|(_, member, _)| *member).collect();
        assert_eq!(
            members.len(),
            rows.len(),
            "product {product}: one order per member"
        );
        assert!(
            members.is_subset(&accepted.union(&unknown).copied().collect()),
            "product {product}: an order nobody was told of"
        );
        lost += accepted.difference(&members).count();
    }
    println!(
        "failover: {lost} acknowledged reservations lost \
         (SECKILL_REDIS_REPLICA_ACKS={replica_acks}), {} buys answered",
        outcomes.len()
    );
    if replica_acks > 0 {
        assert_eq!(
            lost, 0,
            "with a replica's acknowledgement every 202 is an order"
        );
    }

    // Every order's deadline is in Redis, on whatever shard now owns it.
    cluster_handle.wait_until_healthy().await;
    let conn = cluster_handle.connection().await;
    let unpaid: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders WHERE status = 'unpaid'")
        .fetch_one(&pool)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "every order's deadline in redis",
        || {
            let mut conn = conn.clone();
            async move { (deadlines_from(&mut conn, 0).await == unpaid.0 as u64).then_some(()) }
        },
    )
    .await;

    // The shared audit; with acks 0 a 202 answered before the kill may
    // have been lost with the killed primary (counted above), none after.
    let accepted: Vec<(i64, i64, bool)> = outcomes
        .iter()
        .filter(|o| o.2 == 202)
        .map(|o| (o.0, o.1, replica_acks == 0 && o.5 <= killed_at))
        .collect();
    let report = assert_invariants_with_losses(&cluster_handle, &db, &products, &accepted).await;
    assert_eq!(
        report.expected_losses.len(),
        lost,
        "the audit counts the same losses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_rush_is_replaced_and_nothing_is_oversold() {
    a_primary_killed_mid_rush(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_rush_with_replica_acks_loses_no_202() {
    a_primary_killed_mid_rush(1).await;
}

/// A shard's replica falls behind (SIGSTOP, its replication link dropped),
/// its products keep selling and the consumers write some of those orders
/// to the database, then a second batch of reservations is made while no
/// consumer reads; the primary is SIGKILLed and the stale replica takes
/// over (`CLUSTER FAILOVER TAKEOVER`). The promoted replica has neither
/// batch: the first batch's orders are in the database only, and the
/// second batch is lost. Then every product sells out.
///
/// With `replica_acks` 0 the second batch's 202s are lost (counted, and
/// there must be some, or the test provoked nothing) and nothing else is:
/// the origin rebuilds from the database what the replica lacks (the
/// members holding orders, stock less their units, reservation numbers
/// moved past every number the database holds, payment deadlines), so
/// every 202 answered after the failover becomes an order (none is
/// failed for a reused reservation number) and the shared audit passes.
/// With 1, the replica's silence makes `WAIT` time out: both batches are
/// answered `outcome_unknown`, never 202, and no 202 is lost.
async fn a_stale_replica_takes_over(replica_acks: u16) {
    const STOCK: i64 = 40;
    let mut redis = TestRedis::start(seckill_tests::RedisBackend::Cluster).await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let settings = AppSettings::new()
        .set("SECKILL_CLAIM_IDLE_MS", 2_000)
        .set("SECKILL_REDIS_REPLICA_ACKS", replica_acks)
        .set("SECKILL_REDIS_REPLICA_WAIT_MS", 1_500);
    // Orders are written by a worker of their own, which the test stops.
    let app = TestApp::start_on(&redis, &db, settings.clone().set("SECKILL_CONSUMERS", 0)).await;
    let api = app.api();
    let TestRedis::Cluster(cluster) = &mut redis else {
        unreachable!()
    };
    let start_worker = |cluster: &RedisCluster| {
        TestWorker::start(
            format!("redis://127.0.0.1:{}", cluster.ports()[0]),
            &db,
            settings
                .clone()
                .set("REDIS_CLUSTER_NODES", cluster.seeds())
                .set("SECKILL_CONSUMERS", 2),
        )
    };
    let mut worker = Some(start_worker(cluster).await);

    // Two products on the shard that fails over, at least one elsewhere.
    let mut products = Vec::new();
    let (victim, stale) = loop {
        products.push(api.create_sale(&Sale::open(STOCK)).await.product_id.get());
        let shards = products_by_shard(cluster, &products).await;
        let first = cluster.primary_of(&keys().item(pid(products[0]))).await;
        if shards[&first].len() >= 2 && shards.len() >= 2 {
            break (first, shards[&first].clone());
        }
    };
    let replica = cluster.replica_of(victim).await;
    let stale_slot = slot_of(keys().item(pid(stale[0])).as_bytes());
    let pool = db.pool().await;
    let mut answered: Vec<(i64, i64, u16, Option<String>, &str)> = Vec::new();
    let buy = |api: Api, product: i64, members: std::ops::Range<i64>| async move {
        rush(&api, product, members.map(|m| product * 1_000 + m), 10).await
    };

    // Before: every shard in sync.
    for &product in &products {
        for (member, status, code) in buy(api.clone(), product, 1..6).await {
            assert_eq!(status, 202, "product {product}: {code:?}");
            answered.push((product, member, status, code, "before"));
        }
    }
    let orders_of = |pool: &sqlx::AnyPool, product: i64| {
        let pool = pool.clone();
        async move { orders(&pool, product).await.len() }
    };
    for &product in &products {
        eventually(Duration::from_secs(20), "the first orders", || async {
            (orders_of(&pool, product).await == 5).then_some(())
        })
        .await;
    }

    cluster.stop_replicating(replica, victim).await;
    // Written by the consumers while the replica is behind.
    for &product in &products {
        let members = if stale.contains(&product) {
            10..20
        } else {
            10..15
        };
        for (member, status, code) in buy(api.clone(), product, members).await {
            answered.push((product, member, status, code, "written"));
        }
    }
    for &product in &products {
        let expected = if stale.contains(&product) { 15 } else { 10 };
        eventually(
            Duration::from_secs(20),
            "the orders made while the replica is behind",
            || async { (orders_of(&pool, product).await == expected).then_some(()) },
        )
        .await;
    }
    // Made while no consumer reads: on the old primary only.
    drop(worker.take());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for &product in &stale {
        for (member, status, code) in buy(api.clone(), product, 20..30).await {
            answered.push((product, member, status, code, "unread"));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for &product in &stale {
        assert_eq!(
            orders_of(&pool, product).await,
            15,
            "nothing read the last batch"
        );
    }

    cluster.kill(victim);
    cluster.resume(replica);
    cluster.take_over(replica, stale_slot).await;
    // The old primary comes back as the new one's replica (with acks 1,
    // the shard can promise nothing until it does).
    cluster.restart(victim).await;
    cluster.wait_until_healthy().await;
    worker = Some(start_worker(cluster).await);

    let deadline = Instant::now() + Duration::from_secs(40);
    let rushes: Vec<_> = products
        .iter()
        .map(|&product| tokio::spawn(rush_until_sold_out(api.clone(), product, 3, deadline)))
        .collect();
    for rush in rushes {
        for (product, member, status, code, _, _) in rush.await.unwrap() {
            answered.push((product, member, status, code, "after"));
        }
    }
    for &product in &products {
        assert!(
            answered
                .iter()
                .any(|a| a.0 == product && a.3.as_deref() == Some("sold_out")),
            "product {product} sells out"
        );
    }
    if replica_acks > 0 {
        let promised: Vec<_> = answered
            .iter()
            .filter(|a| stale.contains(&a.0) && a.4 != "before" && a.4 != "after" && a.2 == 202)
            .collect();
        assert!(
            promised.is_empty(),
            "202s no replica confirmed: {promised:?}"
        );
        let unknown = answered
            .iter()
            .filter(|a| stale.contains(&a.0) && a.3.as_deref() == Some("outcome_unknown"))
            .count();
        assert!(
            unknown >= 30,
            "the stale shard's buys were answered outcome_unknown: {unknown}"
        );
    }

    // The audit: 202s answered before the failover may be lost with the
    // old primary (only with acks 0); none after.
    let accepted: Vec<(i64, i64, bool)> = answered
        .iter()
        .filter(|a| a.2 == 202)
        .map(|a| (a.0, a.1, replica_acks == 0 && a.4 != "after"))
        .collect();
    let report = assert_invariants_with_losses(&*cluster, &db, &products, &accepted).await;
    let lost = report.expected_losses.len();
    println!(
        "stale failover: {lost} acknowledged reservations lost \
         (SECKILL_REDIS_REPLICA_ACKS={replica_acks}), {} buys answered, {} accepted",
        answered.len(),
        accepted.len()
    );
    if replica_acks == 0 {
        assert!(
            lost > 0,
            "the failover lost no acknowledged reservation: nothing was provoked"
        );
        assert!(
            report
                .expected_losses
                .iter()
                .all(|l| stale.contains(&l.product)),
            "only the failed shard's products lose reservations: {:?}",
            report.expected_losses
        );
    }
    // No 202 answered after the failover was dropped, as a duplicate of a
    // reservation number already in the database or otherwise.
    for &product in &products {
        let ordered: HashSet<i64> = orders(&pool, product).await.iter().map(|o| o.1).collect();
        let dropped: Vec<i64> = answered
            .iter()
            .filter(|a| a.0 == product && a.2 == 202 && a.4 != "unread")
            .map(|a| a.1)
            .filter(|member| !ordered.contains(member))
            .collect();
        assert!(
            dropped.is_empty(),
            "product {product}: 202s without an order: {dropped:?}"
        );
    }
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replica_taking_over_loses_only_unwritten_202s_and_strands_nothing() {
    a_stale_replica_takes_over(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replica_taking_over_with_replica_acks_loses_no_202() {
    a_stale_replica_takes_over(1).await;
}

/// A hot product's slot moves to another primary in the middle of a rush
/// through two origins, and so does the slot of its registry group (its
/// sold-out set, version and shard channel, its deadlines). Buyers see no
/// error (redirects and `TRYAGAIN` are absorbed by retries), exactly the
/// stock is sold, every order request reaches the database, and sold-out
/// broadcasts still reach the other origin: its shard subscription, which
/// the server ended when the slot left, was renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_while_selling_loses_nothing_and_flags_still_sync() {
    const HOT_STOCK: i64 = 400;
    let redis = TestRedis::start(seckill_tests::RedisBackend::Cluster).await;
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let db = TestDatabase::create(Backend::Postgres).await;
    let settings = || {
        AppSettings::new()
            .set("SECKILL_SOLDOUT_TTL_MS", 60_000)
            .set("SECKILL_CLAIM_IDLE_MS", 2_000)
    };
    let (a, b) = tokio::join!(
        TestApp::start_on(&redis, &db, settings()),
        TestApp::start_on(&redis, &db, settings())
    );
    let hot = a
        .api()
        .create_sale(&Sale::open(HOT_STOCK))
        .await
        .product_id
        .get();
    // A second product of the same registry group, sold only through `a`.
    let mut later = hot;
    while group(later) != group(hot) || later == hot {
        later = a.api().create_sale(&Sale::open(3)).await.product_id.get();
    }

    let deadline = Instant::now() + Duration::from_secs(40);
    let rushes = [
        tokio::spawn(rush_until_sold_out(a.api(), hot, 3, deadline)),
        tokio::spawn(rush_until_sold_out(b.api(), hot, 3, deadline)),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let product_slot = slot_of(keys().item(pid(hot)).as_bytes());
    let group_slot = slot_of(keys().sold_out(group(hot)).as_bytes());
    let moving_from = Instant::now();
    for slot in [product_slot, group_slot] {
        let from = cluster.primary_of_slot(slot).await;
        let to = cluster
            .primaries()
            .await
            .into_iter()
            .map(|(port, _)| port)
            .find(|port| *port != from)
            .unwrap();
        cluster.move_slot(slot, to).await;
        assert_eq!(cluster.primary_of_slot(slot).await, to);
    }
    let moved_at = Instant::now();
    let mut outcomes = Vec::new();
    for rush in rushes {
        outcomes.extend(rush.await.unwrap());
    }
    let during = outcomes
        .iter()
        .filter(|o| o.2 == 202 && o.4 > moving_from && o.5 < moved_at)
        .count();
    println!(
        "resharding: {during} buys accepted while the slots moved ({:?})",
        moved_at - moving_from
    );
    assert!(during > 0, "the slots moved while the product was selling");
    let errors: Vec<_> = outcomes.iter().filter(|o| o.2 >= 500).collect();
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    let winners: HashSet<i64> = outcomes
        .iter()
        .filter(|o| o.2 == 202)
        .map(|o| o.1)
        .collect();
    assert_eq!(winners.len() as i64, HOT_STOCK, "exactly the stock is sold");
    let mut conn = redis.connection().await;
    assert_eq!(redis_stock(&mut conn, hot).await, 0);
    let pool = db.pool().await;
    let rows = eventually(Duration::from_secs(30), "every order written", || {
        let pool = pool.clone();
        async move {
            let rows = orders(&pool, hot).await;
            (rows.len() as i64 == HOT_STOCK).then_some(rows)
        }
    })
    .await;
    let members: HashSet<i64> = rows.iter().map(|(_, member, _)| *member).collect();
    assert_eq!(members, winners, "no stream entry lost");

    // Sold out through `a` only: `b` hears of it on the moved shard channel.
    assert_eq!(buy_all(&a.api(), later, 1..=3).await.len(), 3);
    assert_eq!(a.api().buy(later, 4).await.error(), Some("sold_out"));
    let b_api = b.api();
    eventually(
        Duration::from_secs(5),
        "the other origin to hear of the sell-out",
        || {
            let api = b_api.clone();
            async move { (api.metric("seckill_sold_out_flags", &[]).await == 2.0).then_some(()) }
        },
    )
    .await;
    assert_eq!(b_api.buy(later, 5).await.error(), Some("sold_out"));

    let mut accepted: Vec<(i64, i64)> = winners.iter().map(|&member| (hot, member)).collect();
    accepted.extend((1..=3).map(|member| (later, member)));
    assert_invariants(cluster, &db, &[hot, later], &accepted).await;
}

/// The harness itself: a killed node whose port another process took
/// meanwhile fails the test with the node's own log, not with a timeout
/// that hides why.
#[tokio::test]
#[should_panic(expected = "Address already in use")]
async fn a_node_that_cannot_restart_fails_the_test_with_its_log() {
    let mut cluster = RedisCluster::start().await;
    let port = *cluster.ports().last().unwrap();
    cluster.kill(port);
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    cluster.restart(port).await;
}
