//! `seckill-bench redis-usage` and `shards`: how a rush over many products
//! spread over a Redis Cluster's primaries, and what it cost each. A
//! product's keys share one hash slot, so its buys all land on the primary
//! that owns the slot. `redis-usage` reads each node's CPU time (from
//! /proc, by the pid the node reports) and script calls (`INFO
//! commandstats`) before and after the rush; `shards` reads the slot map
//! from the live cluster (`CLUSTER SLOTS`), counts each primary's buys
//! from the rush's result file and pairs them with what each node used.
//! One Redis outside a cluster is one primary owning every slot. The
//! summary's Redis Cluster rows are computed from the file `shards` writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use seckill_shared::keys::{slot_of, RedisKeys};
use seckill_shared::ProductId;
use serde::Serialize;

use crate::result_file::run_outcomes;

#[derive(clap::Args)]
pub struct UsageArgs {
    /// The Redis nodes, `host:port,…` (the cluster's, or one Redis).
    #[arg(long)]
    nodes: String,
}

/// Prints a `host:port ticks script_calls` line per node: the CPU clock
/// ticks (user + system) its process has used and the scripts
/// (`EVALSHA` and `EVAL`) it has run so far.
pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    for node in args.nodes.split(',').map(str::trim) {
        let mut conn = redis::Client::open(format!("redis://{node}"))?
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to the Redis node {node}"))?;
        let server: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let pid = info_field(&server, "process_id")
            .with_context(|| format!("INFO server of {node} has no process_id"))?;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        let calls = script_calls(&stats);
        println!("{node} {} {calls}", process_ticks(pid)?);
    }
    Ok(())
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Calls of EVALSHA and EVAL in `INFO commandstats`
/// (`cmdstat_evalsha:calls=12,usec=…`).
fn script_calls(stats: &str) -> u64 {
    ["cmdstat_evalsha", "cmdstat_eval"]
        .iter()
        .filter_map(|command| info_field(stats, command))
        .filter_map(|fields| fields.split(',').find_map(|f| f.strip_prefix("calls=")))
        .filter_map(|calls| calls.parse::<u64>().ok())
        .sum()
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of
/// /proc/PID/stat; counted after the command name, which may hold spaces).
fn process_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat: is Redis on this machine?"))?;
    let after_name = stat
        .rsplit_once(')')
        .with_context(|| format!("/proc/{pid}/stat has no command name"))?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("/proc/{pid}/stat is too short"))?
            .parse()
            .with_context(|| format!("/proc/{pid}/stat: field {} is not a number", i + 3))
    };
    Ok(tick(11)? + tick(12)?)
}

#[derive(clap::Args)]
pub struct ShardsArgs {
    /// A result file of `rush --products N` against an origin on the cluster.
    #[arg(long)]
    results: PathBuf,
    /// A node of the cluster (or the one Redis), `host:port`: the slot map
    /// is read from it.
    #[arg(long)]
    node: String,
    /// What `redis-usage` printed before the rush.
    #[arg(long)]
    before: PathBuf,
    /// What `redis-usage` printed after the rush.
    #[arg(long)]
    after: PathBuf,
    /// The JSON file to write.
    #[arg(long)]
    out: PathBuf,
}

/// What one node used over the rush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Used {
    ticks: i64,
    script_calls: i64,
}

/// One replica's CPU over the rush.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTicks {
    pub node: String,
    pub redis_ticks: i64,
}

