//! HTTP: routes (axum) and JSON wire shapes.
//!
//! - `nodes_wire`: the node protocol between workers and control planes.

pub mod nodes_wire;
