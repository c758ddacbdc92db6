//! Code that the Wasm edge and the origin must agree on, byte for byte.
//!
//! Everything here is pure: no I/O, no async runtime, and time is always
//! passed in by the caller, so the edge (which reads `Date.now()`) and the
//! origin (which reads the system clock) share the same logic and the same
//! host-side tests. The one exception is `clock`, the host programs' system
//! clock, which is not compiled for the edge.

pub mod api;
pub mod assets;
#[cfg(not(target_arch = "wasm32"))]
pub mod clock;
pub mod error_code;
pub mod flags;
pub mod ids;
pub mod keys;
pub mod rate_limit;
pub mod records;
pub mod sale;
pub mod token;

pub use error_code::ErrorCode;
pub use ids::{MemberId, OrderId, ProductId};
