//! Redis key names and the value formats stored under them.
//!
//! Every key one product's scripts touch carries the hash tag `{p<id>}`, so
//! they all land in one slot and the same scripts run on Redis Cluster. Keys
//! that span products (the product registry, the sold-out registry, the
//! payment deadlines) are only ever touched by commands or scripts of their
//! own. `SECKILL_KEY_PREFIX` namespaces all of them, so several deployments or
//! test runs can share one Redis.

use crate::ids::{OrderId, ProductId};

/// The consumer group that writes queued orders to the database.
pub const ORDER_GROUP: &str = "order-writers";

/// The consumer group that applies catalogue changes to Redis.
pub const REFRESH_GROUP: &str = "cache-refresh";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key prefix may not contain '{{' or '}}' (they would change the cluster hash tag)")]
pub struct InvalidPrefix;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Result<Self, InvalidPrefix> {
        let prefix = prefix.into();
        if prefix.contains(['{', '}']) {
            return Err(InvalidPrefix);
        }
        Ok(Self { prefix })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn product_key(&self, product: ProductId, suffix: &str) -> String {
        format!("{}{{p{}}}:{}", self.prefix, product, suffix)
    }

    /// Hash: `stock`, `starts_at`, `ends_at` (unix s), `price` (flash price,
    /// cents), `total`, `seq` (last reservation number).
    pub fn item(&self, product: ProductId) -> String {
        self.product_key(product, "item")
    }

    /// Hash: member id -> [`MemberState`] for this product.
    pub fn members(&self, product: ProductId) -> String {
        self.product_key(product, "members")
    }

    /// Stream of order requests, read by the [`ORDER_GROUP`] consumer group.
    pub fn orders(&self, product: ProductId) -> String {
        self.product_key(product, "orders")
    }

    /// Set of reservation numbers whose stock has been given back; makes
    /// every stock return happen at most once.
    pub fn returned(&self, product: ProductId) -> String {
        self.product_key(product, "returned")
    }

    /// Stream of order requests that could not be written, with the reason.
    pub fn dead_letters(&self, product: ProductId) -> String {
        self.product_key(product, "dead")
    }

    /// Hash: change id -> units a stock edit actually moved, so each edit
    /// is applied to this product's stock at most once.
    pub fn stock_changes(&self, product: ProductId) -> String {
        self.product_key(product, "stock-changes")
    }

    /// Stream of captured catalogue changes, fed by the change relay.
    pub fn product_changes(&self) -> String {
        format!("{}product-changes", self.prefix)
    }

    /// Lease held by the one change relay allowed to run at a time.
    pub fn relay_lock(&self) -> String {
        format!("{}product-changes:relay", self.prefix)
    }

    /// Set of every product id whose keys are live in Redis.
    pub fn products(&self) -> String {
        format!("{}products", self.prefix)
    }

    /// Set of product ids currently sold out.
    pub fn sold_out(&self) -> String {
        format!("{}soldout", self.prefix)
    }

    /// Counter bumped on every change of the sold-out set.
    pub fn sold_out_version(&self) -> String {
        format!("{}soldout:version", self.prefix)
    }

    /// Pub/sub channel announcing sold-out changes to every origin node.
    pub fn sold_out_channel(&self) -> String {
        format!("{}soldout:events", self.prefix)
    }

    /// Sorted set of unpaid orders scored by payment deadline (unix ms).
    pub fn pay_deadlines(&self) -> String {
        format!("{}deadlines", self.prefix)
    }
}

/// What a member holds for one product, as stored in the members hash.
///
/// `q:<seq>` queued reservation, `s:<order>` order written, `f:<seq>` the
/// reservation failed and its stock was returned, `c:<order>` the order was
/// cancelled and its stock was returned. Only `q` and `s` block another buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Queued { seq: i64 },
    Ordered { order: OrderId },
    Failed { seq: i64 },
    Cancelled { order: OrderId },
}

impl MemberState {
    pub fn encode(self) -> String {
        match self {
            Self::Queued { seq } => format!("q:{seq}"),
            Self::Ordered { order } => format!("s:{order}"),
            Self::Failed { seq } => format!("f:{seq}"),
            Self::Cancelled { order } => format!("c:{order}"),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (kind, number) = text.split_once(':')?;
        let number: i64 = number.parse().ok()?;
        Some(match kind {
            "q" => Self::Queued { seq: number },
            "s" => Self::Ordered {
                order: OrderId::new(number).ok()?,
            },
            "f" => Self::Failed { seq: number },
            "c" => Self::Cancelled {
                order: OrderId::new(number).ok()?,
            },
            _ => return None,
        })
    }
}

/// A member of the payment-deadline sorted set: `<product>:<order>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineEntry {
    pub product: ProductId,
    pub order: i64,
}

impl DeadlineEntry {
    pub fn encode(self) -> String {
        format!("{}:{}", self.product, self.order)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (product, order) = text.split_once(':')?;
        Some(Self {
            product: product.parse().ok()?,
            order: order.parse().ok().filter(|o: &i64| *o > 0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_keys_share_one_hash_tag() {
        let keys = RedisKeys::new("shop:").unwrap();
        let p = ProductId::new(42).unwrap();
        for key in [
            keys.item(p),
            keys.members(p),
            keys.orders(p),
            keys.returned(p),
            keys.dead_letters(p),
        ] {
            assert!(key.starts_with("shop:{p42}:"), "{key}");
        }
    }

    #[test]
    fn braces_in_prefix_are_refused() {
        assert!(RedisKeys::new("a{b").is_err());
        assert!(RedisKeys::new("").is_ok());
    }

    #[test]
    fn deadline_entry_round_trips() {
        let entry = DeadlineEntry {
            product: ProductId::new(3).unwrap(),
            order: 99,
        };
        assert_eq!(DeadlineEntry::decode(&entry.encode()), Some(entry));
        assert_eq!(DeadlineEntry::decode("3"), None);
        assert_eq!(DeadlineEntry::decode("3:0"), None);
    }

    #[test]
    fn member_state_round_trips() {
        let order = OrderId::new(5).unwrap();
        for state in [
            MemberState::Queued { seq: 3 },
            MemberState::Ordered { order },
            MemberState::Failed { seq: 3 },
            MemberState::Cancelled { order },
        ] {
            assert_eq!(MemberState::decode(&state.encode()), Some(state));
        }
        assert_eq!(MemberState::decode("x:1"), None);
        assert_eq!(MemberState::decode("q"), None);
    }
}
