//! Request extractors that validate on parse and reject with the contract's
//! error body: member tokens, the admin token, ids in paths, JSON bodies.

use std::str::FromStr;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use seckill_shared::token;
use seckill_shared::{ErrorCode, MemberId};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::state::AppState;
use crate::clock::unix_s;

fn bearer_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(token::bearer)
}

/// The member a request acts for, from a verified `Authorization: Bearer`
/// token. Nothing else (no header, no body field) can name a member.
#[derive(Debug, Clone, Copy)]
pub struct AuthedMember(pub MemberId);

impl FromRequestParts<AppState> for AuthedMember {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let raw = bearer_token(parts).ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::Unauthorized,
                "an Authorization: Bearer <token> header is required",
            )
        })?;
        let claims = token::verify(&state.auth.token_secret, raw, unix_s())
            .map_err(|err| ApiError::with_message(ErrorCode::Unauthorized, err.to_string()))?;
        Ok(Self(claims.member))
    }
}

/// A request carrying `SECKILL_ADMIN_TOKEN`.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer_token(parts) {
            Some(raw) if constant_time_eq(raw.as_bytes(), state.auth.admin_token.as_bytes()) => {
                Ok(Self)
            }
            _ => Err(ApiError::with_message(
                ErrorCode::Unauthorized,
                "the admin token is required",
            )),
        }
    }
}

/// Compares secrets without an early exit that would leak how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The single id in a route's path, parsed strictly.
#[derive(Debug, Clone, Copy)]
pub struct PathId<T>(pub T);

impl<S, T> FromRequestParts<S> for PathId<T>
where
    S: Send + Sync,
    T: FromStr + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("the path does not name an id"))?;
        raw.parse().map(Self).map_err(|_| {
            ApiError::bad_request(format!(
                "{raw:?} is not a valid id (a positive whole number)"
            ))
        })
    }
}

/// A JSON body; malformed JSON, wrong types and unknown fields are `400
/// bad_request`, a body over the limit is `413 payload_too_large`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(ErrorCode::PayloadTooLarge))
            }
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
