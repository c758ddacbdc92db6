//! The services: what the origin does, above the stores and below HTTP.
//!
//! | service | does |
//! |---|---|
//! | `buy` (`sync_db`) | the buy decision and the result query |
//! | `catalog` | product reads, briefly cached |
//! | `sold_out` | sold-out flags on every node, in step through Redis |
//! | `preheat` | making the database's items live in Redis |
//! | `sales` | creating, listing, editing and ending sales |
//! | `pipeline` | order consumers: reservations become orders |
//! | `lifecycle` | payment, cancellation at the deadline, stock returns |
//! | `cdc` | catalogue changes relayed from the database to every cache |
//! | `reconcile` | checking (and repairing) Redis stock against the database |
//! | `operations` | readiness and scrape-time metrics |
//!
//! Background loops take the narrow context they use and stop on the
//! shared [`crate::shutdown::Shutdown`].

pub mod buy;
pub mod catalog;
pub mod cdc;
pub mod lifecycle;
pub mod operations;
pub mod pipeline;
pub mod preheat;
mod product_flags;
pub mod rate_limit;
pub mod reconcile;
pub mod sales;
pub mod sold_out;
pub mod sync_db;
