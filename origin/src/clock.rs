//! Time in the units the system stores, and a monotonic clock.
//!
//! Unix seconds and milliseconds (from `seckill_shared::clock`) go to the
//! database, tokens and the API; the monotonic millisecond counter drives
//! in-memory expiries (flags, rate limits, caches), which must not jump
//! when the wall clock is corrected.

use std::sync::OnceLock;
use std::time::Instant;

pub use seckill_shared::clock::{unix_ms, unix_s};

/// Milliseconds since this process first asked; never goes backwards.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
