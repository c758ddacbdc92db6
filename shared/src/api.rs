//! Request and response bodies of the HTTP contract (the README's
//! "The HTTP contract" section).
//!
//! Request bodies reject unknown fields, and the ones that carry user input
//! convert into validated domain types, so a handler never sees a product
//! with an empty name or a sale that ends before it starts.

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;
use crate::ids::{MemberId, OrderId, ProductId};

/// The largest request body either side accepts: the contract's bodies are
/// tiny JSON objects, so anything bigger is refused with `413
/// payload_too_large` before it is buffered.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `GET /api/soldout`'s `Cache-Control`: a CDN (or a browser) may keep the
/// snapshot for a second, which is as fresh as the edges' own copy.
pub const SOLDOUT_CACHE_CONTROL: &str = "public, max-age=1";

/// Every error answer, from the edge or the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub member_id: MemberId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionResponse {
    pub token: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimeResponse {
    pub now_ms: u64,
}

/// `GET /api/products/{id}`; times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductView {
    pub product_id: ProductId,
    pub name: String,
    pub price_cents: i64,
    pub flash_price_cents: i64,
    pub stock_total: i64,
    pub stock_left: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    pub sold_out: bool,
    /// Bumped by every edit of the item (name, prices, stock, window),
    /// through the API or plain SQL: a cache holding an older revision is
    /// stale.
    #[serde(default)]
    pub revision: i64,
}

/// `GET /api/soldout`: what edges refresh their flags from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SoldOutSnapshot {
    pub version: u64,
    pub sold_out: Vec<ProductId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BuyStatus {
    Queued,
}

/// `202` answer of `POST /api/seckill/{id}/orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuyAccepted {
    pub status: BuyStatus,
}

/// Where a member's buy stands: nothing, queued, an order, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    None,
    Queued,
    Success,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultView {
    pub status: ResultStatus,
    pub order_id: Option<OrderId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Unpaid,
    Paid,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unpaid => "unpaid",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "unpaid" => Some(Self::Unpaid),
            "paid" => Some(Self::Paid),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// `GET /api/orders/{id}`; times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderView {
    pub order_id: OrderId,
    pub member_id: MemberId,
    pub product_id: ProductId,
    pub price_cents: i64,
    pub status: OrderStatus,
    pub created_at: i64,
    pub pay_deadline: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayResponse {
    pub status: OrderStatus,
}

/// Order queue figures of one item (`GET /admin/products`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueView {
    /// Entries in the item's order stream.
    pub length: u64,
    /// Delivered to a consumer, not yet written and acknowledged.
    pub pending: u64,
    /// Not yet delivered to any consumer.
    pub lag: u64,
    pub dead_letters: u64,
}

/// Orders of one item by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderCounts {
    pub unpaid: i64,
    pub paid: i64,
    pub cancelled: i64,
}

/// One item as the operations page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminProductView {
    pub product: ProductView,
    pub queue: QueueView,
    pub orders: OrderCounts,
    /// Whether this origin currently answers buys as sold out from memory.
    pub sold_out_flag: bool,
}

/// One second of buys of one item, by outcome (`GET /admin/history`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuySecond {
    /// Unix seconds.
    pub t: u64,
    /// Answered `202 queued`.
    pub queued: u64,
    pub sold_out: u64,
    pub already_ordered: u64,
    pub rate_limited: u64,
    /// Any other refusal or failure (window, unknown item, 503s).
    pub other: u64,
}

/// Stock left and queue depth of one item at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LevelSample {
    /// Unix milliseconds.
    pub t_ms: u64,
    pub stock_left: i64,
    /// Reservations not yet written: undelivered (lag) plus pending.
    pub queue: u64,
}

/// The last minutes of one item as this origin saw them: its buys per
/// second (oldest first, seconds without buys included) and its stock and
/// queue each time they were read (by the operations page or a scrape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemHistory {
    pub product_id: ProductId,
    pub buys: Vec<BuySecond>,
    pub levels: Vec<LevelSample>,
}

/// `POST /admin/products` as sent on the wire. The ranges are the ones
/// `NewFlashSale::try_from` enforces; it also needs `flash_price_cents <=
/// price_cents`, `starts_at < ends_at` and a name of at most 200
/// characters once trimmed, without control characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "name": "Phone", "price_cents": 19900, "flash_price_cents": 990, "stock": 100,
    "starts_at": 0, "ends_at": MAX_UNIX_S
})))]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: String,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub price_cents: i64,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub flash_price_cents: i64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub stock: i64,
    /// Unix seconds.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 253_402_300_799_i64)
    )]
    pub starts_at: i64,
    /// Unix seconds, after `starts_at`.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 253_402_300_799_i64)
    )]
    pub ends_at: i64,
}

/// `PATCH /admin/products/{id}`: the fields to change. `stock` is the new
/// flash-sale total: raising it makes the difference sellable at once;
/// lowering it takes away unsold units only, never reserved ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub name: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub price_cents: Option<i64>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub flash_price_cents: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000_000))]
    pub stock: Option<i64>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 253_402_300_799_i64)
    )]
    pub starts_at: Option<i64>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 253_402_300_799_i64)
    )]
    pub ends_at: Option<i64>,
}

