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
    AppSettings, Backend, Origin, OriginOptions, RedisBackend, RedisServer, TestApp, TestDatabase,
    TestRedis, ADMIN_TOKEN, TOKEN_SECRET,
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
    assert_eq!(results["stock"], 50);
    // Latency by answer: the admitted buys apart from the refusals.
    for status in ["202", "409"] {
        let latency = &results["summary"]["latency_ms_by_status"][status];
        let (p50, p99) = (
            latency["p50"].as_f64().unwrap(),
            latency["p99"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99, "{status}: {latency}");
    }
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

/// The far location scripts/bench puts between the edge and the origin:
/// `seckill-bench proxy` holds every byte the given delay each way, and
/// passes the origin's answers through unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_puts_the_origin_the_given_delay_away_each_way() {
    use tokio::io::AsyncBufReadExt;

    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(OriginOptions::new("bench_proxy", &redis, &db)).await;
    let origin_address = origin.url().strip_prefix("http://").unwrap().to_string();
    let mut proxy = tokio::process::Command::new(workspace_binary("seckill-bench"))
        .args(["proxy", "--to", &origin_address, "--delay-ms", "60"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start seckill-bench proxy");
    let mut lines = tokio::io::BufReader::new(proxy.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("the proxy starts within 10 s")
        .unwrap()
        .expect("a listening line");
    let address = line
        .strip_prefix("seckill-bench proxy listening on ")
        .and_then(|rest| rest.split(',').next())
        .expect("the listening line");
    let far = seckill_tests::Api::new(&format!("http://{address}"));
    let near = seckill_tests::Api::new(origin.url());
    let product = near
        .create_sale(&seckill_tests::Sale::open(1))
        .await
        .product_id
        .get();
    let started = std::time::Instant::now();
    let bought = far.buy(product, 1).await;
    let took = started.elapsed();
    assert_eq!(bought.status, 202, "the origin's answer, through the proxy");
    assert!(
        took >= std::time::Duration::from_millis(120),
        "60 ms each way: {took:?}"
    );
    assert_eq!(
        far.buy(product, 2).await.body,
        near.buy(product, 2).await.body
    );
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

/// CPU time (user + system, clock ticks) a process has used so far, as
/// scripts/bench counts it for the summary's CPU-per-request rows.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at state.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The number a summary figure starts with ("50,077 req/s" → 50077).
fn leading_number(figure: &str) -> f64 {
    let number: String = figure
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.' || *c == '-')
        .filter(|c| *c != ',')
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no number in {figure:?}"))
}

/// The (figure, ratio) cells of the summary row whose measure starts with `measure`.
fn summary_row<'a>(table: &'a str, measure: &str) -> (&'a str, &'a str) {
    let line = table
        .lines()
        .find(|line| line.starts_with(&format!("| {measure}")))
        .unwrap_or_else(|| panic!("no row {measure:?} in\n{table}"));
    let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
    (cells[1].trim(), cells[2].trim())
}

/// What scripts/bench reads from a run, read by seckill-bench from the
/// files of a small real run: the summary table (figures and ratios from
/// the result files, rows of steps not run left out and named), single
/// fields of the JSON and of redis-benchmark's CSV, the origin's buy
/// counter from /metrics, a free port, and drain and audit taking the
/// product and its accepted buys from a result file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_fields_and_metrics_come_from_a_real_runs_files() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(OriginOptions::new("bench_summary", &redis, &db)).await;
    let out = ScratchDir::new("bench-summary");
    let out_dir = out.path().to_str().unwrap();
    let redis_url = redis.url();

    // The ceiling: a real redis-benchmark CSV.
    let ceiling = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port().to_string(),
            "-n",
            "2000",
            "-c",
            "10",
            "--csv",
        ])
        .args(["SET", "bench:ceiling", "1"])
        .output()
        .expect("redis-benchmark is not installed: install it with `apt-get install redis-tools`");
    assert!(ceiling.status.success());
    std::fs::write(out.path().join("ceiling.csv"), &ceiling.stdout).unwrap();

    let ticks_before = cpu_ticks(origin.pid()) + cpu_ticks(redis_pid(&redis).await);
    let rush = bench(&[
        "rush",
        "--url",
        origin.url(),
        "--stock",
        "50",
        "--members",
        "200",
        "--concurrency",
        "8",
        "--out",
        out_dir,
        "--name",
        "buy-path",
    ])
    .await;
    assert!(rush.status.success());
    let ticks = cpu_ticks(origin.pid()) + cpu_ticks(redis_pid(&redis).await) - ticks_before;
    std::fs::write(
        out.path().join("buy-path-serving-ticks.txt"),
        format!("{ticks}\n"),
    )
    .unwrap();
    let ticks_before = cpu_ticks(origin.pid()) + cpu_ticks(redis_pid(&redis).await);
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
        "--name",
        "sold-out-tail",
    ])
    .await;
    assert!(tail.status.success());
    let tail_ticks = cpu_ticks(origin.pid()) + cpu_ticks(redis_pid(&redis).await) - ticks_before;
    std::fs::write(
        out.path().join("sold-out-tail-serving-ticks.txt"),
        format!("{tail_ticks}\n"),
    )
    .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", origin.pid())).unwrap();
    let peak_kib: i64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(
        out.path().join("origin-peak-rss-kib.txt"),
        format!("{peak_kib}\n"),
    )
    .unwrap();

    let buy_path = read_json(&out.path().join("buy-path.json"));
    let sold_out_tail = read_json(&out.path().join("sold-out-tail.json"));
    let buy_rps = buy_path["summary"]["requests_per_second"].as_f64().unwrap();
    let tail_rps = sold_out_tail["summary"]["requests_per_second"]
        .as_f64()
        .unwrap();
    let ceiling_csv = String::from_utf8(ceiling.stdout).unwrap();
    let ceiling_rps: f64 = ceiling_csv
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();

    // Single fields, as scripts/bench reads them.
    let path = out.path().join("buy-path.json");
    let path = path.to_str().unwrap();
    let field = bench(&["field", path, "/summary/requests_per_second"]).await;
    assert_eq!(stdout_of(&field).parse::<f64>().unwrap(), buy_rps);
    let rounded = bench(&["field", path, "/summary/requests_per_second", "--round"]).await;
    assert_eq!(
        stdout_of(&rounded),
        format!("{}", buy_rps.round_ties_even())
    );
    let product = bench(&["field", path, "/product_id"]).await;
    assert_eq!(stdout_of(&product), buy_path["product_id"].to_string());
    let csv = out.path().join("ceiling.csv");
    let rps = bench(&["field", csv.to_str().unwrap(), "rps"]).await;
    assert_eq!(stdout_of(&rps).parse::<f64>().unwrap(), ceiling_rps);
    let missing = bench(&["field", path, "/summary/no_such_field"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no /summary/no_such_field"));

    // The summary: what the run measured, and nothing it did not.
    let summary = bench(&["summary", "--results", out_dir, "--clock-ticks", "100"]).await;
    assert!(summary.status.success());
    let table = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert_eq!(String::from_utf8_lossy(&summary.stdout), table);
    assert!(table.starts_with("| measure | figure | ratio |\n|---|---|---|\n"));
    assert_eq!(table.lines().count(), 2 + 5, "{table}");
    let (figure, _) = summary_row(&table, "redis-benchmark ceiling (reserve script");
    assert!(
        (leading_number(figure) - ceiling_rps).abs() <= 0.5,
        "{figure}"
    );
    let (figure, ratio) = summary_row(&table, "buy path, this project");
    assert!((leading_number(figure) - buy_rps).abs() <= 0.5, "{figure}");
    assert!(ratio.ends_with("× ceiling"));
    assert!(
        (leading_number(ratio) - buy_rps / ceiling_rps).abs() <= 0.005,
        "{ratio}"
    );
    let (figure, ratio) = summary_row(&table, "sold-out tail");
    assert!((leading_number(figure) - tail_rps).abs() <= 0.5, "{figure}");
    assert!(
        (leading_number(ratio) - tail_rps / buy_rps).abs() <= 0.05,
        "{ratio}"
    );
    let (figure, _) = summary_row(&table, "origin peak memory");
    assert_eq!(figure, format!("{:.0} MiB", peak_kib as f64 / 1024.0));
    // CPU per request: the serving side's ticks over the run's requests.
    let us_per_request = |ticks: u64, run: &serde_json::Value| {
        format!(
            "{:.1}",
            ticks as f64 / 100.0 * 1e6 / run["summary"]["requests"].as_f64().unwrap()
        )
    };
    let (figure, _) = summary_row(&table, "origin + Redis CPU per request");
    assert_eq!(
        figure,
        format!(
            "{} µs / {} µs",
            us_per_request(ticks, &buy_path),
            us_per_request(tail_ticks, &sold_out_tail)
        )
    );
    let left_out = String::from_utf8_lossy(&summary.stderr);
    for row in [
        "sync-db-postgres: no",
        "HTTP floor: no",
        "half of peak: no",
        "drain into sqlite, batches of 200: no",
        "mixed load: no",
        "edge tail: no",
        "cluster: one Redis: no",
        "cluster: Redis CPU per buy at one rate: no",
    ] {
        assert!(
            left_out.contains(&format!("summary: left out {row}")),
            "{row}: {left_out}"
        );
    }

    // The origin's buy counter: the rush's 200 buys, the tail's 300 and the
    // 2 that sold out its one-unit sale.
    let metrics = format!("{}/metrics", origin.url());
    let route = "route=/api/seckill/{product_id}/orders";
    let buys = bench(&["metric", &metrics, "http_requests_total", "--label", route]).await;
    assert!(buys.status.success());
    assert_eq!(stdout_of(&buys), "502");
    let accepted = bench(&[
        "metric",
        &metrics,
        "http_requests_total",
        "--label",
        route,
        "--label",
        "status=202",
    ])
    .await;
    assert_eq!(stdout_of(&accepted), "51");

    let port = bench(&["free-port"]).await;
    let port: u16 = stdout_of(&port).parse().expect("a port number");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the free port can be bound");

    // Drain and audit find the product and its accepted buys in the file.
    let drain = bench(&[
        "drain",
        "--results",
        path,
        "--database-url",
        db.url(),
        "--out",
        out_dir,
        "--name",
        "drain",
    ])
    .await;
    assert!(drain.status.success());
    let drained = read_json(&out.path().join("drain.json"));
    assert_eq!(drained["expected"], 50);
    assert_eq!(drained["written"], 50);
    let audit = bench(&[
        "audit",
        "--results",
        path,
        "--database-url",
        db.url(),
        "--redis-url",
        &redis_url,
    ])
    .await;
    assert!(audit.status.success());
    // Every check of the shared audit ran, and none failed.
    let audited = stdout_of(&audit);
    assert_eq!(audited.matches("PASS").count(), 11, "{audited}");
    assert!(!audited.contains("FAIL"), "{audited}");
    // A tail of an already sold-out product accepted nothing: nothing to drain.
    let named_tail = bench(&[
        "tail",
        "--url",
        origin.url(),
        "--product",
        &buy_path["product_id"].to_string(),
        "--requests",
        "20",
        "--concurrency",
        "2",
        "--out",
        out_dir,
        "--name",
        "named-tail",
    ])
    .await;
    assert!(named_tail.status.success());
    let nothing = bench(&[
        "drain",
        "--results",
        out.path().join("named-tail.json").to_str().unwrap(),
        "--database-url",
        db.url(),
    ])
    .await;
    assert_eq!(nothing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&nothing.stderr);
    assert!(
        stderr.contains("was accepted, nothing to drain"),
        "{stderr}"
    );
    assert!(stderr.contains("\"409\":20"), "{stderr}");
}

/// scripts/bench's Redis Cluster section in small, on a real 3+3 cluster:
/// a rush over 30 products deals the members out in turn and sells every
/// product out, its audit covers all 30 on the cluster, and `redis-usage`
/// before and after plus `shards` put each product's buys on the primary
/// that owns its slot, with that primary's script calls and its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_over_many_products_on_a_cluster_is_counted_per_primary() {
    const PRODUCTS: usize = 30;
    let redis = TestRedis::start(RedisBackend::Cluster).await;
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = TestApp::start_on(&redis, &db, AppSettings::new()).await;
    let out = ScratchDir::new("bench-cluster");
    let out_dir = out.path().to_str().unwrap();
    let nodes = cluster.seeds();
    let usage = |name: &'static str| {
        let nodes = nodes.clone();
        let path = out.path().join(name);
        async move {
            let usage = bench(&["redis-usage", "--nodes", &nodes]).await;
            assert!(usage.status.success());
            assert_eq!(stdout_of(&usage).lines().count(), 6, "a line per node");
            std::fs::write(&path, &usage.stdout).unwrap();
            path
        }
    };

    let before = usage("before").await;
    let rush = bench(&[
        "rush",
        "--url",
        &app.url(),
        "--products",
        &PRODUCTS.to_string(),
        "--stock",
        "10",
        "--members",
        "300",
        "--concurrency",
        "8",
        "--database-url",
        db.url(),
        "--redis-cluster-nodes",
        &nodes,
        "--out",
        out_dir,
        "--name",
        "rush",
    ])
    .await;
    assert!(rush.status.success(), "the audit on the cluster passes");
    let audited = stdout_of(&rush);
    assert!(audited.contains("audit of 30 products:"), "{audited}");
    assert_eq!(audited.matches("PASS").count(), 11, "{audited}");
    let after = usage("after").await;

    // Member i buys product (i - 1) mod 30: ten members each, all sold.
    let results = read_json(&out.path().join("rush.json"));
    let products = results["products"].as_array().unwrap();
    assert_eq!(products.len(), PRODUCTS);
    assert_eq!(results["product_id"], products[0]["product_id"]);
    for (index, product) in products.iter().enumerate() {
        let mut members: Vec<i64> =
            serde_json::from_value(product["accepted_members"].clone()).unwrap();
        members.sort();
        let dealt: Vec<i64> = (0..10).map(|k| (index + 1 + k * PRODUCTS) as i64).collect();
        assert_eq!(members, dealt, "product {index}");
    }

    let shards_path = out.path().join("shards.json");
    let shards = bench(&[
        "shards",
        "--results",
        out.path().join("rush.json").to_str().unwrap(),
        "--node",
        nodes.split(',').next().unwrap(),
        "--before",
        before.to_str().unwrap(),
        "--after",
        after.to_str().unwrap(),
        "--out",
        shards_path.to_str().unwrap(),
    ])
    .await;
    assert!(shards.status.success());
    let shards = read_json(&shards_path);
    assert_eq!(shards["buys"], 300);
    let mut expected: std::collections::BTreeMap<String, usize> = Default::default();
    for product in products {
        let port = cluster
            .primary_of(&keys().item(pid(product["product_id"].as_i64().unwrap())))
            .await;
        *expected.entry(format!("127.0.0.1:{port}")).or_default() += 1;
    }
    let primaries = shards["primaries"].as_array().unwrap();
    assert_eq!(primaries.len(), 3, "{shards}");
    let mut slots = 0;
    for primary in primaries {
        let node = primary["node"].as_str().unwrap();
        let products = expected.get(node).copied().unwrap_or(0) as u64;
        assert_eq!(primary["products"], products, "{node}");
        assert_eq!(primary["buys"], products * 10, "{node}");
        // At least one reserve call per product of its slots.
        assert!(
            primary["script_calls"].as_u64().unwrap() >= products,
            "{primary}"
        );
        assert!(primary["redis_ticks"].as_i64().unwrap() >= 0, "{primary}");
        assert_eq!(
            primary["replicas"].as_array().unwrap().len(),
            1,
            "{primary}"
        );
        slots += primary["slots"].as_u64().unwrap();
    }
    assert_eq!(slots, 16_384, "every slot is owned once");
}

