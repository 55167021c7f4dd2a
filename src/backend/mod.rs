//! Compute backends. `cpu` is always built; it knows nothing of models,
//! tokio, axum or redb.

pub mod cpu;
