//! The model catalog over HTTP. The catalog is synchronous (redb and file
//! hashing), so every call runs on a blocking thread.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::ApiJson;
use super::wire::{ModelStateRequest, StageModelRequest};
use super::AppState;
use crate::store::{Catalog, CatalogEntry, ModelState, StoreError, VerifyOutcome};
use crate::transport::ErrorCode;

fn entry_json(e: &CatalogEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "file_name": e.file_name,
        "sha256": e.sha256,
        "bytes": e.bytes,
        "architecture": e.architecture,
        "quantization": e.quantization,
        "context_length": e.context_length,
        "parameter_count": e.parameter_count,
        "state": e.state.to_string(),
        "staged_at_ms": e.staged_at_ms,
        "source": e.source,
    })
}

fn catalog(app: &AppState) -> Result<Arc<Catalog>, ApiError> {
    app.catalog.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::PoolUnavailable,
            "this process has no model store",
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(ApiError::from)
}

pub async fn stage(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<StageModelRequest>,
) -> Result<Response, ApiError> {
    let cat = catalog(&app)?;
    let entry = blocking(move || {
        let src = PathBuf::from(&req.source);
        cat.stage(
            &src,
            req.id.as_deref(),
            req.sha256.as_deref(),
            &req.source,
            &|_, _| {},
        )
    })
    .await?;
    tracing::info!(model_id = %entry.id, human = %format!("staged model {} ({} bytes)", entry.id, entry.bytes), "model staged");
    Ok((StatusCode::CREATED, Json(entry_json(&entry))).into_response())
}

pub async fn list(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let cat = catalog(&app)?;
    let entries = blocking(move || cat.list()).await?;
    let models: Vec<_> = entries.iter().map(entry_json).collect();
    Ok(Json(serde_json::json!({ "models": models })))
}

pub async fn get(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cat = catalog(&app)?;
    let id2 = id.clone();
    let e = blocking(move || cat.get(&id2)).await?;
    e.map(|e| Json(entry_json(&e))).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!("model {id:?} is not in the catalog"),
        )
    })
}

pub async fn remove(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cat = catalog(&app)?;
    if let Some(p) = app
        .control
        .pool_views()
        .iter()
        .find(|v| v.status.model_id == id)
    {
        return Err(ApiError::invalid(format!(
            "model {id:?} is loaded in pool {}; reload the pool with another model first",
            p.status.pool_id
        ))
        .with_status(StatusCode::CONFLICT));
    }
    blocking(move || cat.remove(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn verify(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cat = catalog(&app)?;
    let id2 = id.clone();
    let outcome = blocking(move || cat.verify(&id2)).await?;
    let kind = match &outcome {
        VerifyOutcome::Ok => "ok",
        VerifyOutcome::Missing => "missing",
        VerifyOutcome::SizeMismatch { .. } => "size_mismatch",
        VerifyOutcome::DigestMismatch { .. } => "digest_mismatch",
    };
    Ok(Json(serde_json::json!({
        "id": id,
        "ok": outcome.is_ok(),
        "outcome": kind,
        "detail": outcome.to_string(),
    })))
}

pub async fn set_state(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ModelStateRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cat = catalog(&app)?;
    let state: ModelState = req.state.parse().map_err(ApiError::invalid)?;
    let e = blocking(move || cat.set_state(&id, state)).await?;
    Ok(Json(entry_json(&e)))
}

/// Home profile: this node holds every staged model; a model is on a single
/// node by construction.
pub async fn availability(
    State(app): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(nodes) = &app.nodes {
        // Cloud control plane: what the nodes report.
        return Ok(Json(
            serde_json::to_value(super::nodes::availability_of(nodes))
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
        ));
    }
    let cat = catalog(&app)?;
    let entries = blocking(move || cat.list()).await?;
    let views = app.control.pool_views();
    let models: Vec<_> = entries
        .iter()
        .map(|e| {
            let pools: Vec<&str> = views
                .iter()
                .filter(|v| v.status.model_id == e.id)
                .map(|v| v.status.pool_id.as_str())
                .collect();
            serde_json::json!({
                "model_id": e.id,
                "state": e.state.to_string(),
                "sha256": e.sha256,
                "nodes": [{
                    "node_id": &*app.node_id,
                    "pools": pools,
                    "online": true,
                }],
                "node_count": 1,
                "replicated": false,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "models": models })))
}
