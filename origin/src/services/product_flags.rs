//! Per-product flags held in this process's memory, with an expiry.
//!
//! The sold-out flags are the check that costs no Redis round trip: once a
//! node knows a product is sold out it answers `409 sold_out` from memory.
//! They come from the reserve script's own answers and from the sold-out
//! broadcast, and each expires after `SECKILL_SOLDOUT_TTL_MS`, so a missed
//! "back in stock" message costs at most one TTL of refusals. The same type
//! remembers, for a second, ids that are not products at all, so a flood of
//! buys for a made-up id does not reach the database.

use std::sync::RwLock;

use seckill_shared::flags::ExpiringFlags;
use seckill_shared::ProductId;

use crate::clock::monotonic_ms;
use crate::locks::{read, write};

pub struct ProductFlags {
    flags: RwLock<ExpiringFlags>,
}

impl ProductFlags {
    pub fn new(ttl_ms: u64) -> Self {
        Self {
            flags: RwLock::new(ExpiringFlags::new(ttl_ms)),
        }
    }

    pub fn is_raised(&self, product: ProductId) -> bool {
        let flags = read(&self.flags);
        flags.is_set(product, monotonic_ms())
    }

    /// Raises (or refreshes) the flag; true when it was not raised before.
    pub fn raise(&self, product: ProductId) -> bool {
        let now = monotonic_ms();
        let mut flags = write(&self.flags);
        let was_raised = flags.is_set(product, now);
        flags.set(product, now);
        !was_raised
    }

    pub fn clear(&self, product: ProductId) {
        let mut flags = write(&self.flags);
        flags.clear(product);
    }

    /// The clock flags are kept on; pass its reading taken before asking
    /// Redis for a snapshot to [`Self::replace_all`].
    pub fn now_ms(&self) -> u64 {
        monotonic_ms()
    }

    /// Replaces the flags with a full snapshot from Redis asked for at
    /// `asked_ms`, keeping flags raised since.
    pub fn replace_all(&self, products: impl IntoIterator<Item = ProductId>, asked_ms: u64) {
        let mut flags = write(&self.flags);
        flags.replace_all(products, asked_ms, monotonic_ms());
    }

    pub fn raised(&self) -> Vec<ProductId> {
        let flags = read(&self.flags);
        flags.raised(monotonic_ms())
    }

    pub fn purge_expired(&self) {
        let mut flags = write(&self.flags);
        flags.purge_expired(monotonic_ms());
    }
}