/// The pid of a test's redis-server, from Redis itself.
async fn redis_pid(redis: &RedisServer) -> u32 {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The demo sale scripts/run creates: ten units opening a minute from now
/// for an hour, reused by the next run while its countdown runs, replaced
/// once it has opened (or when the remembered product is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sale_is_reused_while_its_countdown_runs() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(OriginOptions::new("bench_demo_sale", &redis, &db)).await;
    let dir = ScratchDir::new("demo-sale");
    let remember = dir.path().join("demo-product");
    let remember_arg = remember.to_str().unwrap();
    let demo_sale = || async {
        bench(&[
            "demo-sale",
            "--url",
            origin.url(),
            "--remember",
            remember_arg,
        ])
        .await
    };

    let first = demo_sale().await;
    assert!(first.status.success());
    let product: i64 = stdout_of(&first).parse().expect("a product id");
    assert!(String::from_utf8_lossy(&first.stderr).contains("created the demo sale"));
    assert_eq!(
        std::fs::read_to_string(&remember).unwrap().trim(),
        product.to_string()
    );
    let view = origin.api().product(product).await;
    assert_eq!(view.name, "Demo phone");
    assert_eq!((view.price_cents, view.flash_price_cents), (99_900, 9_900));
    assert_eq!(view.stock_total, 10);
    let now = seckill_tests::client::unix_now();
    assert!(
        (view.starts_at - (now + 60)).abs() <= 2,
        "{} vs {now}",
        view.starts_at
    );
    assert_eq!(view.ends_at, view.starts_at + 3_600);

    let second = demo_sale().await;
    assert!(second.status.success());
    assert_eq!(stdout_of(&second), product.to_string(), "reused");
    assert!(String::from_utf8_lossy(&second.stderr).contains("reusing the demo sale"));

    // A remembered sale that has opened is replaced by a new countdown.
    let opened = origin
        .api()
        .create_sale(&seckill_tests::Sale::open(10))
        .await
        .product_id
        .get();
    std::fs::write(&remember, format!("{opened}\n")).unwrap();
    let third = demo_sale().await;
    assert!(third.status.success());
    let replacement: i64 = stdout_of(&third).parse().unwrap();
    assert!(replacement != opened && replacement != product);
    assert_eq!(
        std::fs::read_to_string(&remember).unwrap().trim(),
        replacement.to_string()
    );
    assert!(origin.api().product(replacement).await.starts_at > seckill_tests::client::unix_now());

    // A product that does not exist is replaced too.
    std::fs::write(&remember, "999999\n").unwrap();
    let fourth = demo_sale().await;
    let fresh: i64 = stdout_of(&fourth).parse().unwrap();
    assert!(fresh != replacement && fresh != 999_999);

    // Without the right admin token nothing is created and the run fails.
    std::fs::remove_file(&remember).unwrap();
    let refused = bench_as(
        &[
            "demo-sale",
            "--url",
            origin.url(),
            "--remember",
            remember_arg,
            "--admin-token",
            "wrong",
        ],
        None,
    )
    .await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("answered 401"));
    assert!(!remember.exists());
}