/// One primary: the slots it owns, the products in them, their buys, its
/// CPU and its replicas'.
#[derive(Debug, Clone, Serialize)]
pub struct Primary {
    pub node: String,
    pub slots: u32,
    pub products: usize,
    pub buys: usize,
    pub redis_ticks: i64,
    /// Scripts run (the reserve calls, each for a batch of buys of one
    /// product, and the few of the pollers).
    pub script_calls: i64,
    pub replicas: Vec<NodeTicks>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardsReport {
    pub buys: usize,
    pub primaries: Vec<Primary>,
}

/// A slot range of `CLUSTER SLOTS`: its primary and replicas, `host:port`.
struct SlotRange {
    start: u16,
    end: u16,
    primary: String,
    replicas: Vec<String>,
}

/// The cluster's slot map, or one range of every slot on `node` when it
/// is one Redis outside a cluster.
async fn slot_ranges(node: &str) -> anyhow::Result<Vec<SlotRange>> {
    let mut conn = redis::Client::open(format!("redis://{node}"))?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to the Redis node {node}"))?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await?;
    if info_field(&info, "cluster_enabled") == Some("0") {
        return Ok(vec![SlotRange {
            start: 0,
            end: 16_383,
            primary: node.to_string(),
            replicas: Vec::new(),
        }]);
    }
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .with_context(|| format!("CLUSTER SLOTS on {node}"))?;
    let address = |value: &redis::Value| -> anyhow::Result<String> {
        let fields: Vec<redis::Value> = redis::from_redis_value(value.clone())?;
        let host: String = redis::from_redis_value(fields[0].clone())?;
        let port: u16 = redis::from_redis_value(fields[1].clone())?;
        Ok(format!("{host}:{port}"))
    };
    ranges
        .iter()
        .map(|range| {
            if range.len() < 3 {
                bail!("a CLUSTER SLOTS range without a primary");
            }
            Ok(SlotRange {
                start: redis::from_redis_value(range[0].clone())?,
                end: redis::from_redis_value(range[1].clone())?,
                primary: address(&range[2])?,
                replicas: range[3..].iter().map(address).collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// `host:port ticks script_calls` lines, as `redis-usage` prints them.
fn read_usage(path: &Path) -> anyhow::Result<BTreeMap<String, Used>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let bad = || format!("{}: not `host:port ticks calls`: {line}", path.display());
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [node, ticks, calls] = fields[..] else {
                bail!(bad());
            };
            Ok((
                node.to_string(),
                Used {
                    ticks: ticks.parse().with_context(bad)?,
                    script_calls: calls.parse().with_context(bad)?,
                },
            ))
        })
        .collect()
}

pub async fn run(args: ShardsArgs) -> anyhow::Result<()> {
    let report = shards(&args).await?;
    for primary in &report.primaries {
        println!(
            "  primary {}: {} products, {} buys, {} ticks, {} script calls (replicas: {})",
            primary.node,
            primary.products,
            primary.buys,
            primary.redis_ticks,
            primary.script_calls,
            primary
                .replicas
                .iter()
                .map(|r| format!("{} {} ticks", r.node, r.redis_ticks))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

async fn shards(args: &ShardsArgs) -> anyhow::Result<ShardsReport> {
    let ranges = slot_ranges(&args.node).await?;
    let (before, after) = (read_usage(&args.before)?, read_usage(&args.after)?);
    let used = |node: &str| -> anyhow::Result<Used> {
        match (before.get(node), after.get(node)) {
            (Some(b), Some(a)) => Ok(Used {
                ticks: a.ticks - b.ticks,
                script_calls: a.script_calls - b.script_calls,
            }),
            _ => bail!("no usage of the Redis node {node} before and after the rush"),
        }
    };
    let mut primaries: BTreeMap<String, Primary> = BTreeMap::new();
    for range in &ranges {
        let entry = match primaries.entry(range.primary.clone()) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let primary = used(&range.primary)?;
                entry.insert(Primary {
                    node: range.primary.clone(),
                    slots: 0,
                    products: 0,
                    buys: 0,
                    redis_ticks: primary.ticks,
                    script_calls: primary.script_calls,
                    replicas: range
                        .replicas
                        .iter()
                        .map(|node| {
                            Ok(NodeTicks {
                                node: node.clone(),
                                redis_ticks: used(node)?.ticks,
                            })
                        })
                        .collect::<anyhow::Result<_>>()?,
                })
            }
        };
        entry.slots += u32::from(range.end - range.start) + 1;
    }
    // The prefix does not change a key's slot: only its `{p<id>}` tag does.
    let keys = RedisKeys::new("").expect("an empty prefix is valid");
    let mut buys = 0;
    for run in run_outcomes(&args.results)? {
        let product = ProductId::new(run.product_id)
            .map_err(|_| anyhow::anyhow!("product ids are positive: {}", run.product_id))?;
        let slot = slot_of(keys.item(product).as_bytes());
        let owner = ranges
            .iter()
            .find(|range| (range.start..=range.end).contains(&slot))
            .with_context(|| format!("no primary owns slot {slot}"))?;
        let primary = primaries
            .get_mut(&owner.primary)
            .expect("every range's primary is listed");
        primary.products += 1;
        primary.buys += run.accepted_members.len();
        buys += run.accepted_members.len();
    }
    Ok(ShardsReport {
        buys,
        primaries: primaries.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::{info_field, script_calls};

    #[test]
    fn script_calls_add_evalsha_and_eval_from_commandstats() {
        let stats = "# Commandstats\r\ncmdstat_evalsha:calls=120,usec=900,usec_per_call=7.50\r\n\
                     cmdstat_eval:calls=3,usec=40,usec_per_call=13.33\r\n\
                     cmdstat_evalsha_ro:calls=1000,usec=1,usec_per_call=0.00\r\n";
        assert_eq!(script_calls(stats), 123);
        assert_eq!(script_calls("# Commandstats\r\n"), 0);
        assert_eq!(
            info_field("redis_mode:cluster\r\nprocess_id:4242\r\n", "process_id"),
            Some("4242")
        );
    }
}
