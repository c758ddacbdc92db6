//! The asynchronous order pipeline: order requests queued by the reserve
//! script become orders in the database.
//!
//! Consumers run inside the origin (`SECKILL_CONSUMERS`, default 1) or as
//! their own processes (`seckill-origin worker`), so buying and order
//! writing scale apart. All consumers of all processes form one Redis
//! consumer group per product stream; see `consumer` for the no-loss and
//! no-duplicate rules, `writer` for the database side, `queue` for the
//! stream side.

pub mod consumer;
pub mod queue;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Database;
use crate::inventory::Inventory;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub batch: usize,
    pub claim_idle: Duration,
    pub max_deliveries: u64,
    pub pay_timeout: Duration,
    pub retention: Duration,
}

impl PipelineSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            batch: config.consumer_batch,
            claim_idle: config.claim_idle,
            max_deliveries: config.max_deliveries,
            pay_timeout: config.pay_timeout,
            retention: config.stream_retention,
        }
    }
}

/// Everything a consumer needs; shared by all consumers of a process.
pub struct PipelineContext {
    pub db: Database,
    pub inventory: Inventory,
    pub settings: PipelineSettings,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// Starts `count` consumers with names unique across processes and hosts.
pub fn spawn_consumers(
    ctx: Arc<PipelineContext>,
    count: usize,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let process = consumer_prefix();
    for n in 0..count {
        let consumer = consumer::Consumer::new(format!("{process}-{n}"), ctx.clone())?;
        tasks.spawn(consumer.run());
    }
    Ok(())
}

/// `<host>-<pid>-<random>`: a restarted process (or a container whose pid
/// is always 1) never reuses a dead consumer's name, so a dead consumer's
/// entries are always taken over by claim, never silently inherited.
fn consumer_prefix() -> String {
    use rand::Rng;
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "origin".into());
    let tag: u32 = rand::rng().random();
    format!("{host}-{}-{tag:08x}", std::process::id())
}
