//! `seckill-bench shards`: how a rush over many products spread over a
//! Redis Cluster's primaries. A product's keys share one hash slot, so its
//! buys all land on the primary that owns the slot; this reads the slot map
//! from the live cluster (`CLUSTER SLOTS`), counts each primary's buys
//! from the rush's result file, and pairs them with the CPU each node used
//! over the rush (measured by scripts/bench from /proc, before and after).
//! The summary's Redis Cluster rows are computed from the file it writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use seckill_shared::keys::{slot_of, RedisKeys};
use seckill_shared::ProductId;
use serde::Serialize;

use crate::result_file::run_outcomes;

#[derive(clap::Args)]
pub struct ShardsArgs {
    /// A result file of `rush --products N` against an origin on the cluster.
    #[arg(long)]
    results: PathBuf,
    /// A node of the cluster, `host:port`: the slot map is read from it.
    #[arg(long)]
    node: String,
    /// CPU clock ticks each node had used before the rush, a `host:port
    /// ticks` line per node.
    #[arg(long)]
    ticks_before: PathBuf,
    /// The same after the rush.
    #[arg(long)]
    ticks_after: PathBuf,
    /// The JSON file to write.
    #[arg(long)]
    out: PathBuf,
}

/// One node's CPU over the rush.
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

async fn slot_ranges(node: &str) -> anyhow::Result<Vec<SlotRange>> {
    let mut conn = redis::Client::open(format!("redis://{node}"))?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to the cluster node {node}"))?;
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

/// `host:port ticks` lines.
fn read_ticks(path: &PathBuf) -> anyhow::Result<BTreeMap<String, i64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (node, ticks) = line
                .split_once(' ')
                .with_context(|| format!("{}: not `host:port ticks`: {line}", path.display()))?;
            Ok((node.to_string(), ticks.trim().parse()?))
        })
        .collect()
}

pub async fn run(args: ShardsArgs) -> anyhow::Result<()> {
    let report = shards(&args).await?;
    for primary in &report.primaries {
        println!(
            "  primary {}: {} products, {} buys, {} ticks (replicas: {})",
            primary.node,
            primary.products,
            primary.buys,
            primary.redis_ticks,
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
    let (before, after) = (read_ticks(&args.ticks_before)?, read_ticks(&args.ticks_after)?);
    let used = |node: &str| -> anyhow::Result<i64> {
        match (before.get(node), after.get(node)) {
            (Some(b), Some(a)) => Ok(a - b),
            _ => bail!("no CPU ticks of the cluster node {node} before and after the rush"),
        }
    };
    let mut primaries: BTreeMap<String, Primary> = BTreeMap::new();
    for range in &ranges {
        let entry = match primaries.entry(range.primary.clone()) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Primary {
                node: range.primary.clone(),
                slots: 0,
                products: 0,
                buys: 0,
                redis_ticks: used(&range.primary)?,
                replicas: range
                    .replicas
                    .iter()
                    .map(|node| {
                        Ok(NodeTicks {
                            node: node.clone(),
                            redis_ticks: used(node)?,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            }),
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
