//! Operations endpoints: liveness, readiness, metrics, capabilities.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::AppState;
use crate::transport::local::ENGINE_NAME;
use crate::transport::ErrorCode;

pub async fn healthz(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "uptime_ms": app.started.elapsed().as_millis() as u64,
    }))
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    if app.control.is_ready() {
        let ready = app
            .control
            .pool_views()
            .iter()
            .filter(|v| v.accepting)
            .count();
        Json(serde_json::json!({"status": "ready", "pools_ready": ready})).into_response()
    } else {
        let why = if app.control.is_shutting_down() {
            "shutting down"
        } else {
            "no pool is Ready"
        };
        ApiError::new(ErrorCode::PoolUnready, why).into_response()
    }
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    match &app.metrics {
        Some(h) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiError::new(
            ErrorCode::Internal,
            "metrics are not enabled in this process",
        )
        .with_status(StatusCode::NOT_FOUND)
        .into_response(),
    }
}

pub async fn capabilities(State(app): State<AppState>) -> Json<serde_json::Value> {
    let views = app.control.pool_views();
    let models: Vec<_> = app
        .control
        .served_models()
        .into_iter()
        .map(|(id, ctx)| serde_json::json!({"id": id, "ctx_max": ctx}))
        .collect();
    let pools: Vec<_> = views
        .iter()
        .map(|v| {
            serde_json::json!({
                "pool_id": v.status.pool_id,
                "model_id": v.status.model_id,
                "slots": v.status.slots_total,
                "queue_capacity": v.queue_capacity,
            })
        })
        .collect();
    let total: usize = views.iter().map(|v| v.status.slots_total).sum();
    let a = &app.control.settings().admission;
    Json(serde_json::json!({
        "api_version": "v2",
        "engine": ENGINE_NAME,
        "engine_version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "workloads": ["completion"],
        "concurrency": {"total_slots": total, "pools": pools},
        "priorities": ["interactive", "batch"],
        "admission": {
            "queue_capacity": a.queue_capacity,
            "full_policy": match a.full_policy {
                crate::config::FullQueuePolicy::Reject => "reject",
                crate::config::FullQueuePolicy::DropLru => "drop-lru",
            },
            "tokens_per_second": a.tokens_per_second,
        },
        "determinism": ["strict", "best_effort"],
        "streams": ["sse"],
        "openai_compatible": true,
    }))
}
