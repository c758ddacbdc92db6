//! Leases: a key that names the one process allowed to do a job (relaying
//! catalogue changes, for one), renewed by its holder, taken by anyone once
//! it lapses (see `lease.lua`). A holder that dies is replaced after at
//! most one lease.

use std::sync::Arc;
use std::time::Duration;

use redis::{RedisResult, Script};

use super::Redis;

/// What a lease is for; each names its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseJob {
    /// Relaying and applying catalogue changes.
    ChangeRelay,
}

#[derive(Clone)]
pub struct Leases {
    redis: Redis,
    hold: Arc<Script>,
}

impl Leases {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            hold: Arc::new(Script::new(include_str!("scripts/lease.lua"))),
        }
    }

    /// Takes or renews the lease for `holder`; true while it holds it.
    pub async fn hold(&self, job: LeaseJob, holder: &str, lease: Duration) -> RedisResult<bool> {
        let key = match job {
            LeaseJob::ChangeRelay => self.redis.keys.relay_lock(),
        };
        let held: i64 = self
            .hold
            .key(key)
            .arg(holder)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(held == 1)
    }
}
