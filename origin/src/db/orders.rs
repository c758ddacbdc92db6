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
