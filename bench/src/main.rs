//! `seckill-bench`: a load generator and correctness audit for the
//! flash-sale system, pointed at any origin or edge URL.
//!
//! It creates the sale it loads through the admin API, mints member tokens
//! from the shared secret (no login in the measured path), drives the load
//! from keep-alive connections, shows a progress bar, and writes a JSON
//! result file and SVG charts. Given the database (and Redis) of the
//! deployment, it audits the outcome and exits non-zero if any invariant
//! broke. Its other subcommands are the pieces of scripts/bench, scripts/run
//! and scripts/profile that are more than starting processes: the summary
//! table, reading a result field or a metric, a free port, the demo sale.

mod chaos;
mod chart;
mod client;
mod demo_sale;
mod drain;
mod floor;
mod load;
mod profile_shares;
mod result_file;
mod scenario;
mod shards;
mod stats;
mod summary;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use seckill_shared::token::TokenSecret;

use crate::chart::{line_chart, Series, COLORS};
use crate::scenario::Session;
use crate::stats::Summary;
use seckill_bench::audit::{self, AuditInput, Mode};

#[derive(Parser)]
#[command(
    name = "seckill-bench",
    version,
    about = "Load generator and audit for the flash-sale system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress bar.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The sell-out rush: MEMBERS members, one buy each, rush STOCK units at the start time.
    Rush {
        #[command(flatten)]
        target: TargetArgs,
        /// Units of each product.
        #[arg(long, default_value_t = 1_000)]
        stock: i64,
        #[arg(long, default_value_t = 20_000)]
        members: usize,
        /// Sales of STOCK units each, opening together; the members are
        /// dealt out over them in turn (member 1 buys the first, member
        /// PRODUCTS + 1 the first again), so on a Redis Cluster every
        /// shard carries some.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        products: u16,
        /// Pace the buys to this many per second (default: as fast as answers come).
        #[arg(long)]
        rate: Option<f64>,
        #[command(flatten)]
        audit: AuditArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// The sold-out tail: REQUESTS buyers after the item sold out.
    Tail {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 50_000)]
        requests: usize,
        /// A product of the target that is already sold out: load it as it
        /// is instead of creating and selling out a sale first (no admin
        /// token needed).
        #[arg(long)]
        product: Option<i64>,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Serve the HTTP floor: every request answered `409 sold_out` at once,
    /// nothing else done. The tail against it is the most any origin on the
    /// same HTTP stack could answer on this machine.
    Floor {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: std::net::SocketAddr,
    },
    /// Serve a TCP proxy that holds every byte DELAY_MS each way, as the
    /// path to a far location does (scripts/bench puts it between the edge
    /// and the origin). Prints `listening on ADDR` once it accepts.
    Proxy {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Where connections are forwarded, e.g. 127.0.0.1:8080.
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Buy, poll the result until the order is written, pay (a PAY_SHARE of the members).
    Mixed {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1_000)]
        stock: i64,
        #[arg(long, default_value_t = 5_000)]
        members: usize,
        #[arg(long, default_value_t = 0.5)]
        pay_share: f64,
        #[command(flatten)]
        audit: AuditArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Watch a product's orders reach the database and report orders/s.
    Drain {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// A result file written by `rush` or `mixed`: its product, and as
        /// many orders as it had buys accepted.
        #[arg(long, required_unless_present_all = ["product", "expected"], conflicts_with_all = ["product", "expected"])]
        results: Option<PathBuf>,
        #[arg(long, requires = "expected")]
        product: Option<i64>,
        /// Stop when this many orders exist.
        #[arg(long, requires = "product")]
        expected: Option<i64>,
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        #[command(flatten)]
        out: OutArgs,
    },
    /// The fault-injection soak: a deployment of its own under mixed load
    /// and seeded faults, then the invariant audit (see docs/RELIABILITY.md).
    Chaos(chaos::ChaosArgs),
    /// Audit a run's products (reads the accepted members from its result file).
    Audit {
        #[command(flatten)]
        audit: AuditArgs,
        /// Default: the product (or products) of the result file; this one
        /// instead, with the accepted members of a one-product file.
        #[arg(long)]
        product: Option<i64>,
        /// A result file written by `rush` or `mixed`.
        #[arg(long)]
        results: PathBuf,
    },
    /// Write the summary table of a scripts/bench run (summary.md in its
    /// folder) and print it.
    Summary {
        /// The run's folder of result files.
        #[arg(long, default_value = "docs/bench")]
        results: PathBuf,
        /// Clock ticks per second of the *-serving-ticks.txt files
        /// (`getconf CLK_TCK`).
        #[arg(long)]
        clock_ticks: u64,
    },
    /// Print one field of a result file: a JSON pointer (`/summary/requests`)
    /// of a .json file, a column of the last row of a .csv file.
    Field {
        file: PathBuf,
        key: String,
        /// Round a number to an integer (half to even).
        #[arg(long)]
        round: bool,
    },
    /// Print the sum of a metric's series at a Prometheus /metrics URL.
    Metric {
        /// e.g. http://127.0.0.1:8080/metrics
        url: String,
        /// The metric, e.g. http_requests_total.
        name: String,
        /// Only series with this label (repeatable), e.g.
        /// route=/api/seckill/{product_id}/orders.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// After a rush over many products on a Redis Cluster: each primary's
    /// share of the buys (the 202s of the products whose slots it owns) and
    /// of the Redis CPU, and each replica's CPU (what scripts/bench's Redis
    /// Cluster rows are computed from).
    Shards(shards::ShardsArgs),
    /// Print a `host:port ticks script_calls` line per Redis node: the CPU
    /// its process has used so far (clock ticks) and the scripts it ran
    /// (what `shards` subtracts).
    RedisUsage(shards::UsageArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort {
        /// One for a Redis Cluster node: its bus port (+10000) is free too.
        #[arg(long)]
        cluster_bus: bool,
    },
    /// Create the demo sale scripts/run shows, or reuse the previous one
    /// while its countdown runs; prints its product id.
    DemoSale {
        /// The origin (or edge) to create it on.
        #[arg(long)]
        url: String,
        #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// The file the demo sale's product id is kept in between runs.
        #[arg(long)]
        remember: PathBuf,
    },
    /// Print where a profiled server's time goes, from folded perf stacks
    /// (<DIR>/<NAME>.folded), as a Markdown table with a column per NAME.
    ProfileShares {
        #[arg(long)]
        folded: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text}"))
}

#[derive(Args)]
struct TargetArgs {
    /// The origin or edge to load, e.g. http://127.0.0.1:8787.
    #[arg(
        long,
        env = "SECKILL_BENCH_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    url: String,
    /// The member-token secret of the deployment.
    #[arg(long, env = "SECKILL_TOKEN_SECRET", hide_env_values = true)]
    secret: String,
    /// The admin token, to create the sale the run loads.
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Concurrent connections (each a worker).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Args)]
struct AuditArgs {
    /// The deployment's database: when given, the run ends with an audit.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The deployment's Redis Cluster, `host:port,…` seed nodes (as the
    /// origin's REDIS_CLUSTER_NODES); when given, used instead of --redis-url.
    #[arg(long, env = "REDIS_CLUSTER_NODES")]
    redis_cluster_nodes: Option<String>,
    #[arg(long, env = "SECKILL_KEY_PREFIX", default_value = "seckill:")]
    key_prefix: String,
    /// The origin's mode (SECKILL_MODE).
    #[arg(long, value_enum, default_value_t = Mode::Reserve)]
    mode: Mode,
    /// How long to wait for the order queue to drain before auditing.
    #[arg(long, default_value_t = 300)]
    drain_timeout_s: u64,
}

