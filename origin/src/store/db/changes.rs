//! The change log the capture triggers write (`product_changes`), as the
//! relay and the refresh read and mark it.

use seckill_shared::records::{ChangeOp, ChangeRecord};
use seckill_shared::ProductId;
use sqlx::FromRow;

use super::Database;
use crate::store::StoreResult;

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
struct ChangeRow {
    id: i64,
    product_id: i64,
    op: String,
    old_stock_total: Option<i64>,
    new_stock_total: Option<i64>,
}

/// A change log row: its id, and the record if the row is readable.
pub type LoggedChange = (i64, Option<ChangeRecord>);

/// The oldest changes not yet relayed, in order, and stock edits relayed
/// before `stale_before_ms` that are still not applied (their stream entry
/// was lost with Redis' data): relaying one again is harmless, since a
/// stock edit is applied once per change id.
pub async fn unrelayed(
    db: &Database,
    limit: i64,
    stale_before_ms: i64,
) -> StoreResult<Vec<LoggedChange>> {
    let rows = sqlx::query_as::<_, ChangeRow>(
        "SELECT id, product_id, op, old_stock_total, new_stock_total \
         FROM product_changes WHERE relayed_at_ms IS NULL \
            OR (op = 'update' AND stock_applied IS NULL AND relayed_at_ms < $2 \
                AND COALESCE(old_stock_total, -1) <> COALESCE(new_stock_total, -1) \
                AND EXISTS (SELECT 1 FROM products p WHERE p.id = product_changes.product_id)) \
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .bind(stale_before_ms)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.record())).collect())
}

impl ChangeRow {
    fn record(&self) -> Option<ChangeRecord> {
        Some(ChangeRecord {
            change: self.id,
            product: ProductId::new(self.product_id).ok()?,
            op: ChangeOp::parse(&self.op)?,
            old_stock_total: self.old_stock_total,
            new_stock_total: self.new_stock_total,
        })
    }
}

pub async fn mark_relayed(db: &Database, ids: &[i64], now_ms: i64) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE product_changes SET relayed_at_ms = $1 WHERE id IN ({})",
        super::placeholders(2, ids.len())
    );
    let mut query = sqlx::query(&sql).bind(now_ms);
    for id in ids {
        query = query.bind(id);
    }
    query.execute(&db.pool).await?;
    Ok(())
}

/// How many units a stock edit moves in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockMove {
    /// Exactly what Redis moved (Redis holds the live stock).
    AsInRedis(i64),
    /// The edit itself, with removals stopping at zero: the item is not
    /// live in Redis, so the database is the only stock.
    DatabaseOnly(i64),
}

/// Adjusts the product's `stock_available` for a stock edit, once: the
/// change row records the units in the same transaction, and a change that
/// already has them recorded is left alone. Returns whether it moved now.
pub async fn move_database_stock(
    db: &Database,
    change: i64,
    product: ProductId,
    units: StockMove,
) -> StoreResult<bool> {
    let product = product.get();
    let mut tx = db.begin().await?;
    let applied = match units {
        StockMove::AsInRedis(units) => units,
        StockMove::DatabaseOnly(delta) => {
            let (available,): (i64,) =
                sqlx::query_as("SELECT stock_available FROM products WHERE id = $1")
                    .bind(product)
                    .fetch_one(&mut *tx)
                    .await?;
            delta.max(-available)
        }
    };
    let marked = sqlx::query(
        "UPDATE product_changes SET stock_applied = $2 WHERE id = $1 AND stock_applied IS NULL",
    )
    .bind(change)
    .bind(applied)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked == 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE products SET stock_available = stock_available + $2 WHERE id = $1")
        .bind(product)
        .bind(applied)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}
