//! Builds the application from a configuration: the stores (database
//! migrated, Redis connecting lazily), the services wired to them, the
//! listener, the router and the background tasks. `main` runs it until a
//! signal; the test app builds it on port 0 against a test's own Redis and
//! database and reads back the port it got.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::{BuyMode, Config};
use crate::http::state::{AppState, Auth, Services};
use crate::metrics::Metrics;
use crate::services::buy::{BuyPath, Buying};
use crate::services::catalog::Catalog;
use crate::services::cdc;
use crate::services::cdc::leader::CdcContext;
use crate::services::lifecycle::poller::{self, PollerSettings};
use crate::services::lifecycle::{Lifecycle, StockReturns};
use crate::services::operations::Operations;
use crate::services::pipeline::{self, PipelineContext, PipelineSettings};
use crate::services::preheat::Preheater;
use crate::services::rate_limit::MemberRateLimiter;
use crate::services::reconcile::Reconciler;
use crate::services::sales::Sales;
use crate::services::sold_out::SoldOut;
use crate::services::sync_db::SyncDb;
use crate::shutdown::Shutdown;
use crate::store::db::Database;
use crate::store::redis::deadlines::PaymentDeadlines;
use crate::store::redis::leases::Leases;
use crate::store::redis::order_streams::OrderStreams;
use crate::store::redis::product_changes::ChangeStream;
use crate::store::redis::sold_out::SoldOutRegistry;
use crate::store::redis::stock::Stock;
use crate::store::redis::Redis;
use seckill_shared::rate_limit::RateLimit;

/// Expired in-memory flags are dropped this often, so the maps stay small.
const PURGE_INTERVAL: Duration = Duration::from_secs(10);
/// Deadlines claimed per poll.
const DEADLINE_BATCH: usize = 200;

/// Every gateway, connected once per process.
struct Stores {
    db: Database,
    redis: Redis,
    stock: Stock,
    streams: OrderStreams,
    deadlines: PaymentDeadlines,
}

impl Stores {
    async fn connect(config: &Config) -> anyhow::Result<Self> {
        let db = Database::connect(&config.database_url, config.db_max_connections)
            .await
            .context("DATABASE_URL: cannot open and migrate the database")?;
        let redis = Redis::new(&config.redis_target(), config.keys().clone()).context(
            if config.redis_cluster_nodes.is_some() {
                "REDIS_CLUSTER_NODES"
            } else {
                "REDIS_URL"
            },
        )?;
        Ok(Self {
            stock: Stock::new(redis.clone(), config.replica_acks()),
            streams: OrderStreams::new(redis.clone()),
            deadlines: PaymentDeadlines::new(redis.clone()),
            db,
            redis,
        })
    }

    fn sold_out(&self, config: &Config) -> Arc<SoldOut> {
        Arc::new(SoldOut::new(
            Duration::from_millis(config.soldout_ttl_ms),
            SoldOutRegistry::new(self.redis.clone()),
            self.stock.clone(),
        ))
    }

    fn lifecycle(&self, returns: StockReturns, metrics: &Arc<Metrics>) -> Lifecycle {
        Lifecycle::new(
            self.db.clone(),
            self.deadlines.clone(),
            returns,
            self.preheater(),
            metrics.clone(),
        )
    }

    fn preheater(&self) -> Preheater {
        Preheater::new(self.db.clone(), self.stock.clone(), self.deadlines.clone())
    }

    fn pipeline(
        &self,
        config: &Config,
        returns: StockReturns,
        metrics: &Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> Arc<PipelineContext> {
        Arc::new(PipelineContext {
            db: self.db.clone(),
            stock: self.stock.clone(),
            streams: self.streams.clone(),
            deadlines: self.deadlines.clone(),
            returns,
            settings: PipelineSettings {
                batch: config.consumer_batch.into(),
                claim_idle: Duration::from_millis(config.claim_idle_ms),
                max_deliveries: config.max_deliveries,
                pay_timeout: config.pay_timeout(),
                retention: Duration::from_millis(config.stream_retention_ms),
            },
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        })
    }
}

fn spawn_poller(
    tasks: &mut JoinSet<()>,
    config: &Config,
    lifecycle: Lifecycle,
    shutdown: &Shutdown,
) {
    if let Some(interval) = config.cancel_poll() {
        let settings = PollerSettings {
            interval,
            lease: Duration::from_millis(config.cancel_lease_ms),
            batch: DEADLINE_BATCH,
            sweep: config.sweep_interval(),
        };
        tasks.spawn(poller::sweep(lifecycle.clone(), settings, shutdown.clone()));
        tasks.spawn(poller::run(lifecycle, settings, shutdown.clone()));
    }
}

/// Waits for every background task to finish the unit of work it holds.
async fn join(mut tasks: JoinSet<()>) {
    while let Some(joined) = tasks.join_next().await {
        if let Err(err) = joined {
            tracing::error!(error = %err, "background task panicked");
        }
    }
}

/// The HTTP origin with its background tasks.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    tasks: JoinSet<()>,
    shutdown: Shutdown,
}

impl Application {
    pub async fn build(config: Config, shutdown: Shutdown) -> anyhow::Result<Self> {
        let stores = Stores::connect(&config).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("SECKILL_BIND: cannot listen on {}", config.bind))?;

