//! A worker's dispatch endpoints (bearer token always required), through
//! which control planes run tasks on its pools:
//!
//! - `GET  /v2/worker/pools`: every pool's status.
//! - `POST /v2/worker/pools/{pool_id}/prepare`: tokenize for the pool.
//! - `POST /v2/worker/pools/{pool_id}/execute`: run a task; the answer is a
//!   stream of newline-delimited JSON events (see `worker_wire`), with
//!   keepalive lines while the task is silent. Closing the connection
//!   cancels the task.
//! - `POST /v2/worker/tasks/{task_id}/cancel`: stop a task (204, known or
//!   not).
//!
//! Requests are checked before they reach the engine: ids, prompt length
//! and token ids against the model's vocabulary, context, sampling ranges.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use tracing::{info, warn, Instrument};

use super::error::ApiError;
use super::extract::{parse_json, CorrelationId};
use super::worker_wire::{
    EventWire, ExecuteWire, PrepareWire, PreparedWire, WorkerPoolWire, MAX_PROMPT_TOKENS,
};
use crate::config::validate_id;
use crate::net::auth::{require_bearer, ApiToken};
use crate::telemetry::logging::task_span;
use crate::transport::local::LocalPool;
use crate::transport::{PoolClient, TaskEvent};

/// What the dispatch handlers reach.
pub struct WorkerApi {
    pub node_id: String,
    pub pools: BTreeMap<String, Arc<LocalPool>>,
    /// A keepalive line goes out after this much silence on a stream.
    pub keepalive: Duration,
}

/// The dispatch routes, behind the bearer token.
pub fn worker_routes(api: Arc<WorkerApi>, token: Arc<ApiToken>) -> Router {
    Router::new()
        .route("/v2/worker/pools", get(pools))
        .route("/v2/worker/pools/{pool_id}/prepare", post(prepare))
        .route("/v2/worker/pools/{pool_id}/execute", post(execute))
        .route("/v2/worker/tasks/{task_id}/cancel", post(cancel))
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(token, require_bearer))
}

fn pool(api: &WorkerApi, id: &str) -> Result<Arc<LocalPool>, ApiError> {
    api.pools
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("pool", id))
}

async fn pools(State(api): State<Arc<WorkerApi>>) -> Json<Vec<WorkerPoolWire>> {
    let mut out = Vec::new();
    for p in api.pools.values() {
        if let Ok(s) = p.status().await {
            out.push(WorkerPoolWire::from(&s));
        }
    }
    Json(out)
}

async fn prepare(
    State(api): State<Arc<WorkerApi>>,
    Path(pool_id): Path<String>,
    body: Bytes,
) -> Result<Json<PreparedWire>, ApiError> {
    let p = pool(&api, &pool_id)?;
    let req: PrepareWire = parse_json(&body)?;
    validate_id(&req.model_id).map_err(|m| ApiError::invalid(format!("model_id {m}")))?;
    let req = req.into_request().map_err(ApiError::invalid)?;
    let prepared = p
        .prepare(req)
        .await
        .map_err(|e| ApiError::new(e.code, e.message))?;
    Ok(Json(prepared.into()))
}

