//! Code that the Wasm edge and the origin must agree on, byte for byte.
//!
//! Everything here is pure: no I/O, no clocks, no async runtime. Time is
//! always passed in by the caller, so the edge (which reads `Date.now()`) and
//! the origin (which reads the system clock) share the same logic and the
//! same host-side tests.

pub mod api;
pub mod assets;
pub mod error_code;
pub mod flags;
pub mod ids;
pub mod keys;
pub mod rate_limit;
pub mod sale;
pub mod token;

pub use error_code::ErrorCode;
pub use ids::{MemberId, OrderId, ProductId};
