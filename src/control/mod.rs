//! The control side. Cloud-profile parts: the node registry (pure logic
//! over an injected clock) and node placement (pure functions). It reaches
//! workers only through `transport`, never `model` or `backend`.
//!
//! - `node_registry`: node states, heartbeats, the index of model holders.
//! - `node_placement`: which node's pool runs a task.
//! - `nodes`: [`nodes::NodeService`], the registry persisted, swept and
//!   measured.

pub mod node_placement;
pub mod node_registry;
pub mod nodes;
