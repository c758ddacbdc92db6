//! Wall-clock and monotonic time in the units the system stores.
//!
//! Unix seconds and milliseconds go to the database, tokens and the API;
//! the monotonic millisecond counter drives in-memory expiries (flags, rate
//! limits, caches), which must not jump when the wall clock is corrected.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn unix_s() -> u64 {
    unix_ms() / 1_000
}

/// Milliseconds since this process first asked; never goes backwards.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
