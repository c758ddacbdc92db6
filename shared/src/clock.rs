//! The wall clock in the units the contract stores: unix seconds and
//! milliseconds. For host programs only (origin, load generator, tests):
//! the edge reads `Date.now()`, because `wasm32-unknown-unknown` has no
//! system clock, so this module is not compiled there.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whole seconds since the Unix epoch.
pub fn unix_s() -> u64 {
    unix_ms() / 1_000
}
