//! Orders: written by the order pipeline (or, in the sync-db baseline, by
//! the buy request itself), read and paid through the API.

use seckill_shared::api::{OrderStatus, OrderView};
use seckill_shared::{MemberId, OrderId, ProductId};
use sqlx::{AnyPool, FromRow};

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OrderRow {
    pub id: i64,
    pub product_id: i64,
    pub member_id: i64,
    pub reservation_seq: i64,
    pub price_cents: i64,
    pub status: String,
    pub created_at_ms: i64,
    pub pay_deadline_ms: i64,
}

pub const COLUMNS: &str =
    "id, product_id, member_id, reservation_seq, price_cents, status, created_at_ms, pay_deadline_ms";

impl OrderRow {
    pub fn order_id(&self) -> OrderId {
        OrderId::new(self.id).expect("database ids are positive")
    }

    pub fn status(&self) -> OrderStatus {
        OrderStatus::parse(&self.status).unwrap_or(OrderStatus::Cancelled)
    }

    pub fn view(&self) -> OrderView {
        OrderView {
            order_id: self.order_id(),
            member_id: MemberId::new(self.member_id).expect("database ids are positive"),
            product_id: ProductId::new(self.product_id).expect("database ids are positive"),
            price_cents: self.price_cents,
            status: self.status(),
            created_at: self.created_at_ms / 1_000,
            // Rounded up: the deadline is never shown earlier than it is.
            pay_deadline: (self.pay_deadline_ms + 999) / 1_000,
        }
    }
}

/// The member's order for a product that is not cancelled, if any.
pub async fn live_for_member(
    pool: &AnyPool,
    product: ProductId,
    member: MemberId,
) -> Result<Option<OrderRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE product_id = $1 AND member_id = $2 AND status <> 'cancelled'"
    );
    sqlx::query_as::<_, OrderRow>(&sql)
        .bind(product.get())
        .bind(member.get())
        .fetch_optional(pool)
        .await
}

pub async fn get(pool: &AnyPool, order: OrderId) -> Result<Option<OrderRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
    sqlx::query_as::<_, OrderRow>(&sql)
        .bind(order.get())
        .fetch_optional(pool)
        .await
}

/// Marks the member's order paid if it is still unpaid and inside its
/// deadline. One conditional update: payment and cancellation can never
/// both win, whichever reaches the row first decides.
pub async fn pay(
    pool: &AnyPool,
    order: OrderId,
    member: MemberId,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let paid = sqlx::query(
        "UPDATE orders SET status = 'paid', paid_at_ms = $3 \
         WHERE id = $1 AND member_id = $2 AND status = 'unpaid' AND pay_deadline_ms > $3",
    )
    .bind(order.get())
    .bind(member.get())
    .bind(now_ms)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(paid == 1)
}

/// Cancels the order if it is unpaid and its deadline has passed, giving
/// its unit back to the product's database stock in the same transaction.
/// True only for the one call that cancelled it.
pub async fn cancel_if_due(
    pool: &AnyPool,
    order: OrderId,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cancelled: Option<(i64,)> = sqlx::query_as(
        "UPDATE orders SET status = 'cancelled', cancelled_at_ms = $2 \
         WHERE id = $1 AND status = 'unpaid' AND pay_deadline_ms <= $2 RETURNING product_id",
    )
    .bind(order.get())
    .bind(now_ms)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((product,)) = cancelled else {
        return Ok(false);
    };
    sqlx::query("UPDATE products SET stock_available = stock_available + 1, updated_at_ms = $2 WHERE id = $1")
        .bind(product)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Orders per (product, status) for the given products.
pub async fn counts_by_status(
    pool: &AnyPool,
    products: &[i64],
) -> Result<std::collections::HashMap<i64, seckill_shared::api::OrderCounts>, sqlx::Error> {
    let mut counts: std::collections::HashMap<i64, seckill_shared::api::OrderCounts> =
        Default::default();
    if products.is_empty() {
        return Ok(counts);
    }
    let placeholders: Vec<String> = (1..=products.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT product_id, status, COUNT(*) FROM orders WHERE product_id IN ({}) GROUP BY product_id, status",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, (i64, String, i64)>(&sql);
    for product in products {
        query = query.bind(product);
    }
    for (product, status, count) in query.fetch_all(pool).await? {
        let entry = counts.entry(product).or_default();
        match OrderStatus::parse(&status) {
            Some(OrderStatus::Unpaid) => entry.unpaid = count,
            Some(OrderStatus::Paid) => entry.paid = count,
            Some(OrderStatus::Cancelled) => entry.cancelled = count,
            None => {}
        }
    }
    Ok(counts)
}
