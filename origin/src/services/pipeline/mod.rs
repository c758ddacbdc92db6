//! The asynchronous order pipeline: order requests queued by the reserve
//! script become orders in the database.
//!
//! Consumers run inside the origin (`SECKILL_CONSUMERS`, default 1) or as
//! their own processes (`seckill-origin worker`), so buying and order
//! writing scale apart. All consumers of all processes form one Redis
//! consumer group per product stream; see `consumer` for the no-loss and
//! no-duplicate rules.

mod consumer;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::lifecycle::StockReturns;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::db::Database;
use crate::store::redis::deadlines::PaymentDeadlines;
use crate::store::redis::order_streams::OrderStreams;
use crate::store::redis::stock::Stock;

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub batch: usize,
    pub claim_idle: Duration,
    pub max_deliveries: u64,
    pub pay_timeout: Duration,
    pub retention: Duration,
}

/// What consumers use; shared by all consumers of a process.
pub struct PipelineContext {
    pub db: Database,
    pub stock: Stock,
    pub streams: OrderStreams,
    pub deadlines: PaymentDeadlines,
    pub returns: StockReturns,
    pub settings: PipelineSettings,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
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
