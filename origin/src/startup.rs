//! Builds the application from a configuration: database (migrated), Redis
//! handle, listener, router and background tasks. `main` runs it until a
//! signal; a test can build it on port 0 and read the port it got.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{BuyMode, Config};
use crate::db::Database;
use crate::inventory::Inventory;
use crate::lifecycle::poller::{self, PollerSettings};
use crate::lifecycle::{sold_out_sync, Lifecycle};
use crate::metrics::Metrics;
use crate::pipeline::{self, PipelineContext, PipelineSettings};
use crate::routes;
use crate::state::AppState;
use crate::{cdc, reconcile};

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let (db, inventory) = connect_stores(&config).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("SECKILL_BIND: cannot listen on {}", config.bind))?;
        let state = AppState::new(config, db, inventory, shutdown);
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token is cancelled, then lets every
    /// background task finish the unit of work it holds.
    pub async fn run(self) -> anyhow::Result<()> {
        let state = self.state;
        let shutdown = state.shutdown.clone();
        let mut tasks = JoinSet::new();
        spawn_background(&mut tasks, &state)?;

        let server = axum::serve(self.listener, routes::router(state.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let served = server.await.context("HTTP server failed");
        shutdown.cancel();
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "background task panicked");
            }
        }
        tracing::info!("stopped");
        served
    }
}

/// The database (migrated) and the Redis handle (connects lazily).
async fn connect_stores(config: &Config) -> anyhow::Result<(Database, Inventory)> {
    let db = Database::connect(&config.database_url, config.db_max_connections)
        .await
        .context("DATABASE_URL: cannot open and migrate the database")?;
    let inventory = Inventory::new(&config.redis_url, config.keys.clone()).context("REDIS_URL")?;
    Ok((db, inventory))
}

fn spawn_background(tasks: &mut JoinSet<()>, state: &AppState) -> anyhow::Result<()> {
    if state.config.buy_mode == BuyMode::Reserve {
        let preheater = state.preheater.clone();
        let shutdown = state.shutdown.clone();
        tasks.spawn(async move { preheater.load_all_with_retry(shutdown).await });
        let ctx = Arc::new(PipelineContext {
            db: state.db.clone(),
            inventory: state.inventory.clone(),
            settings: PipelineSettings::from_config(&state.config),
            metrics: state.metrics.clone(),
            shutdown: state.shutdown.clone(),
        });
        pipeline::spawn_consumers(ctx, state.config.consumers, tasks)?;
        spawn_poller(
            tasks,
            &state.config,
            state.lifecycle.clone(),
            state.shutdown.clone(),
        );
        let (sync_state, redis_url) = (state.clone(), state.config.redis_url.clone());
        let shutdown = state.shutdown.clone();
        tasks.spawn(async move { sold_out_sync::run(sync_state, redis_url, shutdown).await });
        if let Some(poll) = state.config.cdc_poll {
            tasks.spawn(cdc::leader::run(state.clone(), poll));
        }
        tasks.spawn(cdc::tail::run(state.clone()));
        if let Some(interval) = state.config.reconcile_interval {
            tasks.spawn(reconcile::run_periodically(state.clone(), interval));
        }
    }

    // Expired flags are dropped now and then so the maps stay small.
    let purge_state = state.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = purge_state.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    purge_state.sold_out.purge_expired();
                    purge_state.unknown_products.purge_expired();
                }
            }
        }
    });
    Ok(())
}

fn spawn_poller(
    tasks: &mut JoinSet<()>,
    config: &Config,
    lifecycle: Lifecycle,
    shutdown: CancellationToken,
) {
    if let Some(interval) = config.cancel_poll {
        let settings = PollerSettings {
            interval,
            lease: config.cancel_lease,
            batch: 200,
        };
        tasks.spawn(poller::run(lifecycle, settings, shutdown));
    }
}

/// `seckill-origin worker`: order consumers and the deadline poller, no
/// HTTP, so order writing can be scaled (and restarted) apart from the buy
/// path.
pub struct Worker {
    ctx: Arc<PipelineContext>,
    consumers: usize,
    config: Config,
}

impl Worker {
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let (db, inventory) = connect_stores(&config).await?;
        let ctx = Arc::new(PipelineContext {
            db,
            inventory,
            settings: PipelineSettings::from_config(&config),
            metrics: Arc::new(Metrics::new()),
            shutdown,
        });
        Ok(Self {
            ctx,
            consumers: config.consumers.max(1),
            config,
        })
    }

    pub fn consumers(&self) -> usize {
        self.consumers
    }

    /// Runs the consumers until shutdown; each finishes the batch it holds.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut tasks = JoinSet::new();
        pipeline::spawn_consumers(self.ctx.clone(), self.consumers, &mut tasks)?;
        let lifecycle = Lifecycle {
            db: self.ctx.db.clone(),
            inventory: self.ctx.inventory.clone(),
            metrics: self.ctx.metrics.clone(),
        };
        spawn_poller(
            &mut tasks,
            &self.config,
            lifecycle,
            self.ctx.shutdown.clone(),
        );
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "consumer task panicked");
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}
