//! Failures mapped to HTTP, once.
//!
//! Handlers return `Result<_, ApiError>`; this is the only place that turns
//! a domain or store failure into a status and the contract's
//! `{"error", "message"}` body. A store that cannot be reached becomes
//! `503 unavailable`, a buy whose answer was lost `503 outcome_unknown`,
//! anything unexpected `500 internal` — bad input never gets that far. An
//! answer of 500 or above is logged here, once, with its cause chain, in
//! the request's span (so the line carries the request id).

use std::borrow::Cow;
use std::error::Error;

use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use seckill_shared::api::ErrorBody;
use seckill_shared::ErrorCode;

use crate::services::buy::{BuyError, Refusal};
use crate::services::lifecycle::OrderError;
use crate::services::sales::SaleError;
use crate::store::StoreError;
use crate::telemetry::chain;

#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    cause: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: Cow::Borrowed(code.default_message()),
            cause: None,
        }
    }

    pub fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_message(ErrorCode::BadRequest, message)
    }

    fn caused_by(code: ErrorCode, cause: impl Error + Send + Sync + 'static) -> Self {
        Self {
            cause: Some(Box::new(cause)),
            ..Self::new(code)
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code.status() >= 500 {
            let cause = self
                .cause
                .as_deref()
                .map(|cause| chain(cause).to_string())
                .unwrap_or_default();
            if self.code == ErrorCode::Internal {
                tracing::error!(code = %self.code, cause, "request failed");
            } else {
                tracing::warn!(code = %self.code, cause, "request failed");
            }
        }
        error_response(self.code, self.message.into_owned())
    }
}

/// The contract's error answer; also used by middleware and fallbacks.
pub fn error_response(code: ErrorCode, message: String) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        Json(ErrorBody {
            error: code,
            message,
        }),
    )
        .into_response();
    if code == ErrorCode::PayloadTooLarge {
        // The body was refused unread, so the connection cannot carry
        // another request: say so, or a client reuses it and its next
        // request fails mid-way.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let code = if err.is_transient() {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Internal
        };
        Self::caused_by(code, err)
    }
}

impl From<BuyError> for ApiError {
    fn from(err: BuyError) -> Self {
        match err {
            BuyError::Refused(refusal) => Self::new(match refusal {
                Refusal::SoldOut => ErrorCode::SoldOut,
                Refusal::AlreadyOrdered => ErrorCode::AlreadyOrdered,
                Refusal::NotStarted => ErrorCode::NotStarted,
                Refusal::Ended => ErrorCode::Ended,
                Refusal::UnknownProduct => ErrorCode::UnknownProduct,
                Refusal::RateLimited => ErrorCode::RateLimited,
            }),
            BuyError::Store(err) => err.into(),
            BuyError::OutcomeUnknown(err) => Self::caused_by(ErrorCode::OutcomeUnknown, err),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::Unknown => Self::new(ErrorCode::UnknownOrder),
            OrderError::Cancelled => Self::new(ErrorCode::OrderCancelled),
            OrderError::Store(err) => err.into(),
        }
    }
}

impl From<SaleError> for ApiError {
    fn from(err: SaleError) -> Self {
        match err {
            SaleError::Unknown => Self::new(ErrorCode::UnknownProduct),
            SaleError::Invalid(reason) => Self::bad_request(reason),
            SaleError::Store(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buy_whose_shard_moved_twice_is_unavailable_not_unknown() {
        // Nothing was reserved, so the buyer may simply try again.
        let moved = ApiError::from(BuyError::Store(StoreError::ShardMoved));
        assert_eq!(moved.code(), ErrorCode::Unavailable);
        let unreplicated = ApiError::from(BuyError::OutcomeUnknown(StoreError::Unreplicated {
            wanted: 1,
            acked: 0,
        }));
        assert_eq!(unreplicated.code(), ErrorCode::OutcomeUnknown);
    }
}
