//! The worker side: pools (one model, N slots, an engine thread each),
//! continuous batching, live stats. No HTTP here.

pub mod pool;
pub mod scheduler;
pub mod stats;

pub use pool::{Engine, Pool, PoolError, PoolSpec, PoolState};
pub use scheduler::{EngineEvent, EngineTask, TaskSummary};
pub use stats::{PoolStats, StatsSnapshot};