impl UpdateProduct {
    /// The sale after the change, validated by the same rules as a new one.
    pub fn apply_to(self, current: CreateProduct) -> Result<NewFlashSale, String> {
        if self.name.is_none()
            && self.price_cents.is_none()
            && self.flash_price_cents.is_none()
            && self.stock.is_none()
            && self.starts_at.is_none()
            && self.ends_at.is_none()
        {
            return Err("nothing to change".into());
        }
        NewFlashSale::try_from(CreateProduct {
            name: self.name.unwrap_or(current.name),
            price_cents: self.price_cents.unwrap_or(current.price_cents),
            flash_price_cents: self.flash_price_cents.unwrap_or(current.flash_price_cents),
            stock: self.stock.unwrap_or(current.stock),
            starts_at: self.starts_at.unwrap_or(current.starts_at),
            ends_at: self.ends_at.unwrap_or(current.ends_at),
        })
    }
}

/// One item's line in a reconciliation report (`POST /admin/reconcile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileItem {
    pub product_id: ProductId,
    /// Live stock in Redis (`None`: the item is not in Redis).
    pub redis_stock: Option<i64>,
    /// Reservations queued and not yet written to the database.
    pub queued: u64,
    /// The database's `stock_available`.
    pub database_stock: i64,
    /// Redis stock + queued − database stock, when the item was quiet
    /// enough for the figure to mean anything.
    pub drift: Option<i64>,
    /// Whether Redis was set back to the database's figure.
    pub repaired: bool,
    pub note: String,
}

/// A flash sale that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFlashSale {
    pub name: String,
    pub price_cents: i64,
    pub flash_price_cents: i64,
    pub stock: i64,
    pub starts_at: i64,
    pub ends_at: i64,
}

/// Upper bounds that keep arithmetic and storage sane.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_STOCK: i64 = 10_000_000;
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
/// Unix seconds in the year 9999: later dates are typos.
pub const MAX_UNIX_S: i64 = 253_402_300_799;

impl TryFrom<CreateProduct> for NewFlashSale {
    type Error = String;

    fn try_from(body: CreateProduct) -> Result<Self, String> {
        let name = body.name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(format!("name must be 1 to {MAX_NAME_CHARS} characters"));
        }
        if name.chars().any(char::is_control) {
            return Err("name must not contain control characters".into());
        }
        for (field, value) in [
            ("price_cents", body.price_cents),
            ("flash_price_cents", body.flash_price_cents),
        ] {
            if !(0..=MAX_PRICE_CENTS).contains(&value) {
                return Err(format!("{field} must be between 0 and {MAX_PRICE_CENTS}"));
            }
        }
        if body.flash_price_cents > body.price_cents {
            return Err("flash_price_cents must not exceed price_cents".into());
        }
        if !(1..=MAX_STOCK).contains(&body.stock) {
            return Err(format!("stock must be between 1 and {MAX_STOCK}"));
        }
        for (field, value) in [("starts_at", body.starts_at), ("ends_at", body.ends_at)] {
            if !(0..=MAX_UNIX_S).contains(&value) {
                return Err(format!(
                    "{field} must be unix seconds between 0 and {MAX_UNIX_S}"
                ));
            }
        }
        if body.starts_at >= body.ends_at {
            return Err("ends_at must be after starts_at".into());
        }
        Ok(Self {
            name,
            price_cents: body.price_cents,
            flash_price_cents: body.flash_price_cents,
            stock: body.stock,
            starts_at: body.starts_at,
            ends_at: body.ends_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CreateProduct {
        CreateProduct {
            name: "Phone".into(),
            price_cents: 10_000,
            flash_price_cents: 100,
            stock: 10,
            starts_at: 1_000,
            ends_at: 2_000,
        }
    }

    #[test]
    fn valid_sale_passes() {
        let sale = NewFlashSale::try_from(CreateProduct {
            name: "  Phone  ".into(),
            ..body()
        })
        .unwrap();
        assert_eq!(sale.name, "Phone");
    }

    #[test]
    fn invalid_sales_are_refused() {
        let cases = [
            CreateProduct {
                name: " ".into(),
                ..body()
            },
            CreateProduct {
                name: "x".repeat(201),
                ..body()
            },
            CreateProduct {
                name: "a\u{0}b".into(),
                ..body()
            },
            CreateProduct {
                price_cents: -1,
                ..body()
            },
            CreateProduct {
                flash_price_cents: 20_000,
                ..body()
            },
            CreateProduct { stock: 0, ..body() },
            CreateProduct {
                stock: MAX_STOCK + 1,
                ..body()
            },
            CreateProduct {
                ends_at: 1_000,
                ..body()
            },
            CreateProduct {
                starts_at: -5,
                ..body()
            },
        ];
        for case in cases {
            assert!(NewFlashSale::try_from(case.clone()).is_err(), "{case:?}");
        }
    }

    #[test]
    fn updates_merge_and_validate() {
        let current = body();
        let changed = UpdateProduct {
            flash_price_cents: Some(50),
            ..Default::default()
        }
        .apply_to(current.clone())
        .unwrap();
        assert_eq!(changed.flash_price_cents, 50);
        assert_eq!(changed.stock, 10);
        assert!(
            UpdateProduct::default().apply_to(current.clone()).is_err(),
            "empty update"
        );
        let backwards = UpdateProduct {
            ends_at: Some(500),
            ..Default::default()
        };
        assert!(backwards.apply_to(current).is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<SessionRequest>(r#"{"member_id": 1, "admin": true}"#);
        assert!(err.is_err());
    }

    #[test]
    fn result_view_wire_format() {
        let view = ResultView {
            status: ResultStatus::Success,
            order_id: Some(OrderId::new(9).unwrap()),
        };
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"status":"success","order_id":9}"#
        );
        let none = ResultView {
            status: ResultStatus::None,
            order_id: None,
        };
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"status":"none","order_id":null}"#
        );
    }
}
