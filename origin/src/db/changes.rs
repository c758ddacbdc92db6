//! The change log the capture triggers write (`product_changes`), as the
//! relay and the refresh read and mark it.

use sqlx::{AnyPool, FromRow};

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ChangeRow {
    pub id: i64,
    pub product_id: i64,
    pub op: String,
    pub old_stock_total: Option<i64>,
    pub new_stock_total: Option<i64>,
    pub changed_at_ms: i64,
}

/// The oldest changes not yet relayed, in order.
pub async fn unrelayed(pool: &AnyPool, limit: i64) -> Result<Vec<ChangeRow>, sqlx::Error> {
    sqlx::query_as::<_, ChangeRow>(
        "SELECT id, product_id, op, old_stock_total, new_stock_total, changed_at_ms \
         FROM product_changes WHERE relayed_at_ms IS NULL ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn mark_relayed(pool: &AnyPool, ids: &[i64], now_ms: i64) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (2..ids.len() + 2).map(|n| format!("${n}")).collect();
    let sql = format!(
        "UPDATE product_changes SET relayed_at_ms = $1 WHERE id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(now_ms);
    for id in ids {
        query = query.bind(id);
    }
    query.execute(pool).await.map(|_| ())
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
    pool: &AnyPool,
    change: i64,
    product: i64,
    units: StockMove,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
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
