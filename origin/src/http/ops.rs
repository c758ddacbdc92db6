//! Liveness, readiness and metrics for orchestrators and Prometheus.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use seckill_shared::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::openapi::{E500, E503};
use super::state::AppState;
use crate::store::redis::RedisHealth;

/// `GET /healthz`: always `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /readyz` when both stores answer: every field is `"ok"`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub redis: &'static str,
    pub database: &'static str,
    /// Only on a Redis Cluster (`REDIS_CLUSTER_NODES`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReadiness>,
}

/// The cluster's own view and how many primaries answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterReadiness {
    #[schema(example = "ok")]
    pub cluster_state: String,
    pub primaries: usize,
    pub primaries_reachable: usize,
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Redis and the database both answer: this node can take buys. On a
/// cluster the answer also says `cluster_state` and how many primaries
/// answered.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, response = E503)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
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
        let cluster = match ready.cluster {
            Some(RedisHealth::Cluster {
                state,
                primaries,
                reachable,
            }) => Some(ClusterReadiness {
                cluster_state: state,
                primaries,
                primaries_reachable: reachable,
            }),
            _ => None,
        };
        return Ok(Json(Readiness {
            status: "ok",
            redis: "ok",
            database: "ok",
            cluster,
        }));
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

/// Prometheus text: requests and their latency by route, the buy path,
/// the order queue per product, payments, cancellations, drift.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 500, response = E500)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.operations.metrics_text().await,
    )
}
