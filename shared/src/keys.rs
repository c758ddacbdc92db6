//! Redis key names and the value formats stored under them.
//!
//! Every key one product's scripts touch carries the hash tag `{p<id>}`, so
//! they all land in one slot and the same scripts run on Redis Cluster.
//! What pollers and consumers scan across products (the product registry,
//! the sold-out registry, the payment deadlines) is split into
//! [`REGISTRY_GROUPS`] groups, each under a hash tag of its own chosen so
//! the groups spread evenly over the cluster's slots (see [`RegistryGroup`]):
//! every primary carries some groups and none carries everyone's polling.
//! Those keys are only ever touched by commands or scripts of their own.
//! `SECKILL_KEY_PREFIX` namespaces all of them, so several deployments or
//! test runs can share one Redis.

use std::sync::OnceLock;

use crate::ids::{OrderId, ProductId};

/// Groups that keys spanning products are split into. Every origin must
/// agree on it (it decides key names), so it is a constant, not a setting.
pub const REGISTRY_GROUPS: u16 = 16;

/// Slots of Redis Cluster.
const CLUSTER_SLOTS: u16 = 16_384;

/// One of the [`REGISTRY_GROUPS`] groups of products. A product belongs to
/// group `id mod REGISTRY_GROUPS`. Group `k`'s hash tag hashes into the
/// `k`-th sixteenth of the slot space, so any cluster whose primaries own
/// about equal slot ranges (what `redis-cli --cluster create` makes, up to
/// sixteen primaries) holds groups on every primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegistryGroup(u16);

impl RegistryGroup {
    pub fn of(product: ProductId) -> Self {
        Self((product.get() % i64::from(REGISTRY_GROUPS)) as u16)
    }

    pub fn all() -> impl Iterator<Item = Self> {
        (0..REGISTRY_GROUPS).map(Self)
    }

    pub fn index(self) -> u16 {
        self.0
    }

    /// The group's hash tag (without braces).
    pub fn tag(self) -> &'static str {
        &group_tags()[usize::from(self.0)]
    }
}

/// `g<k>`, or `g<k>.<n>` for the first `n` whose slot falls in the `k`-th
/// sixteenth of the slot space.
fn group_tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let width = CLUSTER_SLOTS / REGISTRY_GROUPS;
        (0..REGISTRY_GROUPS)
            .map(|k| {
                let range = k * width..(k + 1) * width;
                (0u32..)
                    .map(|n| match n {
                        0 => format!("g{k}"),
                        n => format!("g{k}.{n}"),
                    })
                    .find(|tag| range.contains(&slot_of(tag.as_bytes())))
                    .expect("some suffix hashes into every range")
            })
            .collect()
    })
}

/// The cluster slot of a key (its hash tag's, if it has one): CRC16
/// (XMODEM) modulo 16384, as the cluster specification defines it.
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % CLUSTER_SLOTS
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

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

    /// One reserve call's reply, kept briefly so the same call arriving
    /// twice (resent after an I/O error) answers what it decided.
    pub fn reserve_reply(&self, product: ProductId, call: &str) -> String {
        self.product_key(product, &format!("reply:{call}"))
    }

    /// Stream of captured catalogue changes, fed by the change relay.
    pub fn product_changes(&self) -> String {
        format!("{}product-changes", self.prefix)
    }

    /// Lease held by the one change relay allowed to run at a time.
    pub fn relay_lock(&self) -> String {
        format!("{}product-changes:relay", self.prefix)
    }

    fn group_key(&self, group: RegistryGroup, suffix: &str) -> String {
        format!("{}{{{}}}:{}", self.prefix, group.tag(), suffix)
    }

    /// Set of the group's product ids whose keys are live in Redis.
    pub fn products(&self, group: RegistryGroup) -> String {
        self.group_key(group, "products")
    }

    /// Set of the group's product ids currently sold out.
    pub fn sold_out(&self, group: RegistryGroup) -> String {
        self.group_key(group, "soldout")
    }

    /// Counter bumped on every change of the group's sold-out set.
    pub fn sold_out_version(&self, group: RegistryGroup) -> String {
        self.group_key(group, "soldout:version")
    }

    /// Shard channel (`SPUBLISH`) announcing the group's sold-out changes
    /// to every origin node; in the group's slot, so it lives on the
    /// primary that holds the group's sold-out set.
    pub fn sold_out_channel(&self, group: RegistryGroup) -> String {
        self.group_key(group, "soldout:events")
    }

    /// Sorted set of the group's unpaid orders scored by payment deadline
    /// (unix ms).
    pub fn pay_deadlines(&self, group: RegistryGroup) -> String {
        self.group_key(group, "deadlines")
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
    fn slots_are_computed_as_redis_does() {
        // Values from the cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
    }

    #[test]
    fn groups_spread_over_the_slot_space() {
        let keys = RedisKeys::new("shop:").unwrap();
        let width = CLUSTER_SLOTS / REGISTRY_GROUPS;
        for group in RegistryGroup::all() {
            let slot = slot_of(keys.pay_deadlines(group).as_bytes());
            assert_eq!(slot / width, group.index(), "{}", group.tag());
            for key in [
                keys.products(group),
                keys.sold_out(group),
                keys.sold_out_version(group),
                keys.sold_out_channel(group),
            ] {
                assert_eq!(slot_of(key.as_bytes()), slot, "{key}");
            }
        }
        let p = ProductId::new(35).unwrap();
        assert_eq!(RegistryGroup::of(p).index(), 3);
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
