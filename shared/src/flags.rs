//! Per-product sold-out flags that expire by themselves.
//!
//! A flag lets a node answer "sold out" without asking Redis. Flags learnt
//! from broadcasts can be missed or outlive the truth (a cancellation gives
//! stock back), so every flag carries an expiry: the worst a stale flag can
//! do is turn buyers away for one TTL. The origin keeps one of these behind a
//! lock; the edge keeps one in isolate memory.

use std::collections::HashMap;

use crate::ids::ProductId;

#[derive(Debug, Clone)]
pub struct ExpiringFlags {
    ttl_ms: u64,
    expires_at_ms: HashMap<ProductId, u64>,
}

impl ExpiringFlags {
    pub fn new(ttl_ms: u64) -> Self {
        Self {
            ttl_ms,
            expires_at_ms: HashMap::new(),
        }
    }

    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// Raises the flag for one TTL from `now_ms`.
    pub fn set(&mut self, product: ProductId, now_ms: u64) {
        self.expires_at_ms
            .insert(product, now_ms.saturating_add(self.ttl_ms));
    }

    pub fn clear(&mut self, product: ProductId) {
        self.expires_at_ms.remove(&product);
    }

    /// True while the flag is raised and not expired.
    pub fn is_set(&self, product: ProductId, now_ms: u64) -> bool {
        self.expires_at_ms
            .get(&product)
            .is_some_and(|&expires| now_ms < expires)
    }

    /// Replaces the flags with a full snapshot (resubscription,
    /// `/api/soldout`) that was asked for at `asked_ms`: each product in it
    /// is raised for one TTL from `now_ms`. A flag raised at or after
    /// `asked_ms` is newer than the snapshot and is kept.
    pub fn replace_all(
        &mut self,
        products: impl IntoIterator<Item = ProductId>,
        asked_ms: u64,
        now_ms: u64,
    ) {
        let newer_than_snapshot = asked_ms.saturating_add(self.ttl_ms);
        self.expires_at_ms
            .retain(|_, expires| *expires >= newer_than_snapshot);
        for product in products {
            self.set(product, now_ms);
        }
    }

    /// Products whose flag is raised now, in id order.
    pub fn raised(&self, now_ms: u64) -> Vec<ProductId> {
        let mut ids: Vec<ProductId> = self
            .expires_at_ms
            .iter()
            .filter(|(_, &expires)| now_ms < expires)
            .map(|(&id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    /// Drops expired entries so the map does not grow without bound.
    pub fn purge_expired(&mut self, now_ms: u64) {
        self.expires_at_ms.retain(|_, expires| now_ms < *expires);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: i64) -> ProductId {
        ProductId::new(id).unwrap()
    }

    #[test]
    fn flag_expires_after_ttl() {
        let mut flags = ExpiringFlags::new(1_000);
        flags.set(p(1), 5_000);
        assert!(flags.is_set(p(1), 5_000));
        assert!(flags.is_set(p(1), 5_999));
        assert!(!flags.is_set(p(1), 6_000));
        assert!(!flags.is_set(p(2), 5_000));
    }

    #[test]
    fn clear_and_replace() {
        let mut flags = ExpiringFlags::new(1_000);
        flags.set(p(1), 0);
        flags.clear(p(1));
        assert!(!flags.is_set(p(1), 1));

        flags.set(p(1), 0);
        flags.replace_all([p(2), p(3)], 5, 10);
        assert_eq!(flags.raised(10), vec![p(2), p(3)]);
        flags.purge_expired(2_000);
        assert!(flags.raised(0).is_empty());
    }

    #[test]
    fn a_snapshot_keeps_flags_newer_than_itself() {
        let mut flags = ExpiringFlags::new(1_000);
        flags.set(p(1), 0);
        // Asked for at 10; p(4) was learnt at 20, before the answer came.
        flags.set(p(4), 20);
        flags.replace_all([p(2)], 10, 30);
        assert_eq!(flags.raised(30), vec![p(2), p(4)]);
    }

    #[test]
    fn setting_again_extends() {
        let mut flags = ExpiringFlags::new(100);
        flags.set(p(1), 0);
        flags.set(p(1), 90);
        assert!(flags.is_set(p(1), 150));
    }
}
