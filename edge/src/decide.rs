//! The buy decisions the edge can make alone, as pure functions.

use seckill_shared::api::ProductView;
use seckill_shared::sale::{SalePhase, SaleWindow};
use seckill_shared::token;
use seckill_shared::{ErrorCode, MemberId};

use crate::config::EdgeConfig;

/// An answer the edge gives itself: the contract's code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: code.default_message().to_string(),
        }
    }

    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The member behind an `Authorization` header, verified with the same
/// code as the origin's: a bad token never reaches the origin.
pub fn member(
    config: &EdgeConfig,
    authorization: Option<&str>,
    now_s: u64,
) -> Result<MemberId, Refusal> {
    let raw = authorization.and_then(token::bearer).ok_or_else(|| {
        Refusal::with_message(
            ErrorCode::Unauthorized,
            "an Authorization: Bearer <token> header is required",
        )
    })?;
    token::verify(&config.token_secret, raw, now_s)
        .map(|claims| claims.member)
        .map_err(|err| Refusal::with_message(ErrorCode::Unauthorized, err.to_string()))
}

/// A buy outside the sale window, judged from the edge's copy of the product.
pub fn outside_window(product: &ProductView, now_s: i64) -> Option<Refusal> {
    let window = SaleWindow {
        starts_at: product.starts_at,
        ends_at: product.ends_at,
    };
    match window.phase(now_s) {
        SalePhase::NotStarted => Some(Refusal::new(ErrorCode::NotStarted)),
        SalePhase::Ended => Some(Refusal::new(ErrorCode::Ended)),
        SalePhase::Open => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seckill_shared::token::{sign, TokenSecret};
    use seckill_shared::ProductId;

    fn config() -> EdgeConfig {
        EdgeConfig::from_vars(|name| {
            (name == "SECKILL_TOKEN_SECRET").then(|| "edge-secret".to_string())
        })
        .unwrap()
    }

    #[test]
    fn tokens_are_checked_like_the_origin_does() {
        let secret = TokenSecret::new("edge-secret").unwrap();
        let m = MemberId::new(42).unwrap();
        let good = format!("Bearer {}", sign(&secret, m, 100));
        assert_eq!(member(&config(), Some(&good), 99), Ok(m));
        for bad in [None, Some("Bearer nope"), Some(good.as_str())] {
            let now = if bad == Some(good.as_str()) { 100 } else { 0 };
            assert_eq!(
                member(&config(), bad, now).unwrap_err().code,
                ErrorCode::Unauthorized
            );
        }
        let forged = format!(
            "Bearer {}",
            sign(&TokenSecret::new("other").unwrap(), m, 100)
        );
        assert_eq!(
            member(&config(), Some(&forged), 0).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn window() {
        let product = ProductView {
            product_id: ProductId::new(1).unwrap(),
            name: "x".into(),
            price_cents: 2,
            flash_price_cents: 1,
            stock_total: 1,
            stock_left: 1,
            starts_at: 100,
            ends_at: 200,
            sold_out: false,
            revision: 1,
        };
        assert_eq!(
            outside_window(&product, 99).unwrap().code,
            ErrorCode::NotStarted
        );
        assert_eq!(outside_window(&product, 100), None);
        assert_eq!(
            outside_window(&product, 200).unwrap().code,
            ErrorCode::Ended
        );
    }
}
