//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
//! - `config`: typed TOML config, defaults, env overrides; depends on nothing.
//! - `gguf`: the GGUF format (parse over bytes, write, tensor types, summary).
//! - `model`: what a transformer is; for now `model::synth` (synthetic models).
//! - `store`: the model store and its redb catalog (the only redb user).
//! - `testing`: where tests find the real models (not used by the server).

pub mod config;
pub mod gguf;
pub mod model;
pub mod store;
#[doc(hidden)]
pub mod testing;
