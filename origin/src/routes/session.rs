//! The demo login: a token for any member id, for local runs only.

use axum::extract::State;
use axum::Json;
use seckill_shared::api::{SessionRequest, SessionResponse};
use seckill_shared::token;

use crate::clock::unix_s;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let expires_at = unix_s() + state.config.session_ttl.as_secs();
    let token = token::sign(&state.config.token_secret, body.member_id, expires_at);
    Ok(Json(SessionResponse { token, expires_at }))
}
