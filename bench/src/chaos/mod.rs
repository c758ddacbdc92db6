//! `seckill-bench chaos`: the fault-injection soak. It starts a whole
//! deployment of its own on loopback (Redis with `appendfsync always`, a
//! fresh PostgreSQL database, two or three origins and a worker), runs a
//! mixed load against it while a seeded schedule injects crashes, Redis
//! data loss, database cuts, slowness and row locks, and a pub/sub cut;
//! then stops the load, lets everything drain, runs the shared invariant
//! audit, and writes a JSON report. Any broken invariant (or a fault that
//! could not be injected or recovered from) fails the run, naming the seed
//! that replays the same schedule.

mod cluster;
mod faults;
mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::Method;
use seckill_bench::audit::{self, Accepted, AuditReport, Scope};
use seckill_bench::proxy::TcpProxy;
use seckill_shared::api::{CreateProduct, ProductView};
use seckill_shared::keys::RedisKeys;
use seckill_shared::token::TokenSecret;
use serde::Serialize;

use self::cluster::{Database, Process, ProcessSpec, RedisProcess, ADMIN_TOKEN, TOKEN_SECRET};
use self::faults::{Injected, Planned};
use self::load::Shared;
use crate::client::{Connection, Target};

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long the load and the faults run, e.g. `90s`, `10m`.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Seeds the fault schedule (and the load); the same seed replays the
    /// same schedule. Default: from the clock (printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Origin processes (a worker runs besides them).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    origins: u8,
    /// Flash-sale items rushed at once.
    #[arg(long, default_value_t = 4)]
    products: usize,
    /// Units of each item at the start (the operator restocks as it goes).
    #[arg(long, default_value_t = 150)]
    stock: i64,
    /// Member ids buyers are drawn from.
    #[arg(long, default_value_t = 5_000)]
    members: i64,
    /// Concurrent buyers (and as many result pollers).
    #[arg(long, default_value_t = 12)]
    concurrency: usize,
    /// SECKILL_PAY_TIMEOUT_S of the origins: unpaid orders are cancelled
    /// this long after they are written.
    #[arg(long, default_value_t = 5)]
    pay_timeout_s: u64,
    /// A PostgreSQL URL whose user may create databases; the soak creates
    /// a fresh one next to the URL's database.
    #[arg(
        long,
        env = "SECKILL_CHAOS_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The `seckill-origin` binary (default: next to this one).
    #[arg(long)]
    origin_bin: Option<PathBuf>,
    /// The `redis-server` binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// The JSON report; the processes' logs go to `<output>.logs/`.
    #[arg(long, default_value = "chaos-report.json")]
    output: PathBuf,
    /// At most this many faults.
    #[arg(long, default_value_t = 1_000)]
    max_faults: usize,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (e.g. 90s, 10m)"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3_600,
        _ => return Err(format!("unknown unit in {text:?}: use s, m or h")),
    };
    if seconds == 0 || seconds > 24 * 3_600 {
        return Err("a duration between 1 s and 24 h".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// Every process, proxy and handle a fault may act on.
pub struct Cluster {
    redis: RedisProcess,
    db: Database,
    db_proxy: TcpProxy,
    /// One per origin, in front of Redis.
    redis_proxies: Vec<TcpProxy>,
    origins: Vec<Process>,
    worker: Process,
    keys: RedisKeys,
    products: Vec<i64>,
    shared: Arc<Shared>,
}

/// Restocks `product` by `units` through origin `through` (PATCH): a
/// sold-out item's flags clear everywhere.
async fn restock(cluster: &Cluster, through: usize, product: i64, units: i64) -> String {
    let pool = match audit::connect(&cluster.db.url).await {
        Ok(pool) => pool,
        Err(err) => return format!("{err:#}"),
    };
    let total: Result<(i64,), _> = sqlx::query_as("SELECT stock_total FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&pool)
        .await;
    pool.close().await;
    let Ok((total,)) = total else {
        return "could not read the stock".into();
    };
    let url = cluster.origins[through].url().expect("origins serve HTTP");
    let body = serde_json::json!({ "stock": total + units });
    match admin_call(
        &url,
        Method::PATCH,
        &format!("/admin/products/{product}"),
        Some(&body),
    )
    .await
    {
        Ok((status, _)) => status.to_string(),
        Err(err) => format!("{err:#}"),
    }
}

async fn admin_call(
    origin: &str,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, Bytes)> {
    let mut connection = Connection::new(Target::parse(origin)?);
    let body = body.map(|b| Bytes::from(serde_json::to_vec(b).expect("JSON")));
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        connection.send(method, path, Some(ADMIN_TOKEN), body),
    )
    .await
    .context("no answer within 10 s")??;
    Ok((answer.status.as_u16(), answer.body))
}

fn process_env(
    redis_url: &str,
    database_url: &str,
    port: Option<u16>,
    args: &ChaosArgs,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("REDIS_URL".into(), redis_url.into()),
        ("DATABASE_URL".into(), database_url.into()),
        ("SECKILL_TOKEN_SECRET".into(), TOKEN_SECRET.into()),
        ("SECKILL_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        (
            "SECKILL_PAY_TIMEOUT_S".into(),
            args.pay_timeout_s.to_string(),
        ),
        ("SECKILL_CANCEL_LEASE_MS".into(), "3000".into()),
        ("SECKILL_SWEEP_INTERVAL_S".into(), "5".into()),
        ("SECKILL_CLAIM_IDLE_MS".into(), "3000".into()),
        ("SECKILL_RECONCILE_INTERVAL_S".into(), "10".into()),
        ("SECKILL_CDC_POLL_MS".into(), "300".into()),
        ("SECKILL_RATE_LIMIT_BURST".into(), "20".into()),
        ("SECKILL_RATE_LIMIT_PER_S".into(), "10".into()),
        ("RUST_LOG".into(), "info,sqlx=warn,tower_http=warn".into()),
    ];
    if let Some(port) = port {
        env.push(("SECKILL_BIND".into(), format!("127.0.0.1:{port}")));
    }
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.clone()));
    }
    env
}

