//! The pieces of `seckill-bench` that the end-to-end tests use too, so a
//! fault is injected the same way by a test and by the chaos soak, and the
//! invariants are checked by one audit.

pub mod audit;
pub mod proxy;
