//! The native data plane: submit, status, SSE events, cancel, sessions.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, CorrelationId};
use super::frames;
use super::wire::{self, ErrorWire, Streams, TaskAccepted, TaskRequest, TaskStatusWire};
use super::AppState;
use crate::control::Phase;

pub async fn submit(
    State(app): State<AppState>,
    CorrelationId(cid): CorrelationId,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Response, ApiError> {
    let spec = req.into_spec(cid)?;
    let ad = app.control.submit(spec).await?;
    let id = ad.task.info.id.clone();
    let body = TaskAccepted {
        streams: Streams {
            sse: format!("/v2/tasks/{id}/events"),
        },
        task_id: id,
        queue_position: ad.queue_position,
        predicted_start_ms: ad.predicted_start_ms,
        backoff_ms: ad.backoff_ms,
        pool_id: ad.task.info.pool_id.clone(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub async fn status(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskStatusWire>, ApiError> {
    let rec = app
        .control
        .task(&id)
        .ok_or_else(|| ApiError::not_found("task", &id))?;
    let position = app.control.queue_position(&rec);
    let st = rec.lock();
    Ok(Json(TaskStatusWire {
        task_id: rec.info.id.clone(),
        state: st.phase.as_str(),
        pool_id: rec.info.pool_id.clone(),
        node_id: rec.info.node_id.clone(),
        model_ref: rec.info.model_id.clone(),
        session_id: rec.info.session_id.clone(),
        priority: rec.info.priority.as_str(),
        queue_position: if st.phase == Phase::Queued {
            position
        } else {
            None
        },
        predicted_start_ms: st.predicted_start_ms,
        tokens_in: rec.info.work.tokens_in,
        tokens_out: rec.tokens_out.load(Ordering::Relaxed),
        max_tokens: rec.info.work.max_tokens,
        kv_warmth: st.kv_warmth,
        finish_reason: st.finish_reason.map(|r| r.as_str()),
        error: st.error.as_ref().map(|(code, message)| ErrorWire {
            code: code.as_str(),
            message: message.clone(),
            retriable: code.retriable(),
        }),
        created_at_ms: rec.info.created_unix_ms,
        events: st.frames.len(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Same as the `Last-Event-ID` header (which wins), for clients that
    /// cannot set headers.
    last_event_id: Option<String>,
}

/// The first frame index to send after `Last-Event-ID: n` (n + 1).
fn resume_from(headers: &HeaderMap, q: &EventsQuery) -> Result<usize, ApiError> {
    let raw = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .or_else(|| q.last_event_id.clone());
    match raw {
        None => Ok(0),
        Some(s) if s.trim().is_empty() => Ok(0),
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map(|n| n.saturating_add(1))
            .map_err(|_| ApiError::invalid(format!("Last-Event-ID {s:?} is not a frame id"))),
    }
}

pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rec = app
        .control
        .task(&id)
        .ok_or_else(|| ApiError::not_found("task", &id))?;
    let from = resume_from(&headers, &q)?;
    // A native stream may be dropped and resumed: no cancel on disconnect.
    let stream = frames::frames(rec, from, None).map(|(i, f)| {
        let (name, data) = wire::frame_event(&f);
        Ok(Event::default()
            .event(name)
            .id(i.to_string())
            .data(data.to_string()))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

pub async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.control.cancel(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = app
        .control
        .session(&id)
        .ok_or_else(|| ApiError::not_found("session", &id))?;
    Ok(Json(serde_json::json!({
        "session_id": s.session_id,
        "pool_id": s.pool_id,
        "turns": s.turns,
        "max_turns": s.max_turns,
        "ttl_remaining_ms": s.ttl_remaining_ms,
        "kv_warmth": s.kv_warmth,
        "reused_tokens": s.reused_tokens,
        "last_task_id": s.last_task_id,
    })))
}

pub async fn delete_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.control.delete_session(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("session", &id))
    }
}
