//! Liveness, readiness and metrics for orchestrators and Prometheus.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use seckill_shared::ErrorCode;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::pipeline::queue;
use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Redis and the database both answer: this node can take buys.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (redis, db) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.inventory.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.db.ping()),
    );
    let redis_ok = matches!(redis, Ok(Ok(())));
    let db_ok = matches!(db, Ok(Ok(())));
    if redis_ok && db_ok {
        return Ok(Json(
            json!({ "status": "ok", "redis": "ok", "database": "ok" }),
        ));
    }
    let down: Vec<&str> = [("redis", redis_ok), ("database", db_ok)]
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
    state
        .metrics
        .sold_out_flags
        .set(state.sold_out.raised().len() as i64);
    // Queue figures come from Redis at scrape time; if Redis is down the
    // scrape still succeeds, without them.
    let gauges = &state.metrics.queue_gauges;
    gauges.reset();
    if let Ok(products) = state.inventory.live_products().await {
        let mut conn = state.inventory.connection();
        for product in products {
            if let Ok(stats) = queue::stats(&mut conn, state.inventory.keys(), product).await {
                let id = product.to_string();
                for (measure, value) in [
                    ("length", stats.length),
                    ("pending", stats.pending),
                    ("lag", stats.lag),
                    ("dead_letters", stats.dead_letters),
                ] {
                    gauges
                        .with_label_values(&[id.as_str(), measure])
                        .set(value as i64);
                }
            }
        }
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
