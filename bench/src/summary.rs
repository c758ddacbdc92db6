//! The summary table of a `scripts/bench` run (docs/bench/summary.md, whose
//! figures docs/BENCHMARKS.md quotes): every measure with its figure and the
//! ratio it is read by, computed from the result files the run left in its
//! folder.
//!
//! A row whose inputs are missing (a step that was not run, such as the
//! edge when it is not built) is left out and named on stderr, so a partial
//! run still gets a table of what it measured.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::result_file::{csv_last_row_number, json_number, read_json};

/// A result file a row needs is not there: the row is left out.
#[derive(Debug)]
struct NotMeasured(PathBuf);

impl fmt::Display for NotMeasured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no {}", self.0.display())
    }
}

impl std::error::Error for NotMeasured {}

/// One run's folder of result files.
struct Results {
    dir: PathBuf,
    clock_ticks_per_second: f64,
}

impl Results {
    fn file(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.exists() {
            return Err(NotMeasured(path).into());
        }
        Ok(path)
    }

    fn json(&self, stem: &str) -> anyhow::Result<(Value, PathBuf)> {
        let path = self.file(&format!("{stem}.json"))?;
        Ok((read_json(&path)?, path))
    }

    fn number(&self, stem: &str, pointer: &str) -> anyhow::Result<f64> {
        let (json, path) = self.json(stem)?;
        json_number(&json, pointer, &path)
    }

    fn rps(&self, stem: &str) -> anyhow::Result<f64> {
        self.number(stem, "/summary/requests_per_second")
    }

    /// An integer written alone in a text file by scripts/bench.
    fn integer(&self, name: &str) -> anyhow::Result<i64> {
        let path = self.file(name)?;
        let text = std::fs::read_to_string(&path)?;
        text.trim()
            .parse()
            .with_context(|| format!("{} does not hold an integer", path.display()))
    }

    /// The serving side's CPU time per request of a run, in microseconds:
    /// the clock ticks scripts/bench counted over it, over its requests.
    fn serving_us_per_request(&self, stem: &str) -> anyhow::Result<f64> {
        let ticks = self.integer(&format!("{stem}-serving-ticks.txt"))? as f64;
        let requests = self.number(stem, "/summary/requests")?;
        Ok(ticks / self.clock_ticks_per_second * 1e6 / requests)
    }

    /// redis-benchmark's requests per second in a CSV file; `None` when
    /// the file is empty (the pipelined ceiling may fail).
    fn ceiling(&self, name: &str) -> anyhow::Result<Option<f64>> {
        csv_last_row_number(&self.file(name)?, "rps")
    }
}