#[derive(Serialize)]
struct Losses {
    /// Times Redis was restarted without its data.
    redis_restarted_empty: u64,
    /// Reservations in a consumer's hands when it was (still written:
    /// the database does not need Redis for that).
    pending_at_those_restarts: u64,
    /// Reservations not yet delivered to any consumer when it was: lost.
    undelivered_at_those_restarts: u64,
    /// Accepted buys with neither an order nor a rejection: lost with
    /// Redis' data, as expected.
    accepted_buys_lost: usize,
    examples: Vec<Accepted>,
}

#[derive(Serialize)]
struct ChaosReport {
    passed: bool,
    seed: u64,
    command: String,
    duration_s: u64,
    elapsed_s: f64,
    origins: usize,
    products: Vec<i64>,
    stock: i64,
    members: i64,
    concurrency: usize,
    pay_timeout_s: u64,
    requests_total: u64,
    requests: BTreeMap<String, BTreeMap<String, u64>>,
    faults_by_kind: BTreeMap<String, u64>,
    faults: Vec<Injected>,
    expected_losses: Losses,
    /// Counters of each origin at the end, since its last start.
    origin_counters: BTreeMap<String, BTreeMap<String, f64>>,
    audit: AuditReport,
    /// Kept after a failed audit, for inspection.
    kept_database: Option<String>,
    logs: PathBuf,
}

const COUNTERS: &[&str] = &[
    "seckill_orders_written_total",
    "seckill_orders_reclaimed_total",
    "seckill_orders_paid_total",
    "seckill_orders_cancelled_total",
    "seckill_stock_returned_total",
    "seckill_dead_letters_total",
    "seckill_preheat_recoveries_total",
    "seckill_reconcile_repairs_total",
    "seckill_catalogue_changes_applied_total",
];

