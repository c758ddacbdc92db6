//! Flash items (the API's products): the catalogue the sale is preheated
//! from, and what a sale's stock is reconciled against.

use seckill_shared::api::{CreateProduct, NewFlashSale};
use seckill_shared::ProductId;
use sqlx::{Any, FromRow, Transaction};

use super::Database;
use crate::store::StoreResult;

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

    /// The row as the body that would create it (the base of an edit).
    pub fn as_create(&self) -> CreateProduct {
        CreateProduct {
            name: self.name.clone(),
            price_cents: self.price_cents,
            flash_price_cents: self.flash_price_cents,
            stock: self.stock_total,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        }
    }
}

const COLUMNS: &str = "id, name, price_cents, flash_price_cents, stock_total, stock_available, starts_at, ends_at, updated_at_ms, revision";

/// A sale inserted in a transaction that is not committed yet: dropping it
/// rolls the insert back.
pub struct PendingProduct {
    tx: Transaction<'static, Any>,
    pub row: ProductRow,
}

impl PendingProduct {
    pub async fn commit(self) -> StoreResult<ProductRow> {
        self.tx.commit().await?;
        Ok(self.row)
    }
}

/// Binds a sale's columns in the order `insert` and `update` name them:
/// name, price, flash price, stock, window.
fn bind_sale<'q, O>(
    query: sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>>,
    sale: &'q NewFlashSale,
) -> sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&sale.name)
        .bind(sale.price_cents)
        .bind(sale.flash_price_cents)
        .bind(sale.stock)
        .bind(sale.starts_at)
        .bind(sale.ends_at)
}

/// Inserts a sale without committing, so the caller can make it live in
/// Redis first and commit only if that worked.
pub async fn insert(
    db: &Database,
    sale: &NewFlashSale,
    now_ms: i64,
) -> StoreResult<PendingProduct> {
    let mut tx = db.begin().await?;
    let sql = format!(
        "INSERT INTO products (name, price_cents, flash_price_cents, stock_total, starts_at, ends_at, stock_available, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $4, $7, $7) RETURNING {COLUMNS}"
    );
    let row = bind_sale(sqlx::query_as::<_, ProductRow>(&sql), sale)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
    Ok(PendingProduct { tx, row })
}

pub async fn get(db: &Database, product: ProductId) -> StoreResult<Option<ProductRow>> {
    let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
    Ok(sqlx::query_as::<_, ProductRow>(&sql)
        .bind(product.get())
        .fetch_optional(&db.pool)
        .await?)
}

/// A product's unsold stock as the database counts it, and whether a
/// captured change of it is not yet fully applied (not relayed, or a stock
/// edit whose units have not yet moved in the database): read in one
/// statement, so the two describe the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockOnRecord {
    pub stock_available: i64,
    pub change_in_flight: bool,
}

pub async fn stock_on_record(
    db: &Database,
    product: ProductId,
) -> StoreResult<Option<StockOnRecord>> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT p.stock_available, (SELECT COUNT(*) FROM product_changes c WHERE c.product_id = p.id \
           AND (c.relayed_at_ms IS NULL \
                OR (c.op = 'update' AND c.stock_applied IS NULL \
                    AND COALESCE(c.old_stock_total, -1) <> COALESCE(c.new_stock_total, -1)))) \
         FROM products p WHERE p.id = $1",
    )
    .bind(product.get())
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|(stock_available, in_flight)| StockOnRecord {
        stock_available,
        change_in_flight: in_flight > 0,
    }))
}

/// Items whose sale has not ended: the ones whose stock must be live in Redis.
pub async fn not_ended(db: &Database, now_s: i64) -> StoreResult<Vec<ProductRow>> {
    let sql = format!("SELECT {COLUMNS} FROM products WHERE ends_at > $1 ORDER BY id");
    Ok(sqlx::query_as::<_, ProductRow>(&sql)
        .bind(now_s)
        .fetch_all(&db.pool)
        .await?)
}

/// What Redis needs to rebuild an item it lost, or to catch up with the
/// database after its shard went back to older data (a stale replica
/// promoted), from what the database knows: its unsold stock, the live
/// orders (member, order, reservation number), the highest reservation
/// number used, the reservations whose unit already went back (cancelled
/// orders, rejected reservations), and the unpaid orders' deadlines. All
/// read from one snapshot: a cancellation committed between two of the
/// reads would otherwise leave the unit counted neither in the stock nor
/// as still to come back (and its member held).
#[derive(Debug, Default)]
pub struct LiveOrders {
    /// `None`: the row is gone.
    pub stock_available: Option<i64>,
    pub live: Vec<LiveOrder>,
    pub max_seq: i64,
    pub returned: Vec<ReturnedReservation>,
    /// `(order, deadline ms)`.
    pub unpaid_deadlines: Vec<(i64, i64)>,
}

