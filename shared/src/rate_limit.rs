//! A per-member token bucket, kept in one process's memory.
//!
//! Flash-sale buyers hammer the buy button; a bucket of a few requests with a
//! steady refill lets a person retry at human speed while a script that fires
//! in a loop gets `429 rate_limited`. The edge keeps one per isolate and the
//! origin one per process, so the limit is per node, not global: it is a
//! shield against floods, not a quota.

use std::collections::HashMap;

use crate::ids::MemberId;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests a member may make in a burst.
    pub burst: u32,
    /// Requests per second refilled after the burst.
    pub per_second: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    max_members: usize,
    buckets: HashMap<MemberId, Bucket>,
}

impl RateLimiter {
    /// `max_members` bounds memory: past it, buckets that have refilled
    /// completely (members who went quiet) are forgotten.
    pub fn new(limit: RateLimit, max_members: usize) -> Self {
        Self {
            limit,
            max_members,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `member`; false means the request must be refused.
    pub fn allow(&mut self, member: MemberId, now_ms: u64) -> bool {
        let bucket = self.refilled(member, now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a request that was already let through elsewhere (the edge's
    /// isolates admit some buyers before the gate hears of them): the token
    /// is taken even when there is none, so the member owes it and is
    /// refused until the debt is repaid. Returns how long, in ms, until the
    /// member may be let through again (0: now). The debt is capped at one
    /// minute of refill.
    pub fn charge(&mut self, member: MemberId, now_ms: u64) -> u64 {
        let per_second = self.limit.per_second;
        let bucket = self.refilled(member, now_ms);
        bucket.tokens = (bucket.tokens - 1.0).max(-60.0 * per_second);
        Self::wait_ms(bucket.tokens, per_second)
    }

    /// How long, in ms, until `member` has a token again (0: now).
    pub fn refused_for_ms(&mut self, member: MemberId, now_ms: u64) -> u64 {
        let per_second = self.limit.per_second;
        let tokens = self.refilled(member, now_ms).tokens;
        Self::wait_ms(tokens, per_second)
    }

    fn wait_ms(tokens: f64, per_second: f64) -> u64 {
        if tokens >= 1.0 {
            0
        } else {
            ((1.0 - tokens) / per_second * 1_000.0).ceil() as u64
        }
    }

    /// The member's bucket, refilled up to `now_ms`.
    fn refilled(&mut self, member: MemberId, now_ms: u64) -> &mut Bucket {
        if self.buckets.len() >= self.max_members && !self.buckets.contains_key(&member) {
            self.forget_full_buckets(now_ms);
        }
        let burst = f64::from(self.limit.burst);
        let per_second = self.limit.per_second;
        let bucket = self.buckets.entry(member).or_insert(Bucket {
            tokens: burst,
            updated_ms: now_ms,
        });
        let elapsed_s = now_ms.saturating_sub(bucket.updated_ms) as f64 / 1_000.0;
        bucket.tokens = (bucket.tokens + elapsed_s * per_second).min(burst);
        bucket.updated_ms = now_ms.max(bucket.updated_ms);
        bucket
    }

    fn forget_full_buckets(&mut self, now_ms: u64) {
        let burst = f64::from(self.limit.burst);
        let per_second = self.limit.per_second;
        self.buckets.retain(|_, b| {
            let elapsed_s = now_ms.saturating_sub(b.updated_ms) as f64 / 1_000.0;
            b.tokens + elapsed_s * per_second < burst
        });
        // Still full of active members: forget the stalest half rather than grow.
        if self.buckets.len() >= self.max_members {
            let mut ages: Vec<u64> = self.buckets.values().map(|b| b.updated_ms).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.buckets.retain(|_, b| b.updated_ms > cutoff);
        }
    }

    pub fn tracked_members(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: i64) -> MemberId {
        MemberId::new(id).unwrap()
    }

    #[test]
    fn burst_then_refill() {
        let mut limiter = RateLimiter::new(
            RateLimit {
                burst: 3,
                per_second: 2.0,
            },
            100,
        );
        assert!(limiter.allow(m(1), 0));
        assert!(limiter.allow(m(1), 0));
        assert!(limiter.allow(m(1), 0));
        assert!(!limiter.allow(m(1), 0));
        // Another member is unaffected.
        assert!(limiter.allow(m(2), 0));
        // Half a second refills one token at 2/s.
        assert!(limiter.allow(m(1), 500));
        assert!(!limiter.allow(m(1), 500));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut limiter = RateLimiter::new(
            RateLimit {
                burst: 2,
                per_second: 1.0,
            },
            10,
        );
        for id in 1..=1_000 {
            limiter.allow(m(id), id as u64);
        }
        assert!(limiter.tracked_members() <= 10);
    }

    #[test]
    fn a_charge_past_the_burst_is_owed() {
        let mut limiter = RateLimiter::new(
            RateLimit {
                burst: 1,
                per_second: 2.0,
            },
            10,
        );
        assert_eq!(limiter.charge(m(1), 0), 500, "the burst is spent");
        // Let through twice more elsewhere: two tokens owed, refused for
        // the 1.5 s it takes to refill three.
        limiter.charge(m(1), 0);
        assert_eq!(limiter.charge(m(1), 0), 1_500);
        assert!(!limiter.allow(m(1), 1_000));
        assert_eq!(limiter.refused_for_ms(m(1), 1_000), 500);
        assert!(limiter.allow(m(1), 1_500));
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let mut limiter = RateLimiter::new(
            RateLimit {
                burst: 1,
                per_second: 1.0,
            },
            10,
        );
        assert!(limiter.allow(m(1), 10_000));
        assert!(!limiter.allow(m(1), 5_000));
    }
}