/// Checks the engine cannot make itself: tokens inside the vocabulary, the
/// task inside the context, sampling values it can use.
fn check_execute(p: &LocalPool, req: &ExecuteWire) -> Result<(), ApiError> {
    validate_id(&req.task_id).map_err(|m| ApiError::invalid(format!("task_id {m}")))?;
    validate_id(&req.model_id).map_err(|m| ApiError::invalid(format!("model_id {m}")))?;
    if let Some(s) = &req.session_id {
        validate_id(s).map_err(|m| ApiError::invalid(format!("session_id {m}")))?;
    }
    let (n_vocab, ctx) = p.limits().ok_or_else(|| {
        ApiError::new(
            crate::transport::ErrorCode::PoolUnavailable,
            format!("pool {} is stopped", p.pool_id()),
        )
    })?;
    if req.prompt.is_empty() || req.prompt.len() > MAX_PROMPT_TOKENS {
        return Err(ApiError::invalid("prompt must hold 1 or more tokens"));
    }
    if let Some(t) = req.prompt.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::invalid(format!(
            "token id {t} is outside the vocabulary of {n_vocab}"
        )));
    }
    let s = &req.params;
    if s.max_tokens == 0 || req.prompt.len().saturating_add(s.max_tokens) > ctx {
        return Err(ApiError::new(
            crate::transport::ErrorCode::CtxExceeded,
            format!(
                "prompt ({} tokens) + max_tokens ({}) exceeds the context of {} tokens",
                req.prompt.len(),
                s.max_tokens,
                ctx
            ),
        ));
    }
    let finite = [s.temperature, s.top_p, s.min_p, s.repeat_penalty];
    if finite.iter().any(|v| !v.is_finite())
        || s.temperature < 0.0
        || !(0.0..=1.0).contains(&s.top_p)
        || !(0.0..=1.0).contains(&s.min_p)
        || s.repeat_penalty <= 0.0
    {
        return Err(ApiError::invalid("sampling parameters out of range"));
    }
    if s.stop.len() > 16 || s.stop.iter().any(|x| x.is_empty() || x.len() > 256) {
        return Err(ApiError::invalid(
            "stop: at most 16 non-empty strings of at most 256 bytes",
        ));
    }
    if s.logprobs.is_some_and(|n| n > 20) {
        return Err(ApiError::invalid("logprobs: at most 20"));
    }
    Ok(())
}

async fn execute(
    State(api): State<Arc<WorkerApi>>,
    Path(pool_id): Path<String>,
    CorrelationId(correlation_id): CorrelationId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = pool(&api, &pool_id)?;
    let req: ExecuteWire = parse_json(&body)?;
    check_execute(&p, &req)?;
    let span = task_span(&correlation_id, &req.task_id);
    span.record("pool_id", pool_id.as_str());
    span.record("node_id", api.node_id.as_str());
    span.record("tokens_in", req.prompt.len());
    if let Some(s) = &req.session_id {
        span.record("session_id", s.as_str());
    }
    let events = p
        .execute(req.into_request(correlation_id))
        .instrument(span.clone())
        .await
        .map_err(|e| ApiError::new(e.code, e.message))?;
    info!(parent: &span, human = "running a task dispatched by a control plane", "worker task started");
    let keepalive = api.keepalive;
    let lines = futures_util::stream::unfold(
        (events, span, false),
        move |(mut events, span, done)| async move {
            if done {
                return None;
            }
            let (wire, last) = match tokio::time::timeout(keepalive, events.next()).await {
                Err(_) => (EventWire::Keepalive, false),
                Ok(None) => return None,
                Ok(Some(ev)) => {
                    let last = matches!(ev, TaskEvent::Finished(_) | TaskEvent::Failed(_));
                    match &ev {
                        TaskEvent::Finished(s) => {
                            span.record("tokens_out", s.tokens_out);
                            span.record("decode_time_ms", s.decode_ms);
                            info!(parent: &span, human = %format!("finished: {} tokens", s.tokens_out), "worker task finished");
                        }
                        TaskEvent::Failed(e) => {
                            warn!(parent: &span, code = e.code.as_str(), error = %e.message, "worker task failed");
                        }
                        _ => {}
                    }
                    match EventWire::from_event(&ev) {
                        Some(w) => (w, last),
                        None => (EventWire::Keepalive, last),
                    }
                }
            };
            let mut line = serde_json::to_vec(&wire).expect("events serialise");
            line.push(b'\n');
            Some((
                Ok::<Bytes, Infallible>(Bytes::from(line)),
                (events, span, last),
            ))
        },
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

async fn cancel(
    State(api): State<Arc<WorkerApi>>,
    Path(task_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    validate_id(&task_id).map_err(|m| ApiError::invalid(format!("task_id {m}")))?;
    for p in api.pools.values() {
        let _ = p.cancel(&task_id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
