//! The machine-readable `error` codes of the HTTP contract and their statuses.
//!
//! Both the edge and the origin answer with `{"error": code, "message": text}`;
//! keeping the code-to-status table here means a client sees the same status
//! for the same code whichever side answered.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnknownProduct,
    UnknownOrder,
    NotStarted,
    Ended,
    SoldOut,
    AlreadyOrdered,
    OrderCancelled,
    RateLimited,
    /// The sale is taking as many buys as its stock can settle; try again
    /// after `Retry-After` (nothing was reserved).
    SaleBusy,
    Unavailable,
    /// A buy reached something that then went silent (Redis behind the
    /// origin, or the origin behind the edge): it may have been carried
    /// out. Clients ask the result endpoint instead of buying again.
    OutcomeUnknown,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order the contract lists them.
    pub const ALL: [ErrorCode; 17] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnknownProduct,
        Self::UnknownOrder,
        Self::NotStarted,
        Self::Ended,
        Self::SoldOut,
        Self::AlreadyOrdered,
        Self::OrderCancelled,
        Self::RateLimited,
        Self::SaleBusy,
        Self::Unavailable,
        Self::OutcomeUnknown,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnknownProduct => "unknown_product",
            Self::UnknownOrder => "unknown_order",
            Self::NotStarted => "not_started",
            Self::Ended => "ended",
            Self::SoldOut => "sold_out",
            Self::AlreadyOrdered => "already_ordered",
            Self::OrderCancelled => "order_cancelled",
            Self::RateLimited => "rate_limited",
            Self::SaleBusy => "sale_busy",
            Self::Unavailable => "unavailable",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::NotStarted | Self::Ended => 403,
            Self::NotFound | Self::UnknownProduct | Self::UnknownOrder => 404,
            Self::MethodNotAllowed => 405,
            Self::SoldOut | Self::AlreadyOrdered | Self::OrderCancelled => 409,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::SaleBusy | Self::Unavailable | Self::OutcomeUnknown => 503,
        }
    }

    /// A sentence for a person, used when the caller has nothing more specific.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::BadRequest => "the request is malformed",
            Self::Unauthorized => "a valid member token is required",
            Self::NotFound => "no such resource",
            Self::MethodNotAllowed => "this method is not allowed here",
            Self::PayloadTooLarge => "the request body is too large",
            Self::UnknownProduct => "no such product",
            Self::UnknownOrder => "no such order",
            Self::NotStarted => "the flash sale has not started yet",
            Self::Ended => "the flash sale has ended",
            Self::SoldOut => "sold out",
            Self::AlreadyOrdered => "you already hold a reservation or order for this item",
            Self::OrderCancelled => "the order was cancelled because it was not paid in time",
            Self::RateLimited => "too many requests, slow down",
            Self::SaleBusy => "the sale is busy: nothing was reserved, try again in a moment",
            Self::Unavailable => "the service is temporarily unavailable, nothing was reserved",
            Self::OutcomeUnknown => {
                "the service stopped answering mid-request: the reservation may or may not exist; the result endpoint will say"
            }
            Self::Internal => "internal error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(seen.insert(code), "{code} listed twice");
        }
    }

    #[test]
    fn an_unknown_outcome_is_its_own_code() {
        assert_eq!(ErrorCode::OutcomeUnknown.status(), 503);
        assert_ne!(ErrorCode::OutcomeUnknown, ErrorCode::Unavailable);
        assert!(ErrorCode::OutcomeUnknown
            .default_message()
            .contains("may or may not"));
    }
}
