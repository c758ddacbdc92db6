//! What operators do with sales: create one, list them with their live
//! figures, edit or end one.
//!
//! A new sale is inserted and made live in Redis inside one database
//! transaction, so no sale ever exists in one store only. Edits are only
//! written to the database: the change-capture triggers record them and
//! the change relay carries them to Redis and every origin, exactly as an
//! edit made with plain SQL would travel.

use std::sync::Arc;

use seckill_shared::api::{AdminProductView, NewFlashSale, ProductView};
use seckill_shared::ProductId;

use super::catalog::product_view;
use super::sold_out::SoldOut;
use crate::clock::{unix_ms, unix_s};
use crate::store::db::products::{self, ProductRow};
use crate::store::db::{orders, Database};
use crate::store::redis::order_streams::OrderStreams;
use crate::store::redis::stock::Stock;
use crate::store::{StoreError, StoreResult};
use crate::telemetry::chain;

/// How many items the operations view lists (the newest).
const LISTED_ITEMS: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    #[error("no such product")]
    Unknown,
    /// The edit would make an invalid sale.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Sales {
    pub db: Database,
    pub stock: Stock,
    pub streams: OrderStreams,
    pub sold_out: Arc<SoldOut>,
}

impl Sales {
    /// Creates a flash sale, live in Redis when this returns. If Redis
    /// cannot be reached the insert is rolled back.
    pub async fn create(&self, sale: &NewFlashSale) -> StoreResult<ProductView> {
        let pending = products::insert(&self.db, sale, unix_ms() as i64).await?;
        let product = pending.row.product_id();
        self.stock.load_new(&pending.row).await?;
        let row = match pending.commit().await {
            Ok(row) => row,
            Err(err) => {
                // The id may be handed out again (SQLite reuses a rolled-back
                // AUTOINCREMENT value); load_new overwrites whatever is left,
                // but clear it now so nothing can be sold meanwhile.
                if let Err(cleanup) = self.stock.unload(product).await {
                    tracing::warn!(product = product.get(), error = %chain(&cleanup), "could not remove a rolled-back item from redis");
                }
                return Err(err);
            }
        };
        tracing::info!(
            product = row.id,
            stock = row.stock_total,
            "flash sale created"
        );
        Ok(product_view(&row, row.stock_available))
    }

    /// The newest items with their live figures: stock, order queue, orders
    /// by status, and this node's sold-out flag.
    pub async fn list(&self) -> StoreResult<Vec<AdminProductView>> {
        let rows = products::recent(&self.db, LISTED_ITEMS).await?;
        let ids: Vec<ProductId> = rows.iter().map(ProductRow::product_id).collect();
        let counts = orders::counts_by_status(&self.db, &ids).await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            let product = row.product_id();
            views.push(AdminProductView {
                product: self.live_view(&row).await?,
                queue: self.streams.stats(product).await?,
                orders: counts.get(&product).copied().unwrap_or_default(),
                sold_out_flag: self.sold_out.is_flagged(product),
            });
        }
        Ok(views)
    }

    /// Edits a sale: `edit` turns the current version into the new one
    /// (refusing with a reason), and the product as it now stands is
    /// returned.
    pub async fn edit(
        &self,
        product: ProductId,
        edit: impl FnOnce(&ProductRow) -> Result<NewFlashSale, String>,
    ) -> Result<ProductView, SaleError> {
        let current = products::get(&self.db, product)
            .await?
            .ok_or(SaleError::Unknown)?;
        let sale = edit(&current).map_err(SaleError::Invalid)?;
        let row = products::update(&self.db, product, &sale, unix_ms() as i64)
            .await?
            .ok_or(SaleError::Unknown)?;
        tracing::info!(
            product = row.id,
            revision = row.revision,
            "flash sale edited"
        );
        Ok(self.live_view(&row).await?)
    }

    /// Ends a sale now (a sale that has not started yet ends before it
    /// starts). The row stays: orders refer to it.
    pub async fn end(&self, product: ProductId) -> Result<ProductView, SaleError> {
        let now = unix_s() as i64;
        self.edit(product, |current| {
            let mut sale = NewFlashSale::try_from(current.as_create())?;
            sale.ends_at = sale.ends_at.min(now);
            sale.starts_at = sale.starts_at.min(sale.ends_at - 1);
            Ok(sale)
        })
        .await
    }

    async fn live_view(&self, row: &ProductRow) -> StoreResult<ProductView> {
        let stock_left = self
            .stock
            .stock_left(row.product_id())
            .await?
            .unwrap_or(row.stock_available);
        Ok(product_view(row, stock_left))
    }
}
