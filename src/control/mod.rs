//! The control side: admission (bounded queues with priorities and
//! backpressure), placement (pure functions), sessions, task records and
//! their event logs, and the service that ties them together. It reaches
//! pools only through `transport::PoolClient`, never `model` or `backend`.
//!
//! - `admission`: queue, policies, token rate, start-time predictions.
//! - `placement`: which pool runs a task.
//! - `sessions`: affinity, turns, TTL, kv_warmth.
//! - `tasks`: task records, frames, retention.
//! - `service`: [`Control`], the dispatcher per pool, cancel, drain, reload.
//! - `node_registry`: cloud node states, heartbeats, the index of model
//!   holders (pure logic over an injected clock).
//! - `node_placement`: which node's pool runs a task (pure functions).
//! - `nodes`: [`nodes::NodeService`], the registry persisted, swept and
//!   measured.
//! - `cluster`: [`cluster::ClusterPool`], one pool per model over the
//!   workers that serve it; failover before the first token.

pub mod admission;
pub mod cluster;
pub mod node_placement;
pub mod node_registry;
pub mod nodes;
pub mod placement;
pub mod service;
pub mod sessions;
pub mod tasks;

#[cfg(test)]
mod cluster_tests;

pub use admission::Priority;
pub use service::{
    new_task_id, Admission, Control, ControlSettings, MaxTokensDefault, ModelCatalog, ModelLookup,
    PlacementSpec, PoolView, SamplingDefaults, SamplingSpec, TaskSpec,
};
pub use tasks::{EndFrame, Frame, MetricsFrame, Phase, TaskRecord};

pub use crate::transport::ErrorCode;

/// Why the control side refused or could not find something. `api` maps
/// these to HTTP statuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// A guardrail or a state refused the request.
    #[error("{message}")]
    Refused {
        code: ErrorCode,
        message: String,
        /// Set when waiting may help (e.g. a deadline missed only because of
        /// the queue).
        retry_after_ms: Option<u64>,
    },
    /// Backpressure: the client should come back after `retry_after_ms`.
    #[error("{message}")]
    Backpressure {
        code: ErrorCode,
        message: String,
        retry_after_ms: u64,
        /// Which limit refused it: `reject`, `drop-lru` or `token-rate`.
        policy_label: &'static str,
    },
    #[error("no {kind} {id:?}")]
    NotFound { kind: &'static str, id: String },
    /// The request clashes with existing state (a task id in use).
    #[error("{0}")]
    Conflict(String),
}

impl ControlError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ControlError::Refused { code, .. } | ControlError::Backpressure { code, .. } => *code,
            ControlError::NotFound { kind: "model", .. } => ErrorCode::ModelNotFound,
            ControlError::NotFound { .. } | ControlError::Conflict(_) => ErrorCode::InvalidParams,
        }
    }

    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ControlError::Refused { retry_after_ms, .. } => *retry_after_ms,
            ControlError::Backpressure { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }
}