#[derive(Args)]
struct OutArgs {
    /// Where the JSON result and the SVG charts go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// File name stem (default: the scenario).
    #[arg(long)]
    name: Option<String>,
}

impl OutArgs {
    /// The file name stem of this run: `--name`, else the scenario.
    fn stem(&self, scenario: &str) -> String {
        self.name.clone().unwrap_or_else(|| scenario.to_string())
    }

    /// `<out>/<stem><suffix>`, creating the folder.
    fn path(&self, stem: &str, suffix: &str) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.out)?;
        Ok(self.out.join(format!("{stem}{suffix}")))
    }
}

fn session(target: &TargetArgs, quiet: bool) -> anyhow::Result<Session> {
    Ok(Session {
        base: target.url.trim_end_matches('/').to_string(),
        target: client::Target::parse(&target.url)?,
        secret: TokenSecret::new(target.secret.clone()).context("--secret is empty")?,
        admin_token: target.admin_token.clone(),
        concurrency: target.concurrency,
        progress: !quiet && std::io::stderr().is_terminal(),
    })
}

fn print_summary(label: &str, summary: &Summary) {
    let l = &summary.latency_ms;
    println!(
        "{label}: {} requests in {:.2} s = {:.0} requests/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        summary.requests, summary.seconds, summary.requests_per_second, l.p50, l.p90, l.p99, l.max
    );
    let statuses: Vec<String> = summary
        .by_status
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!(
        "  answers: {}; answered by the edge: {}",
        statuses.join(", "),
        summary.served_by_edge
    );
}

