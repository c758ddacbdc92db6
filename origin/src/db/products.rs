//! Flash items (the API's products): the catalogue the sale is preheated from.

use seckill_shared::api::NewFlashSale;
use seckill_shared::ProductId;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Executor, FromRow};

/// `stock_total` is the flash-sale stock as configured; `stock_available`
/// is what the database believes is still unsold (total minus live orders),
/// which is what Redis is preheated from and reconciled against.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ProductRow {
    pub id: i64,
    pub name: String,
    pub price_cents: i64,
    pub flash_price_cents: i64,
    pub stock_total: i64,
    pub stock_available: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub updated_at_ms: i64,
    pub revision: i64,
}

impl ProductRow {
    pub fn product_id(&self) -> ProductId {
        ProductId::new(self.id).expect("database ids are positive")
    }
}

const COLUMNS: &str = "id, name, price_cents, flash_price_cents, stock_total, stock_available, starts_at, ends_at, updated_at_ms, revision";

pub async fn insert<'e, E>(
    executor: E,
    sale: &NewFlashSale,
    now_ms: i64,
) -> Result<ProductRow, sqlx::Error>
where
    E: Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "INSERT INTO products (name, price_cents, flash_price_cents, stock_total, stock_available, starts_at, ends_at, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $7) RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, ProductRow>(&sql)
        .bind(&sale.name)
        .bind(sale.price_cents)
        .bind(sale.flash_price_cents)
        .bind(sale.stock)
        .bind(sale.starts_at)
        .bind(sale.ends_at)
        .bind(now_ms)
        .fetch_one(executor)
        .await
}

pub async fn get(pool: &AnyPool, product: ProductId) -> Result<Option<ProductRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
    sqlx::query_as::<_, ProductRow>(&sql)
        .bind(product.get())
        .fetch_optional(pool)
        .await
}

/// Items whose sale has not ended: the ones whose stock must be live in Redis.
pub async fn not_ended(pool: &AnyPool, now_s: i64) -> Result<Vec<ProductRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM products WHERE ends_at > $1 ORDER BY id");
    sqlx::query_as::<_, ProductRow>(&sql)
        .bind(now_s)
        .fetch_all(pool)
        .await
}

/// What Redis needs to rebuild an item it lost: the members holding a live
/// order and the highest reservation number already used.
#[derive(Debug, Default)]
pub struct LiveOrders {
    pub member_orders: Vec<(i64, i64)>,
    pub max_seq: i64,
}

pub async fn live_orders(pool: &AnyPool, product: ProductId) -> Result<LiveOrders, sqlx::Error> {
    let rows: Vec<AnyRow> = sqlx::query(
        "SELECT member_id, id FROM orders WHERE product_id = $1 AND status <> 'cancelled'",
    )
    .bind(product.get())
    .fetch_all(pool)
    .await?;
    let member_orders = rows
        .iter()
        .map(|row| {
            use sqlx::Row;
            Ok((row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (max_seq,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(MAX(reservation_seq), 0) FROM orders WHERE product_id = $1",
    )
    .bind(product.get())
    .fetch_one(pool)
    .await?;
    Ok(LiveOrders {
        member_orders,
        max_seq,
    })
}

/// The most recent `limit` items, newest first.
pub async fn recent(pool: &AnyPool, limit: i64) -> Result<Vec<ProductRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM products ORDER BY id DESC LIMIT $1");
    sqlx::query_as::<_, ProductRow>(&sql)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Writes an edited sale. Only the edited columns are named, so the
/// change-capture triggers see exactly what changed.
pub async fn update(
    pool: &AnyPool,
    product: ProductId,
    sale: &NewFlashSale,
    now_ms: i64,
) -> Result<Option<ProductRow>, sqlx::Error> {
    let sql = format!(
        "UPDATE products SET name = $2, price_cents = $3, flash_price_cents = $4, stock_total = $5, \
         starts_at = $6, ends_at = $7, updated_at_ms = $8 WHERE id = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, ProductRow>(&sql)
        .bind(product.get())
        .bind(&sale.name)
        .bind(sale.price_cents)
        .bind(sale.flash_price_cents)
        .bind(sale.stock)
        .bind(sale.starts_at)
        .bind(sale.ends_at)
        .bind(now_ms)
        .fetch_optional(pool)
        .await
}

impl ProductRow {
    /// The row as the body that would create it (the base of an edit).
    pub fn as_create(&self) -> seckill_shared::api::CreateProduct {
        seckill_shared::api::CreateProduct {
            name: self.name.clone(),
            price_cents: self.price_cents,
            flash_price_cents: self.flash_price_cents,
            stock: self.stock_total,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        }
    }
}
