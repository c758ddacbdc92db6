//! The load generator as a correctness test (not a timed one): small runs
//! of the real `seckill-bench` binary against a real origin end with a
//! clean audit, and the audit fails, naming the invariant, when the outcome
//! is corrupted behind the system's back.

use std::path::Path;
use std::process::Output;

use redis::AsyncCommands;
use seckill_tests::checks::{keys, pid};
use seckill_tests::paths::{workspace_binary, ScratchDir};
use seckill_tests::{
    Backend, Origin, OriginOptions, RedisServer, TestDatabase, ADMIN_TOKEN, TOKEN_SECRET,
};

async fn bench(args: &[&str]) -> Output {
    bench_as(args, Some(ADMIN_TOKEN)).await
}

/// Runs `seckill-bench` with the member-token secret and, if given, the
/// admin token in its environment (and nothing else from this one).
async fn bench_as(args: &[&str], admin_token: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(workspace_binary("seckill-bench"));
    command
        .args(args)
        .arg("--quiet")
        .env_clear()
        .env("SECKILL_TOKEN_SECRET", TOKEN_SECRET);
    if let Some(admin_token) = admin_token {
        command.env("SECKILL_ADMIN_TOKEN", admin_token);
    }
    let output = command.output().await.expect("run seckill-bench");
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("result file")).expect("JSON")
}