pub async fn run(args: ChaosArgs) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let command = format!(
        "seckill-bench chaos --duration {}s --seed {seed} --origins {} --products {} --stock {} \
         --members {} --concurrency {} --pay-timeout-s {}",
        args.duration.as_secs(),
        args.origins,
        args.products,
        args.stock,
        args.members,
        args.concurrency,
        args.pay_timeout_s
    );
    eprintln!("chaos: seed {seed}: {command}");
    let origin_bin = match &args.origin_bin {
        Some(path) => path.clone(),
        None => cluster::default_origin_binary()?,
    };
    cluster::ensure_file(&origin_bin)?;
    let logs = PathBuf::from(format!("{}.logs", args.output.display()));
    if logs.exists() {
        std::fs::remove_dir_all(&logs)?;
    }
    std::fs::create_dir_all(&logs)?;
    let plan = faults::schedule(
        seed,
        args.duration,
        args.origins as usize,
        args.products,
        args.max_faults,
    );

    // The deployment.
    let scratch = std::env::temp_dir().join(format!("seckill-chaos-{seed}-{}", std::process::id()));
    let redis = RedisProcess::start(&args.redis_server, scratch.join("redis")).await?;
    let db_name = format!("seckill_chaos_{seed}_{}", std::process::id());
    let db = Database::create(&args.postgres_url, db_name).await?;
    let db_proxy = TcpProxy::start(db.port).await;
    let db_url = db.url_through(&db_proxy);
    let origins_n = args.origins as usize;
    let mut redis_proxies = Vec::new();
    let mut origins = Vec::new();
    for i in 0..origins_n {
        let proxy = TcpProxy::start(redis.port()).await;
        let port = seckill_bench::free_port()?;
        // Origin 0 writes orders too (besides the worker); the last polls
        // deadlines (besides the worker).
        let consumers = if i == 0 { "1" } else { "0" };
        let poll = if i == origins_n - 1 { "200" } else { "0" };
        origins.push(Process::new(ProcessSpec {
            name: format!("origin-{i}"),
            binary: origin_bin.clone(),
            args: Vec::new(),
            env: process_env(
                &proxy.url(),
                &db_url,
                Some(port),
                &args,
                &[
                    ("SECKILL_CONSUMERS", consumers.into()),
                    ("SECKILL_CANCEL_POLL_MS", poll.into()),
                ],
            ),
            port: Some(port),
            log: logs.join(format!("origin-{i}.log")),
        }));
        redis_proxies.push(proxy);
    }
    let worker = Process::new(ProcessSpec {
        name: "worker".into(),
        binary: origin_bin.clone(),
        args: vec!["worker".into()],
        env: process_env(
            &redis.url(),
            &db_url,
            None,
            &args,
            &[
                ("SECKILL_CONSUMERS", "2".into()),
                ("SECKILL_CANCEL_POLL_MS", "200".into()),
            ],
        ),
        port: None,
        log: logs.join("worker.log"),
    });
    let keys = RedisKeys::new("seckill:").expect("a valid prefix");
    let mut cluster = Cluster {
        redis,
        db,
        db_proxy,
        redis_proxies,
        origins,
        worker,
        keys,
        products: Vec::new(),
        shared: Arc::new(Shared::new(
            Vec::new(),
            Vec::new(),
            0,
            TokenSecret::new(TOKEN_SECRET).expect("a secret"),
            ADMIN_TOKEN.into(),
        )),
    };
    let outcome = soak(&mut cluster, &args, seed, command, &plan, &logs).await;

    for origin in &mut cluster.origins {
        origin.stop().await;
    }
    cluster.worker.stop().await;
    cluster.redis.kill().await;
    let _ = std::fs::remove_dir_all(&scratch);
    let passed = matches!(outcome, Ok(true));
    if passed {
        cluster.db.drop_database().await;
    } else {
        eprintln!(
            "chaos: database {} kept for inspection; replay with --seed {seed}",
            cluster.db.name
        );
    }
    outcome
}