/// `x` with `decimals` decimals and a comma between thousands (Python's
/// `{x:,.Nf}`).
fn grouped(x: f64, decimals: usize) -> String {
    let plain = format!("{x:.decimals$}");
    let (sign, unsigned) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain.as_str()),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let mut out = String::from(sign);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if let Some(fraction) = fraction {
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// `x` as [`grouped`] writes it, with its sign always shown.
fn signed(x: f64, decimals: usize) -> String {
    let text = grouped(x, decimals);
    if text.starts_with('-') {
        text
    } else {
        format!("+{text}")
    }
}

fn count(n: i64) -> String {
    grouped(n as f64, 0)
}

type Row = (String, String, String);

fn row(measure: &str, figure: String, ratio: String) -> Row {
    (measure.to_string(), figure, ratio)
}

/// The rows, in the table's order; each is computed on its own so one
/// missing input leaves out only the rows that need it.
fn rows(r: &Results) -> Vec<(String, anyhow::Result<Option<Row>>)> {
    let ceiling = || -> anyhow::Result<f64> {
        r.ceiling("ceiling.csv")?
            .context("ceiling.csv is empty: redis-benchmark failed")
    };
    let buy = || r.rps("buy-path");
    let tail = || r.rps("sold-out-tail");
    let floor = || r.rps("http-floor");
    let drain = |name: &str| r.number(&format!("drain-{name}"), "/orders_per_second");
    #[allow(clippy::type_complexity)]
    let mut rows: Vec<(String, Box<dyn Fn() -> anyhow::Result<Option<Row>>>)> = Vec::new();
    rows.push((
        "ceiling".into(),
        Box::new(|| {
            Ok(Some(row(
                "redis-benchmark ceiling (reserve script, 50 clients)",
                format!("{} scripts/s", grouped(ceiling()?, 0)),
                String::new(),
            )))
        }),
    ));
    rows.push((
        "pipelined ceiling".into(),
        Box::new(|| {
            Ok(r.ceiling("ceiling-pipelined.csv")?
                .filter(|&pipelined| pipelined != 0.0)
                .map(|pipelined| {
                    row(
                        "redis-benchmark ceiling, pipelined 16 deep",
                        format!("{} scripts/s", grouped(pipelined, 0)),
                        String::new(),
                    )
                }))
        }),
    ));
    rows.push((
        "buy path".into(),
        Box::new(|| {
            let (buy, ceiling) = (buy()?, ceiling()?);
            Ok(Some(row(
                "buy path, this project (HTTP, every buy reserves; orders written after the burst)",
                format!("{} req/s", grouped(buy, 0)),
                format!("{:.2}× ceiling", buy / ceiling),
            )))
        }),
    ));
    rows.push((
        "buy path with a writer".into(),
        Box::new(|| {
            let (with_writer, ceiling) = (r.rps("buy-path-with-writer")?, ceiling()?);
            Ok(Some(row(
                "buy path with an order writer draining into PostgreSQL on the same cores",
                format!("{} req/s", grouped(with_writer, 0)),
                format!("{:.2}× ceiling", with_writer / ceiling),
            )))
        }),
    ));
    for (stem, database) in [
        ("sync-db-postgres", "PostgreSQL"),
        ("sync-db-sqlite", "SQLite"),
    ] {
        rows.push((
            stem.into(),
            Box::new(move || {
                let (sync, buy) = (r.rps(stem)?, buy()?);
                Ok(Some(row(
                    &format!("buy path, sync-db baseline, {database}"),
                    format!("{} req/s", grouped(sync, 0)),
                    format!("this project: {:.0}×", buy / sync),
                )))
            }),
        ));
    }
    rows.push((
        "sold-out tail".into(),
        Box::new(|| {
            let (tail, buy) = (tail()?, buy()?);
            Ok(Some(row(
                "sold-out tail (local flag, no Redis)",
                format!("{} req/s", grouped(tail, 0)),
                format!("{:.1}× the reserve path", tail / buy),
            )))
        }),
    ));
    rows.push((
        "CPU per request".into(),
        Box::new(|| {
            let buy_us = r.serving_us_per_request("buy-path")?;
            let tail_us = r.serving_us_per_request("sold-out-tail")?;
            Ok(Some(row(
                "origin + Redis CPU per request: buy path / sold-out tail",
                format!("{buy_us:.1} µs / {tail_us:.1} µs"),
                format!("the tail costs {:.1}× less", buy_us / tail_us),
            )))
        }),
    ));
    rows.push((
        "HTTP floor".into(),
        Box::new(|| {
            let (floor, buy, tail) = (floor()?, buy()?, tail()?);
            Ok(Some(row(
                "HTTP floor: the same tail against a server that answers 409 at once and does nothing else",
                format!("{} req/s", grouped(floor, 0)),
                format!(
                    "{:.1}× the buy path; the tail runs at {:.2}× of it",
                    floor / buy,
                    tail / floor
                ),
            )))
        }),
    ));
    rows.push((
        "HTTP floor CPU".into(),
        Box::new(|| {
            let floor_us = r.serving_us_per_request("http-floor")?;
            let tail_us = r.serving_us_per_request("sold-out-tail")?;
            Ok(Some(row(
                "HTTP floor server CPU per request",
                format!("{floor_us:.1} µs"),
                format!("the origin's tail: {:+.1} µs", tail_us - floor_us),
            )))
        }),
    ));
    rows.push((
        "half of peak".into(),
        Box::new(|| {
            let p50 = r.number("half-peak", "/summary/latency_ms/p50")?;
            let p99 = r.number("half-peak", "/summary/latency_ms/p99")?;
            Ok(Some(row(
                "latency at half of peak",
                format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
                format!("{} req/s offered", grouped(r.rps("half-peak")?, 0)),
            )))
        }),
    ));
    for (key, database) in [("postgres", "PostgreSQL"), ("sqlite", "SQLite")] {
        rows.push((
            format!("drain into {key}, batches of 200"),
            Box::new(move || {
                let batch = drain(&format!("{key}-batch"))?;
                let single = drain(&format!("{key}-single"))?;
                Ok(Some(row(
                    &format!("drain into {database}, batches of 200"),
                    format!("{} orders/s", grouped(batch, 0)),
                    format!("{:.1}× one insert per order", batch / single),
                )))
            }),
        ));
        rows.push((
            format!("drain into {key}, one insert per order"),
            Box::new(move || {
                Ok(Some(row(
                    &format!("drain into {database}, one insert per order"),
                    format!("{} orders/s", grouped(drain(&format!("{key}-single"))?, 0)),
                    String::new(),
                )))
            }),
        ));
    }
    rows.push((
        "peak memory".into(),
        Box::new(|| {
            let kib = r.integer("origin-peak-rss-kib.txt")?;
            Ok(Some(row(
                "origin peak memory (VmHWM)",
                format!("{:.0} MiB", kib as f64 / 1024.0),
                String::new(),
            )))
        }),
    ));
    rows.push((
        "mixed load".into(),
        Box::new(|| {
            let (mixed, path) = r.json("mixed")?;
            let figures = ["buys", "result_polls", "payments"]
                .iter()
                .map(|kind| {
                    let rps = json_number(&mixed, &format!("/{kind}/requests_per_second"), &path)?;
                    Ok(grouped(rps, 0))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let sold = mixed["accepted_members"]
                .as_array()
                .context("mixed.json has no accepted_members")?
                .len();
            let paid = json_number(&mixed, "/paid", &path)? as i64;
            Ok(Some(row(
                "mixed load: buys / result polls / payments at once",
                format!("{} req/s", figures.join(" / ")),
                format!("{} sold, {} paid", count(sold as i64), count(paid)),
            )))
        }),
    ));
    rows.extend(edge_rows(r));
    rows.into_iter()
        .map(|(name, build)| (name, build()))
        .collect()
}

/// A row of the table, computed when the table is written.
type RowBuilder<'a> = Box<dyn Fn() -> anyhow::Result<Option<Row>> + 'a>;

/// The edge's crowd runs: with the origin near and far, at these widths.
const EDGE_DISTANCES: [(&str, &str); 2] = [
    ("near", "origin near"),
    ("far", "origin far (60 ms each way)"),
];
const EDGE_CROWDS: [usize; 3] = [32, 256, 768];

/// A crowd run through the edge: its units, buys sent and units sold (its
/// `202`s), and the buys the origin saw (scripts/bench's count from the
/// origin's own metric).
struct CrowdRun {
    stock: i64,
    members: i64,
    sold: i64,
    forwarded: i64,
    /// `503`s the edge gave itself (the gate's `sale_busy`).
    busy: i64,
}

impl CrowdRun {
    fn read(r: &Results, stem: &str) -> anyhow::Result<Self> {
        let (json, path) = r.json(stem)?;
        let statuses = &json["summary"]["by_status"];
        Ok(Self {
            stock: json_number(&json, "/stock", &path)? as i64,
            members: json_number(&json, "/summary/requests", &path)? as i64,
            sold: statuses["202"].as_i64().unwrap_or(0),
            forwarded: r.integer(&format!("{stem}-forwarded-buys.txt"))?,
            busy: json["summary"]["served_by_edge_by_status"]["503"]
                .as_i64()
                .unwrap_or(0),
        })
    }

    /// Buys forwarded per unit sold ("none sold" when nothing sold).
    fn per_unit(&self) -> String {
        if self.sold == 0 {
            return "none sold".into();
        }
        format!("{:.2}", self.forwarded as f64 / self.sold as f64)
    }
}

/// Section 5 of scripts/bench: the edge under `wrangler dev` — its tail
/// against an empty worker under the same `wrangler dev`, the crowd with
/// and without the admission gate, and the gate's latency.
fn edge_rows(r: &Results) -> Vec<(String, RowBuilder<'_>)> {
    let mut rows: Vec<(String, RowBuilder<'_>)> = Vec::new();
    rows.push((
        "edge tail".into(),
        Box::new(|| {
            let served = r.number("edge-tail", "/summary/served_by_edge")? as i64;
            let requests = r.number("edge-tail", "/summary/requests")? as i64;
            let (edge, empty) = (r.rps("edge-tail")?, r.rps("edge-empty-worker")?);
            Ok(Some(row(
                "edge, sold-out tail under `wrangler dev`",
                format!(
                    "{} req/s ({} of {} answered by the edge)",
                    grouped(edge, 0),
                    count(served),
                    count(requests)
                ),
                format!("{:.2}× the empty worker", edge / empty),
            )))
        }),
    ));
    rows.push((
        "edge empty worker".into(),
        Box::new(|| {
            Ok(Some(row(
                "empty worker under the same `wrangler dev`: the same tail against a Worker that answers 409 at once",
                format!("{} req/s", grouped(r.rps("edge-empty-worker")?, 0)),
                String::new(),
            )))
        }),
    ));
    rows.push((
        "edge CPU per request".into(),
        Box::new(|| {
            let edge_us = r.serving_us_per_request("edge-tail")?;
            let empty_us = r.serving_us_per_request("edge-empty-worker")?;
            Ok(Some(row(
                "wrangler dev + workerd CPU per request: edge tail / empty worker",
                format!("{} µs / {} µs", grouped(edge_us, 0), grouped(empty_us, 0)),
                format!("the edge's code: {} µs", signed(edge_us - empty_us, 0)),
            )))
        }),
    ));
    for (distance, where_) in EDGE_DISTANCES {
        for width in EDGE_CROWDS {
            rows.push((
                format!("edge crowd, {distance}, {width} in flight"),
                Box::new(move || {
                    let stem = |gate: u32| format!("edge-crowd-{distance}-gate{gate}-{width}");
                    let (gated, open) = (CrowdRun::read(r, &stem(2))?, CrowdRun::read(r, &stem(0))?);
                    let mut ratio = format!("gate: {} told sale_busy", count(gated.busy));
                    if gated.sold > 0 && open.sold > 0 && gated.forwarded > 0 {
                        ratio = format!(
                            "{:.1}× as many without the gate; {ratio}",
                            (open.forwarded as f64 / open.sold as f64)
                                / (gated.forwarded as f64 / gated.sold as f64)
                        );
                    }
                    Ok(Some(row(
                        &format!(
                            "edge rush, {} members on {} units, {where_}, {width} in flight: buys forwarded to the origin per unit sold, gate 2× / no gate",
                            count(gated.members),
                            count(gated.stock)
                        ),
                        format!(
                            "{} / {} ({} / {} sold)",
                            gated.per_unit(),
                            open.per_unit(),
                            count(gated.sold),
                            count(open.sold)
                        ),
                        ratio,
                    )))
                }),
            ));
        }
    }
    rows.push((
        "edge gate latency".into(),
        Box::new(|| {
            let latency = |stem: &str, q: &str| {
                r.number(stem, &format!("/summary/latency_ms_by_status/202/{q}"))
            };
            let (gated, open) = ("edge-admitted-gate2", "edge-admitted-gate0");
            let (g50, g99) = (latency(gated, "p50")?, latency(gated, "p99")?);
            let (o50, o99) = (latency(open, "p50")?, latency(open, "p99")?);
            let members = r.number(gated, "/summary/requests")? as i64;
            let stock = r.number(gated, "/stock")? as i64;
            let width = r.number(gated, "/concurrency")? as i64;
            // A run with no 202 at all has no such field.
            let sold = |stem: &str| count(r.number(stem, "/summary/by_status/202").unwrap_or(0.0) as i64);
            Ok(Some(row(
                &format!(
                    "edge, admitted buys (202), origin near, {} buyers on {} units ({} / {} sold), {width} in flight: latency with the gate / without",
                    count(members),
                    count(stock),
                    sold(gated),
                    sold(open)
                ),
                format!("p50 {g50:.2} ms, p99 {g99:.2} ms / p50 {o50:.2} ms, p99 {o99:.2} ms"),
                format!("the gate adds {:+.2} ms p50, {:+.2} ms p99", g50 - o50, g99 - o99),
            )))
        }),
    ));
    rows
}

/// One primary of a `<stem>-shards.json` (written by `seckill-bench
/// shards`; one Redis is one primary).
struct Primary {
    buys: f64,
    ticks: f64,
    script_calls: f64,
    replica_ticks: f64,
    products: f64,
}

struct Shards {
    buys: f64,
    primaries: Vec<Primary>,
}

impl Shards {
    /// Every primary's CPU ticks, added up.
    fn ticks(&self) -> f64 {
        self.primaries.iter().map(|p| p.ticks).sum()
    }

    /// Buys per script call, over every primary: how many buys of one
    /// product a reserve call decided together.
    fn buys_per_call(&self) -> f64 {
        self.buys / self.primaries.iter().map(|p| p.script_calls).sum::<f64>()
    }
}

impl Results {
    fn shards(&self, stem: &str) -> anyhow::Result<Shards> {
        let (json, path) = self.json(&format!("{stem}-shards"))?;
        let primaries = json["primaries"]
            .as_array()
            .with_context(|| format!("{} has no primaries", path.display()))?
            .iter()
            .map(|primary| {
                let replica_ticks = primary["replicas"]
                    .as_array()
                    .with_context(|| {
                        format!("{} lists a primary without replicas", path.display())
                    })?
                    .iter()
                    .map(|replica| json_number(replica, "/redis_ticks", &path))
                    .sum::<anyhow::Result<f64>>()?;
                Ok(Primary {
                    buys: json_number(primary, "/buys", &path)?,
                    ticks: json_number(primary, "/redis_ticks", &path)?,
                    script_calls: json_number(primary, "/script_calls", &path)?,
                    replica_ticks,
                    products: json_number(primary, "/products", &path)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if primaries.is_empty() {
            anyhow::bail!("{} lists no primary", path.display());
        }
        Ok(Shards {
            buys: json_number(&json, "/buys", &path)?,
            primaries,
        })
    }

    /// Microseconds of CPU per buy: `ticks` over `buys`.
    fn us_per_buy(&self, ticks: f64, buys: f64) -> f64 {
        ticks / self.clock_ticks_per_second * 1e6 / buys
    }

    /// The origin's CPU per buy of a cluster-section run.
    fn origin_us_per_buy(&self, stem: &str) -> anyhow::Result<f64> {
        let ticks = self.integer(&format!("{stem}-origin-ticks.txt"))? as f64;
        Ok(self.us_per_buy(ticks, self.shards(stem)?.buys))
    }

    /// Redis CPU per buy over every primary together (the one Redis).
    fn redis_us_per_buy(&self, stem: &str) -> anyhow::Result<f64> {
        let shards = self.shards(stem)?;
        Ok(self.us_per_buy(shards.ticks(), shards.buys))
    }

    /// Each primary's Redis CPU per buy, `a / b / c µs`.
    fn each_primary_us(&self, stem: &str) -> anyhow::Result<String> {
        let shards = self.shards(stem)?;
        Ok(format!(
            "{} µs",
            slashed(
                shards
                    .primaries
                    .iter()
                    .map(|p| format!("{:.1}", self.us_per_buy(p.ticks, p.buys)))
            )
        ))
    }
}

/// `parts` joined by " / ".
fn slashed(parts: impl IntoIterator<Item = String>) -> String {
    parts.into_iter().collect::<Vec<_>>().join(" / ")
}

/// The Redis Cluster section's rows (scripts/bench section 6): the same
/// rush over 30 products on one Redis and on three primaries with a
/// replica each, and with `SECKILL_REDIS_REPLICA_ACKS=1`; each at full
/// speed and paced at one rate.
fn cluster_rows(r: &Results) -> Vec<(String, anyhow::Result<Option<Row>>)> {
    let one = || r.rps("cluster-one-redis");
    let products = || -> anyhow::Result<usize> {
        let (json, path) = r.json("cluster-one-redis")?;
        Ok(json["products"]
            .as_array()
            .with_context(|| format!("{} has no products", path.display()))?
            .len())
    };
    #[allow(clippy::type_complexity)]
    let mut rows: Vec<(String, Box<dyn Fn() -> anyhow::Result<Option<Row>>>)> = Vec::new();
    rows.push((
        "cluster: one Redis".into(),
        Box::new(|| {
            let shards = r.shards("cluster-one-redis")?;
            Ok(Some(row(
                &format!(
                    "Redis Cluster section, buy path over {} products: one Redis",
                    products()?
                ),
                format!("{} req/s", grouped(one()?, 0)),
                format!(
                    "CPU per buy: Redis {:.1} µs ({:.1} buys per script call), origin {:.1} µs",
                    r.redis_us_per_buy("cluster-one-redis")?,
                    shards.buys_per_call(),
                    r.origin_us_per_buy("cluster-one-redis")?
                ),
            )))
        }),
    ));
    rows.push((
        "cluster: three primaries".into(),
        Box::new(|| {
            let (cluster, one) = (r.rps("cluster-acks0")?, one()?);
            Ok(Some(row(
                "the same on a Redis Cluster, 3 primaries with a replica each",
                format!("{} req/s", grouped(cluster, 0)),
                format!(
                    "{:.2}× one Redis: on 2 cores shared by the generator, the origin and every Redis node, more shards cannot add throughput; origin CPU per buy {:.1} µs",
                    cluster / one,
                    r.origin_us_per_buy("cluster-acks0")?
                ),
            )))
        }),
    ));
    rows.push((
        "cluster: Redis CPU per buy per primary".into(),
        Box::new(|| {
            let shards = r.shards("cluster-acks0")?;
            Ok(Some(row(
                "Redis CPU per buy on each primary (its products' buys), full speed",
                r.each_primary_us("cluster-acks0")?,
                format!(
                    "one Redis: {:.1} µs; all primaries: {:.1} µs ({:.1} buys per script call); their replicas: {} µs",
                    r.redis_us_per_buy("cluster-one-redis")?,
                    r.redis_us_per_buy("cluster-acks0")?,
                    shards.buys_per_call(),
                    slashed(shards.primaries.iter().map(|p| format!(
                        "{:.1}",
                        r.us_per_buy(p.replica_ticks, p.buys)
                    )))
                ),
            )))
        }),
    ));
    rows.push((
        "cluster: Redis CPU per buy as primaries are added".into(),
        Box::new(|| {
            let replica_us = |stem: &str| -> anyhow::Result<String> {
                let shards = r.shards(stem)?;
                let ticks: f64 = shards.primaries.iter().map(|p| p.replica_ticks).sum();
                Ok(format!("{:.1}", r.us_per_buy(ticks, shards.buys)))
            };
            let (one, three) = (
                r.redis_us_per_buy("cluster-one-primary")?,
                r.redis_us_per_buy("cluster-acks0")?,
            );
            Ok(Some(row(
                "Redis CPU per buy in cluster mode, a replica each: 1 primary / 3 primaries (full speed; paced at half of one Redis' peak)",
                format!(
                    "{one:.1} / {three:.1} µs; paced {:.1} / {:.1} µs",
                    r.redis_us_per_buy("cluster-one-primary-paced")?,
                    r.redis_us_per_buy("cluster-acks0-paced")?
                ),
                format!(
                    "{:.2}× the cost per buy with three times the primaries; replicas {} / {} µs per buy",
                    three / one,
                    replica_us("cluster-one-primary")?,
                    replica_us("cluster-acks0")?
                ),
            )))
        }),
    ));
    rows.push((
        "cluster: Redis CPU per buy at one rate".into(),
        Box::new(|| {
            let calls = |stem: &str| -> anyhow::Result<String> {
                Ok(format!("{:.1}", r.shards(stem)?.buys_per_call()))
            };
            Ok(Some(row(
                "Redis CPU per buy paced at half of one Redis' peak: one Redis; each primary, acks=0; each primary, acks=1",
                format!(
                    "{:.1} µs; {}; {}",
                    r.redis_us_per_buy("cluster-one-redis-paced")?,
                    r.each_primary_us("cluster-acks0-paced")?,
                    r.each_primary_us("cluster-acks1-paced")?
                ),
                format!(
                    "buys per script call: {}; {}; {}",
                    calls("cluster-one-redis-paced")?,
                    calls("cluster-acks0-paced")?,
                    calls("cluster-acks1-paced")?
                ),
            )))
        }),
    ));
    rows.push((
        "cluster: spread over the primaries".into(),
        Box::new(|| {
            let shards = r.shards("cluster-acks0")?;
            let cpu = shards.ticks();
            let share = |part: f64, whole: f64| format!("{:.0}%", 100.0 * part / whole);
            Ok(Some(row(
                "each primary's share of the buys / of the primaries' Redis CPU",
                format!(
                    "{} of buys; {} of CPU",
                    slashed(shards.primaries.iter().map(|p| share(p.buys, shards.buys))),
                    slashed(shards.primaries.iter().map(|p| share(p.ticks, cpu)))
                ),
                format!(
                    "{} products each",
                    slashed(
                        shards
                            .primaries
                            .iter()
                            .map(|p| format!("{:.0}", p.products))
                    )
                ),
            )))
        }),
    ));
    rows.push((
        "cluster: replica acks".into(),
        Box::new(|| {
            let (acks1, acks0) = (r.rps("cluster-acks1")?, r.rps("cluster-acks0")?);
            Ok(Some(row(
                "the same cluster with SECKILL_REDIS_REPLICA_ACKS=1 (a WAIT per coalesced reserve call), full speed",
                format!("{} req/s", grouped(acks1, 0)),
                format!(
                    "{:.2}× acks=0; Redis CPU per buy on the primaries {:.1} µs against {:.1} µs",
                    acks1 / acks0,
                    r.redis_us_per_buy("cluster-acks1")?,
                    r.redis_us_per_buy("cluster-acks0")?
                ),
            )))
        }),
    ));
    rows.push((
        "cluster: paced latency".into(),
        Box::new(|| {
            let latency = |stem: &str| -> anyhow::Result<String> {
                let p50 = r.number(stem, "/summary/latency_ms/p50")?;
                let p99 = r.number(stem, "/summary/latency_ms/p99")?;
                Ok(format!("{p50:.2} / {p99:.2}"))
            };
            Ok(Some(row(
                "latency p50 / p99 paced at half of one Redis' peak: one Redis; cluster, acks=0; cluster, acks=1",
                format!(
                    "{} ms; {} ms; {} ms",
                    latency("cluster-one-redis-paced")?,
                    latency("cluster-acks0-paced")?,
                    latency("cluster-acks1-paced")?
                ),
                format!(
                    "{} buys/s offered to each",
                    grouped(r.number("cluster-one-redis-paced", "/rate_limit")?, 0)
                ),
            )))
        }),
    ));
    rows.into_iter()
        .map(|(name, build)| (name, build()))
        .collect()
}

/// The summary of the run in `dir` as a Markdown table, with the rows
/// left out for want of a result file, each with its reason.
pub fn table(dir: &Path, clock_ticks_per_second: u64) -> anyhow::Result<(String, Vec<String>)> {
    let results = Results {
        dir: dir.to_path_buf(),
        clock_ticks_per_second: clock_ticks_per_second as f64,
    };
    let mut lines = vec![
        "| measure | figure | ratio |".to_string(),
        "|---|---|---|".to_string(),
    ];
    let mut left_out = Vec::new();
    for (name, built) in rows(&results).into_iter().chain(cluster_rows(&results)) {
        match built {
            Ok(Some((measure, figure, ratio))) => {
                lines.push(format!("| {measure} | {figure} | {ratio} |"))
            }
            Ok(None) => {}
            Err(err) => match err.downcast_ref::<NotMeasured>() {
                Some(missing) => left_out.push(format!("{name}: {missing}")),
                None => return Err(err.context(format!("the summary's {name} row"))),
            },
        }
    }
    Ok((lines.join("\n") + "\n", left_out))
}

#[cfg(test)]
mod tests {
    use super::{grouped, signed};

    #[test]
    fn grouped_puts_commas_between_thousands_like_python() {
        assert_eq!(grouped(55096.42, 0), "55,096");
        assert_eq!(grouped(999.5, 0), "1,000");
        assert_eq!(grouped(1234567.891, 2), "1,234,567.89");
        assert_eq!(grouped(-1234.0, 0), "-1,234");
        assert_eq!(grouped(12.0, 0), "12");
        assert_eq!(signed(1275.2, 0), "+1,275");
        assert_eq!(signed(-5.0, 1), "-5.0");
    }
}
