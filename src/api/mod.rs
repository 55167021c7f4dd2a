//! HTTP: axum routes, the JSON wire shapes (native v2 and OpenAI), the one
//! mapping of errors to statuses, SSE, and the server loop. The only module
//! that knows JSON wire shapes.
//!
//! - `wire`, `openai_wire`: request and response shapes.
//! - `error`: [`ApiError`], codes → statuses, 429 headers.
//! - `extract`: JSON bodies and the correlation id middleware.
//! - `frames`: a task's frames as a stream (SSE resume, OpenAI streaming).
//! - `tasks`, `openai`, `pools`, `catalog`, `ops`: the handlers.
//! - `nodes`, `nodes_wire`: the node protocol between workers and control
//!   planes (routes and shapes; the worker's agent uses the shapes too).
//! - `worker`, `worker_wire`: a worker's dispatch endpoints and their
//!   shapes (`transport::http` speaks them from the control plane).

pub mod catalog;
pub mod error;
pub mod extract;
pub mod frames;
pub mod nodes;
pub mod nodes_wire;
pub mod openai;
pub mod openai_wire;
pub mod ops;
pub mod pools;
pub mod tasks;
pub mod wire;
pub mod worker;
pub mod worker_wire;

#[cfg(test)]
mod nodes_tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use error::ApiError;

use crate::control::Control;
use crate::store::Catalog;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub control: Arc<Control>,
    /// The model store (home profile and workers).
    pub catalog: Option<Arc<Catalog>>,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    pub max_body_bytes: usize,
    pub node_id: Arc<str>,
    pub started: Instant,
    /// The node registry (cloud control plane only).
    pub nodes: Option<Arc<crate::control::nodes::NodeService>>,
}

/// Every route of the client API.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v2/tasks", post(tasks::submit))
        .route("/v2/tasks/{id}", get(tasks::status))
        .route("/v2/tasks/{id}/events", get(tasks::events))
        .route("/v2/tasks/{id}/cancel", post(tasks::cancel))
        .route(
            "/v2/sessions/{id}",
            get(tasks::get_session).delete(tasks::delete_session),
        )
        .route("/v2/pools", get(pools::list))
        .route("/v2/pools/{id}/health", get(pools::health))
        .route("/v2/pools/{id}/drain", post(pools::drain))
        .route("/v2/pools/{id}/reload", post(pools::reload))
        .route("/v2/meta/capabilities", get(ops::capabilities))
        .route(
            "/v2/catalog/models",
            get(catalog::list).post(catalog::stage),
        )
        .route(
            "/v2/catalog/models/{id}",
            get(catalog::get).delete(catalog::remove),
        )
        .route("/v2/catalog/models/{id}/verify", post(catalog::verify))
        .route("/v2/catalog/models/{id}/state", post(catalog::set_state))
        .route("/v2/catalog/availability", get(catalog::availability))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async {
            ApiError::invalid("no such endpoint").with_status(axum::http::StatusCode::NOT_FOUND)
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(extract::correlation))
        .with_state(state)
}

/// Only `/metrics` (and `/healthz`), for `server.metrics_bind`: a scrape
/// address that exposes nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop
/// accepting and wait for open requests (streams included) to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
