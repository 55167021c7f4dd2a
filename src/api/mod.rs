//! HTTP: routes (axum) and JSON wire shapes.
//!
//! - `nodes`: the control plane's node endpoints and availability.
//! - `nodes_wire`: the node protocol between workers and control planes.

pub mod nodes;
pub mod nodes_wire;

#[cfg(test)]
mod nodes_tests;
