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

/// Adjusts the product's `stock_available` by what a stock edit moved in
/// Redis, once: the change row records it in the same transaction.
/// Returns false when it had already been recorded.
pub async fn record_stock_applied(
    pool: &AnyPool,
    change: i64,
    product: i64,
    applied: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
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

/// A stock edit of an item that is not live in Redis: the database is the
/// only stock, so the change is applied there alone (removals stop at zero).
/// Returns the units moved, or `None` if it had already been applied.
pub async fn apply_stock_to_database_only(
    pool: &AnyPool,
    change: i64,
    product: i64,
    delta: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (done,): (Option<i64>,) =
        sqlx::query_as("SELECT stock_applied FROM product_changes WHERE id = $1")
            .bind(change)
            .fetch_one(&mut *tx)
            .await?;
    if done.is_some() {
        return Ok(None);
    }
    let (available,): (i64,) = sqlx::query_as("SELECT stock_available FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&mut *tx)
        .await?;
    let applied = delta.max(-available);
    sqlx::query("UPDATE product_changes SET stock_applied = $2 WHERE id = $1")
        .bind(change)
        .bind(applied)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE products SET stock_available = stock_available + $2 WHERE id = $1")
        .bind(product)
        .bind(applied)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(applied))
}
