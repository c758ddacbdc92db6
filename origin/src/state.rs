//! What every handler and background task shares.

use std::ops::Deref;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::db::Database;
use crate::inventory::Inventory;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::preheat::Preheater;
use crate::product_flags::ProductFlags;
use crate::rate_limit::MemberRateLimiter;

/// How long an id the database does not know is remembered as unknown.
pub const UNKNOWN_PRODUCT_TTL_MS: u64 = 1_000;

pub struct Shared {
    pub config: Config,
    pub db: Database,
    pub inventory: Inventory,
    pub preheater: Preheater,
    pub catalog: Catalog,
    pub sold_out: ProductFlags,
    pub unknown_products: ProductFlags,
    pub rate_limiter: MemberRateLimiter,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Lifecycle,
    pub shutdown: CancellationToken,
}

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(
        config: Config,
        db: Database,
        inventory: Inventory,
        shutdown: CancellationToken,
    ) -> Self {
        let preheater = Preheater::new(db.clone(), inventory.clone());
        let catalog = Catalog::new(
            db.clone(),
            inventory.clone(),
            preheater.clone(),
            config.product_cache_ttl,
        );
        let metrics = Arc::new(Metrics::new());
        let lifecycle = Lifecycle {
            db: db.clone(),
            inventory: inventory.clone(),
            metrics: metrics.clone(),
        };
        Self(Arc::new(Shared {
            sold_out: ProductFlags::new(config.sold_out_flag_ttl.as_millis() as u64),
            unknown_products: ProductFlags::new(UNKNOWN_PRODUCT_TTL_MS),
            rate_limiter: MemberRateLimiter::new(config.rate_limit),
            metrics,
            lifecycle,
            config,
            db,
            inventory,
            preheater,
            catalog,
            shutdown,
        }))
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