        let metrics = Arc::new(Metrics::new());
        let sold_out = stores.sold_out(&config);
        let preheater = stores.preheater();
        let catalog = Arc::new(Catalog::new(
            stores.db.clone(),
            stores.stock.clone(),
            preheater.clone(),
            Duration::from_millis(config.product_cache_ms),
        ));
        let returns = StockReturns::new(stores.stock.clone(), sold_out.clone(), metrics.clone());
        let lifecycle = stores.lifecycle(returns.clone(), &metrics);
        let path = match config.mode {
            BuyMode::Reserve => BuyPath::Reserve,
            BuyMode::SyncDb => {
                BuyPath::SyncDb(SyncDb::new(stores.db.clone(), config.pay_timeout()))
            }
        };
        let buying = Buying::new(
            path,
            stores.stock.clone(),
            sold_out.clone(),
            preheater.clone(),
            MemberRateLimiter::new(RateLimit {
                burst: config.rate_limit_burst,
                per_second: f64::from(config.rate_limit_per_s),
            }),
            metrics.clone(),
        );
        let reconciler = Arc::new(Reconciler {
            db: stores.db.clone(),
            stock: stores.stock.clone(),
            streams: stores.streams.clone(),
            sold_out: sold_out.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
        });

        let mut tasks = JoinSet::new();
        if config.mode == BuyMode::Reserve {
            let starting = preheater.clone();
            let stopping = shutdown.clone();
            tasks.spawn(async move { starting.load_all_with_retry(stopping).await });
            pipeline::spawn_consumers(
                stores.pipeline(&config, returns.clone(), &metrics, &shutdown),
                config.consumers.into(),
                &mut tasks,
            )?;
            spawn_poller(&mut tasks, &config, lifecycle.clone(), &shutdown);
            if let Some(interval) = config.soldout_check() {
                tasks.spawn(
                    sold_out
                        .clone()
                        .verify_periodically(interval, shutdown.clone()),
                );
            }
            tasks.spawn(sold_out.clone().follow(
                catalog.clone(),
                preheater.clone(),
                shutdown.clone(),
            ));
            let changes = ChangeStream::new(stores.redis.clone());
            if let Some(poll) = config.cdc_poll() {
                let ctx = CdcContext {
                    db: stores.db.clone(),
                    leases: Leases::new(stores.redis.clone()),
                    changes: changes.clone(),
                    stock: stores.stock.clone(),
                    preheater: preheater.clone(),
                    sold_out: sold_out.clone(),
                    catalog: catalog.clone(),
                    metrics: metrics.clone(),
                    shutdown: shutdown.clone(),
                };
                tasks.spawn(cdc::leader::run(ctx, poll));
            }
            tasks.spawn(cdc::tail::run(changes, catalog.clone(), shutdown.clone()));
            if let Some(interval) = config.reconcile_interval() {
                tasks.spawn(
                    reconciler
                        .clone()
                        .run_periodically(interval, shutdown.clone()),
                );
            }
        }

        let state = AppState::new(Services {
            auth: Auth {
                token_secret: config.token_secret.clone(),
                admin_token: config.admin_token.clone(),
                demo_sessions: config
                    .demo_login
                    .then(|| Duration::from_secs(config.session_ttl_s)),
            },
            sales: Sales {
                db: stores.db.clone(),
                stock: stores.stock.clone(),
                streams: stores.streams.clone(),
                sold_out: sold_out.clone(),
            },
            operations: Operations {
                redis: stores.redis.clone(),
                db: stores.db.clone(),
                stock: stores.stock.clone(),
                streams: stores.streams.clone(),
                sold_out: sold_out.clone(),
                metrics: metrics.clone(),
            },
            buying,
            catalog,
            sold_out,
            lifecycle,
            reconciler,
            metrics,
        });
        let purging = state.clone();
        let stopping = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(PURGE_INTERVAL);
            while stopping.tick(&mut tick).await {
                purging.buying.purge_expired();
            }
        });
        Ok(Self {
            listener,
            state,
            tasks,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until shutdown, then lets every background task finish the
    /// unit of work it holds.
    pub async fn run(self) -> anyhow::Result<()> {
        let server = axum::serve(self.listener, crate::http::router(self.state))
            .with_graceful_shutdown(self.shutdown.triggered_owned());
        let served = server.await.context("HTTP server failed");
        self.shutdown.trigger();
        join(self.tasks).await;
        tracing::info!("stopped");
        served
    }
}

/// `seckill-origin worker`: order consumers and the deadline poller, no
/// HTTP, so order writing can be scaled (and restarted) apart from the buy
/// path.
pub struct Worker {
    tasks: JoinSet<()>,
    consumers: usize,
}

impl Worker {
    pub async fn build(config: Config, shutdown: Shutdown) -> anyhow::Result<Self> {
        let stores = Stores::connect(&config).await?;
        let metrics = Arc::new(Metrics::new());
        let returns = StockReturns::new(
            stores.stock.clone(),
            stores.sold_out(&config),
            metrics.clone(),
        );
        let consumers = usize::from(config.consumers).max(1);
        let mut tasks = JoinSet::new();
        pipeline::spawn_consumers(
            stores.pipeline(&config, returns.clone(), &metrics, &shutdown),
            consumers,
            &mut tasks,
        )?;
        spawn_poller(
            &mut tasks,
            &config,
            stores.lifecycle(returns, &metrics),
            &shutdown,
        );
        Ok(Self { tasks, consumers })
    }

    pub fn consumers(&self) -> usize {
        self.consumers
    }

    /// Runs the consumers until shutdown; each finishes the batch it holds.
    pub async fn run(self) -> anyhow::Result<()> {
        join(self.tasks).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}
