//! Liveness, readiness and metrics for orchestrators and Prometheus.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use seckill_shared::ErrorCode;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;

/// The process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Redis and the database both answer: this node can take buys.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ready = state.operations.readiness().await;
    if ready.redis && ready.database {
        return Ok(Json(
            json!({ "status": "ok", "redis": "ok", "database": "ok" }),
        ));
    }
    let down: Vec<&str> = [("redis", ready.redis), ("database", ready.database)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    Err(ApiError::with_message(
        ErrorCode::Unavailable,
        format!("not ready: {} unreachable", down.join(" and ")),
    ))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.operations.metrics_text().await,
    )
}
