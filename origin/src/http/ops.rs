//! Liveness, readiness and metrics for orchestrators and Prometheus.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use seckill_shared::ErrorCode;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;
use crate::store::redis::RedisHealth;

/// The process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Redis and the database both answer: this node can take buys. On a
/// cluster the answer also says `cluster_state` and how many primaries
/// answered.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ready = state.operations.readiness().await;
    let cluster = match &ready.cluster {
        Some(RedisHealth::Cluster {
            state,
            primaries,
            reachable,
        }) => format!("; cluster_state {state}, {reachable} of {primaries} primaries reachable"),
        _ => String::new(),
    };
    if ready.redis && ready.database {
        let mut body = json!({ "status": "ok", "redis": "ok", "database": "ok" });
        if let Some(RedisHealth::Cluster {
            state,
            primaries,
            reachable,
        }) = &ready.cluster
        {
            body["cluster"] = json!({
                "cluster_state": state,
                "primaries": primaries,
                "primaries_reachable": reachable,
            });
        }
        return Ok(Json(body));
    }
    let down: Vec<&str> = [("redis", ready.redis), ("database", ready.database)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect();
    Err(ApiError::with_message(
        ErrorCode::Unavailable,
        format!("not ready: {} unreachable{cluster}", down.join(" and ")),
    ))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.operations.metrics_text().await,
    )
}
