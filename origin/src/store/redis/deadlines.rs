//! Payment deadlines: sorted sets of unpaid orders (`<product>:<order>`)
//! scored by deadline (unix ms), one per registry group (a product's
//! orders go to its group's set), and the claim script that hands each due
//! entry to exactly one poller for a lease (see `claim_deadlines.lua`).
//! A poll costs one call per group whatever the number of orders; on a
//! cluster the groups spread over every primary, so polling does too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, RedisResult, Script};
use seckill_shared::keys::{DeadlineEntry, RegistryGroup};

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

    fn set_of(&self, entry: DeadlineEntry) -> String {
        self.redis
            .keys
            .pay_deadlines(RegistryGroup::of(entry.product))
    }

    /// Schedules deadlines (score: deadline ms). One already scheduled
    /// (and possibly leased by a poller) stays as it is.
    pub async fn schedule(&self, deadlines: &[(i64, DeadlineEntry)]) -> RedisResult<()> {
        let mut by_set: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for (score, entry) in deadlines {
            by_set
                .entry(self.set_of(*entry))
                .or_default()
                .push((*score, entry.encode()));
        }
        let adds = by_set.into_iter().map(|(set, items)| {
            let mut conn = self.redis.connection();
            async move {
                conn.zadd_multiple_options::<_, _, _, redis::Value>(
                    set,
                    &items,
                    &redis::SortedSetAddOptions::add_only(),
                )
                .await
            }
        });
        for added in futures::future::join_all(adds).await {
            added?;
        }
        Ok(())
    }

    /// Claims up to `max` deadlines per group due now (on Redis' clock) for
    /// `lease`. `more` is true when some group had `max` due (call again).
    /// A group whose shard does not answer is skipped this time (its
    /// entries stay due), unless none answers.
    pub async fn claim(&self, lease: Duration, max: usize) -> RedisResult<Claimed> {
        let claims = RegistryGroup::all().map(|group| {
            let mut conn = self.redis.connection();
            let mut call = self.claim.key(self.redis.keys.pay_deadlines(group));
            call.arg(lease.as_millis() as u64).arg(max);
            async move { call.invoke_async::<Vec<String>>(&mut conn).await }
        });
        let groups = super::any_answered(futures::future::join_all(claims).await)?;
        Ok(Claimed {
            more: groups.iter().any(|due| due.len() >= max),
            entries: groups
                .iter()
                .flatten()
                .filter_map(|entry| DeadlineEntry::decode(entry))
                .collect(),
        })
    }

    /// Removes a settled order's deadline.
    pub async fn forget(&self, entry: DeadlineEntry) -> RedisResult<()> {
        self.redis
            .connection()
            .zrem(self.set_of(entry), entry.encode())
            .await
    }

    /// Puts a claimed deadline back at its real time (it was claimed early).
    pub async fn reschedule(&self, entry: DeadlineEntry, deadline_ms: i64) -> RedisResult<()> {
        let _: redis::Value = self
            .redis
            .connection()
            .zadd_options(
                self.set_of(entry),
                entry.encode(),
                deadline_ms,
                &redis::SortedSetAddOptions::update_only(None),
            )
            .await?;
        Ok(())
    }
}

/// What one claim took.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub entries: Vec<DeadlineEntry>,
    /// Some group had more due than one claim takes.
    pub more: bool,
}
