//! The flash-sale origin service.
//!
//! `startup` assembles the application (used by `main` and by tests that
//! need an origin in-process); `routes` is the HTTP contract; `inventory`
//! owns the Redis side of stock; `db` the database side. Background work
//! (preheat, and the order pipeline and lifecycle loops) runs as tasks that
//! stop on the shared shutdown token.

pub mod catalog;
pub mod cdc;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod inventory;
pub mod lifecycle;
pub mod metrics;
pub mod pipeline;
pub mod preheat;
pub mod product_flags;
pub mod rate_limit;
pub mod reconcile;
pub mod routes;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod sync_db;
pub mod telemetry;
