//! Product reads, cached briefly in memory.
//!
//! During a countdown every buyer refreshes the product page; answering each
//! refresh from the database would make page views, not buys, the load. A
//! view (database row + live stock from Redis) is kept for
//! `SECKILL_PRODUCT_CACHE_MS` (default 250 ms), so `stock_left` lags by at
//! most that much, as the contract allows. Anything that learns of a change
//! (the change tail, the sold-out broadcast) drops the copy at once.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use seckill_shared::api::ProductView;
use seckill_shared::ProductId;

use super::preheat::Preheater;
use crate::clock::monotonic_ms;
use crate::locks::{read, write};
use crate::store::db::products::{self, ProductRow};
use crate::store::db::Database;
use crate::store::redis::stock::Stock;
use crate::store::StoreResult;
use crate::telemetry::chain;

struct Cached {
    fetched_ms: u64,
    view: Option<ProductView>,
}

pub struct Catalog {
    db: Database,
    stock: Stock,
    preheater: Preheater,
    ttl_ms: u64,
    views: RwLock<HashMap<ProductId, Cached>>,
}

/// Entries kept before the cache is emptied: ids are attacker-chosen.
const MAX_CACHED: usize = 10_000;

impl Catalog {
    pub fn new(db: Database, stock: Stock, preheater: Preheater, ttl: Duration) -> Self {
        Self {
            db,
            stock,
            preheater,
            ttl_ms: ttl.as_millis() as u64,
            views: RwLock::new(HashMap::new()),
        }
    }

    /// The product as `GET /api/products/{id}` shows it; `None` if unknown.
    pub async fn view(&self, product: ProductId) -> StoreResult<Option<ProductView>> {
        let now = monotonic_ms();
        if let Some(cached) = read(&self.views).get(&product) {
            if now.saturating_sub(cached.fetched_ms) < self.ttl_ms {
                return Ok(cached.view.clone());
            }
        }
        let view = self.load(product).await?;
        let mut views = write(&self.views);
        if views.len() >= MAX_CACHED {
            views.clear();
        }
        views.insert(
            product,
            Cached {
                fetched_ms: now,
                view: view.clone(),
            },
        );
        Ok(view)
    }

    /// Forgets a product so the next read sees a change at once.
    pub fn invalidate(&self, product: ProductId) {
        write(&self.views).remove(&product);
    }

    async fn load(&self, product: ProductId) -> StoreResult<Option<ProductView>> {
        let Some(row) = products::get(&self.db, product).await? else {
            return Ok(None);
        };
        let stock_left = match self.stock.stock_left(product).await? {
            Some(stock) => stock,
            None => {
                // Redis does not have it (lost its data, or the sale ended
                // before this origin started): load it if the sale is still
                // on, and show the database's figure meanwhile.
                if let Err(err) = self.preheater.ensure_live(product).await {
                    tracing::warn!(product = product.get(), error = %chain(&err), "preheat on read failed");
                }
                row.stock_available
            }
        };
        Ok(Some(product_view(&row, stock_left)))
    }
}

/// A row and its live stock as the API shows them.
pub fn product_view(row: &ProductRow, stock_left: i64) -> ProductView {
    let stock_left = stock_left.max(0);
    ProductView {
        product_id: row.product_id(),
        name: row.name.clone(),
        price_cents: row.price_cents,
        flash_price_cents: row.flash_price_cents,
        stock_total: row.stock_total,
        stock_left,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        sold_out: stock_left == 0,
        revision: row.revision,
    }
}