/// Throughput (by status) and latency charts of one run.
fn write_charts(out: &OutArgs, stem: &str, title: &str, summary: &Summary) -> anyhow::Result<()> {
    let mut statuses: Vec<&String> = summary.by_status.keys().collect();
    statuses.sort();
    let series: Vec<Series> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| Series {
            name: format!("answers {status}"),
            color: COLORS[i % COLORS.len()],
            points: summary
                .timeline
                .iter()
                .map(|p| {
                    (
                        p.second,
                        *p.statuses_per_second.get(*status).unwrap_or(&0) as f64,
                    )
                })
                .collect(),
        })
        .collect();
    std::fs::write(
        out.path(stem, "-throughput.svg")?,
        line_chart(
            &format!("{title}: requests per second"),
            "seconds since start",
            "requests/s",
            &series,
        ),
    )?;
    let latency = vec![
        Series {
            name: "p50".into(),
            color: COLORS[1],
            points: summary
                .timeline
                .iter()
                .map(|p| (p.second, p.p50_ms))
                .collect(),
        },
        Series {
            name: "p99".into(),
            color: COLORS[0],
            points: summary
                .timeline
                .iter()
                .map(|p| (p.second, p.p99_ms))
                .collect(),
        },
    ];
    std::fs::write(
        out.path(stem, "-latency.svg")?,
        line_chart(
            &format!("{title}: latency"),
            "seconds since start",
            "milliseconds",
            &latency,
        ),
    )?;
    Ok(())
}

fn write_json(out: &OutArgs, stem: &str, value: &impl serde::Serialize) -> anyhow::Result<PathBuf> {
    let path = out.path(stem, ".json")?;
    std::fs::write(&path, serde_json::to_string_pretty(value)?)?;
    Ok(path)
}

impl AuditArgs {
    fn redis(&self) -> audit::RedisAt {
        match &self.redis_cluster_nodes {
            Some(nodes) => audit::RedisAt::Cluster(
                nodes
                    .split(',')
                    .map(|node| format!("redis://{}", node.trim()))
                    .collect(),
            ),
            None => audit::RedisAt::One(self.redis_url.clone()),
        }
    }
}

