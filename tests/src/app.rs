//! The origin built in this test process, as `main` builds it, on port 0
//! against a test's own redis-server and database: for contract, bad-input
//! and single-node tests, which need no process of their own. Tests that
//! kill, restart or cut an origin start a real process instead
//! (`crate::origin`).

use std::net::SocketAddr;

use seckill_origin::config::{Cli, Config};
use seckill_origin::shutdown::Shutdown;
use seckill_origin::startup::{Application, Worker};
use tokio::task::JoinHandle;

use crate::client::Api;
use crate::database::TestDatabase;
use crate::redis_cluster::TestRedis;

/// Settings of a test app, as `(VARIABLE, value)` pairs on top of the
/// defaults every test app has: port 0, the test secrets, demo login on.
#[derive(Debug, Clone, Default)]
pub struct AppSettings(Vec<(String, String)>);

impl AppSettings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or overrides) one setting by its variable name.
    pub fn set(mut self, var: &str, value: impl ToString) -> Self {
        self.0.retain(|(k, _)| k != var);
        self.0.push((var.to_string(), value.to_string()));
        self
    }

    /// No background loops (no order consumers, deadline poller, change
    /// relay, reconciliation or sold-out check): the order stream keeps
    /// every reservation for the test to count, and Redis sees only what
    /// requests cause.
    pub fn quiet(self) -> Self {
        self.set("SECKILL_CONSUMERS", 0)
            .set("SECKILL_CANCEL_POLL_MS", 0)
            .set("SECKILL_CDC_POLL_MS", 0)
            .set("SECKILL_RECONCILE_INTERVAL_S", 0)
            .set("SECKILL_SOLDOUT_CHECK_MS", 0)
    }

    /// The configuration of a test app: the defaults, then `settings`.
    fn config(self, redis_url: &str, db: &TestDatabase) -> Config {
        let mut vars: Vec<(String, String)> = [
            ("SECKILL_BIND", "127.0.0.1:0"),
            ("REDIS_URL", redis_url),
            ("DATABASE_URL", db.url()),
            ("SECKILL_TOKEN_SECRET", crate::TOKEN_SECRET),
            ("SECKILL_ADMIN_TOKEN", crate::ADMIN_TOKEN),
            ("SECKILL_DEMO_LOGIN", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        vars.retain(|(k, _)| !self.0.iter().any(|(var, _)| var == k));
        vars.extend(self.0);
        Cli::from_vars(vars)
            .unwrap_or_else(|err| panic!("test app settings: {err}"))
            .config
    }
}

/// A running in-process origin; stopped when dropped.
pub struct TestApp {
    addr: SocketAddr,
    shutdown: Shutdown,
    served: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Builds and starts the origin on the Redis at `redis_url` and `db`.
    pub async fn start(redis_url: String, db: &TestDatabase, settings: AppSettings) -> Self {
        let config = settings.config(&redis_url, db);
        let shutdown = Shutdown::new();
        let app = Application::build(config, shutdown.clone())
            .await
            .unwrap_or_else(|err| panic!("the test app cannot start: {err:#}"));
        let addr = app.local_addr();
        let served = tokio::spawn(app.run());
        Self {
            addr,
            shutdown,
            served: Some(served),
        }
    }

    /// Builds and starts the origin on `redis` (one Redis or a cluster).
    pub async fn start_on(redis: &TestRedis, db: &TestDatabase, settings: AppSettings) -> Self {
        Self::start(redis.url(), db, redis.settings(settings)).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url())
    }

    /// Stops it as SIGTERM would: requests in flight finish, background
    /// tasks finish the unit of work they hold.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(served) = self.served.take() {
            served
                .await
                .expect("the test app panicked")
                .expect("the test app failed");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// `seckill-origin worker` (order consumers and the deadline poller) built
/// in-process; stopped when dropped.
pub struct TestWorker {
    shutdown: Shutdown,
}

impl TestWorker {
    pub async fn start(redis_url: String, db: &TestDatabase, settings: AppSettings) -> Self {
        let config = settings.config(&redis_url, db);
        let shutdown = Shutdown::new();
        let worker = Worker::build(config, shutdown.clone())
            .await
            .unwrap_or_else(|err| panic!("the test worker cannot start: {err:#}"));
        tokio::spawn(worker.run());
        Self { shutdown }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
