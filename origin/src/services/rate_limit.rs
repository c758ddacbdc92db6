//! The per-member buy limit of this process, sharded to keep lock contention
//! off the hot path (the bucket logic itself lives in `seckill-shared`, the
//! same as the edge's).

use std::sync::Mutex;

use seckill_shared::rate_limit::{RateLimit, RateLimiter};
use seckill_shared::MemberId;

use crate::clock::monotonic_ms;
use crate::locks::lock;

const SHARDS: usize = 16;
const MEMBERS_PER_SHARD: usize = 50_000;

pub struct MemberRateLimiter {
    shards: Vec<Mutex<RateLimiter>>,
}

impl MemberRateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(RateLimiter::new(limit, MEMBERS_PER_SHARD)))
                .collect(),
        }
    }

    pub fn allow(&self, member: MemberId) -> bool {
        let shard = &self.shards[(member.get() as u64 % SHARDS as u64) as usize];
        lock(shard).allow(member, monotonic_ms())
    }
}