/// Waits for the orders, charts them, then audits `products` (each with
/// the members answered 202 for it); false if a check failed.
async fn audit_run(
    args: &AuditArgs,
    out: &OutArgs,
    stem: &str,
    products: Vec<(i64, Vec<i64>)>,
) -> anyhow::Result<bool> {
    let Some(database_url) = &args.database_url else {
        println!("  (no --database-url: audit skipped)");
        return Ok(true);
    };
    let pool = audit::connect(database_url).await?;
    let ids: Vec<i64> = products.iter().map(|(product, _)| *product).collect();
    let accepted: usize = products.iter().map(|(_, members)| members.len()).sum();
    let drained = drain::watch(
        &pool,
        &ids,
        accepted as i64,
        Duration::from_secs(args.drain_timeout_s),
    )
    .await?;
    println!(
        "  orders written: {} of {}",
        drained.written, drained.expected
    );
    std::fs::write(
        out.path(stem, "-orders.svg")?,
        line_chart(
            "Orders written to the database",
            "seconds since the load ended",
            "orders",
            &[Series {
                name: "orders".into(),
                color: COLORS[2],
                points: drained
                    .timeline
                    .iter()
                    .map(|(t, c)| (*t, *c as f64))
                    .collect(),
            }],
        ),
    )?;
    match ids.as_slice() {
        [product] => println!("audit of product {product}:"),
        _ => println!("audit of {} products:", ids.len()),
    }
    let input = AuditInput {
        database_url: database_url.clone(),
        redis: args.redis(),
        key_prefix: args.key_prefix.clone(),
        products,
        mode: args.mode,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
    };
    let checks = audit::audit(&input).await?;
    let passed = audit::report(&checks);
    write_json(out, &format!("{stem}-audit"), &checks)?;
    Ok(passed)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Rush {
            target,
            stock,
            members,
            products,
            rate,
            audit,
            out,
        } => {
            let session = session(&target, quiet)?;
            let report = scenario::rush(&session, stock, members, products.into(), rate).await?;
            print_summary("rush", &report.summary);
            if report.products.is_empty() {
                println!(
                    "  product {}: {} of {stock} units sold",
                    report.product_id,
                    report.accepted_members.len()
                );
            } else {
                let sold: usize = report
                    .products
                    .iter()
                    .map(|p| p.accepted_members.len())
                    .sum();
                println!(
                    "  {} products: {sold} of {} units sold",
                    report.products.len(),
                    stock * report.products.len() as i64
                );
            }
            let stem = out.stem("rush");
            let path = write_json(&out, &stem, &report)?;
            write_charts(&out, &stem, "Sell-out rush", &report.summary)?;
            println!("  results: {}", path.display());
            let sold = if report.products.is_empty() {
                vec![(report.product_id, report.accepted_members)]
            } else {
                report
                    .products
                    .into_iter()
                    .map(|p| (p.product_id, p.accepted_members))
                    .collect()
            };
            audit_run(&audit, &out, &stem, sold).await
        }
        Command::Tail {
            target,
            requests,
            product,
            out,
        } => {
            let session = session(&target, quiet)?;
            let report = scenario::tail(&session, requests, product).await?;
            print_summary("sold-out tail", &report.summary);
            let stem = out.stem("tail");
            let path = write_json(&out, &stem, &report)?;
            write_charts(&out, &stem, "Sold-out tail", &report.summary)?;
            println!("  results: {}", path.display());
            Ok(true)
        }
        Command::Mixed {
            target,
            stock,
            members,
            pay_share,
            audit,
            out,
        } => {
            let session = session(&target, quiet)?;
            let report = scenario::mixed(&session, stock, members, pay_share).await?;
            print_summary("buys", &report.buys);
            print_summary("result polls", &report.result_polls);
            print_summary("payments", &report.payments);
            println!(
                "  {} bought, {} paid",
                report.accepted_members.len(),
                report.paid
            );
            let stem = out.stem("mixed");
            let path = write_json(&out, &stem, &report)?;
            write_charts(&out, &stem, "Mixed load (buys)", &report.buys)?;
            println!("  results: {}", path.display());
            audit_run(
                &audit,
                &out,
                &stem,
                vec![(report.product_id, report.accepted_members)],
            )
            .await
        }
        Command::Chaos(args) => chaos::run(args).await,
        Command::Floor { bind } => {
            floor::serve(bind).await?;
            Ok(true)
        }
        Command::Proxy {
            listen,
            to,
            delay_ms,
        } => {
            let proxy = seckill_bench::proxy::TcpProxy::bind(listen, to)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            proxy.set_delay(Duration::from_millis(delay_ms));
            println!(
                "seckill-bench proxy listening on {}:{}, to {to}, {delay_ms} ms each way",
                listen.ip(),
                proxy.port()
            );
            std::future::pending::<()>().await;
            Ok(true)
        }
        Command::Drain {
            database_url,
            results,
            product,
            expected,
            timeout_s,
            out,
        } => {
            let (product, expected) = match (results, product, expected) {
                (Some(results), _, _) => {
                    let [run] = <[_; 1]>::try_from(result_file::run_outcomes(&results)?).map_err(
                        |runs| {
                            anyhow::anyhow!(
                                "{} loaded {} products: drain one with --product and --expected",
                                results.display(),
                                runs.len()
                            )
                        },
                    )?;
                    if run.accepted_members.is_empty() {
                        let statuses =
                            result_file::read_json(&results)?["summary"]["by_status"].clone();
                        anyhow::bail!(
                            "no buy of {} was accepted, nothing to drain: {statuses}",
                            results.display()
                        );
                    }
                    (run.product_id, run.accepted_members.len() as i64)
                }
                (None, Some(product), Some(expected)) => (product, expected),
                _ => anyhow::bail!("--results, or --product and --expected"),
            };
            let pool = audit::connect(&database_url).await?;
            let report =
                drain::watch(&pool, &[product], expected, Duration::from_secs(timeout_s)).await?;
            println!(
                "drain: {} of {} orders, {:.0} orders/s over {:.2} s",
                report.written, report.expected, report.orders_per_second, report.seconds
            );
            let stem = out.stem("drain");
            write_json(&out, &stem, &report)?;
            std::fs::write(
                out.path(&stem, ".svg")?,
                line_chart(
                    "Orders written to the database",
                    "seconds",
                    "orders",
                    &[Series {
                        name: "orders".into(),
                        color: COLORS[2],
                        points: report
                            .timeline
                            .iter()
                            .map(|(t, c)| (*t, *c as f64))
                            .collect(),
                    }],
                ),
            )?;
            Ok(report.written >= expected)
        }
        Command::Audit {
            audit,
            product,
            results,
        } => {
            let runs = result_file::run_outcomes(&results)?;
            let out = OutArgs {
                out: results.parent().map(PathBuf::from).unwrap_or_default(),
                name: None,
            };
            let stem = results
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            let products = match (product, runs.as_slice()) {
                (None, _) => runs
                    .into_iter()
                    .map(|run| (run.product_id, run.accepted_members))
                    .collect(),
                (Some(product), [run]) => vec![(product, run.accepted_members.clone())],
                (Some(_), _) => anyhow::bail!(
                    "{} loaded {} products: --product is for a one-product run",
                    results.display(),
                    runs.len()
                ),
            };
            audit_run(&audit, &out, &stem, products).await
        }
        Command::Summary {
            results,
            clock_ticks,
        } => {
            let (table, left_out) = summary::table(&results, clock_ticks)?;
            for row in left_out {
                eprintln!("summary: left out {row}");
            }
            let path = results.join("summary.md");
            std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
            print!("{table}");
            Ok(true)
        }
        Command::Field { file, key, round } => {
            println!("{}", result_file::field_text(&file, &key, round)?);
            Ok(true)
        }
        Command::Metric { url, name, labels } => {
            let uri: http::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
            let path = uri.path_and_query().map_or("/metrics", |p| p.as_str());
            let mut connection = client::Connection::new(client::Target::parse(&url)?);
            let answer = connection.send(http::Method::GET, path, None, None).await?;
            if !answer.status.is_success() {
                anyhow::bail!("GET {url} was answered {}", answer.status);
            }
            let text = std::str::from_utf8(&answer.body).context("the metrics are not text")?;
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            println!("{}", seckill_bench::metrics_text::sum(text, &name, &labels));
            Ok(true)
        }
        Command::Shards(args) => {
            shards::run(args).await?;
            Ok(true)
        }
        Command::RedisUsage(args) => {
            shards::usage(args).await?;
            Ok(true)
        }
        Command::FreePort { cluster_bus } => {
            let port = if cluster_bus {
                seckill_bench::free_cluster_port(&[])?
            } else {
                seckill_bench::free_port()?
            };
            println!("{port}");
            Ok(true)
        }
        Command::DemoSale {
            url,
            admin_token,
            remember,
        } => {
            let sale = demo_sale::create_or_reuse(&url, &admin_token, &remember).await?;
            eprintln!(
                "{} the demo sale, product {}, opening at {} (unix seconds)",
                if sale.reused { "reusing" } else { "created" },
                sale.product_id,
                sale.starts_at
            );
            println!("{}", sale.product_id);
            Ok(true)
        }
        Command::ProfileShares { folded, names } => {
            print!("{}", profile_shares::table(&folded, &names)?);
            Ok(true)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("seckill-bench: an invariant broke (see FAIL above)");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("seckill-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
