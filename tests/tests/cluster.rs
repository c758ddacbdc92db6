//! The origin on a real Redis Cluster (three primaries, three replicas,
//! started by the test): many products spread over every shard rushed at
//! once, and what `/readyz` says of the cluster. The suites shared with
//! one Redis (hot path, pipeline, lifecycle) run their cluster variants in
//! their own files.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use seckill_tests::checks::{keys, orders, pid, redis_stock, rush, stock_available};
use seckill_tests::{
    eventually, AppSettings, Backend, RedisCluster, Sale, TestApp, TestDatabase, TestRedis,
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
