//! The control plane's node endpoints (bearer token always required):
//! `POST /v2/nodes/register`, `POST /v2/nodes/{id}/heartbeat`,
//! `POST /v2/nodes/{id}/deregister`, `GET /v2/nodes`; and the client-API
//! view of what nodes hold, `GET /v2/catalog/availability`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::nodes_wire::{
    AvailabilityResponse, DeregisterRequest, HeartbeatRequest, HeartbeatResponse,
    ModelAvailabilityWire, NodeWire, NodesResponse, RegisterRequest, RegisterResponse,
};
use crate::config::validate_id;
use crate::control::node_registry::{HeartbeatOutcome, RegistryError};
use crate::control::nodes::NodeService;
use crate::net::auth::{require_bearer, ApiToken};
use crate::telemetry::metrics::{self as m, label, outcome};

/// An API error body: `{code, message, retriable}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "code": code,
        "message": message.into(),
        "retriable": status.is_server_error(),
    });
    (status, Json(body)).into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_PARAMS", message)
}

/// The node endpoints, behind the bearer token.
pub fn node_routes(svc: Arc<NodeService>, token: Arc<ApiToken>) -> Router {
    Router::new()
        .route("/v2/nodes/register", post(register))
        .route("/v2/nodes/{id}/heartbeat", post(heartbeat))
        .route("/v2/nodes/{id}/deregister", post(deregister))
        .route("/v2/nodes", get(list))
        .with_state(svc)
        .layer(axum::middleware::from_fn_with_state(token, require_bearer))
}

/// `GET /v2/catalog/availability` (client API; the caller applies the
/// client API's auth rule).
pub fn availability_routes(svc: Arc<NodeService>) -> Router {
    Router::new()
        .route("/v2/catalog/availability", get(availability))
        .with_state(svc)
}

async fn register(
    State(svc): State<Arc<NodeService>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Response {
    let count = |o: &'static str| {
        metrics::counter!(m::NODE_REGISTRATIONS_TOTAL, label::OUTCOME => o).increment(1);
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            count(outcome::REJECTED);
            return invalid(format!("registration: {}", e.body_text()));
        }
    };
    if let Err(msg) = req.validate() {
        count(outcome::REJECTED);
        tracing::warn!(node_id = %req.node_id.escape_debug(), problem = %msg, human = "refused a registration");
        return invalid(format!("registration: {msg}"));
    }
    let node_id = req.node_id.clone();
    match svc.register(req.into_registration()).await {
        Ok((_, state)) => {
            count(outcome::OK);
            Json(RegisterResponse {
                node_id,
                state: state.as_str().into(),
                node_timeout_ms: svc.timeout_ms(),
            })
            .into_response()
        }
        Err(e) => {
            count(outcome::ERROR);
            tracing::error!(node_id = %node_id, error = %e, human = "could not persist a registration");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("could not persist the registration: {e}"),
            )
        }
    }
}

async fn heartbeat(
    State(svc): State<Arc<NodeService>>,
    Path(id): Path<String>,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Response {
    if let Err(m) = validate_id(&id) {
        return invalid(format!("node id {m}"));
    }
    let count = |o: &'static str| {
        metrics::counter!(m::NODE_HEARTBEATS_TOTAL, label::NODE_ID => id.clone(), label::OUTCOME => o)
            .increment(1);
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            count(outcome::REJECTED);
            return invalid(format!("heartbeat: {}", e.body_text()));
        }
    };
    if let Err(msg) = req.validate() {
        count(outcome::REJECTED);
        return invalid(format!("heartbeat: {msg}"));
    }
    match svc.heartbeat(&id, req.into_heartbeat()) {
        Ok(out) => {
            count(outcome::OK);
            let state = match out {
                HeartbeatOutcome::Accepted { to, .. } => to.as_str().to_string(),
                HeartbeatOutcome::Duplicate => svc
                    .read(|r, _| r.get(&id).map(|e| e.state.as_str().to_string()))
                    .unwrap_or_default(),
            };
            Json(HeartbeatResponse { state }).into_response()
        }
        Err(e @ RegistryError::UnknownNode(_)) => {
            count(outcome::REJECTED);
            error(
                StatusCode::NOT_FOUND,
                "INVALID_PARAMS",
                format!("{e}; register first"),
            )
        }
        Err(e @ RegistryError::InstanceMismatch { .. }) => {
            count(outcome::REJECTED);
            tracing::warn!(node_id = %id, human = "heartbeat from another worker instance than the registered one; is the node id used twice?");
            error(StatusCode::CONFLICT, "INVALID_PARAMS", e.to_string())
        }
    }
}

async fn deregister(
    State(svc): State<Arc<NodeService>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let count = |o: &'static str| {
        metrics::counter!(m::NODE_DEREGISTRATIONS_TOTAL, label::OUTCOME => o).increment(1);
    };
    if let Err(m) = validate_id(&id) {
        count(outcome::REJECTED);
        return invalid(format!("node id {m}"));
    }
    let req: DeregisterRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DeregisterRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                count(outcome::REJECTED);
                return invalid(format!("deregistration: {e}"));
            }
        }
    };
    match svc.deregister(&id, req.instance_id.as_deref()).await {
        Ok(Ok(_)) => {
            count(outcome::OK);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e @ RegistryError::UnknownNode(_))) => {
            count(outcome::REJECTED);
            error(StatusCode::NOT_FOUND, "INVALID_PARAMS", e.to_string())
        }
        Ok(Err(e @ RegistryError::InstanceMismatch { .. })) => {
            count(outcome::REJECTED);
            error(StatusCode::CONFLICT, "INVALID_PARAMS", e.to_string())
        }
        Err(e) => {
            count(outcome::ERROR);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("could not persist the deregistration: {e}"),
            )
        }
    }
}

async fn list(State(svc): State<Arc<NodeService>>) -> Json<NodesResponse> {
    Json(svc.read(|r, now| {
        NodesResponse {
            nodes: r
                .nodes()
                .into_iter()
                .map(|e| NodeWire::from_entry(e, now))
                .collect(),
        }
    }))
}

async fn availability(State(svc): State<Arc<NodeService>>) -> Json<AvailabilityResponse> {
    Json(availability_of(&svc))
}

/// Per model id, the nodes that hold it, from what they report.
pub fn availability_of(svc: &NodeService) -> AvailabilityResponse {
    let av = svc.read(|r, _| r.availability());
    AvailabilityResponse {
        models: av
            .into_iter()
            .map(|(model, holders)| ModelAvailabilityWire::new(model, &holders))
            .collect(),
    }
}
