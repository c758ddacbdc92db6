//! Payment deadlines: a sorted set of unpaid orders (`<product>:<order>`)
//! scored by deadline (unix ms), and the claim script that hands each due
//! entry to exactly one poller for a lease (see `claim_deadlines.lua`).
//! A poll costs one call whatever the number of orders.

use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, RedisResult, Script};
use seckill_shared::keys::DeadlineEntry;

use super::Redis;

#[derive(Clone)]
pub struct PaymentDeadlines {
    redis: Redis,
    claim: Arc<Script>,
}

impl PaymentDeadlines {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            claim: Arc::new(Script::new(include_str!("scripts/claim_deadlines.lua"))),
        }
    }

    /// Schedules deadlines (score: deadline ms). One already scheduled
    /// (and possibly leased by a poller) stays as it is.
    pub async fn schedule(&self, deadlines: &[(i64, DeadlineEntry)]) -> RedisResult<()> {
        if deadlines.is_empty() {
            return Ok(());
        }
        let items: Vec<(i64, String)> = deadlines
            .iter()
            .map(|(score, entry)| (*score, entry.encode()))
            .collect();
        let _: redis::Value = self
            .redis
            .connection()
            .zadd_multiple_options(
                self.redis.keys.pay_deadlines(),
                &items,
                &redis::SortedSetAddOptions::add_only(),
            )
            .await?;
        Ok(())
    }

    /// Claims up to `max` deadlines due now (on Redis' clock) for `lease`.
    pub async fn claim(&self, lease: Duration, max: usize) -> RedisResult<Vec<DeadlineEntry>> {
        let due: Vec<String> = self
            .claim
            .key(self.redis.keys.pay_deadlines())
            .arg(lease.as_millis() as u64)
            .arg(max)
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(due
            .iter()
            .filter_map(|entry| DeadlineEntry::decode(entry))
            .collect())
    }

    /// Removes a settled order's deadline.
    pub async fn forget(&self, entry: DeadlineEntry) -> RedisResult<()> {
        self.redis
            .connection()
            .zrem(self.redis.keys.pay_deadlines(), entry.encode())
            .await
    }

    /// Puts a claimed deadline back at its real time (it was claimed early).
    pub async fn reschedule(&self, entry: DeadlineEntry, deadline_ms: i64) -> RedisResult<()> {
        let _: redis::Value = self
            .redis
            .connection()
            .zadd_options(
                self.redis.keys.pay_deadlines(),
                entry.encode(),
                deadline_ms,
                &redis::SortedSetAddOptions::update_only(None),
            )
            .await?;
        Ok(())
    }
}
