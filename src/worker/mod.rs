//! The worker side: pools (one model, N slots, an engine thread each),
//! continuous batching, live stats, and the agent that registers the
//! worker with its control planes (`agent`, the only HTTP client here).

pub mod agent;
pub mod pool;
pub mod scheduler;
pub mod stats;

#[cfg(test)]
mod agent_tests;

pub use pool::{Engine, Pool, PoolError, PoolSpec, PoolState};
pub use scheduler::{EngineEvent, EngineTask, TaskSummary};
pub use stats::{PoolStats, StatsSnapshot};
