//! Orders: read and paid through the API, cancelled at their deadline, and
//! (in the sync-db baseline) written by the buy request itself. The order
//! pipeline's batch insert is in `order_writes`.

use std::collections::HashMap;

use seckill_shared::api::{OrderCounts, OrderStatus, OrderView};
use seckill_shared::{MemberId, OrderId, ProductId};
use sqlx::FromRow;

use super::Database;
use crate::store::StoreResult;

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

const COLUMNS: &str =
    "id, product_id, member_id, reservation_seq, price_cents, status, created_at_ms, pay_deadline_ms";

impl OrderRow {
    pub fn order_id(&self) -> OrderId {
        OrderId::new(self.id).expect("database ids are positive")
    }

    pub fn product(&self) -> ProductId {
        ProductId::new(self.product_id).expect("database ids are positive")
    }

    pub fn member(&self) -> MemberId {
        MemberId::new(self.member_id).expect("database ids are positive")
    }

    pub fn status(&self) -> OrderStatus {
        OrderStatus::parse(&self.status).unwrap_or(OrderStatus::Cancelled)
    }

    pub fn view(&self) -> OrderView {
        OrderView {
            order_id: self.order_id(),
            member_id: self.member(),
            product_id: self.product(),
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
    db: &Database,
    product: ProductId,
    member: MemberId,
) -> StoreResult<Option<OrderRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE product_id = $1 AND member_id = $2 AND status <> 'cancelled'"
    );
    Ok(sqlx::query_as::<_, OrderRow>(&sql)
        .bind(product.get())
        .bind(member.get())
        .fetch_optional(&db.pool)
        .await?)
}

pub async fn get(db: &Database, order: OrderId) -> StoreResult<Option<OrderRow>> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
    Ok(sqlx::query_as::<_, OrderRow>(&sql)
        .bind(order.get())
        .fetch_optional(&db.pool)
        .await?)
}

/// Marks the member's order paid if it is still unpaid and inside its
/// deadline (on the database's clock). One conditional update: payment and
/// cancellation can never both win, whichever reaches the row first decides.
pub async fn pay(db: &Database, order: OrderId, member: MemberId) -> StoreResult<bool> {
    let now = super::now_ms_sql(db.backend());
    let sql = format!(
        "UPDATE orders SET status = 'paid', paid_at_ms = {now} \
         WHERE id = $1 AND member_id = $2 AND status = 'unpaid' AND pay_deadline_ms > {now}"
    );
    let paid = sqlx::query(&sql)
        .bind(order.get())
        .bind(member.get())
        .execute(&db.pool)
        .await?
        .rows_affected();
    Ok(paid == 1)
}

/// Cancels the order if it is unpaid and its deadline has passed (on the
/// database's clock), giving its unit back to the product's database stock
/// in the same transaction. True only for the one call that cancelled it.
pub async fn cancel_if_due(db: &Database, order: OrderId) -> StoreResult<bool> {
    let now = super::now_ms_sql(db.backend());
    let mut tx = db.begin().await?;
    let sql = format!(
        "UPDATE orders SET status = 'cancelled', cancelled_at_ms = {now} \
         WHERE id = $1 AND status = 'unpaid' AND pay_deadline_ms <= {now} RETURNING product_id"
    );
    let cancelled: Option<(i64,)> = sqlx::query_as(&sql)
        .bind(order.get())
        .fetch_optional(&mut *tx)
        .await?;
    let Some((product,)) = cancelled else {
        return Ok(false);
    };
    sqlx::query("UPDATE products SET stock_available = stock_available + 1, updated_at_ms = $2 WHERE id = $1")
        .bind(product)
        .bind(crate::clock::unix_ms() as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Unpaid orders whose deadline passed more than `grace_ms` ago (on the
/// database's clock), oldest first: ones the deadline poller should have
/// cancelled and did not hear about.
/// `(order, product)` of each.
pub async fn overdue(
    db: &Database,
    grace_ms: i64,
    limit: i64,
) -> StoreResult<Vec<(OrderId, ProductId)>> {
    let now = super::now_ms_sql(db.backend());
    let sql = format!(
        "SELECT id, product_id FROM orders WHERE status = 'unpaid' AND pay_deadline_ms < {now} - $1 \
         ORDER BY pay_deadline_ms LIMIT $2"
    );
    let rows: Vec<(i64, i64)> = sqlx::query_as(&sql)
        .bind(grace_ms)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, product)| Some((OrderId::new(id).ok()?, ProductId::new(product).ok()?)))
        .collect())
}

/// Orders per (product, status) for the given products.
pub async fn counts_by_status(
    db: &Database,
    products: &[ProductId],
) -> StoreResult<HashMap<ProductId, OrderCounts>> {
    let mut counts: HashMap<ProductId, OrderCounts> = HashMap::new();
    if products.is_empty() {
        return Ok(counts);
    }
    let sql = format!(
        "SELECT product_id, status, COUNT(*) FROM orders WHERE product_id IN ({}) GROUP BY product_id, status",
        super::placeholders(1, products.len())
    );
    let mut query = sqlx::query_as::<_, (i64, String, i64)>(&sql);
    for product in products {
        query = query.bind(product.get());
    }
    for (product, status, count) in query.fetch_all(&db.pool).await? {
        let Ok(product) = ProductId::new(product) else {
            continue;
        };
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

/// Reservation numbers of the product's cancelled orders.
pub async fn cancelled_seqs(db: &Database, product: ProductId) -> StoreResult<Vec<i64>> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT reservation_seq FROM orders WHERE product_id = $1 AND status = 'cancelled'",
    )
    .bind(product.get())
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(seq,)| seq).collect())
}

/// `(order, deadline ms)` of the product's unpaid orders.
pub async fn unpaid_deadlines<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    product: ProductId,
) -> StoreResult<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT id, pay_deadline_ms FROM orders WHERE product_id = $1 AND status = 'unpaid'",
    )
    .bind(product.get())
    .fetch_all(executor)
    .await?)
}

/// How a buy of the sync-db baseline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncBuy {
    Bought,
    /// No unit could be taken: sold out, outside the window, or unknown.
    NoUnit,
    /// The member already holds a live order.
    AlreadyOrdered,
}

/// The naive baseline's whole buy in one transaction: a conditional stock
/// decrement and an order insert. The product row stays locked by the
/// update until commit, so the next reservation number cannot be taken
/// twice; a second live order is refused by the unique index.
pub async fn buy_synchronously(
    db: &Database,
    product: ProductId,
    member: MemberId,
    now_ms: i64,
    pay_deadline_ms: i64,
) -> StoreResult<SyncBuy> {
    let now_s = now_ms / 1_000;
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE products SET stock_available = stock_available - 1, updated_at_ms = $2 \
         WHERE id = $1 AND stock_available > 0 AND starts_at <= $3 AND ends_at > $3",
    )
    .bind(product.get())
    .bind(now_ms)
    .bind(now_s)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(SyncBuy::NoUnit);
    }
    let inserted = sqlx::query(
        "INSERT INTO orders (product_id, member_id, reservation_seq, price_cents, status, created_at_ms, pay_deadline_ms) \
         VALUES ($1, $2, (SELECT COALESCE(MAX(reservation_seq), 0) + 1 FROM orders WHERE product_id = $1), \
                 (SELECT flash_price_cents FROM products WHERE id = $1), 'unpaid', $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(product.get())
    .bind(member.get())
    .bind(now_ms)
    .bind(pay_deadline_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // The decrement is rolled back with the transaction.
        return Ok(SyncBuy::AlreadyOrdered);
    }
    tx.commit().await?;
    Ok(SyncBuy::Bought)
}
