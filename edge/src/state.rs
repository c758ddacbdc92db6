//! What one edge isolate remembers between requests: sold-out flags, a
//! per-member rate limiter, and short-lived copies of product reads.
//!
//! Under `wrangler dev` (and in production, per isolate) module state lives
//! as long as the isolate, so this is plain memory with explicit expiries;
//! time is passed in so every rule is tested on the host.

use std::collections::HashMap;

use seckill_shared::api::{ProductView, SoldOutSnapshot};
use seckill_shared::flags::ExpiringFlags;
use seckill_shared::rate_limit::RateLimiter;
use seckill_shared::{MemberId, ProductId};

use crate::config::EdgeConfig;
use crate::gate::{GateQueue, QueueSettings};

/// Members tracked by the rate limiter before idle ones are forgotten.
const RATE_LIMITED_MEMBERS: usize = 100_000;
/// Product copies kept before the cache is emptied (ids are client-chosen).
const CACHED_PRODUCTS: usize = 10_000;

/// A product read as the origin answered it: `None` is "no such product".
#[derive(Debug, Clone)]
struct ProductCopy {
    view: Option<ProductView>,
    fetched_ms: u64,
}

pub struct EdgeState {
    sold_out: ExpiringFlags,
    rate_limiter: RateLimiter,
    products: HashMap<ProductId, ProductCopy>,
    sold_out_fetched_ms: Option<u64>,
    sold_out_version: u64,
    /// Product reads out to the origin, by when they were sent.
    product_reads: HashMap<ProductId, u64>,
    /// This isolate, as the admission gate tells isolates apart.
    holder: u64,
    gates: HashMap<ProductId, GateQueue>,
    gate_settings: QueueSettings,
}

impl EdgeState {
    /// `holder` is a random id for this isolate.
    pub fn new(config: &EdgeConfig, holder: u64) -> Self {
        Self {
            holder,
            gates: HashMap::new(),
            gate_settings: config.queue_settings(),
            product_reads: HashMap::new(),
            sold_out: ExpiringFlags::new(config.sold_out_ttl.as_millis() as u64),
            rate_limiter: RateLimiter::new(config.rate_limit, RATE_LIMITED_MEMBERS),
            products: HashMap::new(),
            sold_out_fetched_ms: None,
            sold_out_version: 0,
        }
    }

    pub fn is_sold_out(&self, product: ProductId, now_ms: u64) -> bool {
        self.sold_out.is_set(product, now_ms)
    }

    /// The origin answered a buy `409 sold_out`.
    pub fn learn_sold_out(&mut self, product: ProductId, now_ms: u64) {
        self.sold_out.set(product, now_ms);
    }

    /// True when the sold-out snapshot is older than `refresh_ms`.
    pub fn sold_out_snapshot_due(&self, now_ms: u64, refresh_ms: u64) -> bool {
        self.sold_out_fetched_ms
            .is_none_or(|fetched| now_ms.saturating_sub(fetched) >= refresh_ms)
    }

    /// Marks a refresh as started, so concurrent requests do not all fetch.
    pub fn sold_out_snapshot_started(&mut self, now_ms: u64) {
        self.sold_out_fetched_ms = Some(now_ms);
    }

    /// Replaces the flags with the origin's snapshot, asked for at
    /// `asked_ms` (each for one TTL); a flag learnt from a buy's 409 while
    /// the snapshot was on its way is newer and stays.
    pub fn apply_sold_out_snapshot(
        &mut self,
        snapshot: &SoldOutSnapshot,
        asked_ms: u64,
        now_ms: u64,
    ) {
        self.sold_out
            .replace_all(snapshot.sold_out.iter().copied(), asked_ms, now_ms);
        self.sold_out_version = snapshot.version;
    }

    /// The snapshot as this edge believes it now.
    pub fn sold_out_snapshot(&self, now_ms: u64) -> SoldOutSnapshot {
        SoldOutSnapshot {
            version: self.sold_out_version,
            sold_out: self.sold_out.raised(now_ms),
        }
    }

    pub fn holder(&self) -> u64 {
        self.holder
    }

    /// The product's queue for the admission gate.
    pub fn gate(&mut self, product: ProductId) -> &mut GateQueue {
        if self.gates.len() >= CACHED_PRODUCTS && !self.gates.contains_key(&product) {
            // Only queues with nothing in them are dropped.
            self.gates.retain(|_, queue| queue.has_work());
        }
        let settings = self.gate_settings;
        self.gates
            .entry(product)
            .or_insert_with(|| GateQueue::new(settings))
    }

    /// Takes one token of the member's bucket; false means `429`.
    pub fn allow(&mut self, member: MemberId, now_ms: u64) -> bool {
        self.rate_limiter.allow(member, now_ms)
    }