/// An order that is not cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveOrder {
    pub member: i64,
    pub order: i64,
    pub seq: i64,
}

/// A reservation whose unit the database counts as unsold again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnedReservation {
    pub seq: i64,
    pub member: i64,
    /// The cancelled order; `None` for a rejected reservation.
    pub order: Option<i64>,
}

pub async fn live_orders(db: &Database, product: ProductId) -> StoreResult<LiveOrders> {
    let mut tx = db.begin().await?;
    if db.backend() == super::Backend::Postgres {
        // One snapshot for every read below (SQLite's transaction is one).
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
    }
    let stock: Option<(i64,)> =
        sqlx::query_as("SELECT stock_available FROM products WHERE id = $1")
            .bind(product.get())
            .fetch_optional(&mut *tx)
            .await?;
    let live: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT member_id, id, reservation_seq FROM orders WHERE product_id = $1 AND status <> 'cancelled'",
    )
    .bind(product.get())
    .fetch_all(&mut *tx)
    .await?;
    let returned: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT reservation_seq, member_id, id FROM orders WHERE product_id = $1 AND status = 'cancelled' \
         UNION ALL SELECT reservation_seq, member_id, NULL FROM rejected_reservations WHERE product_id = $1",
    )
    .bind(product.get())
    .fetch_all(&mut *tx)
    .await?;
    let live = LiveOrders {
        stock_available: stock.map(|(s,)| s),
        live: live
            .into_iter()
            .map(|(member, order, seq)| LiveOrder { member, order, seq })
            .collect(),
        max_seq: max_seq_in(&mut *tx, product).await?,
        returned: returned
            .into_iter()
            .map(|(seq, member, order)| ReturnedReservation { seq, member, order })
            .collect(),
        unpaid_deadlines: super::orders::unpaid_deadlines(&mut *tx, product).await?,
    };
    tx.commit().await?;
    Ok(live)
}

/// The highest reservation number the database has seen for the product,
/// in an order or a rejection: Redis must never hand out one at or below it
/// again.
pub async fn max_reservation_seq(db: &Database, product: ProductId) -> StoreResult<i64> {
    max_seq_in(&db.pool, product).await
}

async fn max_seq_in<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    product: ProductId,
) -> StoreResult<i64> {
    let (max_seq,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(MAX(seq), 0) FROM (\
           SELECT MAX(reservation_seq) AS seq FROM orders WHERE product_id = $1 \
           UNION ALL SELECT MAX(reservation_seq) FROM rejected_reservations WHERE product_id = $1\
         ) AS used",
    )
    .bind(product.get())
    .fetch_one(executor)
    .await?;
    Ok(max_seq)
}

/// The most recent `limit` items, newest first.
pub async fn recent(db: &Database, limit: i64) -> StoreResult<Vec<ProductRow>> {
    let sql = format!("SELECT {COLUMNS} FROM products ORDER BY id DESC LIMIT $1");
    Ok(sqlx::query_as::<_, ProductRow>(&sql)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?)
}

/// Writes an edited sale and returns the row as it then stands. Only the
/// edited columns are named, so the change-capture triggers see exactly
/// what changed; the row is read back after the statement because on
/// SQLite the trigger that bumps `revision` runs after `RETURNING` would
/// have answered.
pub async fn update(
    db: &Database,
    product: ProductId,
    sale: &NewFlashSale,
    now_ms: i64,
) -> StoreResult<Option<ProductRow>> {
    let mut tx = db.begin().await?;
    let updated = bind_sale(
        sqlx::query_as::<_, (i64,)>(
            "UPDATE products SET name = $1, price_cents = $2, flash_price_cents = $3, stock_total = $4, \
             starts_at = $5, ends_at = $6, updated_at_ms = $7 WHERE id = $8 RETURNING id",
        ),
        sale,
    )
    .bind(now_ms)
    .bind(product.get())
    .fetch_optional(&mut *tx)
    .await?;
    if updated.is_none() {
        return Ok(None);
    }
    let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
    let row = sqlx::query_as::<_, ProductRow>(&sql)
        .bind(product.get())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}