async fn soak(
    cluster: &mut Cluster,
    args: &ChaosArgs,
    seed: u64,
    command: String,
    plan: &[Planned],
    logs: &std::path::Path,
) -> anyhow::Result<bool> {
    // The first origin migrates the database alone; the rest start together.
    cluster.origins[0].start().await?;
    for origin in cluster.origins.iter_mut().skip(1) {
        origin.start().await?;
    }
    cluster.worker.start().await?;
    let urls: Vec<String> = cluster.origins.iter().filter_map(Process::url).collect();

    // The items: open now, for longer than the soak.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut products = Vec::new();
    for i in 0..args.products {
        let sale = CreateProduct {
            name: format!("chaos item {i}"),
            price_cents: 19_900,
            flash_price_cents: 990,
            stock: args.stock,
            starts_at: now_s - 1,
            ends_at: now_s + args.duration.as_secs() as i64 + 3_600,
        };
        let (status, body) = admin_call(
            &urls[i % urls.len()],
            Method::POST,
            "/admin/products",
            Some(&serde_json::to_value(&sale)?),
        )
        .await?;
        if status != 201 {
            bail!("creating a sale was answered {status}");
        }
        let view: ProductView = serde_json::from_slice(&body)?;
        products.push(view.product_id.get());
    }
    cluster.products = products.clone();
    cluster.shared = Arc::new(Shared::new(
        urls.clone(),
        products.clone(),
        args.members,
        TokenSecret::new(TOKEN_SECRET).expect("a secret"),
        ADMIN_TOKEN.into(),
    ));
    let shared = cluster.shared.clone();

    // The load.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.concurrency.max(1) {
        tasks.spawn(load::buyer(shared.clone(), seed ^ (1_000 + i as u64)));
    }
    for i in 0..args.concurrency.max(1) {
        tasks.spawn(load::poller(shared.clone(), seed ^ (2_000 + i as u64)));
    }
    let sql = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.db.url)
        .await?;
    tasks.spawn(load::operator(shared.clone(), sql.clone(), seed ^ 3_000));

    let injected = faults::run(cluster, plan, started).await;
    tokio::time::sleep_until((started + args.duration).into()).await;
    shared.stop.store(true, Ordering::SeqCst);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed_load = started.elapsed();
    eprintln!(
        "chaos: load stopped after {:.0} s; draining",
        elapsed_load.as_secs_f64()
    );

    // Everything up and unhindered, then every item looked at through every
    // origin (an item Redis lost is loaded again from the database).
    cluster.db_proxy.restore();
    cluster.db_proxy.set_delay(Duration::ZERO);
    for proxy in &cluster.redis_proxies {
        proxy.restore();
    }
    for url in &urls {
        for product in &products {
            let _ = admin_call(url, Method::GET, &format!("/api/products/{product}"), None).await;
        }
    }

    let pay_timeout = Duration::from_secs(args.pay_timeout_s);
    let mut scope = Scope::new(cluster.db.url.clone())
        .redis(cluster.redis.url(), cluster.keys.prefix())
        .products(products.iter().copied())
        .origins(urls.iter().cloned())
        .drain_timeout(Duration::from_secs(120))
        // Deadlines due, a lease, a backstop sweep, a reconciliation pass.
        .settle_timeout(pay_timeout + Duration::from_secs(3 + 5 + 10 + 20));
    scope.accepted = shared.accepted_for_audit();
    let audit = audit::run(&scope).await?;
    println!("chaos audit (seed {seed}):");
    let passed_checks = audit::report(&audit.checks);

    let mut origin_counters = BTreeMap::new();
    for (origin, url) in cluster.origins.iter().zip(&urls) {
        let mut counters = BTreeMap::new();
        for name in COUNTERS {
            if let Ok(Some(value)) = audit::metric(url, name).await {
                counters.insert(name.to_string(), value);
            }
        }
        origin_counters.insert(origin.spec.name.clone(), counters);
    }
    let requests = shared
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut faults_by_kind = BTreeMap::new();
    for fault in &injected {
        *faults_by_kind
            .entry(fault.fault.kind().to_string())
            .or_default() += 1;
    }
    let fault_errors: Vec<&Injected> = injected.iter().filter(|f| f.error.is_some()).collect();
    let at_wipes = |field: &str| -> u64 {
        injected
            .iter()
            .filter_map(|f| f.details[field].as_u64())
            .sum()
    };
    let passed = passed_checks && fault_errors.is_empty();
    let report = ChaosReport {
        passed,
        seed,
        command,
        duration_s: args.duration.as_secs(),
        elapsed_s: started.elapsed().as_secs_f64(),
        origins: urls.len(),
        products,
        stock: args.stock,
        members: args.members,
        concurrency: args.concurrency,
        pay_timeout_s: args.pay_timeout_s,
        requests_total: requests.values().flat_map(|m| m.values()).sum(),
        requests,
        faults_by_kind,
        expected_losses: Losses {
            redis_restarted_empty: shared.wipes.load(Ordering::SeqCst),
            pending_at_those_restarts: at_wipes("pending_at_restart"),
            undelivered_at_those_restarts: at_wipes("undelivered_at_restart"),
            accepted_buys_lost: audit.expected_losses.len(),
            examples: audit.expected_losses.iter().take(20).copied().collect(),
        },
        origin_counters,
        kept_database: (!passed).then(|| cluster.db.name.clone()),
        audit,
        faults: injected.clone(),
        logs: logs.to_path_buf(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.output, &json)?;
    println!("{json}");
    for fault in fault_errors {
        eprintln!(
            "chaos: fault {} at {} ms went wrong: {}",
            fault.fault.kind(),
            fault.started_ms,
            fault.error.as_deref().unwrap_or("")
        );
    }
    if !passed {
        eprintln!("chaos: FAILED with seed {seed}; replay: {}", report.command);
    } else {
        eprintln!(
            "chaos: passed (seed {seed}); report: {}",
            args.output.display()
        );
    }
    Ok(passed)
}
