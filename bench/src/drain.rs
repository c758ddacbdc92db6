//! Watches orders reach the database and reports how fast they arrived.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::AnyPool;

#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub expected: i64,
    pub written: i64,
    /// Orders per second from the first order seen to the last one.
    pub orders_per_second: f64,
    pub seconds: f64,
    /// `(seconds since watching began, orders in the database)`.
    pub timeline: Vec<(f64, i64)>,
}

/// The orders of these products in the database.
pub async fn count_orders(pool: &AnyPool, products: &[i64]) -> anyhow::Result<i64> {
    // Integers, so listing them in the statement is safe; one statement
    // whatever the number of products.
    let ids: Vec<String> = products.iter().map(i64::to_string).collect();
    let (count,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM orders WHERE product_id IN ({})",
        ids.join(",")
    ))
    .fetch_one(pool)
    .await?;
    Ok(count)
}

/// Polls every 100 ms until `expected` orders of `products` exist or
/// `timeout` passes.
pub async fn watch(
    pool: &AnyPool,
    products: &[i64],
    expected: i64,
    timeout: Duration,
) -> anyhow::Result<DrainReport> {
    let started = Instant::now();
    let mut timeline = Vec::new();
    let mut first: Option<(f64, i64)> = None;
    let mut last = (0.0, 0);
    loop {
        let count = count_orders(pool, products).await?;
        let at = started.elapsed().as_secs_f64();
        timeline.push((at, count));
        if count > last.1 {
            if first.is_none() {
                // The moment before the first orders appeared.
                first = Some(last);
            }
            last = (at, count);
        }
        if count >= expected || started.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (t0, c0) = first.unwrap_or(last);
    let seconds = (last.0 - t0).max(0.1);
    Ok(DrainReport {
        expected,
        written: last.1,
        orders_per_second: (last.1 - c0) as f64 / seconds,
        seconds,
        timeline,
    })
}
