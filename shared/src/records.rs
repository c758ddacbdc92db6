//! The records the origin's Redis streams carry, and how they are read.
//!
//! An order request is queued by the reserve script and read by the order
//! consumers; a change record is published by the change relay and read by
//! every origin. Stream entries are flat field/value lists: each record
//! names its fields here once and parses strictly, so an entry this system
//! did not write is recognised as such instead of half understood.

use crate::ids::{MemberId, ProductId};

/// Why an entry is not a record of this system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRecord(String);

fn number(field: &impl Fn(&str) -> Option<String>, name: &str) -> Result<i64, InvalidRecord> {
    let text = field(name).ok_or_else(|| InvalidRecord(format!("field {name:?} is missing")))?;
    text.parse()
        .map_err(|_| InvalidRecord(format!("field {name:?} is not a number: {text:?}")))
}

/// One reservation on its way to becoming an order. The reserve script
/// writes the fields `member`, `product`, `seq`, `price`, `reserved_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRequest {
    pub product: ProductId,
    pub member: MemberId,
    /// The reservation number the reserve script handed out.
    pub seq: i64,
    pub price_cents: i64,
    pub reserved_at_ms: i64,
}

impl OrderRequest {
    /// Reads an entry of `stream_product`'s order stream; `field` looks a
    /// field up by name.
    pub fn parse(
        stream_product: ProductId,
        field: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, InvalidRecord> {
        let member = MemberId::new(number(&field, "member")?)
            .map_err(|_| InvalidRecord("member is not a valid id".into()))?;
        let product = number(&field, "product")?;
        if product != stream_product.get() {
            return Err(InvalidRecord(format!(
                "entry names product {product} but sits in product {stream_product}'s stream"
            )));
        }
        Ok(Self {
            product: stream_product,
            member,
            seq: number(&field, "seq")?,
            price_cents: number(&field, "price")?,
            reserved_at_ms: number(&field, "reserved_at_ms")?,
        })
    }

    /// The entry's fields, as the reserve script writes them.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("member", self.member.to_string()),
            ("product", self.product.to_string()),
            ("seq", self.seq.to_string()),
            ("price", self.price_cents.to_string()),
            ("reserved_at_ms", self.reserved_at_ms.to_string()),
        ]
    }
}

/// What a captured catalogue change did to a row.
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

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "insert" => Some(Self::Insert),
            "update" => Some(Self::Update),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// One captured catalogue change, as the change log holds it and the
/// change stream carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRecord {
    /// The change log's id: changes apply in this order, each at most once.
    pub change: i64,
    pub product: ProductId,
    pub op: ChangeOp,
    pub old_stock_total: Option<i64>,
    pub new_stock_total: Option<i64>,
}

impl ChangeRecord {
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

    pub fn parse(field: impl Fn(&str) -> Option<String>) -> Result<Self, InvalidRecord> {
        let total = |name: &str| -> Result<Option<i64>, InvalidRecord> {
            match field(name).as_deref() {
                None | Some("") => Ok(None),
                Some(text) => text.parse().map(Some).map_err(|_| {
                    InvalidRecord(format!("field {name:?} is not a number: {text:?}"))
                }),
            }
        };
        let op = field("op").unwrap_or_default();
        Ok(Self {
            change: number(&field, "change")?,
            product: ProductId::new(number(&field, "product")?)
                .map_err(|_| InvalidRecord("product is not a valid id".into()))?,
            op: ChangeOp::parse(&op).ok_or_else(|| {
                InvalidRecord(format!("op {op:?} is not insert, update or delete"))
            })?,
            old_stock_total: total("old_stock_total")?,
            new_stock_total: total("new_stock_total")?,
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
    use std::collections::HashMap;

    fn lookup(fields: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<&str, String> = fields.into_iter().collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn order_requests_round_trip_and_name_their_stream() {
        let p = ProductId::new(3).unwrap();
        let request = OrderRequest {
            product: p,
            member: MemberId::new(9).unwrap(),
            seq: 4,
            price_cents: 990,
            reserved_at_ms: 1_700_000_000_000,
        };
        assert_eq!(
            OrderRequest::parse(p, lookup(request.fields())),
            Ok(request)
        );
        let elsewhere = ProductId::new(4).unwrap();
        assert!(OrderRequest::parse(elsewhere, lookup(request.fields())).is_err());
        let mut no_seq = request.fields();
        no_seq.retain(|(name, _)| *name != "seq");
        assert!(OrderRequest::parse(p, lookup(no_seq)).is_err());
    }

    #[test]
    fn change_records_round_trip() {
        let record = ChangeRecord {
            change: 7,
            product: ProductId::new(3).unwrap(),
            op: ChangeOp::Update,
            old_stock_total: Some(10),
            new_stock_total: Some(15),
        };
        assert_eq!(ChangeRecord::parse(lookup(record.fields())), Ok(record));
        assert_eq!(record.stock_delta(), Some(5));
        let deleted = ChangeRecord {
            op: ChangeOp::Delete,
            new_stock_total: None,
            ..record
        };
        assert_eq!(ChangeRecord::parse(lookup(deleted.fields())), Ok(deleted));
    }

    #[test]
    fn only_stock_edits_carry_a_delta() {
        let mut record = ChangeRecord {
            change: 1,
            product: ProductId::new(3).unwrap(),
            op: ChangeOp::Insert,
            old_stock_total: None,
            new_stock_total: Some(10),
        };
        assert_eq!(record.stock_delta(), None);
        record.op = ChangeOp::Update;
        record.old_stock_total = Some(10);
        assert_eq!(record.stock_delta(), None, "price edits move no stock");
    }
}
