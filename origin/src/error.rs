//! Typed errors mapped to HTTP once.
//!
//! Handlers return `Result<_, ApiError>`; this is the only place that turns a
//! failure into a status and the contract's `{"error", "message"}` body. A
//! backing service that cannot be reached becomes `503 unavailable` (and is
//! logged); anything unexpected becomes `500 internal` (and is logged) — bad
//! input never gets that far.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use seckill_shared::api::ErrorBody;
use seckill_shared::ErrorCode;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: Cow::Borrowed(code.default_message()),
        }
    }

    pub fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_message(ErrorCode::BadRequest, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.code, self.message.into_owned())
    }
}

/// The contract's error answer; also used by middleware and fallbacks.
pub fn error_response(code: ErrorCode, message: String) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(ErrorBody {
            error: code,
            message,
        }),
    )
        .into_response()
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        tracing::warn!(error = %err, "redis call failed");
        Self::new(ErrorCode::Unavailable)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            Self::new(ErrorCode::Unavailable)
        } else {
            tracing::error!(error = %err, "database error");
            Self::new(ErrorCode::Internal)
        }
    }
}

impl From<crate::preheat::PreheatError> for ApiError {
    fn from(err: crate::preheat::PreheatError) -> Self {
        match err {
            crate::preheat::PreheatError::Database(err) => err.into(),
            crate::preheat::PreheatError::Redis(err) => err.into(),
        }
    }
}
