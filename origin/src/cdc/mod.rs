//! Change data capture: catalogue edits reach every cache, including edits
//! made with plain SQL outside the application (the seed's Canal).
//!
//! 1. **Capture** — database triggers write every insert, delete and edit of
//!    a flash item to `product_changes`, in the edit's own transaction.
//! 2. **Relay** — one origin at a time (the CDC leader, elected by a Redis
//!    lease) moves unrelayed rows, in order, to the `product-changes` Redis
//!    Stream and marks them relayed; at least once. On PostgreSQL it wakes
//!    on `NOTIFY`, and polls anyway because notifications are lost across
//!    disconnects.
//! 3. **Refresh** — the leader applies each change through the
//!    `cache-refresh` consumer group (a new leader takes over what a dead one
//!    left pending): the item's description in Redis is reloaded from the
//!    database row as it is now (so a duplicated or late event cannot roll
//!    anything back), and a stock edit is applied to live stock and to the
//!    database's `stock_available` at most once each, keyed by the change id.
//!    Every origin also tails the stream to drop its in-memory copy of the
//!    item.

pub mod leader;
pub mod tail;

use std::collections::HashMap;

use redis::Value;
use seckill_shared::ProductId;

use crate::db::changes::ChangeRow;

/// One captured change as it travels on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    pub change: i64,
    pub product: ProductId,
    pub op: ChangeOp,
    pub old_stock_total: Option<i64>,
    pub new_stock_total: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Insert,
    Update,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "insert" => Some(Self::Insert),
            "update" => Some(Self::Update),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

impl ChangeEvent {
    pub fn from_row(row: &ChangeRow) -> Option<Self> {
        Some(Self {
            change: row.id,
            product: ProductId::new(row.product_id).ok()?,
            op: ChangeOp::parse(&row.op)?,
            old_stock_total: row.old_stock_total,
            new_stock_total: row.new_stock_total,
        })
    }

    /// Stream fields; absent stock totals are empty strings.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let total = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_default();
        vec![
            ("change", self.change.to_string()),
            ("product", self.product.to_string()),
            ("op", self.op.as_str().to_string()),
            ("old_stock_total", total(self.old_stock_total)),
            ("new_stock_total", total(self.new_stock_total)),
        ]
    }

    pub fn parse(fields: &HashMap<String, Value>) -> Option<Self> {
        let text =
            |name: &str| -> Option<String> { redis::from_redis_value_ref(fields.get(name)?).ok() };
        let total = |name: &str| text(name).and_then(|t| t.parse().ok());
        Some(Self {
            change: text("change")?.parse().ok()?,
            product: text("product")?.parse().ok()?,
            op: ChangeOp::parse(&text("op")?)?,
            old_stock_total: total("old_stock_total"),
            new_stock_total: total("new_stock_total"),
        })
    }

    /// The units a stock edit asks to add (negative: remove), if any.
    pub fn stock_delta(&self) -> Option<i64> {
        match (self.op, self.old_stock_total, self.new_stock_total) {
            (ChangeOp::Update, Some(old), Some(new)) if old != new => Some(new - old),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_stream_fields() {
        let event = ChangeEvent {
            change: 7,
            product: ProductId::new(3).unwrap(),
            op: ChangeOp::Update,
            old_stock_total: Some(10),
            new_stock_total: Some(15),
        };
        let fields: HashMap<String, Value> = event
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::BulkString(v.into_bytes())))
            .collect();
        assert_eq!(ChangeEvent::parse(&fields), Some(event.clone()));
        assert_eq!(event.stock_delta(), Some(5));
    }

    #[test]
    fn only_stock_edits_carry_a_delta() {
        let mut event = ChangeEvent {
            change: 1,
            product: ProductId::new(3).unwrap(),
            op: ChangeOp::Insert,
            old_stock_total: None,
            new_stock_total: Some(10),
        };
        assert_eq!(event.stock_delta(), None);
        event.op = ChangeOp::Update;
        event.old_stock_total = Some(10);
        assert_eq!(event.stock_delta(), None, "price edits move no stock");
    }
}
