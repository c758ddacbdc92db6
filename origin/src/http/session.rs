//! The demo login: a token for any member id, for local runs only
//! (routed only when `SECKILL_DEMO_LOGIN=1`).

use axum::extract::State;
use axum::Json;
use seckill_shared::api::{SessionRequest, SessionResponse};
use seckill_shared::token;
use seckill_shared::ErrorCode;

use super::error::ApiError;
use super::extract::ApiJson;
use super::openapi::{E400, E404, E413, E500};
use super::state::AppState;
use crate::clock::unix_s;

/// A member token for any member id (routed only with `SECKILL_DEMO_LOGIN=1`;
/// otherwise `404 not_found`).
#[utoipa::path(post, path = "/api/session", operation_id = "session", tag = "storefront",
    request_body = SessionRequest,
    responses((status = 200, body = SessionResponse), (status = 400, response = E400),
        (status = 404, response = E404), (status = 413, response = E413), (status = 500, response = E500)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let ttl = state
        .auth
        .demo_sessions
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound))?;
    let expires_at = unix_s() + ttl.as_secs();
    let token = token::sign(&state.auth.token_secret, body.member_id, expires_at);
    Ok(Json(SessionResponse { token, expires_at }))
}