    /// A copy younger than `max_age_ms`, if any (`Some(None)`: known not to
    /// exist).
    pub fn product(
        &self,
        product: ProductId,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Option<Option<ProductView>> {
        self.products
            .get(&product)
            .filter(|copy| now_ms.saturating_sub(copy.fetched_ms) < max_age_ms)
            .map(|copy| copy.view.clone())
    }

    /// True when this caller should read the product from the origin: no
    /// read of it is out (or the one out is older than `timeout_ms`).
    pub fn start_product_read(&mut self, product: ProductId, now_ms: u64, timeout_ms: u64) -> bool {
        if self.product_reads.len() >= CACHED_PRODUCTS {
            self.product_reads
                .retain(|_, sent| now_ms.saturating_sub(*sent) < timeout_ms);
        }
        match self.product_reads.get(&product) {
            Some(sent) if now_ms.saturating_sub(*sent) < timeout_ms => false,
            _ => {
                self.product_reads.insert(product, now_ms);
                true
            }
        }
    }

    pub fn finish_product_read(&mut self, product: ProductId) {
        self.product_reads.remove(&product);
    }

    pub fn remember_product(&mut self, product: ProductId, view: Option<ProductView>, now_ms: u64) {
        if self.products.len() >= CACHED_PRODUCTS && !self.products.contains_key(&product) {
            self.products.clear();
        }
        if let Some(view) = &view {
            // A read that shows the item sold out is as good as a 409.
            if view.sold_out {
                self.sold_out.set(product, now_ms);
            }
        }
        self.products.insert(
            product,
            ProductCopy {
                view,
                fetched_ms: now_ms,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EdgeConfig {
        EdgeConfig::from_vars(|name| match name {
            "SECKILL_TOKEN_SECRET" => Some("secret".into()),
            "SOLDOUT_TTL_MS" => Some("1000".into()),
            "RATE_LIMIT_BURST" => Some("2".into()),
            "RATE_LIMIT_PER_S" => Some("1".into()),
            _ => None,
        })
        .unwrap()
    }

    fn p(id: i64) -> ProductId {
        ProductId::new(id).unwrap()
    }

    fn view(id: i64, sold_out: bool) -> ProductView {
        ProductView {
            product_id: p(id),
            name: "x".into(),
            price_cents: 2,
            flash_price_cents: 1,
            stock_total: 1,
            stock_left: if sold_out { 0 } else { 1 },
            starts_at: 0,
            ends_at: 10,
            sold_out,
            revision: 1,
        }
    }

    #[test]
    fn sold_out_flags_expire_after_their_ttl() {
        let mut state = EdgeState::new(&config(), 1);
        state.learn_sold_out(p(1), 10_000);
        assert!(state.is_sold_out(p(1), 10_999));
        assert!(
            !state.is_sold_out(p(1), 11_000),
            "a cancellation upstream is not hidden for long"
        );
    }

    #[test]
    fn snapshots_replace_flags_and_are_rate_limited() {
        let mut state = EdgeState::new(&config(), 1);
        assert!(state.sold_out_snapshot_due(0, 1_000));
        state.learn_sold_out(p(1), 0);
        state.sold_out_snapshot_started(0);
        assert!(!state.sold_out_snapshot_due(999, 1_000));
        assert!(state.sold_out_snapshot_due(1_000, 1_000));
        state.apply_sold_out_snapshot(
            &SoldOutSnapshot {
                version: 4,
                sold_out: vec![p(2)],
            },
            50,
            100,
        );
        assert!(!state.is_sold_out(p(1), 100));
        assert!(state.is_sold_out(p(2), 100));
        assert_eq!(state.sold_out_snapshot(100).version, 4);
    }

    #[test]
    fn a_snapshot_does_not_clear_a_newer_sold_out_answer() {
        let mut state = EdgeState::new(&config(), 1);
        state.sold_out_snapshot_started(0);
        // A buy learns p(3) is sold out while the snapshot is in flight.
        state.learn_sold_out(p(3), 40);
        state.apply_sold_out_snapshot(
            &SoldOutSnapshot {
                version: 1,
                sold_out: vec![],
            },
            0,
            60,
        );
        assert!(state.is_sold_out(p(3), 60));
    }

    #[test]
    fn product_copies_have_an_age() {
        let mut state = EdgeState::new(&config(), 1);
        state.remember_product(p(1), Some(view(1, false)), 1_000);
        state.remember_product(p(9), None, 1_000);
        assert!(state.product(p(1), 1_500, 1_000).unwrap().is_some());
        assert!(state.product(p(1), 2_000, 1_000).is_none(), "too old");
        assert!(
            state.product(p(1), 2_000, 30_000).is_some(),
            "still a stale copy"
        );
        assert_eq!(
            state.product(p(9), 1_500, 1_000),
            Some(None),
            "remembered as unknown"
        );
    }

    #[test]
    fn one_product_read_at_a_time() {
        let mut state = EdgeState::new(&config(), 1);
        assert!(state.start_product_read(p(1), 0, 3_000));
        assert!(!state.start_product_read(p(1), 10, 3_000), "one is out");
        assert!(state.start_product_read(p(2), 10, 3_000), "per product");
        assert!(
            state.start_product_read(p(1), 3_000, 3_000),
            "a lost read is retried"
        );
        state.finish_product_read(p(1));
        assert!(state.start_product_read(p(1), 3_001, 3_000));
    }

    #[test]
    fn a_sold_out_read_raises_the_flag() {
        let mut state = EdgeState::new(&config(), 1);
        state.remember_product(p(1), Some(view(1, true)), 0);
        assert!(state.is_sold_out(p(1), 1));
    }

    #[test]
    fn members_are_rate_limited() {
        let mut state = EdgeState::new(&config(), 1);
        let m = MemberId::new(5).unwrap();
        assert!(state.allow(m, 0));
        assert!(state.allow(m, 0));
        assert!(!state.allow(m, 0));
        assert!(state.allow(m, 1_000));
    }
}