async fn rush_then_audit(backend: Backend) {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(backend).await;
    let origin = Origin::start(OriginOptions::new("bench_rush", &redis, &db)).await;
    let out = ScratchDir::new("bench");
    let out_dir = out.path().to_str().unwrap();
    let redis_url = redis.url();
    let run = bench(&[
        "rush",
        "--url",
        origin.url(),
        "--stock",
        "50",
        "--members",
        "200",
        "--concurrency",
        "16",
        "--database-url",
        db.url(),
        "--redis-url",
        &redis_url,
        "--out",
        out_dir,
    ])
    .await;
    assert!(run.status.success(), "a clean run passes its audit");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        stdout.matches("PASS").count(),
        11,
        "every invariant checked"
    );
    let results = read_json(&out.path().join("rush.json"));
    assert_eq!(results["accepted_members"].as_array().unwrap().len(), 50);
    assert_eq!(results["summary"]["by_status"]["202"], 50);
    assert_eq!(results["summary"]["by_status"]["409"], 150);
    assert!(results["summary"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    for chart in ["rush-throughput.svg", "rush-latency.svg", "rush-orders.svg"] {
        let svg = std::fs::read_to_string(out.path().join(chart)).expect(chart);
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{chart}"
        );
    }
    let product = results["product_id"].as_i64().unwrap();
    let results_path = out.path().join("rush.json");
    let audit = |extra: &'static [&'static str]| {
        let mut args = vec![
            "audit".to_string(),
            "--product".into(),
            product.to_string(),
            "--results".into(),
            results_path.to_str().unwrap().into(),
            "--database-url".into(),
            db.url().into(),
            "--redis-url".into(),
            redis_url.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bench(&args).await
        }
    };
    assert!(audit(&[]).await.status.success(), "auditing again passes");

    // Redis gains units behind the system's back: the stock no longer adds up.
    let mut conn = redis.connection().await;
    let _: i64 = conn
        .hincr(keys().item(pid(product)), "stock", 2)
        .await
        .unwrap();
    let broken = audit(&[]).await;
    assert_eq!(broken.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&broken.stdout);
    assert!(
        stdout.contains("FAIL redis stock + live reservations = database stock"),
        "{stdout}"
    );
    let _: i64 = conn
        .hincr(keys().item(pid(product)), "stock", -2)
        .await
        .unwrap();

    // An order appears that no reservation paid for: an oversell.
    sqlx::query(
        "INSERT INTO orders (product_id, member_id, reservation_seq, price_cents, status, created_at_ms, pay_deadline_ms) \
         VALUES ($1, 999999, 999999, 1, 'unpaid', 0, 0)",
    )
    .bind(product)
    .execute(&db.pool().await)
    .await
    .unwrap();
    let oversold = audit(&[]).await;
    assert_eq!(oversold.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&oversold.stdout);
    assert!(stdout.contains("FAIL no oversell"), "{stdout}");
    assert!(
        stdout.contains("FAIL orders equal the stock sold"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_ends_with_a_clean_audit_that_catches_corruption_sqlite() {
    rush_then_audit(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_ends_with_a_clean_audit_that_catches_corruption_postgres() {
    rush_then_audit(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_mixed_and_baseline_scenarios_run_clean() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(OriginOptions::new("bench_scenarios", &redis, &db)).await;
    let out = ScratchDir::new("bench");
    let out_dir = out.path().to_str().unwrap();
    let redis_url = redis.url();

    let tail = bench(&[
        "tail",
        "--url",
        origin.url(),
        "--requests",
        "300",
        "--concurrency",
        "8",
        "--out",
        out_dir,
    ])
    .await;
    assert!(tail.status.success());
    let results = read_json(&out.path().join("tail.json"));
    assert_eq!(
        results["summary"]["by_status"]["409"], 300,
        "the tail is all sold out"
    );
    // The same sold-out product again, named instead of created: no admin
    // token is needed and no unit is sold.
    let product = results["product_id"].as_i64().unwrap().to_string();
    let named = bench_as(
        &[
            "tail",
            "--url",
            origin.url(),
            "--product",
            &product,
            "--requests",
            "100",
            "--concurrency",
            "4",
            "--out",
            out_dir,
            "--name",
            "named-tail",
        ],
        None,
    )
    .await;
    assert!(named.status.success());
    let results = read_json(&out.path().join("named-tail.json"));
    assert_eq!(results["summary"]["by_status"]["409"], 100);
    assert_eq!(results["accepted_members"].as_array().unwrap().len(), 0);
    // The one unit the first tail's set-up bought is the product's only
    // order: neither tail sold anything.
    let sold =
        seckill_tests::checks::wait_for_orders(&db.pool().await, product.parse().unwrap(), 1).await;
    assert_eq!(sold.len(), 1, "a tail sells nothing: {sold:?}");

    let mixed = bench(&[
        "mixed",
        "--url",
        origin.url(),
        "--stock",
        "30",
        "--members",
        "60",
        "--pay-share",
        "0.5",
        "--concurrency",
        "8",
        "--database-url",
        db.url(),
        "--redis-url",
        &redis_url,
        "--out",
        out_dir,
    ])
    .await;
    assert!(mixed.status.success(), "mixed load passes its audit");
    let results = read_json(&out.path().join("mixed.json"));
    assert_eq!(results["accepted_members"].as_array().unwrap().len(), 30);
    assert!(results["paid"].as_u64().unwrap() > 0);
    assert!(results["result_polls"]["requests"].as_u64().unwrap() >= 30);

    // The naive baseline, audited as such.
    let sync_db = TestDatabase::create(Backend::Sqlite).await;
    let baseline = Origin::start(
        OriginOptions::new("bench_scenarios", &redis, &sync_db).env("SECKILL_MODE", "sync-db"),
    )
    .await;
    let run = bench(&[
        "rush",
        "--url",
        baseline.url(),
        "--stock",
        "20",
        "--members",
        "80",
        "--concurrency",
        "8",
        "--database-url",
        sync_db.url(),
        "--mode",
        "sync-db",
        "--out",
        out_dir,
        "--name",
        "baseline",
    ])
    .await;
    assert!(
        run.status.success(),
        "the sync-db baseline passes its audit"
    );
    let results = read_json(&out.path().join("baseline.json"));
    assert_eq!(results["accepted_members"].as_array().unwrap().len(), 20);
}

/// The HTTP floor the benchmark measures the tail against answers a buy
/// with the very bytes the origin answers in the sold-out tail, so both
/// are measured on the same answer; the tail scenario runs against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_floor_answers_like_the_origins_sold_out_tail() {
    use tokio::io::AsyncBufReadExt;

    let mut floor = tokio::process::Command::new(workspace_binary("seckill-bench"))
        .arg("floor")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start seckill-bench floor");
    let mut lines = tokio::io::BufReader::new(floor.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("the floor starts within 10 s")
        .unwrap()
        .expect("a listening line");
    let floor_url = line
        .strip_prefix("seckill-bench floor listening on ")
        .expect("the listening line")
        .to_string();

    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(OriginOptions::new("bench_floor", &redis, &db)).await;
    let api = seckill_tests::Api::new(origin.url());
    let product = api
        .create_sale(&seckill_tests::Sale::open(1))
        .await
        .product_id
        .get();
    assert_eq!(api.buy(product, 1).await.status, 202);
    let from_origin = api.buy(product, 2).await;
    let from_floor = seckill_tests::Api::new(&floor_url).buy(product, 2).await;
    assert_eq!(from_origin.status, 409);
    assert_eq!(from_floor.status, from_origin.status);
    assert_eq!(from_floor.body, from_origin.body);
    assert_eq!(
        from_floor.header("content-type"),
        from_origin.header("content-type")
    );

    let out = ScratchDir::new("bench");
    let run = bench_as(
        &[
            "tail",
            "--url",
            &floor_url,
            "--product",
            "1",
            "--requests",
            "200",
            "--concurrency",
            "4",
            "--out",
            out.path().to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(run.status.success());
    let results = read_json(&out.path().join("tail.json"));
    assert_eq!(results["summary"]["by_status"]["409"], 200);
}
