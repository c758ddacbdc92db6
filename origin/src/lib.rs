//! The flash-sale origin service.
//!
//! Layers point one way: `http` (routes, extractors, the one mapping from
//! failures to answers) calls `services` (buying, the order pipeline, the
//! order lifecycle, change capture, reconciliation), which call `store`
//! (the Redis gateways and the database), which builds on
//! `seckill-shared`. Around them sit what every layer may use: `clock`,
//! `metrics`, `shutdown`, `telemetry`, `backoff`, `locks`.
//!
//! Public, and why: `config`, `startup`, `shutdown` and `telemetry` are
//! what the binary (and the test app, which builds the same application
//! in-process) need; `store::redis::RESERVE_LUA` is the reserve script the
//! benchmark runs under `redis-benchmark`. Everything else is
//! `pub(crate)`: the HTTP contract, not these modules, is the interface.

mod backoff;
mod clock;
pub mod config;
mod history;
mod http;
mod locks;
mod metrics;
mod services;
pub mod shutdown;
pub mod startup;
mod store;
pub mod telemetry;

pub use store::redis::RESERVE_LUA;
