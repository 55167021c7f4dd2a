//! Pools over HTTP: list, health, drain, reload.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::{parse_json, ApiJson};
use super::wire::{pool_json, DrainRequest, ReloadRequest};
use super::AppState;
use crate::transport::PoolState;

/// How long a drain without `deadline_ms` lets work run.
const DEFAULT_DRAIN_MS: u64 = 30_000;

pub async fn list(State(app): State<AppState>) -> Json<serde_json::Value> {
    let pools: Vec<_> = app.control.pool_views().iter().map(pool_json).collect();
    Json(serde_json::json!({ "pools": pools }))
}

pub async fn health(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = app
        .control
        .pool_view(&id)
        .ok_or_else(|| ApiError::not_found("pool", &id))?;
    let live = !matches!(v.status.state, PoolState::Stopped | PoolState::Unreachable);
    let mut body = pool_json(&v);
    body["live"] = live.into();
    // 200 while the pool can take work, 503 otherwise, so a plain HTTP
    // check can use it.
    let status = if v.accepting {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

pub async fn drain(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: none means the default deadline.
    let req: Option<DrainRequest> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(&body)?)
    };
    let ms = req.and_then(|b| b.deadline_ms).unwrap_or(DEFAULT_DRAIN_MS);
    let v = app.control.drain(&id, Duration::from_millis(ms))?;
    Ok((StatusCode::ACCEPTED, Json(pool_json(&v))).into_response())
}

pub async fn reload(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReloadRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = app.control.reload(&id, &req.new_model_ref).await?;
    Ok(Json(pool_json(&v)))
}
