//! Helpers for end-to-end tests that run the real thing.
//!
//! Each test starts its own `redis-server` on a free loopback port (so it can
//! kill and restart it), or its own Redis Cluster (`redis_cluster`), its own database (an SQLite file, or a uniquely
//! named PostgreSQL database on the machine's server), and the origin:
//! built in the test process (`app`) unless the test kills, restarts or
//! cuts it, then as a real `seckill-origin` process (`origin`). Nothing is
//! mocked. A missing service fails the test with a message saying how to
//! install it; nothing is skipped.

pub mod app;
pub mod browser;
pub mod checks;
pub mod client;
pub mod database;
pub mod edge;
pub mod origin;
pub mod paths;
pub mod proxy;
pub mod redis_cluster;
pub mod redis_server;

pub use app::{AppSettings, TestApp, TestWorker};
pub use client::{Api, Sale};
pub use database::{Backend, TestDatabase};
pub use edge::Edge;
pub use origin::{Origin, OriginOptions};
pub use redis_cluster::{RedisBackend, RedisCluster, TestRedis};
pub use redis_server::RedisServer;

/// The token secret and admin token every test origin is started with.
pub const TOKEN_SECRET: &str = "test-token-secret-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A free TCP port on 127.0.0.1 (released before it is returned, so a
/// process started right after can bind it).
pub fn free_port() -> u16 {
    seckill_bench::free_port().expect("cannot find a free port on 127.0.0.1")
}

/// A short random suffix for names that must not collide between tests.
pub fn unique_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..10)
        .map(|_| (b'a' + rng.random_range(0..26)) as char)
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One test per setup of a suite written once as `async fn suite(args)`:
///
/// ```text
/// variants!(exact_sell_out {
///     sqlite: (Backend::Sqlite, RedisBackend::Single),
///     postgres_on_a_cluster: (Backend::Postgres, RedisBackend::Cluster),
/// });
/// ```
///
/// makes the tests `exact_sell_out::sqlite` and
/// `exact_sell_out::postgres_on_a_cluster`, each on a two-thread runtime
/// like every other test here.
#[macro_export]
macro_rules! variants {
    ($suite:ident { $($variant:ident: ($($arg:expr),* $(,)?)),+ $(,)? }) => {
        mod $suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $variant() {
                    super::$suite($($arg),*).await;
                }
            )+
        }
    };
}
